//! Tests of the diagnostics: every problem reported once, in the file's order, located in the file.

use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;

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
