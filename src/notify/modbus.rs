//! `kind = "modbus"`: a stack light or a PLC input, driven as a level. The sink's
//! writes (`on` while any of its episodes is open, `off` when none is, or the
//! highest open severity) go out when the level changes, and in full at the first
//! notification after a start or a failed write (the light may have been switched
//! or the PLC restarted meanwhile).
//!
//! Nothing outside the sink's `allow` list is ever written: the list is checked
//! when the config loads, and again here before every single write.

use super::config::{ModbusSink, ModbusWrite, Target, WriteValue};
use super::SendError;
use crate::config::upstreams::Delivery;
use crate::upstream::UpstreamError;
use std::time::Duration;
use tokio_modbus::client::{Context, Writer as _};

const UPSTREAM: &str = "notify modbus";

pub(super) struct Writer {
    address: String,
    unit: u8,
    allow: Vec<Target>,
    writes: Vec<(Target, ModbusWrite)>,
    timeout: Duration,
    ctx: Option<Context>,
    /// The values last confirmed by the device, in `writes` order (None: not since
    /// start or since a failure).
    written: Option<Vec<u16>>,
}

impl Writer {
    pub(super) fn new(cfg: &ModbusSink, delivery: Delivery) -> Result<Writer, String> {
        let allow = cfg
            .allow
            .iter()
            .map(|a| Target::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writes = Vec::new();
        for w in &cfg.writes {
            let t = Target::parse(&w.target)?;
            if !allow.contains(&t) {
                return Err(format!("{t} is not in the allow list"));
            }
            writes.push((t, w.clone()));
        }
        Ok(Writer {
            address: cfg.address.clone(),
            unit: cfg.unit,
            allow,
            writes,
            timeout: Duration::from_millis(delivery.timeout_ms.clamp(100, 10_000)),
            ctx: None,
            written: None,
        })
    }

    pub(super) fn reset(&mut self) {
        self.ctx = None;
        self.written = None;
    }

    /// Makes the outputs show `max_severity` (0: no open episode).
    pub(super) async fn apply(&mut self, max_severity: u8) -> Result<(), SendError> {
        let want: Vec<u16> = self
            .writes
            .iter()
            .map(|(_, w)| match (w.value, max_severity > 0) {
                (WriteValue::Level, true) => w.on,
                (WriteValue::Level, false) => w.off,
                (WriteValue::MaxSeverity, _) => u16::from(max_severity),
            })
            .collect();
        if self.written.as_ref() == Some(&want) {
            return Ok(());
        }
        match self.write_all(&want).await {
            Ok(()) => {
                self.written = Some(want);
                Ok(())
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    async fn write_all(&mut self, want: &[u16]) -> Result<(), SendError> {
        let retry = |detail: String| {
            SendError::Retry(UpstreamError::Write {
                upstream: UPSTREAM,
                target: self.address.clone(),
                detail,
            })
        };
        if self.ctx.is_none() {
            let ctx = crate::sources::modbus::tcp::connect(&self.address, self.unit, self.timeout)
                .await
                .map_err(|e| {
                    SendError::Retry(UpstreamError::Connect {
                        upstream: UPSTREAM,
                        target: self.address.clone(),
                        detail: e.to_string(),
                    })
                })?;
            self.ctx = Some(ctx);
        }
        let ctx = self.ctx.as_mut().expect("connected above");
        for ((target, _), value) in self.writes.iter().zip(want) {
            // The allow list, once more, at the last moment.
            if !self.allow.contains(target) {
                return Err(SendError::Refused {
                    reason: format!("{target} is not in the allow list: not written"),
                    auth: false,
                });
            }
            let op = async {
                match *target {
                    Target::Coil(a) => ctx.write_single_coil(a, *value != 0).await,
                    Target::Holding(a) => ctx.write_single_register(a, *value).await,
                }
            };
            match tokio::time::timeout(self.timeout, op).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(exception))) => {
                    return Err(retry(format!(
                        "writing {value} to {target}: exception {exception}"
                    )))
                }
                Ok(Err(e)) => return Err(retry(format!("writing {value} to {target}: {e}"))),
                Err(_) => {
                    return Err(retry(format!(
                        "writing {value} to {target}: no answer within {} ms",
                        self.timeout.as_millis()
                    )))
                }
            }
        }
        Ok(())
    }
}
