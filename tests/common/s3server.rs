//! A real S3 server for tests, in-process: s3s with the s3s-fs backend, checking SigV4
//! signatures, on 127.0.0.1 with an ephemeral port. It runs on its own thread with a tokio
//! runtime (tests only; the product has no async runtime) and can be told to answer the next
//! requests with HTTP 500, or to stop and start again on the same port, for retry and outage tests.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    fail_next: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server whose buckets are the directories under `root`.
    pub fn start(root: &Path) -> S3Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(
            listener,
            root,
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        )
    }

    fn start_on(
        listener: TcpListener,
        root: &Path,
        fail_next: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    ) -> S3Server {
        std::fs::create_dir_all(root).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (fail, reqs) = (fail_next.clone(), requests.clone());
        let fs_root = root.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&fs_root).unwrap();
                let mut b = S3ServiceBuilder::new(fs);
                b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = b.build();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stop_rx => break,
                    };
                    let (service, fail, reqs) = (service.clone(), fail.clone(), reqs.clone());
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (service, fail, reqs) = (service.clone(), fail.clone(), reqs.clone());
                        async move {
                            reqs.fetch_add(1, Ordering::SeqCst);
                            let injected = fail
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                .is_ok();
                            if injected {
                                let body = "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>injected by the test</Message></Error>";
                                return Ok(http::Response::builder()
                                    .status(500)
                                    .body(s3s::Body::from(body.to_string()))
                                    .unwrap());
                            }
                            hyper::service::Service::call(&service, req).await
                        }
                    });
                    let conn = http.serve_connection(TokioIo::new(socket), svc).into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        S3Server {
            addr,
            root: root.to_path_buf(),
            fail_next,
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `n` requests get HTTP 500.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts again on the same address after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let fresh = Self::start_on(
            listener,
            &self.root.clone(),
            self.fail_next.clone(),
            self.requests.clone(),
        );
        *self = fresh;
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
