//! Hostile config and profile files (issue #13, item 2).
//!
//! The shipped files (`config/edgegw.toml` with `hardware-profiles/*.toml`, and
//! `config/replay/*.toml` with `config/replay/profiles/*.toml`) are copied into a
//! temp dir, one of them is damaged, and `check_all`, `load` and `load_profile` run
//! on the result:
//! - arbitrary bytes as the whole config or profile;
//! - byte-level mutations of a shipped file (flipped bytes, deleted ranges, lines
//!   deleted, duplicated or swapped, TOML tokens and hostile values inserted);
//! - structure-aware mutations: a value anywhere in the parsed document replaced by
//!   a hostile one (huge or negative integers, NaN and infinite floats, empty and
//!   huge strings, wrong types), a key removed, an unknown key added.
//!
//! Properties: no panic; every diagnostic names a file that was checked, a field
//! and a non-empty message, at a line that exists; a file that does not load has at
//! least one error; `load` refuses exactly what `check_all` finds fatal in the
//! config file; an unknown key is always reported; the number of diagnostics stays
//! proportional to the file's size.

#[macro_use]
#[path = "fuzz/support.rs"]
mod support;

use edgegw::config::{check_all, load};
use edgegw::diag::Diagnostic;
use edgegw::profiles::load_profile;
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A shipped file, relative to the repository, with the config that checks it.
struct Shipped {
    rel: String,
    text: Vec<u8>,
    /// The config whose `check_all` reads this file (itself for a config).
    config: &'static str,
    profile: bool,
}

const CONFIGS: &[&str] = &[
    "config/edgegw.toml",
    "config/replay/cwru.toml",
    "config/replay/nab.toml",
    "config/replay/pronostia.toml",
];

fn shipped() -> &'static [Shipped] {
    static S: OnceLock<Vec<Shipped>> = OnceLock::new();
    S.get_or_init(|| {
        let mut out = Vec::new();
        let read = |rel: &str| std::fs::read(support::repo().join(rel)).expect("shipped file");
        for c in CONFIGS {
            out.push(Shipped {
                rel: c.to_string(),
                text: read(c),
                config: c,
                profile: false,
            });
        }
        for (dir, config) in [
            ("hardware-profiles", "config/edgegw.toml"),
            ("config/replay/profiles", "config/replay/cwru.toml"),
        ] {
            let mut files: Vec<_> = std::fs::read_dir(support::repo().join(dir))
                .expect("profile dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for f in files {
                let rel = format!("{dir}/{}", f.file_name().expect("name").to_string_lossy());
                out.push(Shipped {
                    text: read(&rel),
                    rel,
                    config,
                    profile: true,
                });
            }
        }
        assert!(out.len() >= 10, "shipped files: {}", out.len());
        out
    })
}

/// A copy of every shipped file under a fresh temp dir, with `rel` replaced by
/// `text`. Returns the dir (kept alive by the caller).
fn tree(rel: &str, text: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for s in shipped() {
        let path = dir.path().join(&s.rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let body = if s.rel == rel { text } else { &s.text[..] };
        std::fs::write(&path, body).expect("write");
    }
    dir
}

/// Well-formed diagnostics: a file in the checked tree, a field, a message, a line
/// that exists.
fn check_diags(diags: &[Diagnostic], root: &Path) {
    let mut lines_of: std::collections::HashMap<PathBuf, Option<usize>> = Default::default();
    for d in diags {
        let shown = d.to_string();
        assert!(
            d.file.starts_with(root) || d.file.is_relative(),
            "diagnostic outside the checked tree: {shown}"
        );
        assert!(!d.file.as_os_str().is_empty(), "no file: {shown}");
        // Finding 6 (docs/fuzzing.md, fixed): an empty or blank key (`"" = 1`, `= 1`
        // repaired by the parser, a key holding only a CR) is named quoted, never as
        // a blank field (`gateway.`).
        assert!(
            !d.field.trim().is_empty()
                && !d.field.ends_with('.')
                && !d.field.contains("..")
                && !d.field.contains(['\r', '\n']),
            "no field: {shown:?}"
        );
        assert!(!d.message.trim().is_empty(), "no message: {shown}");
        assert!(
            d.message.len() < 64 * 1024,
            "{}-byte message",
            d.message.len()
        );
        if d.line > 0 {
            assert!(d.column > 0, "line without column: {shown}");
            let lines = *lines_of.entry(d.file.clone()).or_insert_with(|| {
                std::fs::read(&d.file)
                    .ok()
                    .map(|t| t.split(|b| *b == b'\n').count())
            });
            if let Some(lines) = lines {
                assert!(d.line <= lines + 1, "line {} of {lines}: {shown}", d.line);
            }
        }
    }
}

/// At most this many diagnostics for `bytes` of input: each comes from something in
/// the file, or from a missing required field.
fn diag_budget(bytes: usize) -> usize {
    64 + bytes / 2
}

/// Runs every loader on the tree after `rel` was replaced; returns the
/// diagnostics that `check_all` reported for `rel`.
fn check_tree(rel: &str, text: &[u8]) -> Vec<Diagnostic> {
    let dir = tree(rel, text);
    let root = dir.path().to_path_buf();
    let s = shipped()
        .iter()
        .find(|s| s.rel == rel)
        .expect("a shipped file");
    let config = root.join(s.config);
    let report = check_all(&config);
    check_diags(&report.diags, &root);
    assert!(
        report.diags.len() <= diag_budget(text.len() + 64 * 1024),
        "{} diagnostics",
        report.diags.len()
    );
    assert!(report.files.contains(&config), "{:?}", report.files);
    // `load` refuses what is fatal in the config itself, and says why.
    let fatal_in_config = report
        .diags
        .iter()
        .any(|d| d.is_error() && d.file == config);
    match load(&config) {
        Ok(loaded) => {
            assert!(
                !fatal_in_config,
                "check_all found errors in {} that load accepted",
                s.config
            );
            check_diags(&loaded.diags, &root);
            for d in &loaded.runnable {
                assert!(
                    loaded.profiles.contains_key(&profile_name(&d.profile)),
                    "{} runs without its profile",
                    d.id
                );
            }
        }
        Err(diags) => {
            assert!(
                diags.iter().any(Diagnostic::is_error),
                "load refused without an error: {diags:#?}"
            );
            check_diags(&diags, &root);
            assert!(
                fatal_in_config,
                "load refused {} but check_all found no error in it: {diags:#?}",
                s.config
            );
        }
    }
    let path = root.join(rel);
    if s.profile {
        let mut diags = Vec::new();
        let loaded = load_profile(&path, &mut diags);
        check_diags(&diags, &root);
        assert!(diags.iter().all(|d| d.file == path), "{diags:#?}");
        assert!(
            diags.len() <= diag_budget(text.len()),
            "{} diagnostics",
            diags.len()
        );
        if loaded.is_none() {
            assert!(
                diags.iter().any(Diagnostic::is_error),
                "not loaded, no error"
            );
        }
    }
    // Profiles are reached through `profile_dir` (`config/../hardware-profiles`).
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let path = canonical(&path);
    report
        .diags
        .into_iter()
        .filter(|d| canonical(&d.file) == path)
        .collect()
}

/// The profile name a device's `profile` resolves to (the file stem).
fn profile_name(reference: &str) -> String {
    Path::new(reference)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Mutations.

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[devices]]",
    "[gateway]",
    "[modbus]",
    "[[modbus.registers]]",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "#",
    "{",
    "}",
    ",",
    ".",
    "-1",
    "0",
    "1e999",
    "nan",
    "-inf",
    "99999999999999999999",
    "-9223372036854775809",
    "true",
    "\"\"",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "1979-05-27T07:32:00Z",
    "id = \"x\"",
    "\u{feff}",
    "ü",
    "\u{0}",
    "x = 1",
    "a.b.c = 2",
    "[[x]]",
    "[a.\"\"]",
    "= =",
    "\\",
];

/// Hostile values as TOML text, for replacing what follows a `=`.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "65536",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "-0.0",
    "5e-324",
    "\"\"",
    "\"../../../etc/passwd\"",
    "\"\\u0000\"",
    "\"+\"",
    "\"#\"",
    "true",
    "[]",
    "{}",
    "[1, \"a\"]",
    "{ x = 1 }",
    "\"9999-12-31T23:59:59Z\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte(Index, u8),
    DeleteRange(Index, usize),
    InsertToken(Index, &'static str),
    InsertBytes(Index, Vec<u8>),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    ReplaceValue(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::FlipByte(i, x)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::DeleteRange(i, n)),
        (any::<Index>(), proptest::sample::select(TOKENS))
            .prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<Index>(), proptest::sample::select(VALUES))
            .prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
    ]
}

fn apply(text: &[u8], m: &Mutation) -> Vec<u8> {
    let mut t = text.to_vec();
    let lines =
        |t: &[u8]| -> Vec<Vec<u8>> { t.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect() };
    match m {
        Mutation::FlipByte(i, x) if !t.is_empty() => {
            let i = i.index(t.len());
            t[i] ^= x;
        }
        Mutation::DeleteRange(i, n) if !t.is_empty() => {
            let i = i.index(t.len());
            let end = (i + n).min(t.len());
            t.drain(i..end);
        }
        Mutation::InsertToken(i, tok) => {
            let i = i.index(t.len() + 1);
            t.splice(i..i, tok.bytes());
        }
        Mutation::InsertBytes(i, b) => {
            let i = i.index(t.len() + 1);
            t.splice(i..i, b.iter().copied());
        }
        Mutation::DeleteLine(i) => {
            let mut l = lines(&t);
            let i = i.index(l.len());
            l.remove(i);
            t = l.join(&b'\n');
        }
        Mutation::DuplicateLine(i) => {
            let mut l = lines(&t);
            let i = i.index(l.len());
            let line = l[i].clone();
            l.insert(i, line);
            t = l.join(&b'\n');
        }
        Mutation::SwapLines(a, b) => {
            let mut l = lines(&t);
            let (a, b) = (a.index(l.len()), b.index(l.len()));
            l.swap(a, b);
            t = l.join(&b'\n');
        }
        Mutation::ReplaceValue(i, v) => {
            // The value of the i-th `key = value` line.
            let mut l = lines(&t);
            let assignments: Vec<usize> = (0..l.len())
                .filter(|&k| {
                    let s = String::from_utf8_lossy(&l[k]);
                    let s = s.trim_start();
                    !s.starts_with('#') && !s.starts_with('[') && s.contains('=')
                })
                .collect();
            if !assignments.is_empty() {
                let k = assignments[i.index(assignments.len())];
                let eq = l[k].iter().position(|b| *b == b'=').unwrap_or(0);
                l[k].truncate(eq + 1);
                l[k].extend_from_slice(b" ");
                l[k].extend_from_slice(v.as_bytes());
                t = l.join(&b'\n');
            }
        }
        _ => {}
    }
    t
}

// Structure-aware: the parsed document.

fn hostile_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value as V;
    prop_oneof![
        proptest::sample::select(
            &[0i64, -1, 1, 65535, 65536, 4_294_967_296, i64::MAX, i64::MIN][..]
        )
        .prop_map(V::Integer),
        proptest::sample::select(
            &[
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e308,
                -0.0,
                5e-324,
                0.5
            ][..]
        )
        .prop_map(V::Float),
        proptest::sample::select(
            &["", "x", "+", "#", "a/+/#", "\u{0}", "../..", "ü", "-", "NaN"][..]
        )
        .prop_map(|s| V::String(s.into())),
        (1usize..10_000).prop_map(|n| V::String("y".repeat(n))),
        any::<bool>().prop_map(V::Boolean),
        Just(V::Array(Vec::new())),
        Just(V::Array(vec![V::Integer(1), V::String("a".into())])),
        Just(V::Table(toml::Table::new())),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, toml::Value),
    Remove(Index),
    AddUnknown(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), hostile_value()).prop_map(|(i, v)| Edit::Replace(i, v)),
        2 => any::<Index>().prop_map(Edit::Remove),
        1 => any::<Index>().prop_map(Edit::AddUnknown),
    ]
}

/// A step into a TOML document.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

/// Paths to every value (tables and arrays included).
fn paths(v: &toml::Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                prefix.push(Step::Key(k.clone()));
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                prefix.push(Step::At(i));
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut toml::Value, path: &[Step]) -> Option<&'a mut toml::Value> {
    path.iter().try_fold(v, |v, s| match (s, v) {
        (Step::Key(k), toml::Value::Table(t)) => t.get_mut(k),
        (Step::At(i), toml::Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

const UNKNOWN_KEY: &str = "fuzz_unknown_key";

/// Applies `e`; the second value is the path of the table that got an unknown key.
fn edit_doc(doc: &mut toml::Value, e: &Edit) -> Option<Vec<Step>> {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return None;
    }
    match e {
        Edit::Replace(i, v) => {
            let p = &all[i.index(all.len())];
            if let Some(slot) = at(doc, p) {
                *slot = v.clone();
            }
            None
        }
        Edit::Remove(i) => {
            let p = &all[i.index(all.len())];
            let (last, parent) = p.split_last()?;
            match (at(doc, parent)?, last) {
                (toml::Value::Table(t), Step::Key(k)) => {
                    t.remove(k);
                }
                (toml::Value::Array(a), Step::At(i)) => {
                    a.remove(*i);
                }
                _ => {}
            }
            None
        }
        Edit::AddUnknown(i) => {
            let root = Vec::new();
            let tables: Vec<&Vec<Step>> = std::iter::once(&root)
                .chain(all.iter())
                .filter(|p| {
                    let mut d = doc.clone();
                    matches!(at(&mut d, p), Some(toml::Value::Table(_)))
                })
                .collect();
            let p = tables[i.index(tables.len())].clone();
            if let Some(toml::Value::Table(t)) = at(doc, &p) {
                t.insert(UNKNOWN_KEY.into(), toml::Value::Integer(7));
            }
            Some(p)
        }
    }
}

proptest! {
    #![proptest_config(support::config(500, regressions!("fuzz_config")))]

    /// Arbitrary bytes (and text, and token soup) as a config or a profile.
    #[test]
    fn arbitrary_files(
        which in any::<Index>(),
        text in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2000),
            "\\PC{0,400}".prop_map(String::into_bytes),
            prop::collection::vec(proptest::sample::select(TOKENS), 0..80).prop_map(|t| t.concat().into_bytes()),
        ],
    ) {
        let s = &shipped()[which.index(shipped().len())];
        check_tree(&s.rel, &text);
    }

    /// A shipped file with a few byte-, line- and token-level mutations.
    #[test]
    fn mutated_shipped_files(
        which in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let s = &shipped()[which.index(shipped().len())];
        let text = mutations.iter().fold(s.text.clone(), |t, m| apply(&t, m));
        check_tree(&s.rel, &text);
    }

    /// A shipped file parsed, a value replaced by a hostile one (or a key removed, or
    /// an unknown key added), written back.
    #[test]
    fn structure_mutated_shipped_files(
        which in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let s = &shipped()[which.index(shipped().len())];
        let text = String::from_utf8(s.text.clone()).expect("UTF-8");
        let mut doc = toml::Value::Table(toml::from_str(&text).expect("shipped file parses"));
        let mut unknown = Vec::new();
        for e in &edits {
            if let Some(p) = edit_doc(&mut doc, e) {
                unknown.push(p);
            }
        }
        // Only documents TOML can write (a value after a table in an array of
        // tables can make that impossible).
        let Ok(out) = toml::to_string(&doc) else { return Ok(()) };
        let diags = check_tree(&s.rel, out.as_bytes());
        // An unknown key that is still in the document is reported.
        if unknown.iter().any(|p| {
            let mut d = doc.clone();
            matches!(at(&mut d, p), Some(toml::Value::Table(t)) if t.contains_key(UNKNOWN_KEY))
        }) {
            prop_assert!(
                diags.iter().any(|d| d.is_error() || d.message.contains(UNKNOWN_KEY)),
                "unknown key {} at {:?} not reported in {}: {:#?}\n{}",
                UNKNOWN_KEY, unknown, s.rel, diags, out
            );
        }
    }
}

/// Files kept because they once broke something, or are edge cases worth keeping:
/// each runs through every loader as a config and as a profile.
#[test]
fn seeds_from_tests_fuzz_config() {
    let dir = support::fuzz_dir().join("seeds/config");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fuzz/seeds/config")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty());
    for seed in seeds {
        let text = std::fs::read(&seed).expect("seed");
        check_tree("config/edgegw.toml", &text);
        check_tree("hardware-profiles/acme-vt420.toml", &text);
    }
}
