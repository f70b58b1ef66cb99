//! Notification templates: text with `{{field}}` placeholders, nothing else (no
//! logic, no loops). Unknown fields and unclosed placeholders are config errors,
//! found by `check` before anything runs.

/// The fields a template may use.
pub const FIELDS: &[&str] = &[
    "gateway",
    "site",
    "device",
    "group",
    "location",
    "channel",
    "sensor_id",
    "event",
    "severity",
    "anomaly_type",
    "description",
    "confidence",
    "ts",
    "episode",
    "key",
    "actions",
];

/// How a value is put into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it is (email, plain text, topics).
    None,
    /// Escaped for the inside of a JSON string (`"text": "{{description}}"`).
    JsonString,
}

/// The placeholders of `t`, or why it is not a template.
fn parse(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("`{{{{` without `}}}}` near {:?}", clip(&rest[open..])))?;
        let name = after[..close].trim();
        if !FIELDS.contains(&name) {
            return Err(format!(
                "unknown field {{{{{name}}}}}; the fields are {}",
                FIELDS.join(", ")
            ));
        }
        out.push(Piece::Field(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
}

fn clip(s: &str) -> String {
    s.chars().take(24).collect()
}

/// Whether `t` is a valid template.
pub fn check(t: &str) -> Result<(), String> {
    parse(t).map(|_| ())
}

/// Fills `t` with `value(field)`. A template that does not parse (it was checked at
/// load, so this cannot happen) comes out as it is.
pub fn render(t: &str, value: impl Fn(&str) -> String, escape: Escape) -> String {
    let Ok(pieces) = parse(t) else {
        return t.to_string();
    };
    let mut out = String::with_capacity(t.len() + 64);
    for p in pieces {
        match p {
            Piece::Text(s) => out.push_str(s),
            Piece::Field(f) => {
                let v = value(f);
                match escape {
                    Escape::None => out.push_str(&v),
                    Escape::JsonString => {
                        let quoted = serde_json::Value::String(v).to_string();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_fields_and_escapes_for_json() {
        let v = |f: &str| match f {
            "device" => "press-1".to_string(),
            "description" => "said \"hot\"\nnow".to_string(),
            _ => String::new(),
        };
        assert_eq!(
            render("{{device}}: {{ description }}", v, Escape::None),
            "press-1: said \"hot\"\nnow"
        );
        let json = render(
            r#"{"d":"{{device}}","t":"{{description}}"}"#,
            v,
            Escape::JsonString,
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["t"], "said \"hot\"\nnow");
    }

    #[test]
    fn unknown_fields_and_open_braces_are_refused_with_the_valid_names() {
        let e = check("{{devise}}").unwrap_err();
        assert!(
            e.contains("unknown field {{devise}}") && e.contains("device"),
            "{e}"
        );
        assert!(check("x {{device").unwrap_err().contains("without"));
        assert!(check("no placeholders { } at all").is_ok());
    }
}
