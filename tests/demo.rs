//! `edgegw demo`: the real binary, on embedded defaults. It must alert after the
//! recording turns faulty, never while it is healthy, and exit 0.

use std::process::Command;

#[test]
fn demo_alerts_on_the_fault_and_not_on_the_healthy_part() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgegw"))
        .args(["demo", "--seconds", "10"])
        .current_dir(std::env::temp_dir()) // nothing from the repository is needed
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let switch = stdout
        .find("the recording turns faulty")
        .unwrap_or_else(|| panic!("no switch to the fault:\n{stdout}"));
    let first_alert = stdout
        .find("ALERT: vibration_anomaly")
        .unwrap_or_else(|| panic!("no alert:\n{stdout}"));
    assert!(
        first_alert > switch,
        "an alert came while healthy:\n{stdout}"
    );
    assert!(stdout.contains("alerts while healthy:   0"), "{stdout}");
    assert!(!stdout.contains("alerts while faulty:    0"), "{stdout}");
    assert!(stdout.contains("outbox:"), "{stdout}");
    assert!(!stdout.contains("did not behave as expected"), "{stdout}");
}
