//! Request signing for Azure Blob Storage, done here because the Azure SDKs for Rust are async:
//! the Shared Key scheme (string-to-sign of version 2009-09-19 and later, with the empty
//! Content-Length of 2015-02-21 and later) and service SAS tokens for a container (signed
//! fields of version 2020-12-06 and later). Only the canonical strings are ours; the MAC is
//! RustCrypto's HMAC-SHA256 and base64 the `base64` crate. A [`SharedKey`] never shows its key
//! (no `Debug` of the bytes), and [`redact`] strips SAS signatures and bearer tokens from any
//! text that may carry a URL or a header, before it reaches a log or an error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

/// Characters left as they are in a blob's URL path: RFC 3986 unreserved ones and `/`, which
/// separates the virtual directories of a blob name. Everything else is percent-encoded, and
/// the path is signed exactly as sent.
const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Query values: RFC 3986 unreserved characters only.
const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a URL path (container and blob name).
pub fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_SET).to_string()
}

/// Percent-encodes a query parameter value.
pub fn encode_query(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_SET).to_string()
}

/// An account name with its decoded account key.
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKey {
    /// The key as the portal shows it: base64. Surrounding whitespace (a key file's trailing
    /// newline) is ignored, as Go's base64 decoder ignores line breaks. The error never
    /// contains the key.
    pub fn new(account: &str, key_base64: &str) -> Result<SharedKey, String> {
        let key = STANDARD
            .decode(key_base64.trim())
            .map_err(|e| format!("the account key is not valid base64 ({e})"))?;
        if key.is_empty() {
            return Err("the account key is empty".into());
        }
        Ok(SharedKey {
            account: account.to_string(),
            key,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// base64(HMAC-SHA256(key, text)).
    pub fn sign(&self, text: &str) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC-SHA256 takes keys of any length");
        mac.update(text.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The `Authorization` header value for a request with this string-to-sign.
    pub fn authorization(&self, string_to_sign: &str) -> String {
        format!("SharedKey {}:{}", self.account, self.sign(string_to_sign))
    }
}

/// The headers whose values go into the string-to-sign by position, in that order.
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The Shared Key string-to-sign of a Blob service request (versions 2009-09-19 and later).
/// `headers` are the request's headers (any case); `path` is the URL path exactly as sent
/// (percent-encoded, with the account name first for path-style emulator endpoints);
/// `query` holds the query parameters decoded.
pub fn string_to_sign(
    method: &str,
    headers: &[(&str, &str)],
    account: &str,
    path: &str,
    query: &[(&str, &str)],
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    };
    let mut s = String::with_capacity(256);
    s.push_str(&method.to_ascii_uppercase());
    s.push('\n');
    for name in STANDARD_HEADERS {
        let v = header(name);
        // Version 2015-02-21 and later: a zero Content-Length is signed as empty.
        if !(name == "content-length" && v == "0") {
            s.push_str(v);
        }
        s.push('\n');
    }
    s.push_str(&canonicalized_headers(headers));
    s.push_str(&canonicalized_resource(account, path, query));
    s
}

/// The `x-ms-*` headers: names lowercased and sorted, values trimmed with runs of whitespace
/// unfolded to one space, each line ending in a newline.
fn canonicalized_headers(headers: &[(&str, &str)]) -> String {
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.len() > 5 && k[..5].eq_ignore_ascii_case("x-ms-"))
        .map(|(k, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), value)
        })
        .collect();
    ms.sort();
    ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect()
}

/// `/<account><path>`, then each query parameter, names lowercased and sorted, as
/// `\nname:value[,value...]` with a parameter's values sorted.
fn canonicalized_resource(account: &str, path: &str, query: &[(&str, &str)]) -> String {
    let mut s = format!("/{account}{path}");
    let mut params: Vec<(String, Vec<&str>)> = Vec::new();
    for (k, v) in query {
        let k = k.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => params.push((k, vec![v])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, mut vs) in params {
        vs.sort_unstable();
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&vs.join(","));
    }
    s
}

/// The service SAS version we sign (its string-to-sign has the encryption scope field).
pub const SAS_VERSION: &str = "2020-12-06";

/// Fields of a service SAS for a container (`sr=c`).
pub struct ContainerSas<'a> {
    pub container: &'a str,
    /// Permissions in Azure's order, e.g. `racwdl`.
    pub permissions: &'a str,
    /// ISO 8601 UTC, e.g. `2026-12-04T10:00:00Z`; empty: valid from now.
    pub start: &'a str,
    pub expiry: &'a str,
    /// `https` or `https,http`.
    pub protocol: &'a str,
}

impl ContainerSas<'_> {
    /// The string-to-sign of a service SAS of version 2020-12-06 and later.
    pub fn string_to_sign(&self, account: &str) -> String {
        [
            self.permissions,
            self.start,
            self.expiry,
            &format!("/blob/{account}/{}", self.container),
            "", // signed identifier (stored access policy)
            "", // signed IP
            self.protocol,
            SAS_VERSION,
            "c", // signed resource: the container
            "",  // snapshot time
            "",  // encryption scope
            "",  // rscc
            "",  // rscd
            "",  // rsce
            "",  // rscl
            "",  // rsct
        ]
        .join("\n")
    }

    /// The token (query string without `?`) signed with the account key.
    pub fn token(&self, key: &SharedKey) -> String {
        let sig = key.sign(&self.string_to_sign(key.account()));
        let mut q = format!("sv={SAS_VERSION}");
        if !self.start.is_empty() {
            q.push_str(&format!("&st={}", encode_query(self.start)));
        }
        q.push_str(&format!(
            "&se={}&sr=c&sp={}",
            encode_query(self.expiry),
            encode_query(self.permissions)
        ));
        if !self.protocol.is_empty() {
            q.push_str(&format!("&spr={}", encode_query(self.protocol)));
        }
        q.push_str(&format!("&sig={}", encode_query(&sig)));
        q
    }
}

/// Removes SAS signatures (`sig=`), Shared Key signatures and bearer tokens from text that
/// may contain a URL or an `Authorization` header.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (marker, ends) in [
        ("sig=", &['&', ' ', '"', '\'', '\n'][..]),
        ("Bearer ", &[' ', '"', '\'', '\n', ','][..]),
        ("SharedKey ", &[' ', '"', '\'', '\n', ','][..]),
    ] {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker) {
            let start = from + i + marker.len();
            let end = out[start..]
                .find(|c: char| ends.contains(&c))
                .map_or(out.len(), |j| start + j);
            out.replace_range(start..end, "REDACTED");
            from = start + "REDACTED".len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The emulator's well-known account key (published in Microsoft's Azurite docs).
    const EMULATOR_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// Microsoft's "Authorize with Shared Key" examples of canonicalized resources.
    #[test]
    fn canonicalized_resources_from_the_docs() {
        // GET http://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata
        assert_eq!(
            canonicalized_resource(
                "myaccount",
                "/mycontainer",
                &[("restype", "container"), ("comp", "metadata")]
            ),
            "/myaccount/mycontainer\ncomp:metadata\nrestype:container"
        );
        // List Blobs with a parameter given three times.
        assert_eq!(
            canonicalized_resource(
                "myaccount",
                "/mycontainer",
                &[
                    ("restype", "container"),
                    ("comp", "list"),
                    ("include", "snapshots"),
                    ("include", "metadata"),
                    ("include", "uncommittedblobs"),
                ]
            ),
            "/myaccount/mycontainer\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs\nrestype:container"
        );
        // Get Blob against the secondary location: the account name, not the host's.
        assert_eq!(
            canonicalized_resource("myaccount", "/mycontainer/myblob", &[]),
            "/myaccount/mycontainer/myblob"
        );
    }

    /// The docs' example string-to-sign for Get Container Metadata on the emulator-style
    /// path (account name twice), with x-ms-date and x-ms-version and a timeout parameter.
    #[test]
    fn string_to_sign_from_the_docs() {
        let s = string_to_sign(
            "GET",
            &[
                ("x-ms-version", "2009-09-19"),
                ("x-ms-date", "Sun, 11 Oct 2009 21:49:13 GMT"),
            ],
            "myaccount",
            "/myaccount/mycontainer",
            &[
                ("restype", "container"),
                ("comp", "metadata"),
                ("timeout", "20"),
            ],
        );
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-version:2009-09-19\n/myaccount/myaccount/mycontainer\ncomp:metadata\nrestype:container\ntimeout:20"
        );
    }

    #[test]
    fn headers_by_position_and_unfolded() {
        let s = string_to_sign(
            "put",
            &[
                ("Content-Length", "0"),
                ("Content-Type", "text/plain; charset=UTF-8"),
                ("X-MS-Meta-M2", "v2"),
                ("x-ms-meta-m1", "  a   b  "),
                ("Range", "bytes=0-9"),
            ],
            "testaccount1",
            "/mycontainer/hello.txt",
            &[],
        );
        assert_eq!(
            s,
            "PUT\n\n\n\n\ntext/plain; charset=UTF-8\n\n\n\n\n\nbytes=0-9\nx-ms-meta-m1:a b\nx-ms-meta-m2:v2\n/testaccount1/mycontainer/hello.txt"
        );
        // A non-zero length is signed.
        let s = string_to_sign("PUT", &[("content-length", "12")], "a", "/c/b", &[]);
        assert!(s.starts_with("PUT\n\n\n12\n"), "{s:?}");
    }

    /// The signature, checked against Python's `hmac`/`base64` on the same string and the
    /// emulator key: `base64.b64encode(hmac.new(b64decode(KEY), s, sha256).digest())`.
    #[test]
    fn signature_matches_an_independent_implementation() {
        let key = SharedKey::new("devstoreaccount1", EMULATOR_KEY).unwrap();
        let s = "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-version:2009-09-19\n/devstoreaccount1/devstoreaccount1/mycontainer\ncomp:metadata\nrestype:container";
        assert_eq!(
            key.authorization(s),
            "SharedKey devstoreaccount1:yyszqzjSq62wBC3e4LOsmam3A0Iswv5KcIuuUW4zS4s="
        );
        // A key file's trailing newline is not part of the key.
        let k2 = SharedKey::new("devstoreaccount1", &format!("{EMULATOR_KEY}\n")).unwrap();
        assert_eq!(k2.sign(s), key.sign(s));
        let e = SharedKey::new("a", "not base64!").unwrap_err();
        assert!(!e.contains("not base64!"), "{e}");
        assert!(!format!("{key:?}").contains("Eby8"));
    }

    /// Microsoft's "Service SAS examples" (version 2012-02-12 layout): the same string-to-sign
    /// with the signed fields in order; our layout is the 2020-12-06 one.
    #[test]
    fn container_sas_fields() {
        let sas = ContainerSas {
            container: "pictures",
            permissions: "racwdl",
            start: "2026-01-01T00:00:00Z",
            expiry: "2027-01-01T00:00:00Z",
            protocol: "https,http",
        };
        assert_eq!(
            sas.string_to_sign("myaccount"),
            "racwdl\n2026-01-01T00:00:00Z\n2027-01-01T00:00:00Z\n/blob/myaccount/pictures\n\n\nhttps,http\n2020-12-06\nc\n\n\n\n\n\n\n"
        );
        let key = SharedKey::new("myaccount", EMULATOR_KEY).unwrap();
        let t = sas.token(&key);
        assert!(
            t.starts_with("sv=2020-12-06&st=2026-01-01T00%3A00%3A00Z&se=2027-01-01T00%3A00%3A00Z&sr=c&sp=racwdl&spr=https%2Chttp&sig="),
            "{t}"
        );
        assert!(
            !redact(&format!("GET http://h/c/b?{t} failed"))
                .contains(&key.sign(&sas.string_to_sign("myaccount")))
        );
    }

    #[test]
    fn redaction() {
        let r = redact(
            "GET /c/b?sv=1&sig=abc%2Bdef&sp=r: Authorization: Bearer eyJ0.x.y, SharedKey a:Zm9v",
        );
        assert!(
            !r.contains("abc") && !r.contains("eyJ0") && !r.contains("Zm9v"),
            "{r}"
        );
        assert!(r.contains("sv=1&sig=REDACTED&sp=r"), "{r}");
    }

    #[test]
    fn path_encoding() {
        assert_eq!(
            encode_path("/c/main__a b+c=d&e%f/ünï"),
            "/c/main__a%20b%2Bc%3Dd%26e%25f/%C3%BC%6E%C3%AF".replace("%6E", "n")
        );
    }
}
