//! Credentials of the Azure backend: the account key (Shared Key), a SAS token (ours), or a
//! Microsoft Entra ID bearer token, which is what the Go version's `use_shared_key: false`
//! means (azidentity's DefaultAzureCredential). Of that chain we implement the two credentials
//! a daemon uses: the environment's client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET`, `AZURE_AUTHORITY_HOST`; OAuth 2.0 client credentials grant against
//! the v2.0 token endpoint) and the managed identity of the VM or pod (IMDS, honouring the
//! SDK's `AZURE_POD_IDENTITY_AUTHORITY_HOST` and a user-assigned `AZURE_CLIENT_ID`). Tokens are
//! cached and fetched again five minutes before they expire (or at half their life when they
//! are short), one fetch at a time. Key and SAS files are re-read every
//! `secrets_refresh_interval`, keeping the previous value when a read fails. No secret or token
//! ever appears in an error or a log line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::Agent;

use super::sign::SharedKey;

/// A secret given inline, or read from a file and re-read every `refresh`.
pub struct Secret<T> {
    what: &'static str,
    file: Option<(String, Duration)>,
    parse: Parser<T>,
    current: Mutex<(Arc<T>, Instant)>,
}

/// Turns a secret file's text into the secret (an error never quotes the text).
type Parser<T> = Box<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

impl<T> Secret<T> {
    pub fn inline(what: &'static str, value: T) -> Secret<T> {
        Secret {
            what,
            file: None,
            parse: Box::new(|_| Err(String::new())),
            current: Mutex::new((Arc::new(value), Instant::now())),
        }
    }

    /// Reads the file now (an error names the option and the file, never its content).
    pub fn file(
        what: &'static str,
        path: &str,
        refresh: Duration,
        parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Secret<T>, String> {
        let value = Self::read(what, path, &parse)?;
        Ok(Secret {
            what,
            file: Some((path.to_string(), refresh)),
            parse: Box::new(parse),
            current: Mutex::new((Arc::new(value), Instant::now())),
        })
    }

    fn read(
        what: &str,
        path: &str,
        parse: &dyn Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("reading {what} {path}: {e}"))?;
        parse(&text).map_err(|e| format!("{what} {path}: {e}"))
    }

    pub fn get(&self) -> Arc<T> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((path, refresh)) = &self.file
            && cur.1.elapsed() >= *refresh
        {
            match Self::read(self.what, path, &self.parse) {
                Ok(v) => *cur = (Arc::new(v), Instant::now()),
                Err(e) => {
                    // Keep the old value: a file being rewritten must not stop syncing.
                    log::warn!(error = e; "Azure secret refresh failed, keeping the previous value");
                    cur.1 = Instant::now();
                }
            }
        }
        cur.0.clone()
    }
}

/// How requests are authorized.
pub enum Auth {
    SharedKey(Secret<SharedKey>),
    /// The token's query string, without a leading `?`.
    Sas(Secret<String>),
    Bearer(TokenSource),
}

impl Auth {
    /// What to check when the service refuses our credentials.
    pub fn hint(&self) -> &'static str {
        match self {
            Auth::SharedKey(_) => "check account_name and account_key",
            Auth::Sas(_) => {
                "check the SAS token: not expired, and permissions racwdl on this container"
            }
            Auth::Bearer(_) => {
                "check the Entra ID identity and its role on the container (Storage Blob Data Contributor)"
            }
        }
    }
}

/// A SAS token as an operator pastes it: with or without `?`, surrounding whitespace ignored.
pub fn parse_sas(text: &str) -> Result<String, String> {
    let t = text.trim().trim_start_matches('?');
    if t.is_empty() {
        return Err("the SAS token is empty".into());
    }
    if !t.contains("sig=") {
        return Err("not a SAS token (no sig= parameter)".into());
    }
    Ok(t.to_string())
}

/// A failure to get a token; `transient` ones are worth another attempt.
#[derive(Debug)]
pub struct TokenError {
    pub message: String,
    pub transient: bool,
}

/// Which token protocol to speak.
enum Flow {
    /// OAuth 2.0 client credentials grant (Entra ID v2.0 token endpoint).
    ClientSecret {
        url: String,
        client_id: String,
        secret: String,
    },
    /// The Instance Metadata Service of the VM (or its stand-in on AKS pod identity).
    ManagedIdentity { url: String },
}

struct Token {
    value: String,
    refresh_at: Instant,
}

/// Entra ID access tokens for Azure Storage, cached until shortly before they expire.
pub struct TokenSource {
    flow: Flow,
    agent: Agent,
    cached: Mutex<Option<Token>>,
}

/// Tokens for this resource (scope `<resource>/.default` in the v2.0 protocol).
const STORAGE_RESOURCE: &str = "https://storage.azure.com";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";
const IMDS_API_VERSION: &str = "2018-02-01";
/// Fetch a new token this long before the current one expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

impl TokenSource {
    /// DefaultAzureCredential's order for what we support: the environment's client secret if
    /// all three variables are set, else the managed identity. `env` looks a variable up.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        tls: ureq::tls::TlsConfig,
    ) -> TokenSource {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let (tenant, client, secret) = (
            var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET"),
        );
        let flow = match (tenant, client.clone(), secret) {
            (Some(tenant), Some(client_id), Some(secret)) => {
                let authority =
                    var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
                let url = format!(
                    "{}/{}/oauth2/v2.0/token",
                    authority.trim_end_matches('/'),
                    super::sign::encode_query(&tenant)
                );
                log::info!(token_endpoint = url, client_id = client_id; "Azure: Entra ID client secret credential from the environment");
                Flow::ClientSecret {
                    url,
                    client_id,
                    secret,
                }
            }
            _ => {
                let host =
                    var("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_IMDS.into());
                let mut url = format!(
                    "{}/metadata/identity/oauth2/token?api-version={IMDS_API_VERSION}&resource={}",
                    host.trim_end_matches('/'),
                    super::sign::encode_query(STORAGE_RESOURCE)
                );
                if let Some(c) = &client {
                    url.push_str(&format!("&client_id={}", super::sign::encode_query(c)));
                }
                log::info!(token_endpoint = url; "Azure: managed identity credential (AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET are not all set)");
                Flow::ManagedIdentity { url }
            }
        };
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("lightningstream/{}", env!("CARGO_PKG_VERSION")))
            // IMDS answers at once on a VM; elsewhere a quick connect failure is the answer.
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            // The metadata service is link-local and must never go through a proxy.
            .proxy(None)
            .tls_config(tls)
            .build()
            .new_agent();
        TokenSource {
            flow,
            agent,
            cached: Mutex::new(None),
        }
    }

    /// A valid token, fetched when there is none or it is about to expire.
    pub fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &*cached
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let (value, lifetime) = self.fetch()?;
        let early = REFRESH_BEFORE.min(lifetime / 2);
        *cached = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(early),
        });
        Ok(value)
    }

    /// Forgets the cached token (after the service refused it).
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn fetch(&self) -> Result<(String, Duration), TokenError> {
        let (what, result) = match &self.flow {
            Flow::ClientSecret {
                url,
                client_id,
                secret,
            } => {
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", client_id)
                    .append_pair("client_secret", secret)
                    .append_pair("scope", &format!("{STORAGE_RESOURCE}/.default"))
                    .finish();
                (
                    "Entra ID token endpoint",
                    self.agent
                        .post(url.as_str())
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .send(form.as_bytes()),
                )
            }
            Flow::ManagedIdentity { url } => (
                "managed identity endpoint (IMDS)",
                self.agent
                    .get(url.as_str())
                    .header("Metadata", "true")
                    .call(),
            ),
        };
        let resp = result.map_err(|e| {
            let kind = super::retry::ureq_io_kind(&e);
            TokenError {
                message: format!("{what}: {e}"),
                transient: kind.is_some_and(super::retry::io_kind_is_transient),
            }
        })?;
        let status = resp.status().as_u16();
        let mut body = String::new();
        use std::io::Read;
        resp.into_body()
            .into_with_config()
            .limit(1 << 20)
            .reader()
            .read_to_string(&mut body)
            .map_err(|e| TokenError {
                message: format!("{what}: reading the response: {e}"),
                transient: true,
            })?;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if !(200..300).contains(&status) {
            // OAuth errors: {"error": "...", "error_description": "..."}; neither carries the
            // secret. IMDS answers 404/410/429/5xx while it is starting or throttling.
            let err = json["error"].as_str().unwrap_or("");
            let desc = json["error_description"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            return Err(TokenError {
                message: format!("{what}: HTTP {status} {err}: {desc}"),
                transient: super::retry::status_is_transient(status, err)
                    || (matches!(self.flow, Flow::ManagedIdentity { .. })
                        && matches!(status, 404 | 410)),
            });
        }
        let Some(token) = json["access_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(TokenError {
                message: format!("{what}: no access_token in the response"),
                transient: false,
            });
        };
        // expires_in is a number from Entra ID and a string from IMDS.
        let secs = match &json["expires_in"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        Ok((token.to_string(), Duration::from_secs(secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_token_forms() {
        assert_eq!(parse_sas("?sv=1&sig=abc\n").unwrap(), "sv=1&sig=abc");
        assert_eq!(parse_sas("sv=1&sig=abc").unwrap(), "sv=1&sig=abc");
        assert!(parse_sas("  ").is_err());
        assert!(parse_sas("sv=1").is_err());
    }

    #[test]
    fn secret_files_are_reread_and_kept_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sas");
        std::fs::write(&path, "sv=1&sig=one\n").unwrap();
        let p = path.to_str().unwrap();
        let s = Secret::file("sas_token_file", p, Duration::from_millis(10), parse_sas).unwrap();
        assert_eq!(*s.get(), "sv=1&sig=one");
        std::fs::write(&path, "sv=1&sig=two").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(*s.get(), "sv=1&sig=two");
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(*s.get(), "sv=1&sig=two");
        let e = Secret::file(
            "sas_token_file",
            "/nonexistent/x",
            Duration::from_secs(1),
            parse_sas,
        )
        .err()
        .unwrap();
        assert!(e.contains("sas_token_file /nonexistent/x"), "{e}");
        // A bad key never shows its content.
        std::fs::write(&path, "s3cr3t-not-base64!").unwrap();
        let e = Secret::file("account_key_file", p, Duration::from_secs(1), |t| {
            SharedKey::new("a", t)
        })
        .err()
        .unwrap();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn flows_from_the_environment() {
        let tls = ureq::tls::TlsConfig::default();
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let t = TokenSource::from_env(
            env(&[
                ("AZURE_TENANT_ID", "tenant-1"),
                ("AZURE_CLIENT_ID", "app"),
                ("AZURE_CLIENT_SECRET", "pw"),
                ("AZURE_AUTHORITY_HOST", "https://login.example/"),
            ]),
            tls.clone(),
        );
        assert!(matches!(&t.flow, Flow::ClientSecret { url, .. }
            if url == "https://login.example/tenant-1/oauth2/v2.0/token"));
        // Without a secret: the managed identity, user-assigned through AZURE_CLIENT_ID.
        let t = TokenSource::from_env(env(&[("AZURE_CLIENT_ID", "mi-1")]), tls.clone());
        assert!(
            matches!(&t.flow, Flow::ManagedIdentity { url }
            if url == "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com&client_id=mi-1"),
            "{}",
            match &t.flow {
                Flow::ManagedIdentity { url } => url.as_str(),
                _ => "",
            }
        );
        let t = TokenSource::from_env(
            env(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9/")]),
            tls,
        );
        assert!(matches!(&t.flow, Flow::ManagedIdentity { url }
            if url.starts_with("http://127.0.0.1:9/metadata/identity/oauth2/token?")));
    }
}
