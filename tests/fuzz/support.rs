//! Shared by the `tests/fuzz_*.rs` property tests (included with `#[path]`): the case
//! budget, where proptest keeps its regressions, and a per-thread counting allocator
//! for the "no huge allocation from a small input" checks.
//!
//! Budget: each property names its CI case count (chosen so that the whole fuzz set
//! stays under a minute in a debug build). `FUZZ_SCALE=100` multiplies every count
//! (`scripts/fuzz` does that); `PROPTEST_CASES=N` sets every count to N. The variable
//! is not `EDGEGW_`-prefixed on purpose: that prefix is read as config overrides by
//! the loader under test.

#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The case count for a property whose CI budget is `ci_cases`.
pub fn cases(ci_cases: u32) -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
    {
        return n.max(1);
    }
    let scale = std::env::var("FUZZ_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    ci_cases.saturating_mul(scale)
}

/// A proptest config with `ci_cases` cases (scaled as above) whose failures are
/// recorded in `regressions` (a path under `tests/fuzz/regressions/`, made with
/// [`regressions!`]) and replayed first on every later run.
pub fn config(ci_cases: u32, regressions: &'static str) -> Config {
    Config {
        cases: cases(ci_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // Shrinking a daemon-level failure can take long; the default (unbounded
        // time) is fine for the pure parsers.
        ..Config::default()
    }
}

/// `tests/fuzz/regressions/<name>.txt` as an absolute `&'static str` (the test file
/// includes this module with `#[macro_use]`).
macro_rules! regressions {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz/regressions/",
            $name,
            ".txt"
        )
    };
}

/// `tests/fuzz/<rest>` (seed inputs kept with the tests).
pub fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// The repository root (shipped configs and profiles).
pub fn repo() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Counting allocator: a test binary that wants allocation bounds declares
// `#[global_allocator] static A: support::Counting = support::Counting;`.
// Counts are per thread, so parallel tests do not see each other's allocations
// (the code measured here is single-threaded).

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

/// The system allocator, counting live bytes and their peak per thread.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only
// const-initialised thread-locals without destructors (no allocation, no reentry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Live bytes allocated by this thread (and not freed) so far.
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// Runs `f`; returns its result, the most bytes it had allocated at once beyond what
/// was live before (its peak), and what it left allocated (kept, e.g. in a struct it
/// mutated). Only meaningful with [`Counting`] installed.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, isize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get) - start;
    let kept = LIVE.with(Cell::get) - start;
    (r, peak.max(0) as usize, kept)
}
