//! The threaded pipelines around the pure codec: gzip compression on worker threads while a
//! snapshot is written ([`gzip`]), and inflation and entry decoding on threads of their own
//! while one is read ([`inflate`], [`entries`]). Everything here moves bytes between threads
//! over bounded channels; what the bytes mean is the codec's business (`snapshot`).

pub mod entries;
pub mod gzip;
pub mod inflate;

pub use entries::ThreadedEntries;
pub use gzip::ParallelGzip;
pub use inflate::{Inflater, scanning_reader};

#[cfg(test)]
mod tests {
    use std::io::Read;

    use crate::snapshot::decode::tests::{build, gz, kv};
    use crate::snapshot::decode::{DecodeError, EntryReader, EntrySource, SnapshotIndex, scan};
    use crate::snapshot::encode::{GzipWriter, SnapshotWriter, kv_field_len};
    use crate::snapshot::{DbiInfo, KvRef, Meta, OwnedKv};

    /// The threaded reader yields exactly what the plain one does, across batch boundaries
    /// (by count and by bytes), and passes on a decode error after the entries before it.
    #[test]
    fn threaded_entries_match_the_plain_reader() {
        let big = vec![7u8; 300_000];
        let keys: Vec<[u8; 4]> = (0..10_000u32).map(|i| i.to_be_bytes()).collect();
        let kvs: Vec<KvRef> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| KvRef {
                key: k,
                value: if i % 1000 == 0 { &big } else { b"small" },
                timestamp_nano: i as u64,
                flags: (i % 2) as u32,
            })
            .collect();
        let mut w = SnapshotWriter::new(Vec::new(), &Meta::default()).unwrap();
        for part in kvs.chunks(6_000) {
            let len = part.iter().map(kv_field_len).sum();
            w.begin_dbi(
                &DbiInfo {
                    name: b"d".to_vec(),
                    ..Default::default()
                },
                len,
            )
            .unwrap();
            for kv in part {
                w.write_kv(kv).unwrap();
            }
            w.end_dbi().unwrap();
        }
        let mut gz = GzipWriter::new(Vec::new());
        std::io::Write::write_all(&mut gz, &w.finish().unwrap()).unwrap();
        let packed = gz.finish().unwrap();

        let collect = |src: &mut dyn EntrySource| {
            let mut out = Vec::new();
            loop {
                match src.next_entry() {
                    Ok(Some((i, kv))) => out.push((i, OwnedKv::from(kv))),
                    Ok(None) => return (out, None),
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
        };
        let plain = collect(&mut EntryReader::new(&packed[..]));
        assert_eq!(plain.0.len(), 10_000);
        assert_eq!(plain.0[6_000].0, 1);
        let threaded =
            std::thread::scope(|s| collect(&mut super::ThreadedEntries::spawn(s, &packed[..])));
        assert_eq!(threaded, plain);

        let cut = &packed[..packed.len() / 2];
        let plain = collect(&mut EntryReader::new(cut));
        let threaded = std::thread::scope(|s| collect(&mut super::ThreadedEntries::spawn(s, cut)));
        assert!(plain.1.is_some());
        assert_eq!(threaded, plain);
    }

    /// Inflating on a thread changes nothing about the outcome: the same index for good input
    /// (one crossing many chunks too), the same error (kind and text) for bad input, and a
    /// failing source is still a read error, not a gzip one.
    #[test]
    fn threaded_inflation_matches_inline() {
        fn threaded<R: Read + Send>(r: R, limit: u64) -> Result<SnapshotIndex, DecodeError> {
            std::thread::scope(|scope| {
                let mut s = super::scanning_reader(scope, r, limit);
                while s.next_entry()?.is_some() {}
                Ok(s.finish())
            })
        }
        let show = |r: &Result<SnapshotIndex, DecodeError>| match r {
            Ok(i) => format!("{i:?}"),
            Err(e) => format!("{e:?}"),
        };
        let big = "v".repeat(200_000);
        let many: Vec<_> = (0..40)
            .map(|i| kv(&format!("k{i:03}"), &big, i, 0))
            .collect();
        let large = build(&[("a", 0, many)]);
        let good = build(&[("a", 0, vec![kv("k", "v", 1, 0)])]);
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut inputs = vec![large.clone(), large[..large.len() / 2].to_vec(), bad_crc];
        inputs.extend((0..good.len()).map(|cut| good[..cut].to_vec()));
        inputs.push(gz(&[0x1a, 0x02, 0x12, 0x02, 0x0a, 0x00]));
        for bytes in &inputs {
            let inline = scan(&bytes[..]);
            assert_eq!(show(&threaded(&bytes[..], u64::MAX)), show(&inline));
        }
        assert!(threaded(&large[..], u64::MAX).unwrap().uncompressed_size > 4 << 20);
        assert!(matches!(
            threaded(&large[..], 3 << 20),
            Err(DecodeError::TooLarge { .. })
        ));
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk on fire"));
                }
                self.0.read(buf)
            }
        }
        let e = threaded(Failing(&large[..large.len() / 3]), u64::MAX).unwrap_err();
        assert!(matches!(e, DecodeError::Read(_)), "{e:?}");
        assert!(e.to_string().contains("disk on fire"));
    }
}
