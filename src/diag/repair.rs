//! [`deserialize_all`]: deserializes a section while collecting every problem,
//! repairing a copy of the tree and trying again until it is clean.

use super::{value_in, Diagnostic, FieldPath, Seg, SourceFile};
use serde::de::{self, DeserializeOwned};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;
use toml::de::{DeArray, DeValue, ValueDeserializer};
use toml::Spanned;

mod watch;

use watch::Watch;

/// Deserializes one section, collecting every problem instead of stopping at the first.
///
/// Returns the value repaired (every offending key, and every table that lacks a
/// required field, dropped), so that semantic checks can still run on what is
/// valid; whether anything was dropped shows as new errors in `diags`. `path` is the
/// field path of `value` within the file, used to name fields in messages.
///
/// How: serde walks a copy of the tree through `Watch`, which knows the path of
/// every value it hands out. A key the type does not accept is reported and skipped
/// on the spot; a list element or map entry that fails is reported and left out of
/// this attempt, and the walk goes on with the next one. What was wrong (the key,
/// the value of the wrong type, the table that lacks a required field) is then
/// removed from the copy, and the copy is deserialized again until it is clean.
/// Independent problems are all found in the same attempt, so the number of attempts
/// is the depth of problems hiding behind each other (a table with two values of the
/// wrong type needs two), not the number of problems. Spans are those of the original
/// text throughout, so every message keeps its true line.
pub fn deserialize_all<T: DeserializeOwned>(
    file: &SourceFile<'_>,
    path: &FieldPath,
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let first = diags.len();
    let result = repair(file, path, value, diags);
    // In the order of the file, whichever attempt found them.
    diags[first..].sort_by_key(|d| (d.line, d.column));
    result
}

fn repair<T: DeserializeOwned>(
    file: &SourceFile<'_>,
    base: &FieldPath,
    mut work: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    // Fields we removed ourselves, by (span of their table, name): a later
    // "missing field" about one of them is a consequence, not a new problem.
    let mut removed: HashSet<(Range<usize>, String)> = HashSet::new();
    loop {
        let pass = Pass {
            file,
            base,
            work: &work,
            removed: &removed,
            found: RefCell::default(),
            tainted: RefCell::default(),
            key: RefCell::default(),
            outbound: RefCell::default(),
        };
        let root = FieldPath::root();
        let result = T::deserialize(Watch {
            de: ValueDeserializer::from(work.clone()),
            pass: &pass,
            path: root.clone(),
            key: false,
        });
        let mut fatal = false;
        match result {
            Ok(v) if pass.found.borrow().is_empty() => return Some(v),
            Ok(_) => {}
            Err(c) if c.state != State::New || pass.is_tainted(&root) => {}
            Err(c) => {
                // From the top-level table itself (a required section missing): the
                // value cannot be repaired.
                let span = work.span();
                let name = missing_field_name(&c.message);
                let repeat = name
                    .as_ref()
                    .is_some_and(|n| removed.contains(&(span.clone(), n.clone())));
                if !repeat {
                    let mut field = file.original(base);
                    if let Some(n) = &name {
                        field = field.join(n.as_str());
                    }
                    diags.push(file.diag_at(span, field, humanize(&c.message)));
                }
                fatal = true;
            }
        }
        let found = pass.found.into_inner();
        if found.is_empty() || fatal {
            diags.extend(found.into_iter().filter_map(|f| f.diag));
            return None;
        }
        let mut drops = Vec::with_capacity(found.len());
        for f in found {
            diags.extend(f.diag);
            removed.extend(f.removed);
            drops.push(f.drop);
        }
        if !remove_all(file, base, &mut work, drops) {
            return None;
        }
    }
}

/// What one attempt found.
struct Found {
    /// `None` when the problem is a consequence of one reported before.
    diag: Option<Diagnostic>,
    /// What to remove from the tree (relative to the deserialized value).
    drop: FieldPath,
    /// (span of a table, key) when `drop` is a key.
    removed: Option<(Range<usize>, String)>,
}

/// One attempt to deserialize the working tree.
struct Pass<'a> {
    file: &'a SourceFile<'a>,
    base: &'a FieldPath,
    work: &'a Spanned<DeValue<'a>>,
    removed: &'a HashSet<(Range<usize>, String)>,
    found: RefCell<Vec<Found>>,
    /// Paths below which something was left out for a problem deeper down: what
    /// fails there now may be a consequence (a list that came out too short); the
    /// next attempt, on the repaired tree, tells.
    tainted: RefCell<HashSet<FieldPath>>,
    /// The last key read (a key deserializer records it).
    key: RefCell<Option<String>>,
    /// Our error, while it travels through `toml`'s deserializer as one of its own.
    outbound: RefCell<Option<Caught>>,
}

/// The error type serde sees while [`Watch`] is watching.
#[derive(Debug)]
struct Caught {
    message: String,
    state: State,
}

#[derive(Debug, PartialEq)]
enum State {
    /// Not yet reported.
    New,
    /// Reported; the path is what will be removed.
    Recorded(FieldPath),
    /// Left for the next attempt (see [`Pass::tainted`]).
    Deferred,
}

impl fmt::Display for Caught {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Caught {}

impl de::Error for Caught {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Caught {
            message: msg.to_string(),
            state: State::New,
        }
    }
}

impl Pass<'_> {
    /// Our error, to hand to `toml` as one of its own.
    fn outbound<E: de::Error>(&self, c: Caught) -> E {
        let e = E::custom(&c.message);
        *self.outbound.borrow_mut() = Some(c);
        e
    }

    /// An error from `toml`: ours coming back (`toml` only adds where it was), or
    /// one of its own.
    fn inbound<E: fmt::Display>(&self, e: E) -> Caught {
        let shown = e.to_string();
        let message = shown.lines().next().unwrap_or_default();
        match self.outbound.borrow_mut().take() {
            Some(c) if c.message.lines().next().unwrap_or_default() == message => c,
            _ => de::Error::custom(message),
        }
    }

    fn is_tainted(&self, path: &FieldPath) -> bool {
        self.tainted.borrow().contains(path)
    }

    fn taint(&self, container: &FieldPath) {
        let mut t = self.tainted.borrow_mut();
        for n in (0..=container.0.len()).rev() {
            if !t.insert(FieldPath(container.0[..n].to_vec())) {
                break;
            }
        }
    }

    /// Whether a failed element or entry `node` of `container` can be left out of
    /// this attempt (its problem is recorded, or left for the next one).
    fn skip(&self, container: &FieldPath, node: &FieldPath, c: &Caught) -> bool {
        match &c.state {
            State::New => false,
            State::Recorded(p) => {
                if p != node {
                    self.taint(container);
                }
                true
            }
            State::Deferred => {
                self.taint(container);
                true
            }
        }
    }

    fn span_at(&self, rel: &FieldPath) -> Range<usize> {
        value_in(self.work, rel).map_or(0..0, |v| v.span())
    }

    /// The field in the file (original indexes) of a path in the working tree.
    fn shown(&self, rel: &FieldPath) -> FieldPath {
        self.file.original(&self.base.concat(rel))
    }

    fn record(
        &self,
        diag: Option<Diagnostic>,
        drop: FieldPath,
        removed: Option<(Range<usize>, String)>,
    ) {
        self.found.borrow_mut().push(Found {
            diag,
            drop,
            removed,
        });
    }

    /// A key of the table at `table` that its type does not accept.
    fn key_failed(&self, table: &FieldPath, key: &str, c: &mut Caught) {
        let t = value_in(self.work, table);
        let key_span = t
            .and_then(|t| match t.get_ref() {
                DeValue::Table(t) => t.get_key_value(key).map(|(k, _)| k.span()),
                _ => None,
            })
            .unwrap_or(0..0);
        let path = table.join(key);
        let diag = self
            .file
            .diag_at(key_span, self.shown(&path), humanize(&c.message));
        let removed = t.map(|t| (t.span(), key.to_string()));
        self.record(Some(diag), path.clone(), removed);
        c.state = State::Recorded(path);
    }

    /// The value of `table.key` failed: it is removed (a table that lacks a required
    /// field, with the table).
    fn value_failed(&self, table: &FieldPath, key: &str, c: &mut Caught) {
        if c.state != State::New {
            return;
        }
        let path = table.join(key);
        if self.is_tainted(&path) {
            c.state = State::Deferred;
            return;
        }
        let span = self.span_at(&path);
        let diag = self.diag_for(&path, span, &c.message);
        let removed = value_in(self.work, table).map(|t| (t.span(), key.to_string()));
        self.record(diag, path.clone(), removed);
        c.state = State::Recorded(path);
    }

    /// Element `elem` of a list failed: a table that lacks a required field is left
    /// out; anything else removes the whole list (as a value of the wrong type would).
    fn element_failed(&self, elem: &FieldPath, c: &mut Caught) {
        if c.state != State::New {
            return;
        }
        if self.is_tainted(elem) {
            c.state = State::Deferred;
            return;
        }
        let span = self.span_at(elem);
        if missing_field_name(&c.message).is_some() {
            let diag = self.diag_for(elem, span, &c.message);
            self.record(diag, elem.clone(), None);
            c.state = State::Recorded(elem.clone());
            return;
        }
        // The list is the value of the nearest key above the element.
        let Some(k) = elem.0.iter().rposition(|s| matches!(s, Seg::Key(_))) else {
            return;
        };
        let list = FieldPath(elem.0[..=k].to_vec());
        let diag = self
            .file
            .diag_at(span, self.shown(&list), humanize(&c.message));
        let table = FieldPath(elem.0[..k].to_vec());
        let removed = match (&elem.0[k], value_in(self.work, &table)) {
            (Seg::Key(key), Some(t)) => Some((t.span(), key.clone())),
            _ => None,
        };
        self.record(Some(diag), list.clone(), removed);
        c.state = State::Recorded(list);
    }

    /// The diagnostic for a value at `path` (span `span`); for a missing field, unless
    /// we removed that field ourselves.
    fn diag_for(&self, path: &FieldPath, span: Range<usize>, message: &str) -> Option<Diagnostic> {
        match missing_field_name(message) {
            Some(name) => (!self.removed.contains(&(span.clone(), name.clone()))).then(|| {
                self.file.diag_at(
                    span,
                    self.shown(path).join(name.as_str()),
                    humanize(message),
                )
            }),
            None => Some(self.file.diag_at(span, self.shown(path), humanize(message))),
        }
    }
}

fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// Makes serde's messages read as advice.
fn humanize(msg: &str) -> String {
    let msg = msg.trim();
    if let Some(name) = missing_field_name(msg) {
        let hint = match name.as_str() {
            "unit" => ": the unit after scaling, e.g. \"mm/s\", \"g\", \"°C\" (\"1\" for a dimensionless value)",
            "sensor_type" => ": one of temperature, vibration, pressure, humidity, bearing, pump, manufacturing, audio, forecasting, voltage, general",
            "type" => ": the data type, one of u16, i16, u32, i32, u64, i64, f32, f64, bool, string",
            "table" => ": one of holding, input, coil, discrete",
            "address" => ": the first register of the value",
            "channel" => ": the name of a channel from [channels]",
            "id" => ": a unique name (letters, digits, '_', '-', '.')",
            "profile" => ": the name of a hardware profile file (without .toml)",
            _ => " here",
        };
        return format!("missing field `{name}`: it is required{hint}");
    }
    if let Some(name) = unknown_field_name(msg) {
        if DELIVERY_KNOBS.contains(&name) {
            return format!(
                "{msg}; `{name}` is one of an upstream's delivery knobs, which go in its own table: [upstreams.<name>.delivery]"
            );
        }
    }
    msg.replace("invalid type: ", "wrong type: ")
}

/// The fields of `[upstreams.<name>.delivery]`, which once were flat in the section:
/// an old config gets told where they went.
const DELIVERY_KNOBS: &[&str] = &[
    "batch_max_records",
    "batch_max_bytes",
    "drain_rate_per_s",
    "recovery_jitter_ms",
    "backoff_initial_ms",
    "backoff_max_ms",
    "breaker_failures",
    "breaker_open_secs",
    "idle_poll_ms",
];

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

fn value_in_mut<'a, 'i>(
    root: &'a mut Spanned<DeValue<'i>>,
    p: &FieldPath,
) -> Option<&'a mut Spanned<DeValue<'i>>> {
    let mut cur = root;
    for seg in &p.0 {
        cur = match (cur.get_mut(), seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get_mut(k.as_str())?,
            (DeValue::Array(a), Seg::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the keys and array elements at `drops` (paths in the working tree) at
/// once, remembering dropped array elements in the file's path map; false when one
/// is not there.
fn remove_all(
    file: &SourceFile<'_>,
    base: &FieldPath,
    work: &mut Spanned<DeValue<'_>>,
    drops: Vec<FieldPath>,
) -> bool {
    let mut by_parent: BTreeMap<FieldPath, BTreeSet<Seg>> = BTreeMap::new();
    for d in drops {
        let Some((last, parent)) = d.0.split_last() else {
            return false;
        };
        by_parent
            .entry(FieldPath(parent.to_vec()))
            .or_default()
            .insert(last.clone());
    }
    // Deepest and last first, so that the paths still to do stay valid.
    for (parent, segs) in by_parent.into_iter().rev() {
        let Some(v) = value_in_mut(work, &parent) else {
            return false;
        };
        match v.get_mut() {
            DeValue::Table(t) => {
                let mut keys = HashSet::new();
                for s in &segs {
                    match s {
                        Seg::Key(k) if t.contains_key(k.as_str()) => keys.insert(k.as_str()),
                        _ => return false,
                    };
                }
                let old = std::mem::take(t);
                *t = old
                    .into_iter()
                    .filter(|(k, _)| !keys.contains(k.get_ref().as_ref()))
                    .collect();
            }
            DeValue::Array(a) => {
                let len = a.len();
                let mut indexes = BTreeSet::new();
                for s in &segs {
                    match s {
                        Seg::Index(i) if *i < len => indexes.insert(*i),
                        _ => return false,
                    };
                }
                file.remap
                    .borrow_mut()
                    .removed(&base.concat(&parent), &indexes, len);
                let old = std::mem::replace(a, DeArray::new());
                *a = old
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !indexes.contains(i))
                    .map(|(_, v)| v)
                    .collect();
            }
            _ => return false,
        }
    }
    true
}
