//! Environment overrides (`EDGEGW_<SECTION>__<KEY>`). In a test binary of its own:
//! it changes the process environment, which other tests must not see. The tests
//! here that change it take [`env_lock`], so that they do not see each other's.

use edgegw::config::{check_all, load};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

const CONFIG: &str = "[gateway]\nid = \"gw-env\"\nprofile_dir = \".\"\n";

static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn environment_overrides() {
    let _env = env_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, CONFIG).unwrap();
    // SAFETY: every test of this binary that touches the environment holds the lock.
    unsafe { std::env::set_var("EDGEGW_GATEWAY__SITE", "hall 9") };
    let l = load(&path).unwrap();
    assert_eq!(l.config.gateway.site, "hall 9");
    unsafe { std::env::set_var("EDGEGW_HTTP__ENABLED", "maybe") };
    let err = load(&path).unwrap_err();
    unsafe { std::env::remove_var("EDGEGW_HTTP__ENABLED") };
    unsafe { std::env::remove_var("EDGEGW_GATEWAY__SITE") };
    let text: Vec<String> = err.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("http.enabled") && t.contains("EDGEGW_HTTP__ENABLED")),
        "{text:#?}"
    );
}

/// The documented `password = { env = "EDGEGW_REDIS_PASSWORD" }`: the variable holds a
/// secret, it is no override (and neither is any `EDGEGW_` variable without `__`).
const WITH_SECRETS: &str = "[gateway]\nid = \"gw-env\"\nprofile_dir = \"profiles\"\n\n\
[upstreams.redis]\nurl = \"redis://127.0.0.1\"\npassword = { env = \"EDGEGW_REDIS_PASSWORD\" }\n\n\
[upstreams.timescale]\nurl = \"postgres://edgegw@db.example.com/smartmaint\"\n\
password = { env = \"EDGEGW_PG__PASSWORD\" }\n";

#[test]
fn variables_named_as_secrets_are_not_overrides() {
    let _env = env_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, WITH_SECRETS).unwrap();
    let vars = [
        ("EDGEGW_REDIS_PASSWORD", "x"),
        // A secret whose name looks like an override is still a secret.
        ("EDGEGW_PG__PASSWORD", "y"),
        // No `__`: names no `<SECTION>__<KEY>`, so it is not an override either.
        ("EDGEGW_SOMETHING_ELSE", "1"),
    ];
    for (k, v) in vars {
        // SAFETY: every test of this binary that touches the environment holds the lock.
        unsafe { std::env::set_var(k, v) };
    }
    let report = check_all(&path);
    let secrets = load(&path).map(|l| {
        let redis = l.config.upstreams.redis.as_ref().unwrap();
        let pg = l.config.upstreams.timescale.as_ref().unwrap();
        [&redis.password, &pg.password].map(|p| p.as_ref().unwrap().resolve().ok())
    });
    for (k, _) in vars {
        unsafe { std::env::remove_var(k) };
    }
    assert_eq!(report.errors(), 0, "{:#?}", report.diags);
    let secrets = secrets.unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(secrets, [Some("x".to_string()), Some("y".to_string())]);
}

/// The same through the binary, which is what systemd runs (`ExecStartPre=edgegw check`).
/// The child gets its own environment, so this test needs no lock.
#[test]
fn check_accepts_the_documented_secret_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, WITH_SECRETS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgegw"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("EDGEGW_REDIS_PASSWORD", "x")
        .env("EDGEGW_PG__PASSWORD", "y")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
