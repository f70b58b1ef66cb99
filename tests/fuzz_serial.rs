//! Hostile input for serial framing and parsing (issue #13, item 2).
//!
//! - `Framer` (terminator and start/end-marker framing, every `max_length` from 1 to
//!   65536) gets random byte streams, in random chunks as the port returns them:
//!   noise, NUL runs, endless lines without a terminator, markers cut in half,
//!   megabyte-long lines. Properties: no panic; the frames do not depend on how the
//!   stream was chunked; no frame is longer than `max_length` or holds a terminator;
//!   a dropped run keeps at most a short head for the log; and the framer's memory
//!   stays bounded by `max_length` plus the chunk size, however long the stream.
//! - `LineParser` (the shipped NMEA and regex profiles, plus delimited ones) gets
//!   random frames and well-formed sentences with hostile fields: no panic; a parsed
//!   frame has one finite value per field; an error has a kind and a message.
//! - `unescape_command` (profile `poll_command`) on random text.

#[macro_use]
#[path = "fuzz/support.rs"]
mod support;

use edgegw::profiles::{load_profile, LoadedProfile, SerialFrame};
use edgegw::sources::serial::{nmea_xor, unescape_command, FrameEvent, Framer, LineParser};
use edgegw::sources::ChannelId;
use proptest::prelude::*;
use std::sync::OnceLock;

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

/// What the framer may keep of a dropped run for the log line.
const KEEP_FOR_LOG: usize = 96;

#[derive(Debug, Clone)]
enum Spec {
    Terminator(&'static str),
    Markers(&'static str, &'static str),
}

impl Spec {
    fn frame(&self, max_length: usize) -> SerialFrame {
        let s = |t: &str| toml::Value::String(t.into()).to_string();
        let text = match self {
            Spec::Terminator(t) => format!("terminator = {}\nmax_length = {max_length}", s(t)),
            Spec::Markers(a, b) => format!(
                "start = {}\nend = {}\nmax_length = {max_length}",
                s(a),
                s(b)
            ),
        };
        toml::from_str(&text).expect("frame spec")
    }

    fn tokens(&self) -> Vec<&'static str> {
        match self {
            Spec::Terminator(t) => vec![t],
            Spec::Markers(a, b) => vec![a, b],
        }
    }

    /// An end marker that begins with the start marker (`\0` ... `\0\0`): the first
    /// byte of a split end marker reads as a new start, so frames depend on where the
    /// port's reads split the stream (finding 3 in docs/fuzzing.md).
    fn ambiguous(&self) -> bool {
        matches!(self, Spec::Markers(a, b) if b.len() > a.len() && b.starts_with(a))
    }

    fn marker_len(&self) -> usize {
        self.tokens().iter().map(|t| t.len()).sum()
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        proptest::sample::select(&["\r\n", "\n", "\r", "END", "\u{3}", "\r\n\r\n", "aa", "\0"][..])
            .prop_map(Spec::Terminator),
        proptest::sample::select(
            &[
                ("\u{2}", "\u{3}"),
                ("<", ">"),
                ("$", "\r\n"),
                ("<<", ">>"),
                ("ab", "ba"),
                ("|", "|"),
                ("aa", "a"),
                ("\0", "\0\0"),
            ][..]
        )
        .prop_map(|(a, b)| Spec::Markers(a, b)),
    ]
}

fn max_length() -> impl Strategy<Value = usize> {
    prop_oneof![
        proptest::sample::select(&[1usize, 4, 16, 96, 256, 4096, 65536][..]),
        1usize..300,
    ]
}

/// A byte stream built from pieces: noise, the spec's own tokens (whole and cut),
/// NULs, plausible lines, and long runs without any terminator.
fn stream(spec: Spec) -> impl Strategy<Value = Vec<u8>> {
    let tokens = spec.tokens();
    let token = proptest::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec());
    let piece = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        4 => token.clone(),
        1 => token.prop_map(|t| t[..t.len() / 2].to_vec()),
        1 => (1usize..300).prop_map(|n| vec![0u8; n]),
        2 => "[ -~]{0,80}".prop_map(String::into_bytes),
        1 => proptest::sample::select(&[" ", "\r\n", "\t"][..]).prop_map(|s| s.as_bytes().to_vec()),
        1 => (1usize..100_000, any::<u8>()).prop_map(|(n, b)| vec![if b < 32 { b'x' } else { b }; n]),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|p| p.concat())
}

/// Port reads are at most 1 KiB (`sources::serial` reads into a 1024-byte buffer);
/// chunk sizes up to twice that.
const MAX_CHUNK: usize = 2048;

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1usize..8, 1usize..=MAX_CHUNK, Just(1024usize)],
        1..16,
    )
}

/// Heap bytes owned by a list of events.
#[allow(clippy::ptr_arg)] // the capacity counts
fn heap_of(events: &Vec<FrameEvent>) -> isize {
    let inner: usize = events
        .iter()
        .map(|e| match e {
            FrameEvent::Frame(b) => b.capacity(),
            FrameEvent::Dropped { bytes, .. } => bytes.capacity(),
        })
        .sum();
    (events.capacity() * std::mem::size_of::<FrameEvent>() + inner) as isize
}

struct Run {
    frames: Vec<Vec<u8>>,
    /// Most bytes the framer held between two pushes.
    max_kept: isize,
    /// Most bytes allocated during one push (the framer's growth and the events).
    max_peak: usize,
}

/// Feeds `data` in chunks of the given sizes (cycled); checks every event.
fn run(spec: &Spec, max: usize, data: &[u8], sizes: &[usize]) -> Run {
    let frame_spec = spec.frame(max);
    let mut framer = Framer::new(&frame_spec);
    let mut frames = Vec::new();
    let mut kept: isize = 0;
    let mut max_kept = 0;
    let mut max_peak = 0;
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let (out, peak, delta) = support::measure(|| {
            let mut out = Vec::new();
            framer.push(chunk, &mut out);
            out
        });
        kept += delta - heap_of(&out);
        max_kept = max_kept.max(kept);
        max_peak = max_peak.max(peak);
        for e in out {
            check_event(spec, max, &e);
            if let FrameEvent::Frame(f) = e {
                frames.push(f);
            }
        }
    }
    if let Some(e) = framer.reset() {
        check_event(spec, max, &e);
        assert!(
            matches!(e, FrameEvent::Dropped { .. }),
            "reset gave a frame"
        );
    }
    Run {
        frames,
        max_kept,
        max_peak,
    }
}

fn check_event(spec: &Spec, max: usize, e: &FrameEvent) {
    match e {
        FrameEvent::Frame(f) => {
            assert!(
                f.len() <= max.max(1),
                "{}-byte frame, max_length {max}",
                f.len()
            );
            if let Spec::Terminator(t) = spec {
                assert!(
                    !f.windows(t.len()).any(|w| w == t.as_bytes()),
                    "frame holds the terminator {t:?}: {f:?}"
                );
            }
            if let Spec::Markers(start, _) = spec {
                assert!(
                    !f.windows(start.len()).any(|w| w == start.as_bytes()),
                    "frame holds the start marker {start:?}: {f:?}"
                );
            }
        }
        FrameEvent::Dropped { kind, bytes, len } => {
            assert!(
                ["overlong", "garbage", "partial"].contains(kind),
                "dropped kind {kind:?}"
            );
            assert!(
                bytes.len() <= KEEP_FOR_LOG,
                "{} bytes kept for the log",
                bytes.len()
            );
            // Finding 4 (docs/fuzzing.md, fixed): the log head is never longer than
            // the run, nor holds bytes kept back as a possible terminator start.
            assert!(
                bytes.len() <= *len,
                "{} bytes kept of {len}: {bytes:?}",
                bytes.len()
            );
            assert!(*len > 0 || *kind == "partial", "empty {kind} run");
        }
    }
}

/// The framer's memory: what may be buffered (`max_length` plus the markers, plus one
/// chunk), the log head of a skipped run, with room for vector growth.
fn memory_bound(spec: &Spec, max: usize, chunk: usize) -> isize {
    (2 * (max + spec.marker_len() + chunk) + 2 * KEEP_FOR_LOG + 256) as isize
}

proptest! {
    #![proptest_config(support::config(150, regressions!("fuzz_serial")))]

    /// Frames do not depend on chunking; every event is well-formed; memory stays
    /// bounded by max_length and the chunk size, however long the stream.
    #[test]
    fn framer_survives_hostile_streams(
        (spec, data) in spec().prop_flat_map(|s| (Just(s.clone()), stream(s))),
        max in max_length(),
        sizes in chunks(),
    ) {
        // The reference reads like the port (1 KiB at a time). Not one push of the
        // whole stream: with markers, one push costs O(n²) in its own length (every
        // start marker searches the rest for an end), harmless at port-sized reads.
        let whole = run(&spec, max, &data, &[1024]);
        let chunked = run(&spec, max, &data, &sizes);
        if !spec.ambiguous() {
            prop_assert_eq!(&whole.frames, &chunked.frames, "frames depend on chunking");
        }
        let total: usize = chunked.frames.iter().map(Vec::len).sum();
        prop_assert!(total <= data.len());
        let largest = sizes.iter().copied().max().unwrap_or(1).min(data.len().max(1));
        let bound = memory_bound(&spec, max, largest);
        prop_assert!(
            chunked.max_kept <= bound,
            "the framer kept {} bytes (bound {}) for max_length {} and {}-byte chunks of a {}-byte stream",
            chunked.max_kept, bound, max, largest, data.len()
        );
        // One push: the framer's growth plus the events it returns (a frame per
        // terminator at most, ~100 bytes each with its vector).
        let peak_bound = 2 * bound as usize + 128 * (largest + max + 8);
        prop_assert!(chunked.max_peak <= peak_bound, "{} bytes in one push", chunked.max_peak);
    }
}

#[test]
fn an_endless_line_keeps_memory_bounded() {
    // 64 MiB without a terminator, in port-sized reads, then one short frame.
    let spec = Spec::Terminator("\r\n");
    let mut framer = Framer::new(&spec.frame(256));
    let chunk = vec![b'7'; 1024];
    let mut kept: isize = 0;
    let mut dropped = Vec::new();
    for _ in 0..64 * 1024 {
        let (out, _, delta) = support::measure(|| {
            let mut out = Vec::new();
            framer.push(&chunk, &mut out);
            out
        });
        kept += delta - heap_of(&out);
        assert!(out.is_empty(), "{out:?}");
        assert!(kept <= memory_bound(&spec, 256, 1024), "{kept} bytes kept");
    }
    framer.push(b"\r\n1,2\r\n", &mut dropped);
    match &dropped[..] {
        [FrameEvent::Dropped {
            kind: "overlong",
            bytes,
            len,
        }, FrameEvent::Frame(f)] => {
            assert_eq!(*len, 64 * 1024 * 1024);
            assert_eq!(bytes.len(), KEEP_FOR_LOG);
            assert_eq!(f, b"1,2");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// LineParser.

const CHANNELS: &str = r#"
vendor = "Fuzz"
model = "S-1"
[channels.a]
sensor_type = "vibration"
unit = "mm/s"
[channels.b]
sensor_type = "temperature"
unit = "°C"
"#;

const SYNTHETIC: &[(&str, &str)] = &[
    (
        "semicolon",
        "[serial]\nframe = { terminator = \"\\n\" }\nparser = \"delimited\"\ndelimiter = \";\"\n\
         [[serial.fields]]\nchannel = \"a\"\nindex = 0\nscale = 1e300\n\
         [[serial.fields]]\nchannel = \"b\"\nindex = 5\noffset = -1.5\n",
    ),
    (
        "multi-delimiter-nmea",
        "[serial]\nframe = { start = \"\\u0002\", end = \"\\u0003\", max_length = 4 }\nchecksum = \"nmea_xor\"\n\
         parser = \"delimited\"\ndelimiter = \"<>\"\n\
         [[serial.fields]]\nchannel = \"a\"\nindex = 1\n",
    ),
    (
        "regex-optional",
        "[serial]\nframe = { terminator = \"\\r\" }\nparser = \"regex\"\n\
         regex = '(?:A=(?P<a>\\S*))?\\s*(?:B=(?P<b>[^,]*))?'\n\
         [[serial.fields]]\nchannel = \"a\"\ncapture = \"a\"\n\
         [[serial.fields]]\nchannel = \"b\"\ncapture = \"b\"\n",
    ),
];

const SHIPPED: &[&str] = &[
    "hardware-profiles/sensotec-vm10.toml",
    "hardware-profiles/humitec-ht2.toml",
];

fn serial_profiles() -> &'static [LoadedProfile] {
    static P: OnceLock<Vec<LoadedProfile>> = OnceLock::new();
    P.get_or_init(|| {
        // The files are only read here: the decoders use the parsed profiles.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut paths: Vec<_> = SHIPPED.iter().map(|p| support::repo().join(p)).collect();
        for (name, serial) in SYNTHETIC {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, format!("{CHANNELS}{serial}")).expect("write profile");
            paths.push(path);
        }
        paths
            .iter()
            .map(|path| {
                let mut diags = Vec::new();
                let p = load_profile(path, &mut diags);
                let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
                assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
                p.unwrap_or_else(|| panic!("{} did not load", path.display()))
            })
            .collect()
    })
}

fn parser(p: &LoadedProfile) -> LineParser {
    let fmt = p.profile.serial.as_ref().expect("[serial]");
    LineParser::new(fmt, |c| {
        p.profile
            .channels
            .get(c)
            .map(|ch| ChannelId::new("dev", c, ch.sensor_type, &ch.unit))
    })
    .unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1.5",
    " 7 ",
    "",
    "-",
    "1e308",
    "1e309",
    "-1e400",
    "NaN",
    "inf",
    "-infinity",
    "0x10",
    "1_000",
    "１",
    "1e-400",
    "123456789012345678901234567890",
    "+3",
    ".5",
    "5.",
];

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NUMBERS).prop_map(str::to_string),
        1 => any::<f64>().prop_map(|x| x.to_string()),
        1 => "\\PC{0,8}",
    ]
}

/// Frames shaped like the profiles' lines: NMEA sentences with a right (or wrong)
/// checksum, regex lines, delimited lines; plus noise.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let fields = || prop::collection::vec(field(), 0..8);
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..200),
        3 => (fields(), proptest::sample::select(&[",", ";", "<>"][..]), any::<bool>(), any::<u8>())
            .prop_map(|(f, d, right, noise)| {
                let data = f.join(d);
                let sum = if right { nmea_xor(data.as_bytes()) } else { noise };
                format!("${data}*{sum:02X}\r").into_bytes()
            }),
        2 => (field(), field()).prop_map(|(t, rh)| format!("T= {t}'C RH= {rh}").into_bytes()),
        2 => (field(), field()).prop_map(|(a, b)| format!("A={a} B={b}").into_bytes()),
        2 => (fields(), proptest::sample::select(&[",", ";", "<>"][..])).prop_map(|(f, d)| f.join(d).into_bytes()),
        1 => (1usize..5000).prop_map(|n| format!("{}1", ";".repeat(n)).into_bytes()),
    ]
}

fn check_parse(p: &LoadedProfile, lp: &LineParser, frame: &[u8]) {
    let fmt = p.profile.serial.as_ref().expect("serial");
    let (res, peak, _) = support::measure(|| lp.parse(frame));
    let budget = 64 * frame.len() + 64 * 1024;
    assert!(
        peak <= budget,
        "{peak} bytes to parse a {}-byte frame",
        frame.len()
    );
    match res {
        Ok(values) => {
            assert_eq!(values.len(), fmt.fields.len(), "{}: {frame:?}", p.name);
            for ((id, v), f) in values.iter().zip(&fmt.fields) {
                assert_eq!(id.channel.as_ref(), f.channel, "{}", p.name);
                assert!(
                    v.is_finite(),
                    "{}: {} = {v} from {frame:?}",
                    p.name,
                    f.channel
                );
            }
        }
        Err(e) => {
            assert!(["checksum", "parse"].contains(&e.kind()), "{e:?}");
            let text = e.to_string();
            assert!(text.len() > "cannot parse: ".len(), "{e:?}");
            assert!(
                text.len() <= 3 * frame.len() + 300,
                "{}-byte message",
                text.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(support::config(1500, regressions!("fuzz_serial_parse")))]

    /// Every parser on random and well-formed-but-hostile frames.
    #[test]
    fn line_parsers_survive_hostile_frames(frames in prop::collection::vec(frame(), 1..8)) {
        for p in serial_profiles() {
            let lp = parser(p);
            for f in &frames {
                check_parse(p, &lp, f);
            }
        }
    }

    /// The whole serial path: a hostile stream through each profile's own framer,
    /// every frame through its parser.
    #[test]
    fn framer_and_parser_together(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        lines in prop::collection::vec(frame(), 0..10),
        sizes in chunks(),
    ) {
        for p in serial_profiles() {
            let fmt = p.profile.serial.as_ref().expect("serial");
            let lp = parser(p);
            let mut framer = Framer::new(&fmt.frame);
            let term = fmt.frame.terminator.clone().unwrap_or_default();
            let mut stream = data.clone();
            for l in &lines {
                if let Some(s) = &fmt.frame.start {
                    stream.extend_from_slice(s.as_bytes());
                }
                stream.extend_from_slice(l);
                stream.extend_from_slice(term.as_bytes());
                if let Some(e) = &fmt.frame.end {
                    stream.extend_from_slice(e.as_bytes());
                }
            }
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].clamp(1, rest.len());
                i += 1;
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let mut out = Vec::new();
                framer.push(chunk, &mut out);
                for e in out {
                    if let FrameEvent::Frame(f) = e {
                        prop_assert!(f.len() <= fmt.frame.max_length);
                        check_parse(p, &lp, &f);
                    }
                }
            }
        }
    }

    /// `poll_command` escapes: never more bytes than characters' UTF-8, errors say
    /// which escape is wrong.
    #[test]
    fn poll_command_escapes(s in "(\\PC|\\\\[rntx\\\\q0-9a-fA-F]|\\\\x[0-9a-fA-FgG ]{0,2}){0,40}") {
        match unescape_command(&s) {
            Ok(b) => prop_assert!(b.len() <= s.len()),
            Err(e) => prop_assert!(e.contains('\\') && e.len() > 10, "{}", e),
        }
    }
}
