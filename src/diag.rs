//! Diagnostics for people: every problem in a config or profile file becomes one
//! line `file:line:column: field: what is wrong and what would be valid`.
//!
//! The trick that lets us report ALL problems at once, not just the first serde error:
//! files are parsed with `toml`'s span-keeping parser ([`DeTable::parse_recoverable`]),
//! and each section is deserialized on its own with [`deserialize_all`], which on an
//! error records it, removes the offending key from its copy of the tree and tries
//! again. Semantic checks (overlapping registers, duplicate ids, ...) run on the typed
//! result and find their location through [`SourceFile::span_of`].

use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue, ValueDeserializer};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
                    f.write_str(k)?;
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
/// The span-keeping tree borrows the text, so it is re-parsed on demand with
/// [`SourceFile::tree`]; config and profile files are small and parsed rarely.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
    /// Array elements that [`deserialize_all`] had to drop, so that paths in the
    /// repaired value can be mapped back to the file.
    remap: std::cell::RefCell<PathRemap>,
}

/// Maps paths in a repaired value (some array elements dropped) to the original.
#[derive(Debug, Default, Clone)]
struct PathRemap {
    /// (original path of an array, original indexes of its surviving elements)
    arrays: Vec<(FieldPath, Vec<usize>)>,
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
                        .iter()
                        .find(|(a, _)| *a == out)
                        .and_then(|(_, m)| m.get(*i).copied())
                        .unwrap_or(*i);
                    out.0.push(Seg::Index(orig));
                }
            }
        }
        out
    }

    fn removed(&mut self, array: &FieldPath, index: usize, len_before: usize) {
        let orig = self.to_original(array);
        let pos = match self.arrays.iter().position(|(a, _)| *a == orig) {
            Some(p) => p,
            None => {
                self.arrays.push((orig, (0..len_before).collect()));
                self.arrays.len() - 1
            }
        };
        let map = &mut self.arrays[pos].1;
        if index < map.len() {
            map.remove(index);
        }
    }
}

impl SourceFile {
    /// Parses `text`; syntax errors go to `diags` and the best-effort tree stays
    /// usable, so that the rest of the file can still be checked.
    pub fn parse(path: &Path, text: String, diags: &mut Vec<Diagnostic>) -> SourceFile {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let file = SourceFile {
            path: path.to_path_buf(),
            text,
            line_starts,
            remap: Default::default(),
        };
        let (_, errors) = DeTable::parse_recoverable(&file.text);
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            diags.push(file.diag_at(span, "-", syntax_message(e.message())));
        }
        file
    }

    /// Reads and parses a file; an unreadable file becomes a diagnostic.
    pub fn read(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<SourceFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(SourceFile::parse(path, text, diags)),
            Err(e) => {
                diags.push(Diagnostic::file_error(
                    path,
                    format!("cannot read the file: {e}"),
                ));
                None
            }
        }
    }

    /// The span-keeping tree (best effort when the file has syntax errors).
    pub fn tree(&self) -> Spanned<DeTable<'_>> {
        DeTable::parse_recoverable(&self.text).0
    }

    /// The whole document as one spanned table value.
    pub fn root_value(&self) -> Spanned<DeValue<'_>> {
        let t = self.tree();
        let span = t.span();
        Spanned::new(span, DeValue::Table(t.into_inner()))
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
        let root = self.root_value();
        let mut best = None;
        let mut cur = &root;
        for seg in &path.0 {
            let next = match (cur.get_ref(), seg) {
                (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str()),
                (DeValue::Array(a), Seg::Index(ix)) => a.get(*ix),
                _ => None,
            };
            match next {
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
    pub fn value_at(&self, path: &FieldPath) -> Option<Spanned<DeValue<'_>>> {
        let mut cur = self.root_value();
        for seg in &path.0 {
            let next = match (cur.get_ref(), seg) {
                (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str()).cloned(),
                (DeValue::Array(a), Seg::Index(ix)) => a.get(*ix).cloned(),
                _ => None,
            };
            cur = next?;
        }
        Some(cur)
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
/// How: deserialize; on an error, report it, then remove what it was about from a
/// working copy of the tree (the offending key; for a missing field, the table that
/// lacks it) and try again, until the copy deserializes. Spans are those of the
/// original text throughout, so every message keeps its true line, and field paths
/// are looked up in the untouched original (array indexes do not shift).
pub fn deserialize_all<T: DeserializeOwned>(
    file: &SourceFile,
    path: &FieldPath,
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let original = value.clone();
    let mut work = value;
    // Fields we removed ourselves, by (span of their table, name): a later
    // "missing field" about one of them is a consequence, not a new problem.
    let mut removed: Vec<(Range<usize>, String)> = Vec::new();
    for _ in 0..256 {
        let err = match T::deserialize(ValueDeserializer::from(work.clone())) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let span = err.span().unwrap_or_else(|| work.span());
        let message = humanize(err.message());
        if let Some(name) = missing_field_name(err.message()) {
            let table_work = locate_table(&work, &span).unwrap_or_default();
            let table_orig = locate_table(&original, &span).unwrap_or_default();
            if !removed.contains(&(span.clone(), name.clone())) {
                let mut f = path.clone();
                f.0.extend(table_orig.0);
                diags.push(file.diag_at(span.clone(), f.join(name.as_str()), message));
            }
            if table_work.0.is_empty() {
                return None;
            }
            if let Some(Seg::Key(k)) = table_work.0.last() {
                let parent = FieldPath(table_work.0[..table_work.0.len() - 1].to_vec());
                if let Some(p) = value_in(&work, &parent) {
                    removed.push((p.span(), k.clone()));
                }
            }
            if !drop_at(file, path, &mut work, &table_work) {
                return None;
            }
            continue;
        }
        match locate_key(&work, &span) {
            Some((rel, key_span, table_span)) => {
                let shown = locate_key(&original, &span).map_or(rel.clone(), |x| x.0);
                let mut f = path.clone();
                f.0.extend(shown.0);
                let at = if message.starts_with("unknown field") {
                    key_span
                } else {
                    span.clone()
                };
                diags.push(file.diag_at(at, &f, message));
                if let Some(Seg::Key(k)) = rel.0.last() {
                    removed.push((table_span, k.clone()));
                }
                if !drop_at(file, path, &mut work, &rel) {
                    return None;
                }
            }
            None => {
                let mut f = path.clone();
                f.0.extend(locate_table(&original, &span).unwrap_or_default().0);
                diags.push(file.diag_at(span, &f, message));
                return None;
            }
        }
    }
    None
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
    msg.replace("invalid type: ", "wrong type: ")
}

/// Finds the deepest key that the error at `span` is about (the key itself, or its
/// value). Returns its path relative to `root`, its key span and the span of the
/// table holding it.
///
/// Parent spans cannot be trusted for containment (an implicit table created by a
/// dotted header `[channels.rms]` has no span of its own), so every key is visited.
fn locate_key(
    root: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
) -> Option<(FieldPath, Range<usize>, Range<usize>)> {
    type Best = Option<(usize, FieldPath, Range<usize>, Range<usize>)>;
    fn visit(v: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &FieldPath, best: &mut Best) {
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, val) in t.iter() {
                    let ks = k.span();
                    let vs = val.span();
                    let child = path.join(k.get_ref().as_ref());
                    let in_key = ks.start <= span.start && span.start < ks.end.max(ks.start + 1);
                    let scalar = !matches!(val.get_ref(), DeValue::Table(_));
                    let in_val = vs == *span
                        || (scalar
                            && vs.start <= span.start
                            && span.end <= vs.end
                            && vs.end > vs.start);
                    if in_key || in_val {
                        let depth = child.0.len();
                        if best.as_ref().is_none_or(|b| depth >= b.0) {
                            *best = Some((depth, child.clone(), ks.clone(), v.span()));
                        }
                    }
                    visit(val, span, &child, best);
                }
            }
            DeValue::Array(a) => {
                for (i, el) in a.iter().enumerate() {
                    visit(el, span, &path.join(i), best);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    visit(root, span, &FieldPath::root(), &mut best);
    best.map(|(_, p, ks, ts)| (p, ks, ts))
}

/// Path of the deepest table whose span is exactly `span` (where serde reports a
/// missing field); `None` when no table matches.
fn locate_table(root: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<FieldPath> {
    fn visit(
        v: &Spanned<DeValue<'_>>,
        span: &Range<usize>,
        path: &FieldPath,
        best: &mut Option<FieldPath>,
    ) {
        if matches!(v.get_ref(), DeValue::Table(_)) && v.span() == *span {
            if best.as_ref().is_none_or(|b| path.0.len() >= b.0.len()) {
                *best = Some(path.clone());
            }
        }
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, val) in t.iter() {
                    visit(val, span, &path.join(k.get_ref().as_ref()), best);
                }
            }
            DeValue::Array(a) => {
                for (i, el) in a.iter().enumerate() {
                    visit(el, span, &path.join(i), best);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    visit(root, span, &FieldPath::root(), &mut best);
    best
}

/// Removes what is at `rel` from the working tree, remembering dropped array
/// elements in the file's path map.
fn drop_at(
    file: &SourceFile,
    base: &FieldPath,
    work: &mut Spanned<DeValue<'_>>,
    rel: &FieldPath,
) -> bool {
    if let Some((Seg::Index(i), parent)) = rel.0.split_last() {
        let parent = FieldPath(parent.to_vec());
        let len = value_in(work, &parent).map_or(0, |v| match v.get_ref() {
            DeValue::Array(a) => a.len(),
            _ => 0,
        });
        let mut full = base.clone();
        full.0.extend(parent.0.iter().cloned());
        file.remap.borrow_mut().removed(&full, *i, len);
    }
    remove_path(work.get_mut(), &rel.0)
}

fn value_in<'a, 'i>(
    root: &'a Spanned<DeValue<'i>>,
    p: &FieldPath,
) -> Option<&'a Spanned<DeValue<'i>>> {
    let mut cur = root;
    for seg in &p.0 {
        cur = match (cur.get_ref(), seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str())?,
            (DeValue::Array(a), Seg::Index(i)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the key or array element at `segs`; false when it is not there.
fn remove_path(v: &mut DeValue<'_>, segs: &[Seg]) -> bool {
    match (v, segs) {
        (DeValue::Table(t), [Seg::Key(k)]) => t.remove(k.as_str()).is_some(),
        (DeValue::Array(a), [Seg::Index(i)]) if *i < a.len() => {
            // DeArray can only push: rebuild it without the element.
            let mut rest = toml::de::DeArray::new();
            for (j, el) in a.iter().enumerate() {
                if j != *i {
                    rest.push(el.clone());
                }
            }
            *a = rest;
            true
        }
        (DeValue::Table(t), [Seg::Key(k), rest @ ..]) => t
            .get_mut(k.as_str())
            .is_some_and(|c| remove_path(c.get_mut(), rest)),
        (DeValue::Array(a), [Seg::Index(i), rest @ ..]) => a
            .get_mut(*i)
            .is_some_and(|c| remove_path(c.get_mut(), rest)),
        _ => false,
    }
}
