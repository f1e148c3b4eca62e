//! The decrypting reader (`crypt::Keyring::decrypt_to`, what every download of an encrypted
//! object goes through) on arbitrary bytes, with an identity the seeds (fuzz/corpus/decrypt,
//! made with the stock `age -r`) are encrypted to. Beyond "no panic": decryption is
//! deterministic and says how much it read and wrote; an accepted input is a whole age file
//! (input and output sizes agree with age's framing: 64 KiB chunks, 16-byte tags); whatever the
//! input, sealing it and decrypting gives it back, and flipping any one bit of the sealed bytes
//! (position and bit from the input) is always refused.

#![no_main]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lightningstream::crypt::{Keyring, OpenError};

/// For fuzzing only: it protects nothing. Public key
/// age17w8ctcnun9ah06ht5auqyt8vfq83tmum50hnd5gxjwsck2ky4d3ssjffnj.
const FUZZ_IDENTITY: &str =
    "AGE-SECRET-KEY-1K2PDPFCF209JMA989Y69J8T528DFTM9JGQE78F2Z2NTQL20D33USD6SCMZ";
const FUZZ_RECIPIENT: &str = "age17w8ctcnun9ah06ht5auqyt8vfq83tmum50hnd5gxjwsck2ky4d3ssjffnj";

fn keyring() -> &'static Keyring {
    static K: OnceLock<(tempfile::TempDir, Keyring)> = OnceLock::new();
    &K.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("identity.txt");
        std::fs::write(&f, format!("{FUZZ_IDENTITY}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = Keyring::new(
            &[FUZZ_RECIPIENT.to_string()],
            &[f.display().to_string()],
        )
        .unwrap();
        (dir, k)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let k = keyring();
    let mut out = Vec::new();
    match k.decrypt_to(data, &mut out) {
        Ok((read, written)) => {
            assert_eq!(read, data.len() as u64);
            assert_eq!(written, out.len() as u64);
            // Each 64 KiB chunk (the last may be shorter, never empty unless it is the only
            // one) carries a 16-byte tag after a header of at least the version line.
            let chunks = (out.len() as u64).div_ceil(65_536).max(1);
            assert!(read >= written + 16 * chunks + 22, "{read} {written}");
            let mut again = Vec::new();
            assert_eq!(k.decrypt_to(data, &mut again).unwrap(), (read, written));
            assert_eq!(again, out);
        }
        Err(OpenError::Corrupt(_) | OpenError::WrongIdentity { .. }) => {}
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }

    let mut w = k.seal(Vec::new()).unwrap();
    w.write_all(data).unwrap();
    let mut sealed = w.finish().unwrap();
    out.clear();
    k.decrypt_to(&sealed[..], &mut out).unwrap();
    assert_eq!(out, data);
    let pick = data.iter().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(*b as usize));
    let at = pick % sealed.len();
    sealed[at] ^= 1 << (pick % 8);
    out.clear();
    assert!(k.decrypt_to(&sealed[..], &mut out).is_err(), "bit flip at {at} accepted");
});
