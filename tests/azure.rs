//! The Azure backend against Azurite, Microsoft's Azure Storage emulator, which checks Shared
//! Key signatures, SAS tokens and bearer-token claims: paging past 5,000 blobs, odd names,
//! large objects in staged blocks (sequential and parallel), the update marker and global
//! prefix, bad keys and missing containers, SAS tokens, Entra ID through stand-ins of the
//! token endpoint and IMDS (no real Entra ID is reachable here), the retry classification
//! against a scripted endpoint, and two daemons converging through the emulator.

#[path = "common/azurite.rs"]
mod azurite;
mod common;
#[path = "common/stub.rs"]
mod stub;

use std::io::{Cursor, Read};
use std::time::{Duration, Instant};

use azurite::{ACCOUNT, Azurite, KEY};
use common::{Daemon, Instance, entry, key, wait_for};
use lightningstream::config::{AzureOptions, parse_str};
use lightningstream::storage::Storage;
use lightningstream::storage::azure::AzureStorage;
use lightningstream::storage::azure::sign::{self, ContainerSas, SharedKey};

fn options(endpoint: &str, container: &str, extra: &str) -> AzureOptions {
    let text = format!(
        "lmdbs: {{main: {{path: /x}}}}\nstorage:\n  type: azure\n  options:\n    endpoint_url: {endpoint}\n    \
         container: {container}\n    account_name: {ACCOUNT}\n{extra}"
    );
    parse_str(&text, "test.yaml")
        .unwrap()
        .azure_options()
        .unwrap()
}

fn shared_key() -> String {
    format!("    use_shared_key: true\n    account_key: '{KEY}'\n")
}

fn storage(az: &Azurite, container: &str, extra: &str) -> AzureStorage {
    AzureStorage::new(options(
        &az.endpoint(),
        container,
        &format!("{}    create_container: true\n{extra}", shared_key()),
    ))
    .unwrap()
}

fn put(s: &dyn Storage, name: &str, data: &[u8]) {
    s.put(name, &mut Cursor::new(data.to_vec()), data.len() as u64)
        .unwrap();
}

fn get(s: &dyn Storage, name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    s.get(name).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// A request signed with the emulator key, outside the backend: to look behind its back.
fn raw(
    az: &Azurite,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let key = SharedKey::new(ACCOUNT, KEY).unwrap();
    let path = format!("/{ACCOUNT}{}", sign::encode_path(path));
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
        .unwrap();
    let len = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = vec![("x-ms-date", &date), ("x-ms-version", "2021-12-02")];
    if method == "PUT" {
        headers.push(("x-ms-blob-type", "BlockBlob"));
        headers.push(("content-length", &len));
    }
    let auth = key.authorization(&sign::string_to_sign(
        method, &headers, ACCOUNT, &path, query,
    ));
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", sign::encode_query(v)))
        .collect();
    let url = format!("http://127.0.0.1:{}{path}?{}", az.port, q.join("&"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in &headers {
        req = req.header(*k, *v);
    }
    req = req.header("Authorization", auth);
    let resp = agent.run(req.body(body.to_vec()).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    (status, text)
}

#[test]
fn basics_paging_and_odd_names() {
    let dir = tempfile::tempdir().unwrap();
    let Some(az) = Azurite::start(dir.path()) else {
        return;
    };
    let s = storage(&az, "basics", "");
    assert_eq!(s.kind(), "azure");
    assert!(s.list("").unwrap().is_empty());
    assert!(s.get("main__missing").err().unwrap().is_not_found());

    // More than one page of List Blobs (5,000 per page).
    let n = 5105;
    std::thread::scope(|sc| {
        for t in 0..8 {
            let s = &s;
            sc.spawn(move || {
                for i in (t..n).step_by(8) {
                    put(s, &format!("main__{i:05}"), format!("v{i}").as_bytes());
                }
            });
        }
    });
    put(&s, "other__x", b"x");
    let listed = s.list("main__").unwrap();
    assert_eq!(listed.len(), n);
    assert!(listed.windows(2).all(|w| w[0].name < w[1].name));
    assert_eq!(listed[n - 1].name, format!("main__{:05}", n - 1));
    assert_eq!(listed[n - 1].size, 5);
    assert_eq!(s.list("").unwrap().len(), n + 1);
    assert_eq!(get(&s, "main__00042"), b"v42");

    // Replace; wrong lengths are refused and leave the old content; empty objects.
    put(&s, "main__00042", b"cc");
    let mut short = Cursor::new(b"c".to_vec());
    assert!(s.put("main__00042", &mut short, 2).is_err());
    let mut long = Cursor::new(b"ccc".to_vec());
    assert!(s.put("main__00042", &mut long, 2).is_err());
    assert_eq!(get(&s, "main__00042"), b"cc");
    put(&s, "empty__x", b"");
    assert_eq!(get(&s, "empty__x"), b"");
    assert_eq!(s.list("empty__").unwrap()[0].size, 0);

    // Delete is idempotent.
    s.delete("main__00042").unwrap();
    s.delete("main__00042").unwrap();
    assert!(s.get("main__00042").err().unwrap().is_not_found());

    // Names with characters that need encoding in the URL and in the signature.
    let names = [
        "odd__a b",
        "odd__a=c&d",
        "odd__100%",
        "odd__a+b",
        "odd__ünï©ødé",
        "odd__x~y(z)!'*",
        "odd__semi;colon,comma",
        "odd__dir/sub",
    ];
    for n in names {
        put(&s, n, n.as_bytes());
    }
    let listed: Vec<String> = s
        .list("odd__")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for n in names {
        assert_eq!(get(&s, n), n.as_bytes(), "{n}");
    }
}

/// Data that does not repeat at block boundaries.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn large_objects_go_up_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let Some(az) = Azurite::start(dir.path()) else {
        return;
    };
    let data = pattern((5 << 20) + 12345);
    for concurrency in [1, 4] {
        let mut s = storage(&az, "large", &format!("    concurrency: {concurrency}\n"));
        s.set_block_upload(1 << 20, 1 << 20);
        let name = format!("main__big{concurrency}");
        put(&s, &name, &data);
        assert_eq!(get(&s, &name), data);
        assert_eq!(s.list(&name).unwrap()[0].size, data.len() as u64);
        // Six committed blocks: the object went up in blocks, not as one Put Blob.
        let (status, xml) = raw(
            &az,
            "GET",
            &format!("/large/{name}"),
            &[("comp", "blocklist"), ("blocklisttype", "committed")],
            b"",
        );
        assert_eq!(status, 200, "{xml}");
        assert_eq!(xml.matches("<Block>").count(), 6, "{xml}");
        // A small object is one Put Blob: no block list.
        put(&s, "main__small", b"small");
        let (_, xml) = raw(
            &az,
            "GET",
            "/large/main__small",
            &[("comp", "blocklist"), ("blocklisttype", "committed")],
            b"",
        );
        assert_eq!(xml.matches("<Block>").count(), 0, "{xml}");
    }
    // A wrong length fails before anything is committed, and the old content stays.
    let mut s = storage(&az, "large", "");
    s.set_block_upload(1 << 20, 1 << 20);
    let mut short = Cursor::new(data[..3 << 20].to_vec());
    assert!(s.put("main__big1", &mut short, data.len() as u64).is_err());
    assert_eq!(get(&s, "main__big1"), data);
}

#[test]
fn update_marker_and_global_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let Some(az) = Azurite::start(dir.path()) else {
        return;
    };
    let extra = "    use_update_marker: true\n    update_marker_force_list_interval: 1s\n    global_prefix: fleet/\n";
    let a = storage(&az, "marker", extra);
    let b = storage(&az, "marker", extra);
    assert!(b.list("").unwrap().is_empty());
    put(&a, "main__1", b"one");
    // b sees the change through the marker, and never the marker itself.
    let names: Vec<String> = b.list("").unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["main__1"]);
    let (status, marker) = raw(&az, "GET", "/marker/fleet/update-marker", &[], b"");
    assert_eq!(status, 200);
    let parts: Vec<&str> = marker.split(':').collect();
    assert_eq!(parts[0], "fleet/main__1");
    assert_eq!(parts[parts.len() - 1], "false");
    // Everything lives under the prefix.
    let (_, listing) = raw(
        &az,
        "GET",
        "/marker",
        &[("restype", "container"), ("comp", "list")],
        b"",
    );
    assert!(listing.contains("<Name>fleet/main__1</Name>"), "{listing}");
    assert!(!listing.contains("<Name>main__1</Name>"), "{listing}");

    // A blob stored behind the marker's back shows only after the forced listing interval.
    assert_eq!(
        raw(&az, "PUT", "/marker/fleet/main__sneaky", &[], b"s").0,
        201
    );
    assert_eq!(b.list("").unwrap().len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(b.list("").unwrap().len(), 2);
    // A delete rewrites the marker too.
    a.delete("main__1").unwrap();
    let (_, marker) = raw(&az, "GET", "/marker/fleet/update-marker", &[], b"");
    assert!(
        marker.starts_with("fleet/main__1::") && marker.ends_with(":true"),
        "{marker}"
    );
    let names: Vec<String> = b
        .list("main__")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["main__sneaky"]);
}

#[test]
fn bad_keys_and_missing_containers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(az) = Azurite::start(dir.path()) else {
        return;
    };
    // A missing container without create_container: a clear error naming it.
    let e = AzureStorage::new(options(&az.endpoint(), "nocontainer", &shared_key()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("\"nocontainer\"")
            && e.contains("does not exist")
            && e.contains("create_container"),
        "{e}"
    );
    // create_container twice: the second finds it existing, which is fine.
    storage(&az, "made", "");
    storage(&az, "made", "");

    // A wrong key (valid base64): refused at once, not retried, never shown.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let t0 = Instant::now();
    let e = AzureStorage::new(options(
        &az.endpoint(),
        "made",
        &format!("    use_shared_key: true\n    account_key: '{wrong}'\n"),
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "auth errors must not be retried"
    );
    assert!(
        e.contains("\"made\"")
            && e.contains("403")
            // Azure says AuthenticationFailed, Azurite AuthorizationFailure.
            && (e.contains("AuthenticationFailed") || e.contains("AuthorizationFailure"))
            && e.contains("check account_name and account_key"),
        "{e}"
    );
    assert!(
        !e.contains(wrong) && !e.contains("SharedKey devstoreaccount1:"),
        "{e}"
    );
    // A key that is not base64 is refused before any request, without quoting it.
    let e = AzureStorage::new(options(
        &az.endpoint(),
        "made",
        "    use_shared_key: true\n    account_key: 'not a key!'\n",
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("account_key") && !e.contains("not a key!"),
        "{e}"
    );

    // A key file, re-read: a wrong key first, then the right one.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let s = AzureStorage::new(options(
        &az.endpoint(),
        "made",
        &format!(
            "    use_shared_key: true\n    account_key_file: {}\n    secrets_refresh_interval: 1s\n",
            key_file.display()
        ),
    ))
    .unwrap();
    put(&s, "main__k", b"k");
    std::fs::write(&key_file, wrong).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let e = s
        .list("")
        .expect_err("the rotated wrong key is used")
        .to_string();
    assert!(e.contains("403"), "{e}");
    std::fs::write(&key_file, KEY).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.list("").unwrap().len(), 1);
}

#[test]
fn sas_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let Some(az) = Azurite::start(dir.path()) else {
        return;
    };
    storage(&az, "sas", "");
    let key = SharedKey::new(ACCOUNT, KEY).unwrap();
    let token = |perms: &str, expiry: &str| {
        ContainerSas {
            container: "sas",
            permissions: perms,
            start: "",
            expiry,
            protocol: "https,http",
        }
        .token(&key)
    };
    let full = token("racwdl", "2099-01-01T00:00:00Z");
    let s = AzureStorage::new(options(
        &az.endpoint(),
        "sas",
        &format!("    sas_token: '?{full}'\n"),
    ))
    .unwrap();
    put(&s, "main__s", b"sas");
    assert_eq!(get(&s, "main__s"), b"sas");
    assert_eq!(s.list("").unwrap().len(), 1);
    s.delete("main__s").unwrap();
    assert!(s.list("").unwrap().is_empty());

    // From a file.
    let file = dir.path().join("sas");
    std::fs::write(&file, format!("{full}\n")).unwrap();
    let s = AzureStorage::new(options(
        &az.endpoint(),
        "sas",
        &format!("    sas_token_file: {}\n", file.display()),
    ))
    .unwrap();
    put(&s, "main__f", b"f");

    // Read and list only: storing fails clearly, once, without the signature.
    let ro = token("rl", "2099-01-01T00:00:00Z");
    let s = AzureStorage::new(options(
        &az.endpoint(),
        "sas",
        &format!("    sas_token: '{ro}'\n"),
    ))
    .unwrap();
    assert_eq!(get(&s, "main__f"), b"f");
    let e = s
        .put("main__x", &mut Cursor::new(b"x".to_vec()), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("403") && e.contains("SAS token") && e.contains("main__x"),
        "{e}"
    );
    let sig = ro.split("sig=").nth(1).unwrap();
    assert!(!e.contains(sig), "{e}");

    // Expired: refused at start-up.
    let old = token("racwdl", "2001-01-01T00:00:00Z");
    let e = AzureStorage::new(options(
        &az.endpoint(),
        "sas",
        &format!("    sas_token: '{old}'\n"),
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("403") && e.contains("\"sas\""), "{e}");
}

/// An unsigned JWT with the claims Azurite's `--oauth basic` checks (issuer, audience, times).
fn jwt(lifetime: u64) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(
        "{{\"aud\":\"https://storage.azure.com\",\"iss\":\"https://sts.windows.net/tenant-1/\",\
          \"nbf\":{},\"exp\":{},\"iat\":{},\"oid\":\"test\",\"tid\":\"tenant-1\"}}",
        now - 60,
        now + lifetime,
        now - 60
    );
    format!(
        "{}.{}.c2ln",
        b64("{\"alg\":\"RS256\",\"typ\":\"JWT\"}"),
        b64(&claims)
    )
}

#[test]
fn entra_id_through_stand_in_token_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, tls_key) = azurite::make_tls(dir.path());
    let (cert, tls_key) = (cert.display().to_string(), tls_key.display().to_string());
    let Some(az) = Azurite::start_with(
        dir.path(),
        &[
            "--inMemoryPersistence",
            "--oauth",
            "basic",
            "--cert",
            &cert,
            "--key",
            &tls_key,
        ],
        true,
    ) else {
        return;
    };
    // Container made with the key (Azurite takes both over HTTPS).
    let tls = format!("    tls:\n      ca_file: {}\n", ca.display());
    AzureStorage::new(options(
        &az.endpoint(),
        "entra",
        &format!("{}    create_container: true\n{tls}", shared_key()),
    ))
    .unwrap();

    // Entra ID's v2.0 token endpoint: client credentials; tokens live 2 s, so that a daemon
    // running 4 s must fetch several (refreshed before expiry, cached in between).
    let secret = "client-s3cret-value";
    let token_endpoint = stub::Stub::start(move |req, _| {
        let ok = req.method == "POST"
            && req.target == "/tenant-1/oauth2/v2.0/token"
            && req.body.contains("grant_type=client_credentials")
            && req.body.contains("client_id=app-1")
            && req.body.contains(&format!("client_secret={secret}"))
            && req
                .body
                .contains("scope=https%3A%2F%2Fstorage.azure.com%2F.default");
        if ok {
            (
                200,
                vec![],
                format!(
                    "{{\"token_type\":\"Bearer\",\"expires_in\":2,\"access_token\":\"{}\"}}",
                    jwt(2)
                ),
            )
        } else {
            (400, vec![], "{\"error\":\"invalid_request\",\"error_description\":\"AADSTS900144: bad request\"}".into())
        }
    });
    let storage_yaml = format!(
        "storage:\n  type: azure\n  options:\n    endpoint_url: {}\n    container: entra\n    account_name: {ACCOUNT}\n{tls}",
        az.endpoint()
    );
    let a = Instance::with_storage(dir.path(), "a", &storage_yaml, "200ms");
    a.write("records", &[("k1", Some("v1"), 100)]);
    let log = dir.path().join("a.log");
    let mut cmd = a.command(&["--log-level", "debug", "sync"]);
    cmd.env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_SECRET", secret)
        .env("AZURE_AUTHORITY_HOST", token_endpoint.url())
        .stderr(std::fs::File::create(&log).unwrap());
    let daemon = Daemon(cmd.spawn().unwrap());
    let (_, listing) = wait_for_listing(&az, "entra", |l| l.contains("main__a__"));
    assert!(listing.contains("main__a__"), "{listing}");
    std::thread::sleep(Duration::from_secs(4));
    drop(daemon);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(secret) && !text.contains("eyJ"), "{text}");
    assert!(!text.contains("AuthenticationFailed"), "{text}");
    let fetched = token_endpoint.count();
    assert!(
        (2..=12).contains(&fetched),
        "{fetched} token requests in ~4 s of 2 s tokens: {text}"
    );

    // The managed identity (IMDS), found through AZURE_POD_IDENTITY_AUTHORITY_HOST.
    let imds = stub::Stub::start(|req, _| {
        if req.header("metadata") == Some("true")
            && req.target.starts_with("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com")
        {
            (200, vec![], format!("{{\"access_token\":\"{}\",\"expires_in\":\"3600\",\"expires_on\":\"0\",\"resource\":\"https://storage.azure.com\",\"token_type\":\"Bearer\"}}", jwt(3600)))
        } else {
            (400, vec![], "{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header not specified\"}".into())
        }
    });
    let b = Instance::with_storage(dir.path(), "b", &storage_yaml, "200ms");
    let out = b
        .command(&["sync", "--only-once"])
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url())
        .env_remove("AZURE_CLIENT_SECRET")
        .output()
        .unwrap();
    common::assert_ok(&out, "sync --only-once with the managed identity");
    assert_eq!(b.dump()[&key("records", "k1")], entry(100, Some("v1")));
    assert_eq!(imds.count(), 1, "one token, cached for the whole run");

    // A token endpoint refusing the client: a clear error, not retried five times.
    let refusing = stub::Stub::start(|_, _| {
        (401, vec![], "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client secret provided.\"}".into())
    });
    let out = b
        .command(&["sync", "--only-once"])
        .env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_SECRET", secret)
        .env("AZURE_AUTHORITY_HOST", refusing.url())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("invalid_client") && err.contains("\"entra\"") && !err.contains(secret),
        "{err}"
    );
    assert_eq!(refusing.count(), 1, "{err}");

    // A token the service refuses (revoked, expired early): one new token, then success.
    let tokens = stub::Stub::start(|_, n| {
        (
            200,
            vec![],
            format!("{{\"expires_in\":3600,\"access_token\":\"token-{n}\"}}"),
        )
    });
    let store = stub::Stub::start(|req, _| {
        if req.header("authorization") == Some("Bearer token-1") {
            (
                401,
                vec![("x-ms-error-code", "InvalidAuthenticationInfo".into())],
                String::new(),
            )
        } else {
            (
                200,
                vec![],
                "<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>".into(),
            )
        }
    });
    let c = Instance::with_storage(
        dir.path(),
        "c",
        &format!(
            "storage:\n  type: azure\n  options:\n    endpoint_url: {}/{ACCOUNT}\n    container: entra\n",
            store.url()
        ),
        "200ms",
    );
    let out = c
        .command(&["snapshots", "list"])
        .env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_SECRET", secret)
        .env("AZURE_AUTHORITY_HOST", tokens.url())
        .output()
        .unwrap();
    common::assert_ok(&out, "snapshots list after a refused token");
    assert_eq!(tokens.count(), 2);
    assert_eq!(
        store.count(),
        3,
        "refused, then the start-up check and the listing"
    );
}

/// Polls the container's listing (with the key) until `cond` holds.
fn wait_for_listing(az: &Azurite, container: &str, cond: impl Fn(&str) -> bool) -> (u16, String) {
    let mut last = (0, String::new());
    wait_for("the listing", Duration::from_secs(30), || {
        last = raw_tls(az, container);
        cond(&last.1)
    });
    last
}

/// A listing over HTTPS when the emulator speaks it (trusting any certificate: a test peek).
fn raw_tls(az: &Azurite, container: &str) -> (u16, String) {
    let key = SharedKey::new(ACCOUNT, KEY).unwrap();
    let path = format!("/{ACCOUNT}/{container}");
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
        .unwrap();
    let headers = [("x-ms-date", date.as_str()), ("x-ms-version", "2021-12-02")];
    let query = [("restype", "container"), ("comp", "list")];
    let auth = key.authorization(&sign::string_to_sign(
        "GET", &headers, ACCOUNT, &path, &query,
    ));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build()
        .into();
    let url = format!("{}/{container}?restype=container&comp=list", az.endpoint());
    let Ok(resp) = agent
        .get(&url)
        .header("x-ms-date", &date)
        .header("x-ms-version", "2021-12-02")
        .header("Authorization", auth)
        .call()
    else {
        return (0, String::new());
    };
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn retries_follow_the_classification() {
    let error = |status: u16, code: &'static str| -> stub::Reply {
        (
            status,
            vec![("x-ms-error-code", code.to_string())],
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>scripted</Message></Error>"
            ),
        )
    };
    let empty = "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Blobs /><NextMarker /></EnumerationResults>";
    // Throttling and server errors: retried until the answer comes.
    let busy = stub::Stub::start(move |_, n| match n {
        1 => error(503, "ServerBusy"),
        2 => error(500, "InternalError"),
        _ => (200, vec![], empty.to_string()),
    });
    let endpoint = format!("{}/{ACCOUNT}", busy.url());
    let s = AzureStorage::new(options(&endpoint, "c", &shared_key())).unwrap();
    assert_eq!(busy.count(), 3);
    assert!(s.list("").unwrap().is_empty());
    let req = busy.requests.lock().unwrap()[0].clone();
    assert!(
        req.target
            .starts_with(&format!("/{ACCOUNT}/c?restype=container&comp=list")),
        "{req:?}"
    );
    assert!(
        req.header("authorization")
            .unwrap()
            .starts_with("SharedKey devstoreaccount1:")
    );
    assert_eq!(req.header("x-ms-version"), Some("2021-12-02"));

    // Refused credentials: one request, a clear error.
    let refused = stub::Stub::start(move |_, _| error(403, "AuthenticationFailed"));
    let endpoint = format!("{}/{ACCOUNT}", refused.url());
    let e = AzureStorage::new(options(&endpoint, "c", &shared_key()))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(refused.count(), 1, "{e}");
    assert!(
        e.contains("AuthenticationFailed") && e.contains("\"c\"") && !e.contains("SharedKey "),
        "{e}"
    );

    // A server that keeps failing: five attempts, then an error saying so.
    let down = stub::Stub::start(move |_, _| error(503, "ServerBusy"));
    let endpoint = format!("{}/{ACCOUNT}", down.url());
    let e = AzureStorage::new(options(&endpoint, "c", &shared_key()))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(down.count(), 5, "{e}");
    assert!(
        e.contains("ServerBusy") && e.contains("gave up after 5 attempts"),
        "{e}"
    );

    // Nothing listening: network errors are retried too.
    let port = common::free_port();
    let e = AzureStorage::new(options(
        &format!("http://127.0.0.1:{port}/{ACCOUNT}"),
        "c",
        &shared_key(),
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("network") && e.contains("gave up after 5 attempts"),
        "{e}"
    );
}

#[test]
fn two_daemons_converge_through_azurite() {
    let dir = tempfile::tempdir().unwrap();
    let Some(az) = Azurite::start(dir.path()) else {
        return;
    };
    let port = common::free_port();
    let storage_yaml = format!(
        "storage:\n  type: azure\n  options:\n    endpoint_url: {}\n    container: fleet\n    create_container: true\n    \
         account_name: {ACCOUNT}\n    use_shared_key: true\n    account_key: '{KEY}'\n    global_prefix: ls/\n    \
         use_update_marker: true\n",
        az.endpoint()
    );
    let a_yaml = format!("{storage_yaml}http: {{address: '127.0.0.1:{port}'}}\n");
    let a = Instance::with_storage(dir.path(), "a", &a_yaml, "100ms");
    let b = Instance::with_storage(dir.path(), "b", &storage_yaml, "100ms");
    a.write(
        "records",
        &[("k1", Some("a1"), 100), ("shared", Some("from-a"), 300)],
    );
    b.write(
        "records",
        &[("k2", Some("b2"), 100), ("shared", Some("from-b"), 200)],
    );
    let _da = Daemon::start(&a, "sync", &dir.path().join("a.log"));
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    let took = wait_for("both daemons to converge", Duration::from_secs(30), || {
        let (da, db) = (a.dump(), b.dump());
        da == db && da.len() == 3
    });
    assert_eq!(
        a.dump()[&key("records", "shared")],
        entry(300, Some("from-a"))
    );
    // A later change on b reaches a.
    b.write("records", &[("k3", Some("b3"), 400)]);
    wait_for("a change to propagate", Duration::from_secs(30), || {
        a.dump().get(&key("records", "k3")) == Some(&entry(400, Some("b3")))
    });
    eprintln!("converged in {took:?}");
    // Upstream's storage_azure_* metrics, by upstream's method names.
    let (status, metrics) = common::get(port, "/metrics").expect("status server");
    assert_eq!(status, 200);
    for want in [
        "storage_azure_call_total{method=\"list\"}",
        "storage_azure_call_total{method=\"store\"}",
        "storage_azure_call_total{method=\"load\"}",
        "storage_azure_call_total{method=\"create-container\"}",
        "storage_azure_call_duration_seconds_bucket{method=\"load\",le=\"60\"}",
        "storage_azure_call_timestamp_seconds{method=\"store\"}",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    common::promtool_check(&metrics);
    // The CLI lists the snapshots under the prefix, and the log never shows the key.
    let out = a.command(&["snapshots", "list", "-l"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().count() >= 2 && text.lines().all(|l| l.contains("\tmain__")),
        "{text}"
    );
    let out = a
        .command(&["--log-config", "sync", "--only-once"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Effective configuration") && !log.contains(KEY),
        "{log}"
    );
}
