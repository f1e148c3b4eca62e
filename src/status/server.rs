//! The HTTP/1.1 plumbing of the status server: a blocking accept loop on its own thread, one
//! thread per connection (so a slow or silent client can never hold up a health probe; more than
//! [`MAX_CONNECTIONS`] at once get an immediate 503), a 5 s limit to send the request head, and
//! one response per connection, closed after it (`Connection: close`: clients that read to the
//! end of the stream, as simple probes and our tests do, need no HTTP parser). Only `GET` and
//! `HEAD` are served; what each path answers is the caller's business.
//!
//! Why not a server crate: tiny_http 0.12, the small synchronous candidate, keeps every HTTP/1.1
//! connection alive with no way for a response to close it (a client reading to the end waits
//! for its own timeout), sets no read timeout (each silent client pins one of its threads for
//! as long as it stays connected, with no upper bound on threads), and adds `Server` and `Date`
//! headers; keeping today's behaviour on top of it would take more code than this file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;

/// More simultaneous connections than this get an immediate 503.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to take in the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head we read.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How often the stop flag (a plain `AtomicBool`, which nobody signals) is looked at. Only
/// shutdown waits for this; connections are accepted the moment they arrive.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What a path answers.
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(code: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            code,
            content_type,
            body: body.into(),
        }
    }
}

/// Binds `address` and answers each `GET` or `HEAD` with `route(path)` (the path without its
/// query string) on background threads until `stop` is set; then the listener is closed. A bind
/// failure is returned.
pub fn serve(
    address: &str,
    stop: Arc<AtomicBool>,
    route: impl Fn(&str) -> Response + Send + Sync + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("HTTP server error: listening on {address}"))?;
    let local = listener.local_addr()?;
    let route = Arc::new(route);
    let active = Arc::new(AtomicUsize::new(0));
    let accept_stop = stop.clone();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if accept_stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn {
                    Ok(conn) => dispatch(conn, &route, &active),
                    Err(e) => {
                        // Out of file descriptors, say: pause rather than spin on the error.
                        log::warn!(error = e.to_string(); "HTTP accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .context("starting the HTTP thread")?;
    std::thread::Builder::new()
        .name("http-stop".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(STOP_CHECK);
            }
            // Wake the blocking accept so that it sees the flag and closes the listener.
            let _ = TcpStream::connect_timeout(&reachable(local), Duration::from_secs(1));
        })
        .context("starting the HTTP thread")?;
    Ok(local)
}

/// The address to connect to for reaching a listener bound to `addr` (a wildcard address is
/// reached through loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Hands a connection to a thread of its own, or turns it away when there are too many.
fn dispatch<R>(conn: TcpStream, route: &Arc<R>, active: &Arc<AtomicUsize>)
where
    R: Fn(&str) -> Response + Send + Sync + 'static,
{
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::SeqCst);
        let _ = respond(
            &conn,
            &Response::new(503, "text/plain", "too many connections\n"),
        );
        return;
    }
    let (route, active) = (route.clone(), active.clone());
    let spawned = std::thread::Builder::new()
        .name("http-conn".into())
        .spawn(move || {
            handle(&conn, route.as_ref());
            active.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        log::warn!("HTTP: could not start a connection thread");
    }
}

/// Reads the request line and headers; `None` for anything that is not a usable request.
fn read_request(conn: &TcpStream) -> Option<(String, String)> {
    conn.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(Read::take(conn, MAX_REQUEST_HEAD as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    // Headers are read and ignored (nothing here depends on them).
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    Some((method, target))
}

fn respond(mut conn: &TcpStream, r: &Response) -> std::io::Result<()> {
    let reason = match r.code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    conn.set_write_timeout(Some(WRITE_TIMEOUT))?;
    write!(
        conn,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.code,
        r.content_type,
        r.body.len()
    )?;
    conn.write_all(&r.body)?;
    conn.flush()
}

fn handle(conn: &TcpStream, route: &dyn Fn(&str) -> Response) {
    let Some((method, target)) = read_request(conn) else {
        let _ = respond(conn, &Response::new(400, "text/plain", "bad request\n"));
        return;
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let _ = respond(
            conn,
            &Response::new(405, "text/plain", "method not allowed\n"),
        );
        return;
    }
    let path = target.split('?').next().unwrap_or("");
    let mut r = route(path);
    if head_only {
        r.body.clear();
    }
    let _ = respond(conn, &r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn start() -> (SocketAddr, Arc<AtomicBool>) {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = serve("127.0.0.1:0", stop.clone(), |path| match path {
            "/hello" => Response::new(200, "text/plain; charset=utf-8", "hi\n"),
            _ => Response::new(404, "text/plain", "404 page not found\n"),
        })
        .unwrap();
        (addr, stop)
    }

    /// The whole response to `request`, read to the end of the stream.
    fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn one_response_per_connection_with_todays_headers() {
        let (addr, stop) = start();
        assert_eq!(
            exchange(addr, "GET /hello?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\nhi\n"
        );
        assert_eq!(
            exchange(addr, "HEAD /hello HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        );
        assert!(
            exchange(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 Not Found\r\n")
        );
        let post = exchange(addr, "POST /hello HTTP/1.1\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(post.ends_with("\r\n\r\nmethod not allowed\n"), "{post}");
        let bad = exchange(addr, "\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn silent_clients_do_not_hold_up_others() {
        let (addr, stop) = start();
        let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t0 = Instant::now();
        let r = exchange(addr, "GET /hello HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("hi\n"), "{r}");
        // Well under the 5 s that a silent client may take to send its request.
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(silent);
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn too_many_connections_are_turned_away() {
        let (addr, stop) = start();
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // The accept thread counts them in order, so the next one is the first over the limit.
        // It sends nothing: a request left unread could turn the server's close into a reset.
        let r = exchange(addr, "");
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.ends_with("too many connections\n"), "{r}");
        drop(silent);
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn the_stop_flag_closes_the_listener() {
        let (addr, stop) = start();
        assert!(exchange(addr, "GET /hello HTTP/1.1\r\n\r\n").ends_with("hi\n"));
        let t0 = Instant::now();
        stop.store(true, Ordering::Relaxed);
        // The port can be bound again once the listener is closed. Binding, unlike connecting,
        // does not wake the accept loop, so this waits for the stop watcher alone.
        while TcpListener::bind(addr).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(5), "still listening");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[test]
    fn wildcard_listeners_are_reached_through_loopback() {
        let any: SocketAddr = "0.0.0.0:8500".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:8500".parse().unwrap());
        let any6: SocketAddr = "[::]:8500".parse().unwrap();
        assert_eq!(reachable(any6), "[::1]:8500".parse().unwrap());
        let one: SocketAddr = "10.1.2.3:8500".parse().unwrap();
        assert_eq!(reachable(one), one);
    }
}
