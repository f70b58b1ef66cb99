//! The systemd notify protocol (`sd_notify(3)`), without libsystemd: one datagram per
//! message to the unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! address written `@name`).
//!
//! Owns: `READY=1`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=` and reading
//! the watchdog interval from `$WATCHDOG_USEC`/`$WATCHDOG_PID`. It does not decide
//! *when* to ping the watchdog: `app.rs` does, from pipeline progress.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op, so `edgegw run` works
//! the same from a shell.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot send {message:?} to the systemd notify socket {socket}: {source}")]
    Send {
        socket: String,
        message: String,
        source: std::io::Error,
    },
    #[error("NOTIFY_SOCKET {socket:?} is not a usable unix socket address: {source}")]
    Address {
        socket: String,
        source: std::io::Error,
    },
}

/// A connection to systemd's notify socket, or nothing outside systemd.
#[derive(Debug)]
pub struct Notifier {
    /// `None` when `$NOTIFY_SOCKET` is unset: every message is dropped silently.
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    /// As given in the environment, for messages.
    name: String,
    addr: SocketAddr,
    socket: UnixDatagram,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a disabled notifier when it is unset or empty.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(name) if !name.is_empty() => Notifier::to(&name),
            _ => Ok(Notifier { target: None }),
        }
    }

    /// A notifier that sends nothing (outside systemd, or after a bad `$NOTIFY_SOCKET`).
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier that sends to `name` (a path, or `@abstract`).
    pub fn to(name: &str) -> Result<Notifier, NotifyError> {
        let address = |source| NotifyError::Address {
            socket: name.to_string(),
            source,
        };
        let addr = if let Some(abs) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abs.as_bytes()).map_err(address)?
        } else {
            SocketAddr::from_pathname(PathBuf::from(name)).map_err(address)?
        };
        let socket = UnixDatagram::unbound().map_err(address)?;
        Ok(Notifier {
            target: Some(Target {
                name: name.to_string(),
                addr,
                socket,
            }),
        })
    }

    /// Whether a notify socket is configured (running under `Type=notify`).
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (newline-separated `KEY=value` assignments).
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        t.socket
            .send_to_addr(message.as_bytes(), &t.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                socket: t.name.clone(),
                message: message.to_string(),
                source,
            })
    }

    /// Sends and logs a failure instead of returning it: a lost notification must not
    /// stop the gateway (systemd will time out and say so in its own log).
    pub fn send_or_log(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!("{e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send_or_log(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn reloading(&self) {
        self.send_or_log("RELOADING=1\nSTATUS=Reloading the configuration");
    }

    pub fn stopping(&self) {
        self.send_or_log("STOPPING=1\nSTATUS=Stopping: draining the pipeline into the outbox");
    }

    pub fn watchdog(&self) {
        self.send_or_log("WATCHDOG=1");
    }

    pub fn status(&self, status: &str) {
        self.send_or_log(&format!("STATUS={}", one_line(status)));
    }
}

/// A `STATUS=` value must not contain a newline (it would start a new assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), when it is
/// meant for this process: `$WATCHDOG_USEC` set and `$WATCHDOG_PID` absent or ours.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_as_single_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        assert!(n.enabled());
        n.ready("Reading 3 devices\nsecond line");
        n.watchdog();
        let mut buf = [0u8; 512];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=Reading 3 devices second line"
        );
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn abstract_addresses_work() {
        let name = format!("edgegw-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_that_names_it() {
        let n = Notifier::to("/nonexistent/edgegw-notify.sock").unwrap();
        let e = n.send("READY=1").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/edgegw-notify.sock"), "{e}");
    }
}
