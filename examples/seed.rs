//! Writes a few demo records into a native-schema LMDB, the way PowerDNS Auth 4.8+ would
//! (24-byte Lightning Stream header before every value), for the README's quick start.
//!
//! usage: cargo run --example seed -- LMDB_FILE KEY=VALUE...

use std::path::Path;

use lightningstream::core::header;
use lightningstream::lmdb::{Env, EnvOptions, Txn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, pairs)) = args.split_first() else {
        return Err("usage: seed LMDB_FILE KEY=VALUE...".into());
    };
    let env = Env::open(
        Path::new(path),
        &EnvOptions {
            no_subdir: true,
            create: true,
            ..Default::default()
        },
    )?;
    let mut txn = env.begin_rw()?;
    let dbi = txn.create_dbi(b"records", 0)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let id = txn.id();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or("arguments are KEY=VALUE")?;
        let mut value = Vec::new();
        header::write_header(&mut value, now.as_nanos() as u64, id, 0, false);
        value.extend_from_slice(v.as_bytes());
        txn.put(dbi, k.as_bytes(), &value)?;
    }
    txn.commit()?;
    println!("wrote {} record(s) to {path}", pairs.len());
    Ok(())
}
