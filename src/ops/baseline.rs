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
use crate::pipeline::relative::BaselineState;
use crate::record::format_rfc3339;
use std::fmt::Write as _;
use std::path::Path;

const PREFIX: &str = "baseline/v2/";

/// One stored baseline: (sensor id, "window" | "scalar", state).
fn stored(o: &Outbox) -> Result<Vec<(String, String, Option<BaselineState>)>, OutboxError> {
    let mut out = Vec::new();
    for key in o.state_keys(PREFIX)? {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((kind, sensor)) = rest.split_once('/') else {
            continue;
        };
        let state = o
            .get_state(&key)?
            .and_then(|b| serde_json::from_slice::<Option<BaselineState>>(&b).ok())
            .flatten();
        out.push((sensor.to_string(), kind.to_string(), state));
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
    for (sensor, kind, state) in all {
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
    for (sensor, kind, _) in stored(o)? {
        let device = sensor.rsplit_once('.').map_or(sensor.as_str(), |(d, _)| d);
        if selects(selector, device, &sensor) {
            o.put_state(&format!("{PREFIX}{kind}/{sensor}"), b"null")?;
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
