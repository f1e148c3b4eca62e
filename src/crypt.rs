//! Client-side encryption of stored objects in the age format (age-encryption.org/v1, through
//! the `age` crate: X25519 recipients, ChaCha20-Poly1305 STREAM in 64 KiB chunks, each chunk
//! authenticated and the last one marked, so truncation and tampering are detected), with no
//! construction of our own. A [`Keyring`] holds the configured recipients (every object is
//! encrypted to all of them) and identity files (any of them may decrypt), which are re-read
//! when they change on disk and must not be accessible to other users. [`Sealed`] wraps a
//! writer so the gzip output is encrypted as it is written; [`Keyring::decrypt_to`] decrypts a
//! download as it arrives, telling a failing source (retry), a missing or wrong identity (skip)
//! and a corrupt object apart. An operator can decrypt any object with the stock tool:
//! `age -d -i key.txt OBJECT | gunzip`. Secrets never leave this module: no error, log line or
//! `Debug` output contains an identity or the content of an identity file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::core::name::ENCRYPTED_SUFFIX;

/// The start of every age file (its version line).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Identity files larger than this are refused (age's own limit is 16 MiB; ours hold a few keys).
const MAX_IDENTITY_FILE: u64 = 1 << 20;

/// What is wrong with a key setting; never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{0}")]
    Recipient(String),
    #[error("identity file {path}: {message}")]
    IdentityFile { path: String, message: String },
}

/// Parses one recipient (`age1...`, X25519). The message never repeats the value: a secret key
/// pasted by mistake must not end up in a log.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, KeyError> {
    let s = s.trim();
    if s.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        return Err(KeyError::Recipient(
            "is an identity (a secret key), not a recipient: put its recipient (age-keygen -y) \
             here and the identity in a file listed under identity_files"
                .into(),
        ));
    }
    age::x25519::Recipient::from_str(s).map_err(|_| {
        KeyError::Recipient(format!(
            "not an age X25519 recipient (expected \"age1\" followed by 58 characters, got {} characters{})",
            s.len(),
            if s.starts_with("age1") {
                ""
            } else {
                " not starting with \"age1\""
            }
        ))
    })
}

type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// Reads an age identity file (`AGE-SECRET-KEY-1...` lines, `#` comments), refusing one that
/// other users may read or write, an empty one and anything that is not an identity.
pub fn read_identity_file(path: &Path) -> Result<Identities, KeyError> {
    let err = |message: String| KeyError::IdentityFile {
        path: path.display().to_string(),
        message,
    };
    let file = File::open(path).map_err(|e| err(format!("cannot be opened: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(err(format!(
            "is accessible to other users (mode {mode:04o}); refusing to use it: chmod o-rwx it (0600 or 0640)"
        )));
    }
    if meta.len() > MAX_IDENTITY_FILE {
        return Err(err(format!(
            "is larger than {MAX_IDENTITY_FILE} bytes, not an identity file"
        )));
    }
    // age's parser reports only a line number for a bad line, never its content.
    let parsed = age::IdentityFile::from_buffer(BufReader::new(file.take(MAX_IDENTITY_FILE)))
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => err(format!("{e}").replace("identity file ", "")),
            _ => err(format!("cannot be read: {e}")),
        })?;
    let identities = parsed
        .into_identities()
        .map_err(|_| err("holds an identity this program cannot use".into()))?;
    if identities.is_empty() {
        return Err(err(
            "holds no identity (expected AGE-SECRET-KEY-1... lines, as age-keygen writes)".into(),
        ));
    }
    Ok(identities)
}

/// What identifies one version of an identity file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
    mode: u32,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        ino: m.ino(),
        mode: m.mode(),
    })
}

struct Loaded {
    identities: Arc<Identities>,
    stamps: Vec<Option<Stamp>>,
}

/// The encryption settings in force: recipients to encrypt to (none: objects are stored in the
/// clear) and identity files to decrypt with (none: encrypted objects cannot be read).
pub struct Keyring {
    recipients: Vec<age::x25519::Recipient>,
    files: Vec<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("recipients", &self.recipients.len())
            .field("identity_files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Why an encrypted object could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No identity is configured: the object is skipped.
    #[error("encrypted, no identity configured")]
    NoIdentity,
    /// It is encrypted to none of the configured identities: skipped, and worth an alert.
    #[error("encrypted to none of the configured identities (identity files: {files})")]
    WrongIdentity { files: String },
    /// Not a valid age file, or its authentication failed (truncated or tampered with).
    #[error("{0}")]
    Corrupt(String),
    /// Reading the object (the source) failed: try again later.
    #[error("{0}")]
    Source(io::Error),
    /// Writing the decrypted copy failed (local disk trouble): try again later.
    #[error("writing the decrypted copy: {0}")]
    Sink(io::Error),
}

/// A reader that remembers whether it failed and how many bytes it gave.
struct Tracked<R> {
    inner: R,
    failed: bool,
    read: u64,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(e)
            }
        }
    }
}

impl Keyring {
    /// No encryption and no identities: everything is stored in the clear and encrypted objects
    /// of others are skipped.
    pub fn none() -> Keyring {
        Keyring {
            recipients: Vec::new(),
            files: Vec::new(),
            loaded: Mutex::new(Loaded {
                identities: Arc::new(Vec::new()),
                stamps: Vec::new(),
            }),
        }
    }

    /// Parses the recipients and reads the identity files (errors as [`parse_recipient`] and
    /// [`read_identity_file`] give them, the recipient's position included).
    pub fn new(recipients: &[String], identity_files: &[String]) -> Result<Keyring, KeyError> {
        let recipients = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                parse_recipient(r).map_err(|e| KeyError::Recipient(format!("recipient {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let files: Vec<PathBuf> = identity_files.iter().map(PathBuf::from).collect();
        let mut identities = Vec::new();
        let mut stamps = Vec::new();
        for f in &files {
            // Stamped before reading: a change while reading is seen at the next check.
            stamps.push(stamp(f));
            identities.extend(read_identity_file(f)?);
        }
        Ok(Keyring {
            recipients,
            files,
            loaded: Mutex::new(Loaded {
                identities: Arc::new(identities),
                stamps,
            }),
        })
    }

    /// Whether stored objects are encrypted.
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// Whether encrypted objects can be read (some identity file is configured).
    pub fn decrypts(&self) -> bool {
        !self.files.is_empty()
    }

    /// The name to store an object under: with [`ENCRYPTED_SUFFIX`] when encrypting.
    pub fn object_name(&self, plain: &str) -> String {
        if self.encrypts() {
            format!("{plain}.{ENCRYPTED_SUFFIX}")
        } else {
            plain.to_string()
        }
    }

    /// Wraps `out` so that what is written is encrypted to every recipient (or passed through
    /// when not encrypting). [`Sealed::finish`] must end it.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<Sealed<W>> {
        if !self.encrypts() {
            return Ok(Sealed::Plain(out));
        }
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| io::Error::other(format!("setting up encryption: {e}")))?;
        Ok(Sealed::Age(Box::new(encryptor.wrap_output(out)?)))
    }

    /// The current identities, re-read first if an identity file changed on disk. A file that
    /// became unreadable, invalid or accessible to others keeps the previous identities (with a
    /// warning), as a failed S3 credential refresh keeps the previous credentials.
    pub fn identities(&self) -> Arc<Identities> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let stamps: Vec<Option<Stamp>> = self.files.iter().map(|f| stamp(f)).collect();
        if stamps == loaded.stamps {
            return loaded.identities.clone();
        }
        let mut fresh = Vec::new();
        for f in &self.files {
            match read_identity_file(f) {
                Ok(ids) => fresh.extend(ids),
                Err(e) => {
                    log::warn!(error = e.to_string(); "Identity file changed but cannot be used; keeping the previous identities");
                    // Not retried until the file changes again.
                    loaded.stamps = stamps;
                    return loaded.identities.clone();
                }
            }
        }
        log::info!(identity_files = self.files.len(), identities = fresh.len(); "Identity files changed, identities reloaded");
        loaded.identities = Arc::new(fresh);
        loaded.stamps = stamps;
        loaded.identities.clone()
    }

    /// Decrypts the age file read from `input` into `out` and returns how many bytes were read
    /// from `input` and written to `out`. Everything is authenticated before this returns `Ok`:
    /// a truncated or altered object fails (age's last-chunk flag and per-chunk tags), so a
    /// caller that validates what it decrypted before using it never acts on a partial object.
    pub fn decrypt_to<R: Read, W: Write>(
        &self,
        input: R,
        out: &mut W,
    ) -> Result<(u64, u64), OpenError> {
        if !self.decrypts() {
            return Err(OpenError::NoIdentity);
        }
        let identities = self.identities();
        let mut src = Tracked {
            inner: input,
            failed: false,
            read: 0,
        };
        let decryptor =
            match age::Decryptor::new_buffered(BufReader::with_capacity(64 * 1024, &mut src)) {
                Ok(d) => d,
                Err(e) => return Err(header_error(e, src.failed)),
            };
        if decryptor.is_scrypt() {
            return Err(OpenError::Corrupt(
                "encrypted with a passphrase, not to a recipient".into(),
            ));
        }
        let mut reader = match decryptor.decrypt(identities.iter().map(|i| i.as_ref() as _)) {
            Ok(r) => r,
            Err(age::DecryptError::NoMatchingKeys) => {
                return Err(OpenError::WrongIdentity {
                    files: self
                        .files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            Err(e) => return Err(OpenError::Corrupt(format!("age header: {e}"))),
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    drop(reader);
                    return Err(if src.failed {
                        OpenError::Source(e)
                    } else {
                        OpenError::Corrupt(format!("age payload: {e}"))
                    });
                }
            };
            out.write_all(&buf[..n]).map_err(OpenError::Sink)?;
            written += n as u64;
        }
        drop(reader);
        Ok((src.read, written))
    }
}

fn header_error(e: age::DecryptError, source_failed: bool) -> OpenError {
    match e {
        age::DecryptError::Io(io) if source_failed => OpenError::Source(io),
        age::DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            OpenError::Corrupt("age header: truncated".into())
        }
        other => OpenError::Corrupt(format!("age header: {other}")),
    }
}

/// Whether a file starts like an age file (for files given on the command line, whose names
/// need not say so).
pub fn looks_encrypted(mut r: impl BufRead) -> io::Result<bool> {
    let head = r.fill_buf()?;
    Ok(head.starts_with(AGE_MAGIC))
}

/// A writer that encrypts what goes through it, or passes it on unchanged.
pub enum Sealed<W: Write> {
    Plain(W),
    Age(Box<age::stream::StreamWriter<W>>),
}

impl<W: Write> Sealed<W> {
    /// Writes the last (authenticated, end-marked) chunk and returns the inner writer. Without
    /// it an encrypted object is truncated and fails to decrypt.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.write_all(buf),
            Sealed::Age(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
