//! Environment overrides (`EDGEGW_<SECTION>__<KEY>`). In a test binary of its own:
//! it changes the process environment, which other tests must not see.

use edgegw::config::load;

const CONFIG: &str = "[gateway]\nid = \"gw-env\"\nprofile_dir = \".\"\n";

#[test]
fn environment_overrides() {
    // figment reads the process environment; use a distinct variable per test run.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, CONFIG).unwrap();
    // SAFETY: this binary has a single test; nothing else reads the environment.
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
