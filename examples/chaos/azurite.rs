//! Azurite (the Azure Storage emulator, run with node from its installed main.js) for the chaos
//! run on the Azure backend: one server on a loopback port, its store in a directory so that
//! an outage can stop it and start it again on the same data and port. It is stopped with
//! SIGTERM, not SIGKILL: Azurite keeps blob metadata in LokiJS, saved every 5 s and on a
//! clean shutdown, so a SIGKILL would lose the last seconds of blobs, a failure of the
//! emulator's persistence rather than of what the test checks.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The emulator's well-known account and key (published in Microsoft's Azurite docs).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    main_js: PathBuf,
    location: PathBuf,
    log: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Azurite {
    pub fn start(main_js: &Path, dir: &Path) -> Azurite {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut a = Azurite {
            main_js: main_js.to_path_buf(),
            location: dir.join("azurite"),
            log: dir.join("azurite.log"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
        };
        std::fs::create_dir_all(&a.location).unwrap();
        a.spawn();
        a
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("node")
            .arg(&self.main_js)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.addr.port().to_string())
            .arg("--location")
            .arg(&self.location)
            .arg("--disableTelemetry")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting Azurite: {e}"));
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "Azurite did not listen on {} within 60 s; see {}",
                self.addr,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (a clean shutdown that saves the metadata), then wait; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let t0 = Instant::now();
        while c.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
