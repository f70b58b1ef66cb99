//! A bundle that did not come with the binary is loaded in a process of its own
//! first.
//!
//! Some failures inside tract end the whole process, whatever catches panics: a
//! stack overflow on a deep graph, an abort, and in the built binaries any panic
//! (`panic = "abort"` in Cargo.toml, for size: docs/PERFORMANCE.md). A bundle that
//! does that while it loads would end the daemon, and since a synced bundle is
//! cached and loaded again at every start, end it again after each restart. So the
//! daemon and the `models` commands first run `edgegw models check DIR` (the same
//! executable) on a bundle from S3 or the cache: only a bundle that loaded there is
//! loaded in the daemon. A refusal there (exit 1) is the refusal the daemon would
//! make; a crash (a signal) refuses the bundle too, and the bundles in use stay, as
//! for any refused bundle. A check costs a process start and one more load of the
//! bundle (milliseconds), at a sync that brings a new bundle and at start.
//!
//! Tests and library users load in-process: the checker is only set by the commands
//! that need it ([`check_bundles_with`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{InferenceError, Result};

static CHECKER: OnceLock<PathBuf> = OnceLock::new();

/// From now on, check each bundle from outside the binary with `program models check
/// DIR` before loading it. The first call wins.
pub fn check_bundles_with(program: PathBuf) {
    let _ = CHECKER.set(program);
}

/// Checks the bundle in `dir` in a child process when a checker is set.
pub fn check(dir: &Path) -> Result<()> {
    match CHECKER.get() {
        Some(program) => check_with(program, dir),
        None => Ok(()),
    }
}

/// Runs `program models check dir` and reads its verdict.
pub(crate) fn check_with(program: &Path, dir: &Path) -> Result<()> {
    let bundle = dir.display().to_string();
    let out = Command::new(program)
        .args(["models", "check"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InferenceError::Isolated {
            bundle: bundle.clone(),
            message: format!("cannot start {} to check it: {e}", program.display()),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(code) = out.status.code() {
        // The child's own refusal: its last `edgegw: ` line is the reason.
        let reason = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("edgegw: "))
            .unwrap_or_else(|| stderr.trim());
        // It names the bundle as this error does: once is enough.
        let prefix = format!("model bundle {bundle}: ");
        let reason = reason.strip_prefix(prefix.as_str()).unwrap_or(reason);
        return Err(InferenceError::Isolated {
            bundle,
            message: format!("refused by the check (exit {code}): {reason}"),
        });
    }
    use std::os::unix::process::ExitStatusExt;
    let signal = out.status.signal().unwrap_or(0);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(InferenceError::Isolated {
        bundle,
        message: format!(
            "loading it crashed the checking process (signal {signal}; a bug in tract or \
             the gateway on this model, please report it with the bundle): {last}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("checker");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// The checker's verdicts: success passes; a refusal carries the child's reason;
    /// a crash by signal refuses and says so; a checker that cannot start refuses.
    #[test]
    fn the_child_process_verdict_is_read_from_its_exit() {
        let tmp = tempfile::tempdir().expect("tmp");
        let bundle = tmp.path().join("b");

        let ok = script(
            tmp.path(),
            "test \"$1 $2\" = \"models check\" && test -n \"$3\"",
        );
        check_with(&ok, &bundle).expect("exit 0 passes");

        let refuse = script(
            tmp.path(),
            "echo 'some log line' >&2; echo 'edgegw: model bundle b: sha256 check failed' >&2; exit 1",
        );
        let err = check_with(&refuse, &bundle)
            .expect_err("exit 1 refuses")
            .to_string();
        assert!(
            err.ends_with("refused by the check (exit 1): model bundle b: sha256 check failed"),
            "{err}"
        );

        let crash = script(
            tmp.path(),
            "echo 'thread main panicked at tract' >&2; kill -ABRT $$",
        );
        let err = check_with(&crash, &bundle)
            .expect_err("a crash refuses")
            .to_string();
        assert!(
            err.contains("crashed the checking process (signal 6"),
            "{err}"
        );
        assert!(err.contains("panicked at tract"), "{err}");

        let missing = tmp.path().join("no-such-program");
        let err = check_with(&missing, &bundle)
            .expect_err("cannot start")
            .to_string();
        // A spawn error here; exit 127 where the process is emulated (the qemu-user
        // runner of scripts/cross-build reports the failed exec as the child's exit).
        assert!(
            err.contains("cannot start") || err.contains("(exit 127)"),
            "{err}"
        );
    }
}
