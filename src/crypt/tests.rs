//! The keyring: round trips, rotation, missing and wrong identities, tampering, truncation,
//! source failures, identity file rules and reloading, and that no secret reaches a message.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use age::secrecy::ExposeSecret;

use super::*;

struct Key {
    secret: String,
    public: String,
}

fn key() -> Key {
    let id = age::x25519::Identity::generate();
    Key {
        secret: id.to_string().expose_secret().to_string(),
        public: id.to_public().to_string(),
    }
}

fn identity_file(dir: &Path, name: &str, keys: &[&Key], mode: u32) -> String {
    let path = dir.join(name);
    let mut text = String::from("# created: by a test\n");
    for k in keys {
        text.push_str(&format!("# public key: {}\n{}\n", k.public, k.secret));
    }
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn keyring(recipients: &[&Key], files: &[String]) -> Keyring {
    let r: Vec<String> = recipients.iter().map(|k| k.public.clone()).collect();
    Keyring::new(&r, files).unwrap()
}

fn seal(k: &Keyring, data: &[u8]) -> Vec<u8> {
    let mut w = k.seal(Vec::new()).unwrap();
    // Odd write sizes across age's 64 KiB chunks.
    for part in data.chunks(10_007) {
        w.write_all(part).unwrap();
    }
    w.finish().unwrap()
}

fn open(k: &Keyring, data: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut out = Vec::new();
    let (read, written) = k.decrypt_to(data, &mut out)?;
    assert_eq!(read, data.len() as u64);
    assert_eq!(written, out.len() as u64);
    Ok(out)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn round_trip_to_every_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(), key());
    let writer = keyring(&[&a, &b], &[]);
    assert!(writer.encrypts() && !writer.decrypts());
    for n in [0, 1, 65_535, 65_536, 65_537, 300_000] {
        let data = payload(n);
        let sealed = seal(&writer, &data);
        assert!(sealed.starts_with(AGE_MAGIC));
        assert!(looks_encrypted(&sealed[..]).unwrap());
        assert!(n == 0 || sealed[sealed.len() - n..] != data[..]);
        for k in [&a, &b] {
            let reader = keyring(&[], &[identity_file(dir.path(), "k", &[k], 0o600)]);
            assert_eq!(open(&reader, &sealed).unwrap(), data, "{n} bytes");
        }
    }
    // Without recipients nothing is encrypted, and names stay as they are.
    let plain = Keyring::none();
    assert_eq!(seal(&plain, b"abc"), b"abc");
    assert!(!looks_encrypted(&b"\x1f\x8b"[..]).unwrap());
    assert_eq!(plain.object_name("x.pb.gz"), "x.pb.gz");
    assert_eq!(writer.object_name("x.pb.gz"), "x.pb.gz.age");
}

#[test]
fn rotation_two_recipients_then_one() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (key(), key());
    let old_file = identity_file(dir.path(), "old", &[&old], 0o600);
    let new_file = identity_file(dir.path(), "new", &[&new], 0o600);
    let data = payload(100_000);
    // Step 1: written to both; readers holding either identity read it.
    let both = seal(&keyring(&[&old, &new], &[]), &data);
    assert_eq!(
        open(&keyring(&[], std::slice::from_ref(&old_file)), &both).unwrap(),
        data
    );
    assert_eq!(
        open(&keyring(&[], std::slice::from_ref(&new_file)), &both).unwrap(),
        data
    );
    // Step 3: written to the new one only; the old identity alone no longer reads it.
    let only_new = seal(&keyring(&[&new], &[]), &data);
    assert_eq!(
        open(&keyring(&[], std::slice::from_ref(&new_file)), &only_new).unwrap(),
        data
    );
    let both_files = keyring(&[], &[old_file.clone(), new_file]);
    assert_eq!(open(&both_files, &only_new).unwrap(), data);
    let e = open(&keyring(&[], std::slice::from_ref(&old_file)), &only_new).unwrap_err();
    assert!(matches!(e, OpenError::WrongIdentity { .. }), "{e:?}");
    assert!(e.to_string().contains(&old_file), "{e}");
    assert!(!e.to_string().contains(&old.secret));
}

#[test]
fn missing_identity() {
    let a = key();
    let sealed = seal(&keyring(&[&a], &[]), b"secret zone data");
    let e = open(&Keyring::none(), &sealed).unwrap_err();
    assert!(matches!(e, OpenError::NoIdentity));
    assert_eq!(e.to_string(), "encrypted, no identity configured");
}

/// Every single flipped bit and every truncation is refused, never decrypted to something else.
#[test]
fn tampered_and_truncated_objects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = key();
    let reader = keyring(&[], &[identity_file(dir.path(), "a", &[&a], 0o600)]);
    let data = payload(70_000);
    let sealed = seal(&keyring(&[&a], &[]), &data);
    let header_len = sealed
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("age header end");
    let mut positions: Vec<usize> = (0..header_len + 80).collect();
    positions.extend((header_len + 80..sealed.len()).step_by(1_999));
    positions.push(sealed.len() - 1);
    for at in positions {
        let mut bad = sealed.clone();
        bad[at] ^= 0x01;
        match open(&reader, &bad) {
            Ok(out) => panic!("byte {at} flipped: decrypted {} bytes", out.len()),
            // A flipped bit inside our recipient stanza makes it one we cannot unwrap.
            Err(OpenError::Corrupt(_) | OpenError::WrongIdentity { .. }) => {}
            Err(e) => panic!("byte {at} flipped: {e:?}"),
        }
    }
    // 70,000 bytes are chunks of 65,536 and 4,464 bytes (each with a 16-byte tag): a cut at
    // the chunk boundary loses the chunk marked last.
    for cut in [
        0,
        10,
        header_len,
        header_len + 20,
        sealed.len() - 4_480,
        sealed.len() - 1,
    ] {
        let e = open(&reader, &sealed[..cut]).unwrap_err();
        assert!(matches!(e, OpenError::Corrupt(_)), "cut at {cut}: {e:?}");
    }
    // Trailing garbage after the last chunk is refused too.
    let mut longer = sealed.clone();
    longer.extend_from_slice(b"x");
    assert!(matches!(open(&reader, &longer), Err(OpenError::Corrupt(_))));
    // Plaintext (gzip) and a passphrase-encrypted file are not objects of ours.
    assert!(matches!(
        open(&reader, b"\x1f\x8b\x08\x00\x00\x00"),
        Err(OpenError::Corrupt(_))
    ));
    let scrypt = age::Encryptor::with_user_passphrase("pw".to_string().into());
    let mut w = scrypt.wrap_output(Vec::new()).unwrap();
    w.write_all(b"x").unwrap();
    let e = open(&reader, &w.finish().unwrap()).unwrap_err();
    assert!(matches!(e, OpenError::Corrupt(_)), "{e:?}");
}

#[test]
fn a_failing_source_is_not_corruption() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("connection reset"));
            }
            self.0.read(buf)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let a = key();
    let reader = keyring(&[], &[identity_file(dir.path(), "a", &[&a], 0o600)]);
    let sealed = seal(&keyring(&[&a], &[]), &payload(200_000));
    for cut in [5, 100, 70_000, sealed.len() - 1] {
        let mut out = Vec::new();
        let e = reader
            .decrypt_to(Failing(&sealed[..cut]), &mut out)
            .unwrap_err();
        assert!(matches!(e, OpenError::Source(_)), "cut at {cut}: {e:?}");
    }
}

#[test]
fn identity_file_rules() {
    let dir = tempfile::tempdir().unwrap();
    let a = key();
    for mode in [0o600, 0o400, 0o640, 0o660] {
        let f = identity_file(dir.path(), "ok", &[&a], mode);
        assert_eq!(read_identity_file(Path::new(&f)).unwrap().len(), 1);
    }
    for mode in [0o644, 0o604, 0o602, 0o666] {
        let f = identity_file(dir.path(), "open", &[&a], mode);
        let e = Keyring::new(&[], std::slice::from_ref(&f))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&f) && e.contains("other users"), "{e}");
    }
    let missing = dir.path().join("missing").display().to_string();
    let e = Keyring::new(&[], std::slice::from_ref(&missing))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&missing) && e.contains("cannot be opened"),
        "{e}"
    );
    // A bad line is named by number; its content (maybe half a key) is not repeated.
    let bad = dir.path().join("bad");
    let half = &a.secret[..30];
    std::fs::write(&bad, format!("{}\n{half}\n", a.secret)).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = read_identity_file(&bad).err().unwrap().to_string();
    assert!(e.contains("line 2") && e.contains("bad"), "{e}");
    assert!(!e.contains(half) && !e.contains(&a.secret), "{e}");
    let empty = identity_file(dir.path(), "empty", &[], 0o600);
    let e = read_identity_file(Path::new(&empty))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no identity"), "{e}");
    let e = read_identity_file(dir.path()).err().unwrap().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn recipients_are_checked_without_echoing_secrets() {
    let a = key();
    assert!(parse_recipient(&a.public).is_ok());
    let e = parse_recipient(&a.secret).unwrap_err().to_string();
    assert!(
        e.contains("not a recipient") && !e.contains(&a.secret),
        "{e}"
    );
    let e = parse_recipient(&a.secret.to_lowercase())
        .unwrap_err()
        .to_string();
    assert!(!e.to_lowercase().contains(&a.secret.to_lowercase()), "{e}");
    let typo = format!("{}x", a.public);
    let e = Keyring::new(&[a.public.clone(), typo], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("recipient 1") && e.contains("age1"), "{e}");
    assert!(parse_recipient("ssh-ed25519 AAAA").is_err());
    // Debug output of a keyring shows counts and paths only.
    let dir = tempfile::tempdir().unwrap();
    let f = identity_file(dir.path(), "a", &[&a], 0o600);
    let k = keyring(&[&a], std::slice::from_ref(&f));
    let shown = format!("{k:?}");
    assert!(shown.contains(&f) && !shown.contains(&a.secret), "{shown}");
}

#[test]
fn identities_follow_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(), key());
    let f = identity_file(dir.path(), "ids", &[&a], 0o600);
    let reader = keyring(&[], std::slice::from_ref(&f));
    let to_b = seal(&keyring(&[&b], &[]), b"for b");
    assert!(matches!(
        open(&reader, &to_b),
        Err(OpenError::WrongIdentity { .. })
    ));
    // Rewritten with b's identity (a new inode, as an editor or a deployment tool does).
    let tmp = identity_file(dir.path(), "ids.new", &[&b], 0o600);
    std::fs::rename(&tmp, &f).unwrap();
    assert_eq!(open(&reader, &to_b).unwrap(), b"for b");
    // Made readable by others: refused, the identities in use stay.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(open(&reader, &to_b).unwrap(), b"for b");
    // Replaced by garbage: the identities in use stay too.
    std::fs::write(&f, "garbage\n").unwrap();
    assert_eq!(open(&reader, &to_b).unwrap(), b"for b");
}
