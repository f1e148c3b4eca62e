//! The Go-produced interop vectors (../shared/vectors): our binary must turn the same inputs into
//! the same LMDB contents, both talking to itself (`full`) and merging the snapshots the Go
//! binary wrote (`replay`). Runs the vectors' own check script; needs python3 with py-lmdb.

use std::path::Path;
use std::process::Command;

/// Native-mode cases; the shadow-mode ones come with non-native mode support.
const CASES: &[&str] = &[
    "native-disjoint",
    "native-equal-ts",
    "native-newer-wins",
    "native-random",
    "native-tombstones",
    "native-unknown-flags",
];

fn available(vectors: &Path) -> bool {
    let have_py_lmdb = Command::new("python3")
        .args(["-c", "import lmdb"])
        .status()
        .is_ok_and(|s| s.success());
    let ok = vectors.exists() && have_py_lmdb;
    if !ok {
        assert!(
            std::env::var_os("LS_REQUIRE_SHARED").is_none(),
            "vectors at {} or python3 with py-lmdb missing",
            vectors.display()
        );
        eprintln!("skipping: vectors or py-lmdb not available");
    }
    ok
}

fn check(mode: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vectors = root.join("../shared/vectors");
    if !available(&vectors) {
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
