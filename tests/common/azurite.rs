//! Azurite, Microsoft's Azure Storage emulator, for the Azure tests: installed from npm into
//! the test cache by tests/azurite-install.sh (once; pinned version), started on a free
//! loopback port with an in-memory store, and killed when dropped. It checks Shared Key
//! signatures, SAS tokens and, over HTTPS with `--oauth basic`, the claims of bearer tokens.
//! When node/npm are missing the tests skip, unless LS_REQUIRE_AZURITE is set (CI), where
//! that fails.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The emulator's well-known account and key (published in Microsoft's Azurite docs).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    main_js: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    https: bool,
}

/// The installed blob server's main.js; `None` (skip) when node/npm are missing and
/// LS_REQUIRE_AZURITE is unset.
pub fn main_js() -> Option<PathBuf> {
    static MAIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    MAIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/azurite-install.sh");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        if out.status.code() == Some(3) {
            assert!(
                std::env::var_os("LS_REQUIRE_AZURITE").is_none(),
                "Azurite cannot be installed here (node/npm missing) and LS_REQUIRE_AZURITE is set"
            );
            eprintln!("skipping: Azurite cannot be installed (node/npm missing)");
            return None;
        }
        assert!(out.status.success(), "installing Azurite failed");
        Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    })
    .clone()
}

impl Azurite {
    /// Azurite over HTTP with an in-memory store; logs into `dir`.
    pub fn start(dir: &Path) -> Option<Azurite> {
        Self::start_with(dir, &["--inMemoryPersistence"], false)
    }

    /// Azurite with extra arguments (`--location DIR`, `--oauth basic --cert .. --key ..`).
    pub fn start_with(dir: &Path, extra: &[&str], https: bool) -> Option<Azurite> {
        let main_js = main_js()?;
        let mut a = Azurite {
            child: None,
            port: crate::common::free_port(),
            main_js,
            args: extra.iter().map(|s| s.to_string()).collect(),
            log: dir.join(format!("azurite-{}.log", std::process::id())),
            https,
        };
        // A port taken between choosing and binding it: try another one.
        for _ in 0..3 {
            match a.spawn() {
                Ok(()) => return Some(a),
                Err(e) => {
                    eprintln!("Azurite on port {}: {e}; trying another port", a.port);
                    a.port = crate::common::free_port();
                }
            }
        }
        panic!(
            "Azurite did not start: {}",
            std::fs::read_to_string(&a.log).unwrap_or_default()
        );
    }

    /// Starts the server and waits until it listens (a loaded machine can take long).
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("node")
            .arg(&self.main_js)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--disableTelemetry")
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting Azurite (node)");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited ({s})"));
            }
            if t0.elapsed() > Duration::from_secs(120) {
                self.stop();
                return Err("not listening after 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The path-style endpoint of the emulator account.
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it (openssl), for Azurite over HTTPS:
/// returns (ca.pem, cert.pem, key.pem).
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}
