//! Progress of long transfers: the downloads of `snapshots get` and `snapshots dump`, those of
//! a `sync --only-once` start-up (the initial load of a new server), and any later command that
//! reads a whole snapshot (a restore) through [`Progress::reader`]. On a terminal, and only for
//! the one-shot commands that call [`allow_bars`], each transfer shows a bar on stderr (bytes,
//! rate, and percentage and ETA when the size is known); log lines written meanwhile go through
//! [`suspend`], so the bar never tears them. Everywhere else (a daemon under systemd or in a
//! pod, output to a file) a transfer that lasts logs a plain `Transfer progress` line every
//! [`LOG_EVERY`], and nothing at all when it is quick. Nothing here starts a thread.

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a transfer without a bar logs its progress.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

static BARS: AtomicBool = AtomicBool::new(false);

/// Every bar shown, so that log lines can be written between their redraws.
static MULTI: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Lets transfers show bars when stderr is a terminal: for one-shot commands only, where a
/// person is watching; a daemon's output is a log.
pub fn allow_bars() {
    if std::io::stderr().is_terminal() {
        BARS.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` (a write to stderr) with the bars cleared, redrawing them after.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    if BARS.load(Ordering::Relaxed) {
        MULTI.suspend(f)
    } else {
        f()
    }
}

/// One transfer: `what` names it in the bar and the log lines.
pub struct Progress {
    what: String,
    total: Option<u64>,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    started: Instant,
    /// When the last log line was written (without a bar), and whether any was.
    logged: Mutex<(Instant, bool)>,
}

impl Progress {
    /// A transfer of `total` bytes, when known.
    pub fn new(what: &str, total: Option<u64>) -> Progress {
        Progress::with_bar(what, total, BARS.load(Ordering::Relaxed))
    }

    fn with_bar(what: &str, total: Option<u64>, bar: bool) -> Progress {
        let bar = bar.then(|| {
            let (bar, template) = match total {
                Some(n) => (
                    ProgressBar::new(n),
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
                ),
                None => (
                    ProgressBar::no_length(),
                    "{msg} {spinner} {bytes} {bytes_per_sec}",
                ),
            };
            let style = ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> ");
            let bar = MULTI.add(bar.with_style(style));
            bar.set_message(what.to_string());
            bar
        });
        let now = Instant::now();
        Progress {
            what: what.to_string(),
            total,
            done: AtomicU64::new(0),
            bar,
            started: now,
            logged: Mutex::new((now, false)),
        }
    }

    /// Counts `n` more bytes done.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
                if logged.0.elapsed() >= LOG_EVERY {
                    *logged = (Instant::now(), true);
                    drop(logged);
                    self.log(done, "Transfer progress");
                }
            }
        }
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Removes the bar; a transfer that logged progress logs its end too.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            MULTI.remove(bar);
        } else if self.logged.lock().unwrap_or_else(|e| e.into_inner()).1 {
            self.log(self.done(), "Transfer done");
        }
    }

    /// Wraps a reader so that every byte read counts.
    pub fn reader<R: Read>(&self, inner: R) -> ProgressReader<'_, R> {
        ProgressReader {
            inner,
            progress: self,
        }
    }

    fn log(&self, done: u64, msg: &str) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = crate::core::display::human_size((done as f64 / secs) as u64) + "/s";
        let of = match self.total {
            Some(t) if t > 0 => format!(
                "{} of {} ({:.0}%)",
                crate::core::display::human_size(done),
                crate::core::display::human_size(t),
                done as f64 * 100.0 / t as f64
            ),
            _ => crate::core::display::human_size(done),
        };
        log::info!(what = self.what, done = of, rate = rate,
            elapsed = format!("{:.0}s", secs); "{msg}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A transfer abandoned by an error must not leave its bar on the screen.
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.finish_and_clear();
            MULTI.remove(bar);
        }
    }
}

/// A reader counting into a [`Progress`].
pub struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_counts_every_byte_and_passes_them_through() {
        let p = Progress::with_bar("test", Some(10_000), false);
        let data = vec![7u8; 10_000];
        let mut out = Vec::new();
        std::io::copy(&mut p.reader(&data[..]), &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(p.done(), 10_000);
        p.finish();
    }

    #[test]
    fn a_bar_follows_the_bytes_and_is_removed_when_done() {
        let p = Progress::with_bar("test", None, true);
        std::io::copy(&mut p.reader(&[1u8; 300][..]), &mut std::io::sink()).unwrap();
        let bar = p.bar.clone().expect("a bar");
        assert_eq!(bar.position(), 300);
        assert!(!bar.is_finished());
        p.finish();
        assert!(bar.is_finished());
    }

    #[test]
    fn without_a_bar_a_long_transfer_logs_and_a_quick_one_does_not() {
        let p = Progress::with_bar("test", Some(100), false);
        p.add(10);
        assert!(!p.logged.lock().unwrap().1, "logged before LOG_EVERY");
        // As if the last line was written LOG_EVERY ago.
        p.logged.lock().unwrap().0 = Instant::now() - LOG_EVERY;
        p.add(10);
        assert!(p.logged.lock().unwrap().1);
        assert_eq!(p.done(), 20);
    }
}
