//! The in-process S3 test server of `tests/` (s3s + s3s-fs, signatures checked) as a small
//! program, for end-to-end scripts that need a real S3 endpoint on loopback without installing
//! anything: prints `http://127.0.0.1:PORT` and serves until killed.
//!
//! usage: cargo run --example s3_test_server -- ROOT_DIR
//! credentials: AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY

#[path = "../tests/common/s3server.rs"]
mod s3server;

use std::io::Write;

fn main() {
    let Some(root) = std::env::args().nth(1) else {
        eprintln!("usage: s3_test_server ROOT_DIR");
        std::process::exit(2);
    };
    let server = s3server::S3Server::start(std::path::Path::new(&root));
    println!("{}", server.endpoint());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
