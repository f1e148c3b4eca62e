//! Inputs found by the fuzz targets in fuzz/ (run by tests/fuzz.sh) that once made the library
//! panic or break one of the targets' properties, replayed as ordinary tests. Raw inputs live in
//! tests/data/fuzz/<target>-<what>, exactly as the fuzzer saved them.

use std::path::Path;

use lightningstream::core::name::SnapshotName;

fn input(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// object_name: a multi-byte character straddling a field boundary of the 25-byte timestamp
/// (here 'é' over bytes 5..7 of `10402é1-000000-000000000`) made the timestamp parser slice the
/// string inside the character and panic. Any object in the bucket with such a name would kill
/// every receiver listing it.
#[test]
fn object_name_timestamp_char_boundary() {
    let raw = input("object_name-timestamp-char-boundary");
    let text = String::from_utf8_lossy(&raw);
    let e = SnapshotName::parse(&text).unwrap_err();
    assert!(e.reason.contains("timestamp"), "{e}");
    // The same fault written plainly: 25 bytes with dashes at 8 and 15, and an 'é' that the
    // year, month or hour field boundary cuts in two.
    for name in [
        "main__i__202é101-030405-012345678__GX.pb.gz",
        "main__i__20220é1-030405-012345678__GX.pb.gz",
        "main__i__20220101-0é405-012345678__GX.pb.gz",
    ] {
        assert!(SnapshotName::parse(name).is_err(), "{name} accepted");
    }
}
