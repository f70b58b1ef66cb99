//! `edgegw baseline status | reset`: what each channel learned during commissioning,
//! read from the outbox database (where the daemon keeps baselines), and starting a
//! new learning period after maintenance.
//!
//! `reset` works with the daemon running or stopped: it clears the stored baseline of
//! every channel the selector names, and leaves a request in the state table that a
//! running daemon applies to its in-memory state within a few seconds
//! ([`crate::pipeline::Processor::apply_reset_requests`]). Reads never write.

use crate::outbox::{Outbox, OutboxError};
use crate::pipeline::alerts::fmt_num;
use crate::pipeline::processor::{human_duration_us, selects, RESET_REQUESTS_KEY};
use crate::pipeline::relative::{load_state, rows_key, BaselineState};
use crate::record::format_rfc3339;
use std::fmt::Write as _;
use std::path::Path;

const PREFIX: &str = "baseline/v2/";

/// One stored baseline.
struct Stored {
    sensor: String,
    /// "window" | "scalar".
    kind: String,
    /// The whole state, a learning one with the samples of its chunks.
    state: Option<BaselineState>,
    /// Chunks of learning samples stored under their own keys.
    chunks: usize,
}

fn stored(o: &Outbox) -> Result<Vec<Stored>, OutboxError> {
    let mut out = Vec::new();
    for key in o.state_keys(PREFIX)? {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((kind, sensor)) = rest.split_once('/') else {
            continue;
        };
        let (state, chunks) = match o.get_state(&key)? {
            Some(main) => {
                let mut get = |k: &str| o.get_state(k).ok().flatten();
                match load_state(&key, &main, &mut get) {
                    Ok(Some((s, n))) => (Some(s), n),
                    Ok(None) => (None, 0),
                    // Incomplete chunks: shown as not learning (the daemon learns again).
                    Err(_) => (None, 0),
                }
            }
            None => (None, 0),
        };
        out.push(Stored {
            sensor: sensor.to_string(),
            kind: kind.to_string(),
            state,
            chunks,
        });
    }
    Ok(out)
}

/// Text for `edgegw baseline status`: every channel's learning progress or learned
/// baseline. `now_us` dates the progress of learning channels (their own latest
/// sample is what the daemon goes by; the wall clock is a fair estimate here).
pub fn status_text(path: &Path, now_us: i64) -> Result<String, OutboxError> {
    let o = Outbox::open_read_only(path)?;
    let mut out = String::new();
    let all = stored(&o)?;
    if all.is_empty() {
        let _ = writeln!(
            out,
            "no baselines stored in {} yet (a channel starts learning at its first clean window or reading)",
            path.display()
        );
    }
    for Stored {
        sensor,
        kind,
        state,
        ..
    } in all
    {
        match state {
            None => {
                let _ = writeln!(
                    out,
                    "{sensor} ({kind}): reset, learning starts at its next clean data"
                );
            }
            Some(BaselineState::Learning(c)) => {
                let elapsed = (now_us - c.started_us).max(0);
                let period = if c.duration_us > 0 {
                    format!(
                        "{} of {}",
                        human_duration_us(elapsed.min(c.duration_us)),
                        human_duration_us(c.duration_us)
                    )
                } else {
                    format!("the first {} clean windows or readings", c.target)
                };
                let _ = writeln!(
                    out,
                    "{sensor} ({kind}): LEARNING since {}, {} samples (at least {} needed), {period}, about {:.0} % done",
                    format_rfc3339(c.started_us),
                    c.rows.len(),
                    c.min_samples,
                    100.0 * c.progress(now_us)
                );
            }
            Some(BaselineState::Learned(b)) => {
                let _ = writeln!(
                    out,
                    "{sensor} ({kind}): learned {} from {} samples taken since {}; held fixed",
                    format_rfc3339(b.learned_us),
                    b.samples,
                    format_rfc3339(b.started_us)
                );
                let parts: Vec<String> = b
                    .features
                    .iter()
                    .enumerate()
                    .filter_map(|(j, n)| {
                        let typical = b.typical(j)?;
                        let spread = match b.transforms[j] {
                            crate::pipeline::baseline::Transform::Log => {
                                format!("x/÷{}", fmt_num(b.scale[j].exp()))
                            }
                            crate::pipeline::baseline::Transform::Linear => {
                                format!("±{}", fmt_num(b.scale[j]))
                            }
                        };
                        Some(format!("{n} {} ({spread})", fmt_num(typical)))
                    })
                    .collect();
                let _ = writeln!(out, "    typical: {}", parts.join(", "));
            }
        }
    }
    Ok(out)
}

/// `edgegw baseline reset SELECTOR`: clears the stored baselines the selector names
/// (`DEVICE` or `DEVICE.CHANNEL`) and asks a running daemon to do the same. Returns
/// the text to print.
pub fn reset(path: &Path, selector: &str) -> Result<String, OutboxError> {
    let mut o = Outbox::open_existing(path)?;
    reset_in(&mut o, selector)
}

/// [`reset`] on an open outbox (the status page's reset, inside the daemon).
pub fn reset_in(o: &mut Outbox, selector: &str) -> Result<String, OutboxError> {
    let mut out = String::new();
    let mut n = 0;
    for Stored {
        sensor,
        kind,
        chunks,
        ..
    } in stored(o)?
    {
        let device = sensor.rsplit_once('.').map_or(sensor.as_str(), |(d, _)| d);
        if selects(selector, device, &sensor) {
            let key = format!("{PREFIX}{kind}/{sensor}");
            o.put_state(&key, b"null")?;
            for i in 0..chunks {
                o.delete_state(&rows_key(&key, i))?;
            }
            let _ = writeln!(out, "reset {sensor} ({kind})");
            n += 1;
        }
    }
    let mut requests: Vec<String> = o
        .get_state(RESET_REQUESTS_KEY)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if !requests.iter().any(|r| r == selector) {
        requests.push(selector.to_string());
    }
    o.put_state(
        RESET_REQUESTS_KEY,
        &serde_json::to_vec(&requests).unwrap_or_else(|_| b"[]".to_vec()),
    )?;
    if n == 0 {
        let _ = writeln!(
            out,
            "no stored baseline matches {selector:?} (write DEVICE or DEVICE.CHANNEL); a running gateway resets it if it has one in memory"
        );
    }
    let _ = writeln!(
        out,
        "a running gateway applies the reset within a few seconds; the channels then learn their healthy state again"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxSettings;
    use crate::pipeline::baseline::LearnPlan;
    use crate::pipeline::relative::{RelativeDetector, SCALAR_SPECS};

    #[test]
    fn status_counts_the_samples_of_every_chunk_and_reset_removes_the_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).unwrap();
        let plan = LearnPlan {
            duration_us: 0,
            samples: 200,
            min_samples: 200,
        };
        let key = format!("{PREFIX}scalar/pump1.temp");
        let mut d = RelativeDetector::new(&SCALAR_SPECS, 4, plan, None);
        for i in 0..45 {
            let v = 40.0 + (i % 3) as f64;
            d.observe(i, &[v, v, 0.2, 0.0], true);
            for (k, v) in d.to_save(&key, i, 0, false) {
                o.put_state(&k, &v.expect("no deletes while learning"))
                    .unwrap();
            }
        }
        assert_eq!(o.state_keys("baseline-rows/").unwrap().len(), 2);
        drop(o);
        let text = status_text(&path, 45).unwrap();
        assert!(
            text.contains("pump1.temp (scalar): LEARNING") && text.contains("45 samples"),
            "{text}"
        );
        let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).unwrap();
        let out = reset_in(&mut o, "pump1").unwrap();
        assert!(out.contains("reset pump1.temp (scalar)"), "{out}");
        assert!(o.state_keys("baseline-rows/").unwrap().is_empty());
        assert_eq!(o.get_state(&key).unwrap().as_deref(), Some(&b"null"[..]));
    }
}
