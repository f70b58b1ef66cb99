//! Crash safety: a child process appends in a loop and is killed with SIGKILL in the
//! middle of writing, many times. Every id it reported as committed must be there
//! exactly once, and the file must pass the integrity check.
//!
//! The child is this test binary itself, re-executed with `EDGEGW_OUTBOX_CRASH_CHILD`
//! set (so no extra binary ships); `crash_child_entry` is its entry point and returns
//! at once in a normal test run.

use edgegw::outbox::{Outbox, OutboxSettings};
use edgegw::record::{ReadingRecord, Record, SensorType};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "EDGEGW_OUTBOX_CRASH_CHILD";
const RUN_ENV: &str = "EDGEGW_OUTBOX_CRASH_RUN";
const BATCH: i64 = 200;

fn marker(run: i64, index: i64) -> Record {
    Record::Reading(ReadingRecord {
        sensor_id: format!("crash.run{run}").into(),
        device: "crash".into(),
        channel: format!("run{run}").into(),
        sensor_type: SensorType::General,
        unit: "".into(),
        ts_us: index,
        value: index as f64,
        quality: 1.0,
        flags: Vec::new(),
        detection: None,
    })
}

/// Child entry point (see the module doc): append forever, report each commit.
#[test]
fn crash_child_entry() {
    let (Ok(path), Ok(run)) = (std::env::var(CHILD_ENV), std::env::var(RUN_ENV)) else {
        return;
    };
    let run: i64 = run.parse().expect("run number");
    let mut outbox = Outbox::open(path.as_ref(), &OutboxSettings::default(), "gw", &[])
        .expect("child opens the outbox");
    let mut out = std::io::stdout().lock();
    let mut next = 0;
    loop {
        let batch: Vec<Record> = (next..next + BATCH).map(|i| marker(run, i)).collect();
        let ids = outbox.append(&batch).expect("append");
        // Only after the commit returned: this id range is promised to be durable.
        writeln!(
            out,
            "committed {run} {next} {} {}",
            ids[0],
            ids[ids.len() - 1]
        )
        .expect("stdout");
        out.flush().expect("flush");
        next += BATCH;
    }
}

struct Commit {
    run: i64,
    first_index: i64,
    first_id: i64,
    last_id: i64,
}

fn parse(line: &str) -> Option<Commit> {
    // The harness may print "test crash_child_entry ... " before the first line.
    let at = line.find("committed ")?;
    let mut it = line[at + "committed ".len()..].split(' ');
    let mut n = || it.next()?.parse::<i64>().ok();
    Some(Commit {
        run: n()?,
        first_index: n()?,
        first_id: n()?,
        last_id: n()?,
    })
}

#[test]
fn sigkill_mid_write_loses_no_committed_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let exe = std::env::current_exe().expect("test binary");
    let mut commits = Vec::new();
    for run in 0..20i64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env(RUN_ENV, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut signalled = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !signalled && line.contains("committed ") {
                    signalled = true;
                    let _ = first_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Wait until the child writes, then kill it at a varying point mid-stream.
        first_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child started committing");
        std::thread::sleep(Duration::from_millis(fastrand::u64(1..40)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "child was killed");
        let lines = reader.join().expect("reader");
        let before = commits.len();
        commits.extend(lines.iter().filter_map(|l| parse(l)));
        assert!(commits.len() > before, "run {run} committed something");
    }

    // Integrity: the file is fine and was not moved aside.
    let check = rusqlite::Connection::open(&path).expect("open for quick_check");
    let verdict: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(verdict, "ok");
    drop(check);
    let outbox =
        Outbox::open(&path, &OutboxSettings::default(), "gw", &["verify"]).expect("reopen");
    let moved = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(moved, 0, "a crash never looks like corruption");

    // Every reported id is present exactly once, holding exactly what was written.
    let stored = outbox.peek("verify", usize::MAX).expect("peek everything");
    let by_id: HashMap<i64, &Record> = stored.iter().map(|s| (s.id, &s.record)).collect();
    assert_eq!(by_id.len(), stored.len(), "ids are unique");
    let mut seen: HashMap<(String, i64), u32> = HashMap::new();
    for s in &stored {
        if let Record::Reading(r) = &s.record {
            *seen.entry((r.sensor_id.to_string(), r.ts_us)).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "no record stored twice");
    let mut last_id = 0;
    let mut checked = 0;
    for c in &commits {
        assert!(
            c.first_id > last_id,
            "ids increase across crashes and reopens"
        );
        assert_eq!(
            c.last_id - c.first_id + 1,
            BATCH,
            "one batch, consecutive ids"
        );
        for (k, id) in (c.first_id..=c.last_id).enumerate() {
            let got = by_id
                .get(&id)
                .unwrap_or_else(|| panic!("committed id {id} is missing"));
            assert_eq!(**got, marker(c.run, c.first_index + k as i64));
            checked += 1;
        }
        last_id = c.last_id;
    }
    println!(
        "{} kills, {} commits, {checked} committed records verified, {} records stored",
        20,
        commits.len(),
        stored.len()
    );
    // What was stored but never reported is at most the batch in flight per kill.
    assert!(stored.len() as i64 - checked <= 20 * BATCH);
}
