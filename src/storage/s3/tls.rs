//! The TLS settings of the S3 client, as the Go backend reads them: CA certificates from a file
//! or inline PEM (plus the system bundle when asked, or when none is configured), an optional
//! client certificate and key (again from files or inline), and `insecure_skip_verify`. Errors
//! name the setting at fault, since they are read once at start-up and a person has to fix them.

use std::io;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::config::TlsOptions;

fn pem_certs(pem: &[u8], what: &str) -> io::Result<Vec<Certificate<'static>>> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) =
            item.map_err(|e| io::Error::other(format!("{what}: {e}")))?
        {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(io::Error::other(format!("{what}: no certificate found")));
    }
    Ok(out)
}

fn read_file(path: &str, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{what} {path}: {e}")))
}

/// The ureq TLS configuration for the `tls` options.
pub(crate) fn tls_config(o: &TlsOptions) -> io::Result<TlsConfig> {
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    if !o.ca_file.is_empty() {
        roots.extend(pem_certs(
            &read_file(&o.ca_file, "tls.ca_file")?,
            "tls.ca_file",
        )?);
    }
    if !o.ca.is_empty() {
        roots.extend(pem_certs(o.ca.as_bytes(), "tls.ca")?);
    }
    // The system bundle when asked for, or when no CA is configured at all (Go's default).
    if roots.is_empty() || o.add_system_ca_pool {
        let bundle = std::env::var("SSL_CERT_FILE")
            .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_string());
        if let Ok(pem) = std::fs::read(&bundle) {
            roots.extend(pem_certs(&pem, "system CA bundle").unwrap_or_default());
        }
    }
    let root_certs = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&roots)
    };
    let cert_pem = match (o.cert_file.is_empty(), o.cert.is_empty()) {
        (false, _) => Some(read_file(&o.cert_file, "tls.cert_file")?),
        (true, false) => Some(o.cert.as_bytes().to_vec()),
        _ => None,
    };
    let key_pem = match (o.key_file.is_empty(), o.key.is_empty()) {
        (false, _) => Some(read_file(&o.key_file, "tls.key_file")?),
        (true, false) => Some(o.key.as_bytes().to_vec()),
        _ => None,
    };
    let client_cert = match (cert_pem, key_pem) {
        (Some(c), Some(k)) => {
            let chain = pem_certs(&c, "tls client certificate")?;
            let key = PrivateKey::from_pem(&k)
                .map_err(|e| io::Error::other(format!("tls client key: {e}")))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        (None, None) => None,
        _ => {
            return Err(io::Error::other(
                "tls: a client certificate needs both cert and key",
            ));
        }
    };
    Ok(TlsConfig::builder()
        .root_certs(root_certs)
        .client_cert(client_cert)
        .disable_verification(o.insecure_skip_verify)
        .build())
}
