//! The Go-produced interop vectors (../shared/vectors): our binary must turn the same inputs into
//! the same LMDB contents, both talking to itself (`full`) and merging the snapshots the Go
//! binary wrote (`replay`). Runs the vectors' own check script; needs python3 with py-lmdb.

mod common;

use std::path::Path;
use std::process::Command;

/// Every case: native mode and shadow mode.
const CASES: &[&str] = &[
    "native-disjoint",
    "native-equal-ts",
    "native-newer-wins",
    "native-random",
    "native-tombstones",
    "native-unknown-flags",
    "shadow-basic",
    "shadow-preexisting",
];

fn have_py_lmdb() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import lmdb"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || std::env::var_os("LS_REQUIRE_SHARED").is_none(),
        "python3 with py-lmdb missing"
    );
    ok
}

fn check(mode: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(vectors) = common::shared_dir("vectors") else {
        return;
    };
    if !have_py_lmdb() {
        eprintln!("skipping: python3 with py-lmdb not available");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(root.join("tests/vectors-check.sh"))
        .arg(&vectors)
        .arg(env!("CARGO_BIN_EXE_lightningstream"))
        .arg(mode)
        .args(CASES)
        .env("LSVEC_WORK", work.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "vector check ({mode}) failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("ok   ").count(), CASES.len(), "{text}");
}

#[test]
fn go_vectors_full() {
    check("full");
}

#[test]
fn go_vectors_replay() {
    check("replay");
}
