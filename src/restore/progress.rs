//! Progress of a long restore as plain periodic log lines (objects and bytes done of the total,
//! elapsed time), at most every few seconds plus one at the end. Kept in this one place so that
//! a terminal progress bar can replace it without touching the restore itself.

use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    objects: usize,
    bytes: u64,
    done_objects: usize,
    done_bytes: u64,
    began: Instant,
    logged: Instant,
}

impl Progress {
    pub fn new(what: &'static str, objects: usize, bytes: u64) -> Progress {
        let now = Instant::now();
        log::info!(objects = objects, bytes = bytes; "{what}: starting");
        Progress {
            what,
            objects,
            bytes,
            done_objects: 0,
            done_bytes: 0,
            began: now,
            logged: now,
        }
    }

    /// One object merged.
    pub fn object_done(&mut self, name: &str, bytes: u64) {
        self.done_objects += 1;
        self.done_bytes += bytes;
        let now = Instant::now();
        if now - self.logged >= EVERY || self.done_objects == self.objects {
            self.logged = now;
            log::info!(
                objects_done = self.done_objects,
                objects = self.objects,
                bytes_done = self.done_bytes,
                bytes = self.bytes,
                elapsed = format!("{:.1?}", self.began.elapsed()),
                last = name;
                "{}: progress", self.what
            );
        }
    }
}
