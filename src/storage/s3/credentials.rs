//! Where the S3 keys come from: fixed in the configuration, or read from two files that are
//! re-read every `secrets_refresh_interval`, so that rotated keys (a Kubernetes secret, a
//! Vault agent) are picked up without a restart. A file being rewritten can be read half
//! written or not at all; the previous keys are then kept, since losing them would stop syncing
//! for a problem that fixes itself on the next refresh.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusty_s3::Credentials;

/// Fixed keys, or files re-read every `refresh`.
pub(super) enum CredentialSource {
    Static(Credentials),
    Files {
        key_file: String,
        secret_file: String,
        refresh: Duration,
        current: Mutex<(Credentials, Instant)>,
    },
}

pub(super) fn read_credentials(key_file: &str, secret_file: &str) -> io::Result<Credentials> {
    // Used verbatim, as the Go backend does: a trailing newline is part of the key.
    let key = std::fs::read_to_string(key_file).map_err(|e| {
        io::Error::new(e.kind(), format!("reading access_key_file {key_file}: {e}"))
    })?;
    let secret = std::fs::read_to_string(secret_file).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading secret_key_file {secret_file}: {e}"),
        )
    })?;
    Ok(Credentials::new(key, secret))
}

impl CredentialSource {
    /// Reads the files once now; `refresh` zero means the Go default of 15 s.
    pub(super) fn files(
        key_file: &str,
        secret_file: &str,
        refresh: Duration,
    ) -> io::Result<CredentialSource> {
        let refresh = if refresh.is_zero() {
            Duration::from_secs(15)
        } else {
            refresh
        };
        let c = read_credentials(key_file, secret_file)?;
        Ok(CredentialSource::Files {
            key_file: key_file.to_string(),
            secret_file: secret_file.to_string(),
            refresh,
            current: Mutex::new((c, Instant::now())),
        })
    }

    /// The keys to sign the next request with.
    pub(super) fn get(&self) -> Credentials {
        match self {
            CredentialSource::Static(c) => c.clone(),
            CredentialSource::Files {
                key_file,
                secret_file,
                refresh,
                current,
            } => {
                let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                if cur.1.elapsed() >= *refresh {
                    match read_credentials(key_file, secret_file) {
                        Ok(c) => *cur = (c, Instant::now()),
                        Err(e) => {
                            // Keep the old keys: a file being rewritten must not stop syncing.
                            log::warn!(error = e.to_string(); "S3 credential refresh failed, keeping the previous credentials");
                            cur.1 = Instant::now();
                        }
                    }
                }
                cur.0.clone()
            }
        }
    }
}
