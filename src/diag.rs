//! Diagnostics for people: every problem in a config or profile file becomes one
//! line `file:line:column: field: what is wrong and what would be valid`.
//!
//! The trick that lets us report ALL problems at once, not just the first serde error:
//! files are parsed once with `toml`'s span-keeping parser ([`DeTable::parse_recoverable`])
//! and deserialized with [`deserialize_all`], which watches serde walk the tree: a key
//! that is not allowed is reported and skipped, a list element or map entry that fails
//! is reported and left out, and what was wrong is removed from a copy of the tree
//! before the next attempt. Semantic checks (overlapping registers, duplicate ids, ...)
//! run on the typed result and find their location through [`SourceFile::span_of`].

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, Visitor};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// One problem, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the field (`modbus.registers[2].type`), or `-` for the file.
    pub field: String,
    pub message: String,
    pub severity: Severity,
}

/// Errors make `check` fail and keep a device from starting; warnings only inform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// A problem with a file as a whole (unreadable, missing).
    pub fn file_error(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: "-".into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// The same diagnostic as a warning.
    pub fn warning(mut self) -> Diagnostic {
        self.severity = Severity::Warning;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.line == 0 {
            write!(
                f,
                "{}: {}: {}{}",
                self.file.display(),
                self.field,
                level,
                self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}{}",
                self.file.display(),
                self.line,
                self.column,
                self.field,
                level,
                self.message
            )
        }
    }
}

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// A field path such as `modbus.registers[2].type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path with one more segment.
    pub fn join(&self, seg: impl Into<Seg>) -> FieldPath {
        let mut v = self.0.clone();
        v.push(seg.into());
        FieldPath(v)
    }

    /// This path followed by `rel`.
    fn concat(&self, rel: &FieldPath) -> FieldPath {
        let mut v = self.0.clone();
        v.extend(rel.0.iter().cloned());
        FieldPath(v)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    // As TOML would write it: a key that is not bare is quoted, so an
                    // empty or blank key is still visible (`""`, `"\r"`).
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// A TOML file that remembers where everything came from.
///
/// It borrows its text (see [`SourceFile::read_text`]) and keeps the span-keeping tree,
/// parsed once: every diagnostic looks its field up in it, so locating thousands of
/// problems costs no more than reading the file.
pub struct SourceFile<'t> {
    pub path: PathBuf,
    pub text: &'t str,
    line_starts: Vec<usize>,
    /// The whole document (best effort when it has syntax errors) as a table value.
    tree: Spanned<DeValue<'t>>,
    /// Array elements that [`deserialize_all`] had to drop, so that paths in the
    /// repaired value can be mapped back to the file.
    remap: RefCell<PathRemap>,
}

/// Maps paths in a repaired value (some array elements dropped) to the original.
#[derive(Debug, Default, Clone)]
struct PathRemap {
    /// Original path of an array -> original indexes of its surviving elements.
    arrays: HashMap<FieldPath, Vec<usize>>,
}

impl PathRemap {
    fn to_original(&self, p: &FieldPath) -> FieldPath {
        let mut out = FieldPath::root();
        for seg in &p.0 {
            match seg {
                Seg::Key(k) => out.0.push(Seg::Key(k.clone())),
                Seg::Index(i) => {
                    let orig = self
                        .arrays
                        .get(&out)
                        .and_then(|m| m.get(*i).copied())
                        .unwrap_or(*i);
                    out.0.push(Seg::Index(orig));
                }
            }
        }
        out
    }

    /// Elements `removed` (indexes in the repaired value) of the array at `array`
    /// (a path in the repaired value, `len_before` elements long) were dropped.
    fn removed(&mut self, array: &FieldPath, removed: &BTreeSet<usize>, len_before: usize) {
        let orig = self.to_original(array);
        let map = self
            .arrays
            .entry(orig)
            .or_insert_with(|| (0..len_before).collect());
        let mut i = 0;
        map.retain(|_| {
            let keep = !removed.contains(&i);
            i += 1;
            keep
        });
    }
}

impl<'t> SourceFile<'t> {
    /// Reads a config or profile file. An unreadable file becomes a diagnostic and
    /// `None`; a file that is not UTF-8 becomes a diagnostic at its first invalid byte,
    /// and its text (invalid bytes replaced) is still returned, so that the rest of
    /// the file can be checked too.
    pub fn read_text(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                diags.push(Diagnostic::file_error(
                    path,
                    format!("cannot read the file: {e}"),
                ));
                return None;
            }
        };
        match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                // Everything before `at` is valid, so its lines and characters are
                // those of the file.
                let before = String::from_utf8_lossy(&bytes[..at]);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                diags.push(Diagnostic {
                    file: path.to_path_buf(),
                    line,
                    column,
                    field: "-".into(),
                    message: format!(
                        "byte 0x{:02X} is not UTF-8: save the file as UTF-8 (e.g. the `°` sign written in Latin-1)",
                        bytes[at]
                    ),
                    severity: Severity::Error,
                });
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// Parses `text`; syntax errors go to `diags` and the best-effort tree stays
    /// usable, so that the rest of the file can still be checked.
    pub fn parse(path: &Path, text: &'t str, diags: &mut Vec<Diagnostic>) -> SourceFile<'t> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let (table, errors) = DeTable::parse_recoverable(text);
        let span = table.span();
        let file = SourceFile {
            path: path.to_path_buf(),
            text,
            line_starts,
            tree: Spanned::new(span, DeValue::Table(table.into_inner())),
            remap: Default::default(),
        };
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            diags.push(file.diag_at(span, "-", syntax_message(e.message())));
        }
        file
    }

    /// The span-keeping tree (best effort when the file has syntax errors).
    pub fn tree(&self) -> Spanned<DeTable<'t>> {
        let table = match self.tree.get_ref() {
            DeValue::Table(t) => t.clone(),
            _ => DeTable::new(),
        };
        Spanned::new(self.tree.span(), table)
    }

    /// The whole document as one spanned table value.
    pub fn root_value(&self) -> Spanned<DeValue<'t>> {
        self.tree.clone()
    }

    /// 1-based (line, column) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts[line];
        let end = offset.min(self.text.len());
        let col = self
            .text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        (line + 1, col)
    }

    pub fn diag_at(
        &self,
        span: Range<usize>,
        field: impl fmt::Display,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            file: self.path.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A diagnostic at a field path; when the field itself is absent, at the nearest
    /// table that holds it.
    ///
    /// `path` is a path in the value [`deserialize_all`] returned; it is mapped back
    /// to the file when array elements had to be dropped.
    pub fn diag(&self, path: &FieldPath, message: impl Into<String>) -> Diagnostic {
        let path = self.remap.borrow().to_original(path);
        let span = self.span_of(&path).unwrap_or(0..0);
        self.diag_at(span, &path, message)
    }

    /// Span of the value at `path`, or of its nearest existing ancestor.
    pub fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let mut best = None;
        let mut cur = &self.tree;
        for seg in &path.0 {
            match child(cur, seg) {
                Some(v) => {
                    best = Some(v.span());
                    cur = v;
                }
                None => break,
            }
        }
        best
    }

    /// The path in the file of a path in a repaired value (see [`SourceFile::diag`]),
    /// for messages that mention another field.
    pub fn original(&self, path: &FieldPath) -> FieldPath {
        self.remap.borrow().to_original(path)
    }

    /// The spanned value at `path`, if present.
    pub fn value_at(&self, path: &FieldPath) -> Option<Spanned<DeValue<'t>>> {
        value_in(&self.tree, path).cloned()
    }
}

fn syntax_message(msg: &str) -> String {
    format!(
        "not valid TOML: {}",
        msg.trim().lines().next().unwrap_or("syntax error")
    )
}

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

// ---------------------------------------------------------------------------
// Watching serde: a deserializer, visitor, seed and accessors that forward to
// `toml`'s and keep the path of every value, so that a failure is known where it
// happens. Every error serde's side creates is a `Caught`.

/// Wraps one of `toml`'s deserializers.
struct Watch<'a, D> {
    de: D,
    pass: &'a Pass<'a>,
    path: FieldPath,
    /// Deserializing a key: record the string.
    key: bool,
}

struct WatchVisitor<'a, V> {
    v: V,
    pass: &'a Pass<'a>,
    path: FieldPath,
    key: bool,
}

struct WatchSeed<'a, S> {
    seed: S,
    pass: &'a Pass<'a>,
    path: FieldPath,
    key: bool,
}

struct WatchSeq<'a, A> {
    seq: A,
    pass: &'a Pass<'a>,
    path: FieldPath,
    index: usize,
}

struct WatchMap<'a, A> {
    map: A,
    pass: &'a Pass<'a>,
    path: FieldPath,
    key: Option<String>,
}

struct WatchEnum<'a, A> {
    data: A,
    pass: &'a Pass<'a>,
    path: FieldPath,
}

impl<'a, D> Watch<'a, D> {
    fn split<V>(self, v: V) -> (D, WatchVisitor<'a, V>, &'a Pass<'a>) {
        let pass = self.pass;
        let visitor = WatchVisitor {
            v,
            pass,
            path: self.path,
            key: self.key,
        };
        (self.de, visitor, pass)
    }
}

macro_rules! watch_deserialize {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $name<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Caught> {
            let (de, visitor, pass) = self.split(visitor);
            de.$name($($arg,)* visitor).map_err(|e| pass.inbound(e))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Watch<'_, D> {
    type Error = Caught;

    watch_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Caught> {
        if name.starts_with("$__serde_spanned_private") || name.starts_with("$__toml_private") {
            // `toml::Spanned<T>` or a datetime: its map is `toml`'s own protocol, not
            // the file's.
            let pass = self.pass;
            return self
                .de
                .deserialize_struct(name, fields, visitor)
                .map_err(|e| pass.inbound(e));
        }
        let (de, visitor, pass) = self.split(visitor);
        de.deserialize_struct(name, fields, visitor)
            .map_err(|e| pass.inbound(e))
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

macro_rules! watch_visit {
    ($($name:ident($ty:ty);)*) => {$(
        fn $name<E: de::Error>(self, x: $ty) -> Result<Self::Value, E> {
            let pass = self.pass;
            self.v.$name::<Caught>(x).map_err(|c| pass.outbound(c))
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for WatchVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    watch_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        self.note(s);
        let pass = self.pass;
        self.v.visit_str::<Caught>(s).map_err(|c| pass.outbound(c))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        self.note(s);
        let pass = self.pass;
        self.v
            .visit_borrowed_str::<Caught>(s)
            .map_err(|c| pass.outbound(c))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        self.note(&s);
        let pass = self.pass;
        self.v
            .visit_string::<Caught>(s)
            .map_err(|c| pass.outbound(c))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        let pass = self.pass;
        self.v.visit_none::<Caught>().map_err(|c| pass.outbound(c))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        let pass = self.pass;
        self.v.visit_unit::<Caught>().map_err(|c| pass.outbound(c))
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let pass = self.pass;
        let de = Watch {
            de,
            pass,
            path: self.path,
            key: self.key,
        };
        self.v.visit_some(de).map_err(|c| pass.outbound(c))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let pass = self.pass;
        let de = Watch {
            de,
            pass,
            path: self.path,
            key: self.key,
        };
        self.v
            .visit_newtype_struct(de)
            .map_err(|c| pass.outbound(c))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let pass = self.pass;
        let seq = WatchSeq {
            seq,
            pass,
            path: self.path,
            index: 0,
        };
        self.v.visit_seq(seq).map_err(|c| pass.outbound(c))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let pass = self.pass;
        let map = WatchMap {
            map,
            pass,
            path: self.path,
            key: None,
        };
        self.v.visit_map(map).map_err(|c| pass.outbound(c))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let pass = self.pass;
        let data = WatchEnum {
            data,
            pass,
            path: self.path,
        };
        self.v.visit_enum(data).map_err(|c| pass.outbound(c))
    }
}

impl<V> WatchVisitor<'_, V> {
    fn note(&self, s: &str) {
        if self.key {
            *self.pass.key.borrow_mut() = Some(s.to_string());
        }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for WatchSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        let pass = self.pass;
        let de = Watch {
            de,
            pass,
            path: self.path,
            key: self.key,
        };
        self.seed.deserialize(de).map_err(|c| pass.outbound(c))
    }
}

impl<'de, A: de::SeqAccess<'de>> WatchSeq<'_, A> {
    /// The next element, its path and, on failure, the error (recorded).
    fn next<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> (FieldPath, Result<Option<S::Value>, Caught>) {
        let path = self.path.join(self.index);
        self.index += 1;
        let seed = WatchSeed {
            seed,
            pass: self.pass,
            path: path.clone(),
            key: false,
        };
        let r = self.seq.next_element_seed(seed).map_err(|e| {
            let mut c = self.pass.inbound(e);
            self.pass.element_failed(&path, &mut c);
            c
        });
        (path, r)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for WatchSeq<'_, A> {
    type Error = Caught;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Caught> {
        self.next(seed).1
    }

    /// A failed element is left out and the list goes on (`Vec<T>` asks this way).
    fn next_element<T: de::Deserialize<'de>>(&mut self) -> Result<Option<T>, Caught> {
        loop {
            match self.next(PhantomData::<T>) {
                (path, Err(c)) if self.pass.skip(&self.path, &path, &c) => continue,
                (_, r) => return r,
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> WatchMap<'_, A> {
    /// The next key; on failure, the error and the key as far as it was read.
    fn next<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, (Caught, Option<String>)> {
        self.pass.key.borrow_mut().take();
        let seed = WatchSeed {
            seed,
            pass: self.pass,
            path: self.path.clone(),
            key: true,
        };
        let r = self.map.next_key_seed(seed);
        self.key = self.pass.key.borrow_mut().take();
        r.map_err(|e| (self.pass.inbound(e), self.key.clone()))
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for WatchMap<'_, A> {
    type Error = Caught;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Caught> {
        self.next(seed).map_err(|(mut c, key)| {
            if let Some(key) = key {
                self.pass.key_failed(&self.path, &key, &mut c);
            }
            c
        })
    }

    /// A key that is not accepted (an unknown field) is reported and skipped, with
    /// its value; the table goes on (structs ask this way).
    fn next_key<K: de::Deserialize<'de>>(&mut self) -> Result<Option<K>, Caught> {
        loop {
            match self.next(PhantomData::<K>) {
                Ok(k) => return Ok(k),
                Err((mut c, Some(key))) => {
                    self.pass.key_failed(&self.path, &key, &mut c);
                    self.map
                        .next_value::<IgnoredAny>()
                        .map_err(|e| self.pass.inbound(e))?;
                }
                Err((c, None)) => return Err(c),
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Caught> {
        let key = self.key.clone().unwrap_or_default();
        let seed = WatchSeed {
            seed,
            pass: self.pass,
            path: self.path.join(key.as_str()),
            key: false,
        };
        self.map.next_value_seed(seed).map_err(|e| {
            let mut c = self.pass.inbound(e);
            self.pass.value_failed(&self.path, &key, &mut c);
            c
        })
    }

    /// A failed entry is left out and the map goes on (maps ask this way).
    fn next_entry<K, V>(&mut self) -> Result<Option<(K, V)>, Caught>
    where
        K: de::Deserialize<'de>,
        V: de::Deserialize<'de>,
    {
        loop {
            let Some(k) = self.next_key::<K>()? else {
                return Ok(None);
            };
            match self.next_value::<V>() {
                Ok(v) => return Ok(Some((k, v))),
                Err(c) => {
                    let entry = self
                        .path
                        .join(self.key.clone().unwrap_or_default().as_str());
                    if !self.pass.skip(&self.path, &entry, &c) {
                        return Err(c);
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for WatchEnum<'a, A> {
    type Error = Caught;
    type Variant = WatchEnum<'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Caught> {
        let pass = self.pass;
        let seed = WatchSeed {
            seed,
            pass,
            path: self.path.clone(),
            key: false,
        };
        let (v, variant) = self.data.variant_seed(seed).map_err(|e| pass.inbound(e))?;
        let variant = WatchEnum {
            data: variant,
            pass,
            path: self.path,
        };
        Ok((v, variant))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for WatchEnum<'_, A> {
    type Error = Caught;

    fn unit_variant(self) -> Result<(), Caught> {
        let pass = self.pass;
        self.data.unit_variant().map_err(|e| pass.inbound(e))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Caught> {
        let pass = self.pass;
        let seed = WatchSeed {
            seed,
            pass,
            path: self.path,
            key: false,
        };
        self.data
            .newtype_variant_seed(seed)
            .map_err(|e| pass.inbound(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Caught> {
        let pass = self.pass;
        let visitor = WatchVisitor {
            v: visitor,
            pass,
            path: self.path,
            key: false,
        };
        self.data
            .tuple_variant(len, visitor)
            .map_err(|e| pass.inbound(e))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Caught> {
        let pass = self.pass;
        let visitor = WatchVisitor {
            v: visitor,
            pass,
            path: self.path,
            key: false,
        };
        self.data
            .struct_variant(fields, visitor)
            .map_err(|e| pass.inbound(e))
    }
}

// ---------------------------------------------------------------------------

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
    msg.replace("invalid type: ", "wrong type: ")
}

/// The child of a table or array at `seg`.
fn child<'a, 'i>(v: &'a Spanned<DeValue<'i>>, seg: &Seg) -> Option<&'a Spanned<DeValue<'i>>> {
    match (v.get_ref(), seg) {
        (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str()),
        (DeValue::Array(a), Seg::Index(i)) => a.get(*i),
        _ => None,
    }
}

fn value_in<'a, 'i>(
    root: &'a Spanned<DeValue<'i>>,
    p: &FieldPath,
) -> Option<&'a Spanned<DeValue<'i>>> {
    let mut cur = root;
    for seg in &p.0 {
        cur = child(cur, seg)?;
    }
    Some(cur)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        a: u16,
        b: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        map: BTreeMap<String, Item>,
        #[serde(default)]
        list: Vec<u16>,
    }

    fn check(text: &str) -> (Option<Doc>, Vec<String>, SourceFile<'_>) {
        let mut diags = Vec::new();
        let file = SourceFile::parse(Path::new("t.toml"), text, &mut diags);
        let doc = deserialize_all(&file, &FieldPath::root(), file.root_value(), &mut diags);
        let shown = diags
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.field))
            .collect();
        (doc, shown, file)
    }

    #[test]
    fn every_problem_once_in_the_order_of_the_file() {
        let text = "list = [1, \"a\", \"b\"]\n\
                    [[items]]\na = 1\nbogus = 2\n\
                    [[items]]\na = \"x\"\nb = 5\n\
                    [[items]]\nb = \"no a\"\n\
                    [[items]]\na = 4\n\
                    [map.x]\nb = \"no a\"\n\
                    [map.y]\na = 6\n";
        let (doc, diags, file) = check(text);
        assert_eq!(
            diags,
            [
                "1:12 list",
                "1:17 list",
                "4:1 items[0].bogus",
                "6:5 items[1].a",
                "7:5 items[1].b",
                "8:1 items[2].a",
                "12:1 map.x.a",
            ]
        );
        let doc = doc.unwrap();
        assert_eq!(doc.items, [Item { a: 1, b: None }, Item { a: 4, b: None }]);
        assert_eq!(doc.map.keys().collect::<Vec<_>>(), ["y"]);
        assert!(doc.list.is_empty());
        // Paths in the repaired value still name the file's entries.
        let second = FieldPath::root().join("items").join(1);
        assert_eq!(file.original(&second).to_string(), "items[3]");
        assert_eq!(file.diag(&second.join("a"), "x").line, 11);
    }

    #[test]
    fn thousands_of_problems_in_a_few_attempts() {
        let mut text = String::new();
        for i in 0..3000 {
            text += &format!("[[items]]\na = {i}\nbogus = 1\n[[items]]\nb = \"{i}\"\n");
            text += &format!("[map.m{i}]\na = \"x\"\n");
        }
        let (doc, diags, file) = check(&text);
        assert_eq!(diags.len(), 9000);
        let doc = doc.unwrap();
        assert_eq!(doc.items.len(), 3000);
        assert!(doc.map.is_empty());
        let last = FieldPath::root().join("items").join(2999);
        assert_eq!(file.original(&last).to_string(), "items[5998]");
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, b"a = 1\nunit = \"\xc3\xa4 \xb0C\"\n").unwrap();
        let mut diags = Vec::new();
        let text = SourceFile::read_text(&path, &mut diags).unwrap();
        assert_eq!(diags.len(), 1, "{diags:?}");
        // Columns count characters: `ä` is one.
        assert_eq!((diags[0].line, diags[0].column), (2, 11), "{}", diags[0]);
        assert!(diags[0].message.starts_with("byte 0xB0 is not UTF-8"));
        assert_eq!(text, "a = 1\nunit = \"ä \u{fffd}C\"\n");
    }
}
