//! As `snapshot_decode`, but the input is the uncompressed protobuf, gzipped here first, so the
//! fuzzer works on the protobuf level instead of spending its time breaking gzip CRCs.

#![no_main]

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut gz = GzEncoder::new(Vec::with_capacity(data.len() + 64), Compression::fast());
    gz.write_all(data).unwrap();
    let compressed = gz.finish().unwrap();
    if let Some(index) = lightningstream_fuzz::check_snapshot(&compressed) {
        // The first pass reads the protobuf to its end, and valid gzip cannot fail it.
        assert_eq!(index.uncompressed_size, data.len() as u64);
    }
});
