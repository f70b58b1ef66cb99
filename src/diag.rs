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

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

mod repair;

pub use repair::deserialize_all;

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

#[cfg(test)]
mod tests;
