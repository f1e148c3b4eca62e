//! A 3-node Garage cluster (replication factor 3) on loopback for the distributed chaos run:
//! writes the node configs, starts the servers, joins them into one layout, imports the test
//! key and creates the bucket, then waits until every node's S3 API serves signed requests for
//! it. Nodes can be stopped (SIGKILL) and started again on the same data, as a crashed and
//! restarted storage server would be; with one node of three down Garage keeps its quorum.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lightningstream::config::parse_str;
use lightningstream::storage::Storage;
use lightningstream::storage::s3::S3Storage;

/// Garage wants its own key format: `GK` + 24 hex digits, and a 64-hex-digit secret.
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub struct Node {
    config: PathBuf,
    log: PathBuf,
    pub s3: SocketAddr,
    child: Option<Child>,
}

pub struct Garage {
    bin: PathBuf,
    pub nodes: Vec<Node>,
}

/// A port nobody listens on right now (bound, then released for Garage to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Garage {
    /// Starts the cluster in `dir` with `bucket` ready; panics with Garage's output on failure.
    pub fn start(bin: &Path, dir: &Path, bucket: &str) -> Garage {
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", crate::rng::below(256)))
            .collect();
        let mut g = Garage {
            bin: bin.to_path_buf(),
            nodes: Vec::new(),
        };
        for i in 1..=3 {
            let home = dir.join(format!("garage{i}"));
            std::fs::create_dir_all(&home).unwrap();
            let (s3, rpc) = (free_port(), free_port());
            let config = home.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{home}/meta\"\ndata_dir = \"{home}/data\"\n\
                     db_engine = \"sqlite\"\nmetadata_fsync = false\ndata_fsync = false\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\
                     [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.localhost\"\n",
                    home = home.display()
                ),
            )
            .unwrap();
            g.nodes.push(Node {
                config,
                log: home.join("garage.log"),
                s3: SocketAddr::from(([127, 0, 0, 1], s3)),
                child: None,
            });
        }
        for i in 0..3 {
            g.start_node(i);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..3 {
            while g.cli(i, &["status"]).is_err() {
                assert!(Instant::now() < deadline, "garage node {i} never answered");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let ids: Vec<String> = (0..3)
            .map(|i| g.cli(i, &["node", "id", "-q"]).unwrap().trim().to_string())
            .collect();
        for id in &ids[1..] {
            g.must(&["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            g.must(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{}", i + 1),
                "-c",
                "1G",
                short,
            ]);
        }
        g.must(&["layout", "apply", "--version", "1"]);
        g.must(&[
            "key", "import", "--yes", "-n", "chaos", ACCESS_KEY, SECRET_KEY,
        ]);
        g.must(&["key", "allow", "--create-bucket", "chaos"]);
        g.must(&["bucket", "create", bucket]);
        g.must(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "chaos",
        ]);
        // The layout reaches the nodes one after the other: wait until each serves the bucket.
        for n in &g.nodes {
            let text = format!(
                "lmdbs: {{main: {{path: /x}}}}\nstorage:\n  type: s3\n  options:\n    \
                 endpoint_url: http://{}\n    bucket: {bucket}\n    access_key: {ACCESS_KEY}\n    \
                 secret_key: {SECRET_KEY}\n",
                n.s3
            );
            let opts = parse_str(&text, "garage-probe.yaml")
                .unwrap()
                .s3_options()
                .unwrap();
            loop {
                let ok = S3Storage::new(opts.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.list("").map_err(|e| e.to_string()));
                match ok {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        panic!("garage at {} never served the bucket: {e}", n.s3)
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        g
    }

    fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn must(&self, args: &[&str]) {
        if let Err(e) = self.cli(0, args) {
            panic!("{e}");
        }
    }

    pub fn start_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .unwrap();
        n.child = Some(
            Command::new(&self.bin)
                .arg("-c")
                .arg(&n.config)
                .arg("server")
                .env("RUST_LOG", "garage=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display())),
        );
    }

    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}
