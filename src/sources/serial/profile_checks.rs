//! Checks of a profile's `[serial]` format: framing, the line parser and its
//! fields, and the channels they feed. Called by [`crate::profiles::validate_profile`].

use super::profile::{SerialFormat, SerialParser};
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use crate::profiles::{channel_ref, Profile};

pub(crate) fn serial(
    file: &SourceFile,
    p: &Profile,
    s: &SerialFormat,
    diags: &mut Vec<Diagnostic>,
) {
    let base = FieldPath::root().join("serial");
    let f = &s.frame;
    match (&f.terminator, &f.start, &f.end) {
        (Some(t), None, None) if !t.is_empty() => {}
        (Some(_), None, None) => diags.push(file.diag(
            &base.join("frame").join("terminator"),
            "must not be empty, e.g. \"\\r\\n\"".to_string(),
        )),
        // An end marker that begins with the start marker (`\0` … `\0\0`) makes
        // frames depend on where the port's reads split the stream.
        (None, Some(a), Some(b)) if b.len() > a.len() && b.starts_with(a.as_str()) => diags.push(
            file.diag(
                &base.join("frame").join("end"),
                format!("{b:?} begins with the start marker {a:?}: a frame's end could read as a new start; choose markers where neither begins the other"),
            ),
        ),
        (None, Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {}
        (None, Some(_), None) | (None, None, Some(_)) => diags.push(file.diag(
            &base.join("frame"),
            "`start` and `end` markers go together; set both".to_string(),
        )),
        _ => diags.push(file.diag(
            &base.join("frame"),
            "set either `terminator` (line-oriented) or both `start` and `end` markers".to_string(),
        )),
    }
    if f.max_length < 4 || f.max_length > 65536 {
        diags.push(file.diag(
            &base.join("frame").join("max_length"),
            "must be between 4 and 65536 bytes".to_string(),
        ));
    }
    let regex = match (s.parser, &s.regex) {
        (SerialParser::Regex, None) => {
            diags.push(file.diag(&base, "parser = \"regex\" needs `regex`, a regular expression with named captures such as (?P<temp>-?\\d+\\.\\d+)".to_string()));
            None
        }
        (SerialParser::Regex, Some(r)) => match regex::Regex::new(r) {
            Ok(re) => Some(re),
            Err(e) => {
                diags.push(file.diag(
                    &base.join("regex"),
                    format!(
                        "does not compile: {}",
                        e.to_string().lines().last().unwrap_or("invalid")
                    ),
                ));
                None
            }
        },
        (SerialParser::Delimited, Some(_)) => {
            diags.push(
                file.diag(
                    &base.join("regex"),
                    "is only used with parser = \"regex\"; remove it or change the parser"
                        .to_string(),
                )
                .warning(),
            );
            None
        }
        (SerialParser::Delimited, None) => None,
    };
    if let Some(cmd) = &s.poll_command {
        match crate::sources::serial::unescape_command(cmd) {
            Ok(bytes) if bytes.is_empty() => diags.push(file.diag(
                &base.join("poll_command"),
                "must not be empty; remove it for a free-running sensor".to_string(),
            )),
            Ok(_) => {}
            Err(e) => diags.push(file.diag(&base.join("poll_command"), e)),
        }
    }
    if s.parser == SerialParser::Delimited && s.delimiter.is_empty() {
        diags.push(file.diag(&base.join("delimiter"), "must not be empty".to_string()));
    }
    if s.fields.is_empty() {
        diags.push(file.diag(
            &base,
            "needs at least one [[serial.fields]] entry".to_string(),
        ));
    }
    for (i, fld) in s.fields.iter().enumerate() {
        let path = base.join("fields").join(i);
        channel_ref(file, p, &path, &fld.channel, diags);
        match s.parser {
            SerialParser::Delimited => {
                if fld.index.is_none() {
                    diags.push(
                        file.diag(
                            &path,
                            "parser = \"delimited\" needs `index`, the 0-based field position"
                                .to_string(),
                        ),
                    );
                }
                if fld.capture.is_some() {
                    diags.push(file.diag(
                        &path.join("capture"),
                        "is for parser = \"regex\"; use `index` here".to_string(),
                    ));
                }
            }
            SerialParser::Regex => match (&fld.capture, &regex) {
                (None, _) => diags.push(file.diag(
                    &path,
                    "parser = \"regex\" needs `capture`, the name of a capture group".to_string(),
                )),
                (Some(c), Some(re)) if !re.capture_names().flatten().any(|n| n == c) => {
                    let names: Vec<&str> = re.capture_names().flatten().collect();
                    diags.push(file.diag(
                        &path.join("capture"),
                        format!(
                            "the regex has no capture named {c:?}; it has: {}",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    ));
                }
                _ => {}
            },
        }
        if !fld.scale.is_finite() || fld.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
    }
}
