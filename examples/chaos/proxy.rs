//! A fault-injecting HTTP/1.1 proxy for S3 on loopback, std::net and threads only (one thread
//! per client connection). Every request is read whole (head and Content-Length body), then
//! either forwarded to the upstream S3 server on a fresh connection (`Connection: close`, the
//! whole response buffered) and relayed on the client's keep-alive connection, or hit by one
//! fault picked at random: an S3 500 or 503 error (before the request reaches the server, or
//! after it did its work), a connection reset (before or after forwarding), a stall (before
//! forwarding, or between the response head and its body), a truncated response body (fewer
//! bytes than its Content-Length, then the connection closes) or a truncated request body (the
//! server gets part of an upload, the client a reset). Outages: `refuse` resets every
//! connection at once; an unreachable upstream (S3 server stopped) resets the client too.
//! Presigned URLs sign only the Host header, which is relayed unchanged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rng;

/// The faults, in the order of [`Ctl::counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Http500Before,
    Http500After,
    Http503Before,
    Http503After,
    ResetBefore,
    ResetAfter,
    StallBefore,
    StallInBody,
    TruncatedResponse,
    TruncatedRequest,
}

pub const FAULTS: [(Fault, &str); 10] = [
    (Fault::Http500Before, "HTTP 500 (request not forwarded)"),
    (Fault::Http500After, "HTTP 500 (after the server did it)"),
    (Fault::Http503Before, "HTTP 503 SlowDown (not forwarded)"),
    (
        Fault::Http503After,
        "HTTP 503 SlowDown (after the server did it)",
    ),
    (Fault::ResetBefore, "connection reset (not forwarded)"),
    (
        Fault::ResetAfter,
        "connection reset (after the server did it)",
    ),
    (Fault::StallBefore, "stall before forwarding"),
    (Fault::StallInBody, "stall between response head and body"),
    (Fault::TruncatedResponse, "truncated response body"),
    (Fault::TruncatedRequest, "truncated request body (upload)"),
];

/// Shared control and counters of a running proxy.
pub struct Ctl {
    upstream: Mutex<SocketAddr>,
    /// Outage: every connection is reset as soon as it is accepted.
    pub refuse: AtomicBool,
    /// Chance that a request gets a fault, in 1/1000.
    pub fault_permille: AtomicU32,
    /// Longest stall in ms (a stall lasts between half of it and all of it).
    pub stall_ms: AtomicU32,
    counts: [AtomicU64; FAULTS.len()],
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub upstream_down: AtomicU64,
}

impl Ctl {
    pub fn set_upstream(&self, a: SocketAddr) {
        *self.upstream.lock().unwrap() = a;
    }

    pub fn count(&self, f: Fault) -> u64 {
        self.counts[FAULTS.iter().position(|(x, _)| *x == f).unwrap()].load(Ordering::SeqCst)
    }

    fn note(&self, f: Fault) {
        self.counts[FAULTS.iter().position(|(x, _)| *x == f).unwrap()]
            .fetch_add(1, Ordering::SeqCst);
    }

    /// The fault for the next request, if any.
    fn pick(&self, has_request_body: bool) -> Option<Fault> {
        let p = self.fault_permille.load(Ordering::SeqCst) as u64;
        if p == 0 || rng::below(1000) >= p {
            return None;
        }
        // Stalls are rarer than the rest: each one holds a daemon's request for seconds.
        let f = match rng::below(20) {
            0..=1 => Fault::Http500Before,
            2..=3 => Fault::Http500After,
            4 => Fault::Http503Before,
            5 => Fault::Http503After,
            6..=8 => Fault::ResetBefore,
            9..=10 => Fault::ResetAfter,
            11 => Fault::StallBefore,
            12 => Fault::StallInBody,
            13..=16 => Fault::TruncatedResponse,
            _ if has_request_body => Fault::TruncatedRequest,
            _ => Fault::TruncatedResponse,
        };
        Some(f)
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub ctl: Arc<Ctl>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (an ephemeral port) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = Arc::new(Ctl {
            upstream: Mutex::new(upstream),
            refuse: AtomicBool::new(false),
            fault_permille: AtomicU32::new(0),
            stall_ms: AtomicU32::new(3000),
            counts: Default::default(),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            upstream_down: AtomicU64::new(0),
        });
        let c = ctl.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let c = c.clone();
                std::thread::spawn(move || serve(s, &c));
            }
        });
        Proxy { addr, ctl }
    }
}

/// Closes with a TCP RST (SO_LINGER 0) instead of a FIN.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// Reads an HTTP head up to the blank line; `None` at a clean end of the connection.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head[1..].iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An S3 error response; without its body for a HEAD request (the client would not read it).
fn s3_error(status: u16, is_head: bool) -> Vec<u8> {
    let (reason, code) = match status {
        503 => ("Service Unavailable", "SlowDown"),
        _ => ("Internal Server Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the chaos proxy</Message></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if !is_head {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// A buffered upstream response, its head rewritten for the client's keep-alive connection.
struct Response {
    head: Vec<u8>,
    body: Vec<u8>,
}

fn stall(ctl: &Ctl) {
    let max = ctl.stall_ms.load(Ordering::SeqCst).max(2) as u64;
    std::thread::sleep(Duration::from_millis(max / 2 + rng::below(max / 2)));
}

fn serve(client: TcpStream, ctl: &Ctl) {
    if ctl.refuse.load(Ordering::SeqCst) {
        ctl.refused.fetch_add(1, Ordering::SeqCst);
        return reset(client);
    }
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut client = client;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        if ctl.refuse.load(Ordering::SeqCst) {
            ctl.refused.fetch_add(1, Ordering::SeqCst);
            return reset(client);
        }
        ctl.requests.fetch_add(1, Ordering::SeqCst);
        let method = head[0].split(' ').next().unwrap_or("").to_string();
        if header(&head, "transfer-encoding").is_some() || header(&head, "expect").is_some() {
            // Not produced by the daemon's client; refuse loudly rather than guess.
            eprintln!("chaos proxy: unsupported request head {head:?}");
            return reset(client);
        }
        let len: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let fault = ctl.pick(len > 0);
        if let Some(f) = fault {
            ctl.note(f);
        }
        match fault {
            Some(Fault::Http500Before | Fault::Http503Before) => {
                let status = if fault == Some(Fault::Http500Before) {
                    500
                } else {
                    503
                };
                if client
                    .write_all(&s3_error(status, method == "HEAD"))
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Some(Fault::ResetBefore) => return reset(client),
            Some(Fault::StallBefore) => stall(ctl),
            Some(Fault::TruncatedRequest) => {
                // The server sees part of the upload and then the end of the connection.
                let up = *ctl.upstream.lock().unwrap();
                if let Ok(mut u) = TcpStream::connect_timeout(&up, Duration::from_secs(2)) {
                    let _ = u.write_all(request_head(&head).as_bytes());
                    let _ = u.write_all(&body[..rng::below(len as u64) as usize]);
                    let _ = u.shutdown(Shutdown::Both);
                }
                return reset(client);
            }
            _ => {}
        }
        let resp = match forward(ctl, &head, &body, method == "HEAD") {
            Ok(r) => r,
            Err(_) => {
                ctl.upstream_down.fetch_add(1, Ordering::SeqCst);
                return reset(client);
            }
        };
        let ok = match fault {
            Some(Fault::Http500After | Fault::Http503After) => {
                let status = if fault == Some(Fault::Http500After) {
                    500
                } else {
                    503
                };
                client
                    .write_all(&s3_error(status, method == "HEAD"))
                    .is_ok()
            }
            Some(Fault::ResetAfter) => return reset(client),
            Some(Fault::StallInBody) => {
                let _ = client.write_all(&resp.head);
                let _ = client.flush();
                stall(ctl);
                client.write_all(&resp.body).is_ok()
            }
            Some(Fault::TruncatedResponse) => {
                // Fewer bytes than Content-Length (none when the body is empty), then a FIN.
                let cut = rng::below(resp.body.len() as u64) as usize;
                let _ = client.write_all(&resp.head);
                let _ = client.write_all(&resp.body[..cut]);
                let _ = client.flush();
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            _ => client.write_all(&resp.head).is_ok() && client.write_all(&resp.body).is_ok(),
        };
        if !ok {
            return;
        }
    }
}

/// The client's request head with `Connection: close` (one upstream connection per request).
fn request_head(head: &[String]) -> String {
    let mut out = format!("{}\r\n", head[0]);
    for l in &head[1..] {
        let name = l.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn forward(ctl: &Ctl, head: &[String], body: &[u8], is_head: bool) -> std::io::Result<Response> {
    let up = *ctl.upstream.lock().unwrap();
    let mut u = TcpStream::connect_timeout(&up, Duration::from_secs(2))?;
    u.set_read_timeout(Some(Duration::from_secs(60)))?;
    u.write_all(request_head(head).as_bytes())?;
    u.write_all(body)?;
    let mut raw = Vec::new();
    u.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let lines: Vec<String> = head_text.split("\r\n").map(String::from).collect();
    let status: u16 = lines[0]
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let framed = is_head
        || status < 200
        || status == 204
        || status == 304
        || header(&lines, "content-length").is_some()
        || header(&lines, "transfer-encoding").is_some();
    let mut out = format!("{}\r\n", lines[0]);
    for l in &lines[1..] {
        let name = l.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    if !framed {
        // The server ended the body by closing; the client's connection stays open, so say
        // how long it is.
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    Ok(Response {
        head: out.into_bytes(),
        body,
    })
}

/// Several proxies run as one: the Garage run puts one in front of each node. Switches act on
/// all of them and counters are their sums.
pub struct Proxies(pub Vec<Proxy>);

impl Proxies {
    pub fn set_refuse(&self, on: bool) {
        self.0
            .iter()
            .for_each(|p| p.ctl.refuse.store(on, Ordering::SeqCst));
    }

    pub fn set_fault_permille(&self, p: u32) {
        self.0
            .iter()
            .for_each(|x| x.ctl.fault_permille.store(p, Ordering::SeqCst));
    }

    pub fn set_stall_ms(&self, ms: u32) {
        self.0
            .iter()
            .for_each(|p| p.ctl.stall_ms.store(ms, Ordering::SeqCst));
    }

    fn sum(&self, f: impl Fn(&Ctl) -> u64) -> u64 {
        self.0.iter().map(|p| f(&p.ctl)).sum()
    }

    pub fn count(&self, fault: Fault) -> u64 {
        self.sum(|c| c.count(fault))
    }

    pub fn requests(&self) -> u64 {
        self.sum(|c| c.requests.load(Ordering::SeqCst))
    }

    pub fn refused(&self) -> u64 {
        self.sum(|c| c.refused.load(Ordering::SeqCst))
    }

    pub fn upstream_down(&self) -> u64 {
        self.sum(|c| c.upstream_down.load(Ordering::SeqCst))
    }
}
