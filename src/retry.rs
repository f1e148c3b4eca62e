//! Retrying an operation with backoff, written once for every caller: S3 requests (a few
//! attempts, doubling delays, honouring a server's `Retry-After`), LMDB transactions that fail
//! while an application initialises its files (a few attempts, growing linearly) and snapshot
//! stores (a configured count or forever, a fixed interval, ending early on shutdown). A leaf
//! module: it knows nothing of the crate, so each caller says which errors are worth another
//! attempt, how to wait (a real sleep, a sleep cut short by a stop flag, or nothing at all in
//! unit tests) and what to log before each retry.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How many times an operation is tried in all (the first attempt included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempts {
    /// At most this many attempts; 0 is taken as 1, since an operation is always tried once.
    Max(u32),
    /// Until it succeeds, fails in a way not worth retrying, or the wait is cut short.
    Forever,
}

/// How the delay grows from one retry to the next, from [`Policy::start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// The same delay every time.
    Constant,
    /// `start × n` before the n-th retry.
    Linear,
    /// `start × multiplier^(n-1)` before the n-th retry.
    Exponential(u32),
}

/// Randomisation of each delay, so that many clients failing together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// The computed delay as it is.
    None,
    /// Anywhere between zero and the computed delay.
    Full,
    /// Half the computed delay plus anywhere up to the other half.
    Equal,
}

/// When and how often to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub attempts: Attempts,
    /// Delay before the first retry.
    pub start: Duration,
    /// No computed delay exceeds this, and neither does a server's `Retry-After`: a server
    /// asking for an hour must not park a thread for an hour.
    pub max: Duration,
    pub growth: Growth,
    pub jitter: Jitter,
}

impl Policy {
    /// A fixed `interval` between attempts.
    pub const fn constant(attempts: Attempts, interval: Duration) -> Policy {
        Policy {
            attempts,
            start: interval,
            max: interval,
            growth: Growth::Constant,
            jitter: Jitter::None,
        }
    }

    /// `step`, `2 × step`, `3 × step`… up to `max`.
    pub const fn linear(attempts: Attempts, step: Duration, max: Duration) -> Policy {
        Policy {
            attempts,
            start: step,
            max,
            growth: Growth::Linear,
            jitter: Jitter::None,
        }
    }

    /// `start`, `start × multiplier`, `start × multiplier²`… up to `max`.
    pub const fn exponential(
        attempts: Attempts,
        start: Duration,
        max: Duration,
        multiplier: u32,
    ) -> Policy {
        Policy {
            attempts,
            start,
            max,
            growth: Growth::Exponential(multiplier),
            jitter: Jitter::None,
        }
    }

    pub const fn with_jitter(self, jitter: Jitter) -> Policy {
        Policy { jitter, ..self }
    }

    /// Whether an operation that has failed `failed` times may be tried again.
    pub fn allows_another(&self, failed: u32) -> bool {
        match self.attempts {
            Attempts::Max(n) => failed < n.max(1),
            Attempts::Forever => true,
        }
    }

    /// The delay before retry number `retry` (1 for the first), before jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let n = retry.max(1);
        let d = match self.growth {
            Growth::Constant => Some(self.start),
            Growth::Linear => self.start.checked_mul(n),
            Growth::Exponential(m) => m
                .checked_pow(n - 1)
                .and_then(|factor| self.start.checked_mul(factor)),
        };
        d.map_or(self.max, |d| d.min(self.max))
    }

    /// `delay` randomised by the policy's jitter; `unit` is a number in `[0, 1)`.
    pub fn jittered(&self, delay: Duration, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full => delay.mul_f64(unit),
            Jitter::Equal => delay / 2 + (delay - delay / 2).mul_f64(unit),
        }
    }
}

/// What the caller makes of one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not worth another attempt (a client error, a full map).
    Fail,
    /// Worth another attempt after the policy's delay.
    Retry,
    /// Worth another attempt, after at least this long: the server said so (`Retry-After`).
    RetryAfter(Duration),
}

/// Why [`run`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The last error was classified [`Verdict::Fail`].
    NotRetryable,
    /// Every attempt the policy allows failed.
    Exhausted,
    /// The wait before another attempt was cut short (the sleeper returned false).
    Stopped,
}

/// The last error of an operation that did not succeed, with how many attempts were made.
#[derive(Debug)]
pub struct Failed<E> {
    pub error: E,
    pub attempts: u32,
    pub reason: Reason,
}

impl<E> Failed<E> {
    pub fn into_error(self) -> E {
        self.error
    }
}

/// One retry about to happen, for the caller's log line.
#[derive(Debug)]
pub struct Retrying<'a, E> {
    /// Attempts made so far (1 after the first failure).
    pub attempt: u32,
    pub error: &'a E,
    /// How long the sleeper is about to be asked to wait.
    pub delay: Duration,
}

/// Runs `op` until it succeeds or `policy` says to stop. After each failure `classify` decides
/// whether it is worth another attempt; if so `report` is told (to log it) and `sleep` is asked
/// to wait the delay, returning false to give up instead (shutdown). Nothing here sleeps by
/// itself, so a test can pass a sleeper that only records the delays.
pub fn run<T, E>(
    policy: &Policy,
    mut op: impl FnMut() -> Result<T, E>,
    mut classify: impl FnMut(&E) -> Verdict,
    mut report: impl FnMut(&Retrying<'_, E>),
    mut sleep: impl FnMut(Duration) -> bool,
) -> Result<T, Failed<E>> {
    let mut attempt = 0u32;
    loop {
        let error = match op() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        attempt = attempt.saturating_add(1);
        let fail = |error, reason| Failed {
            error,
            attempts: attempt,
            reason,
        };
        let at_least = match classify(&error) {
            Verdict::Fail => return Err(fail(error, Reason::NotRetryable)),
            Verdict::Retry => Duration::ZERO,
            Verdict::RetryAfter(d) => d.min(policy.max),
        };
        if !policy.allows_another(attempt) {
            return Err(fail(error, Reason::Exhausted));
        }
        let delay = policy
            .jittered(policy.delay(attempt), random_unit())
            .max(at_least);
        report(&Retrying {
            attempt,
            error: &error,
            delay,
        });
        if !sleep(delay) {
            return Err(fail(error, Reason::Stopped));
        }
    }
}

/// A sleeper for [`run`] that always waits the whole delay.
pub fn sleep(d: Duration) -> bool {
    std::thread::sleep(d);
    true
}

/// Sleeps up to `d`, waking early when `stop` is set; false when stopping. The flag is looked at
/// every 50 ms, short enough for a shutdown to feel immediate.
pub fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    false
}

/// A number in `[0, 1)` for jitter: std's per-instance random hash keys are random enough to
/// spread retries, and spare a dependency.
fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs `run` over a scripted list of results, recording every delay instead of sleeping.
    fn script(
        policy: &Policy,
        results: &[Result<u32, &'static str>],
        classify: impl FnMut(&&'static str) -> Verdict,
        stop_after: Option<usize>,
    ) -> (Result<u32, Failed<&'static str>>, Vec<Duration>, Vec<u32>) {
        let mut next = results.iter().copied();
        let mut delays = Vec::new();
        let mut reported = Vec::new();
        let r = run(
            policy,
            || next.next().expect("script too short"),
            classify,
            |r| reported.push(r.attempt),
            |d| {
                delays.push(d);
                stop_after.is_none_or(|n| delays.len() < n)
            },
        );
        (r, delays, reported)
    }

    #[test]
    fn s3_policy_doubles_up_to_the_cap_and_gives_up() {
        let p = Policy::exponential(Attempts::Max(5), 200 * MS, 5000 * MS, 2);
        let (r, delays, reported) = script(&p, &[Err("503"); 5], |_| Verdict::Retry, None);
        let f = r.unwrap_err();
        assert_eq!(
            (f.attempts, f.reason, f.error),
            (5, Reason::Exhausted, "503")
        );
        assert_eq!(delays, [200 * MS, 400 * MS, 800 * MS, 1600 * MS]);
        assert_eq!(reported, [1, 2, 3, 4]);
        assert_eq!(p.delay(6), 5000 * MS);
        assert_eq!(p.delay(40), 5000 * MS, "overflow is capped, not a panic");
    }

    #[test]
    fn success_after_failures_returns_the_value() {
        let p = Policy::linear(Attempts::Max(5), 200 * MS, Duration::from_secs(1));
        let (r, delays, _) = script(
            &p,
            &[Err("busy"), Err("busy"), Ok(7)],
            |_| Verdict::Retry,
            None,
        );
        assert_eq!(r.unwrap(), 7);
        assert_eq!(delays, [200 * MS, 400 * MS]);
    }

    #[test]
    fn lmdb_policy_grows_linearly_and_stops_on_a_fatal_error() {
        let p = Policy::linear(Attempts::Max(5), 200 * MS, Duration::from_secs(1));
        assert_eq!(
            (1..=4).map(|n| p.delay(n)).collect::<Vec<_>>(),
            [200 * MS, 400 * MS, 600 * MS, 800 * MS]
        );
        let classify = |e: &&str| {
            if *e == "map full" {
                Verdict::Fail
            } else {
                Verdict::Retry
            }
        };
        let (r, delays, _) = script(&p, &[Err("busy"), Err("map full")], classify, None);
        let f = r.unwrap_err();
        assert_eq!(
            (f.attempts, f.reason, f.error),
            (2, Reason::NotRetryable, "map full")
        );
        assert_eq!(delays, [200 * MS]);
    }

    #[test]
    fn store_policy_retries_forever_until_stopped() {
        let p = Policy::constant(Attempts::Forever, 3 * MS);
        let (r, delays, _) = script(&p, &[Err("down"); 10], |_| Verdict::Retry, Some(4));
        let f = r.unwrap_err();
        assert_eq!((f.attempts, f.reason), (4, Reason::Stopped));
        assert_eq!(delays, [3 * MS; 4]);
    }

    #[test]
    fn at_least_one_attempt_even_with_a_zero_count() {
        let p = Policy::constant(Attempts::Max(0), MS);
        let (r, delays, _) = script(&p, &[Err("x")], |_| Verdict::Retry, None);
        assert_eq!(r.unwrap_err().reason, Reason::Exhausted);
        assert!(delays.is_empty());
    }

    #[test]
    fn a_server_delay_is_honoured_up_to_the_cap() {
        let p = Policy::exponential(Attempts::Max(4), 200 * MS, 5000 * MS, 2);
        let mut asks = [3000 * MS, 10 * MS, Duration::from_secs(3600)].into_iter();
        let (r, delays, _) = script(
            &p,
            &[Err("slow"), Err("slow"), Err("slow"), Ok(1)],
            |_| Verdict::RetryAfter(asks.next().unwrap()),
            None,
        );
        assert_eq!(r.unwrap(), 1);
        // Longer than the backoff: the server's; shorter: the backoff; absurd: the cap.
        assert_eq!(delays, [3000 * MS, 400 * MS, 5000 * MS]);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let p = Policy::exponential(Attempts::Max(3), 200 * MS, 5000 * MS, 2);
        let d = 800 * MS;
        assert_eq!(p.jittered(d, 0.5), d);
        let full = p.with_jitter(Jitter::Full);
        assert_eq!(full.jittered(d, 0.0), Duration::ZERO);
        assert_eq!(full.jittered(d, 0.25), 200 * MS);
        let equal = p.with_jitter(Jitter::Equal);
        assert_eq!(equal.jittered(d, 0.0), 400 * MS);
        assert_eq!(equal.jittered(d, 0.5), 600 * MS);
        assert!(equal.jittered(d, 0.999_999) <= d);
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
        // Through `run`: every delay within [d/2, d] for equal jitter.
        let (_, delays, _) = script(&equal, &[Err("x"); 3], |_| Verdict::Retry, None);
        assert_eq!(delays.len(), 2);
        for (n, got) in delays.iter().enumerate() {
            let base = equal.delay(n as u32 + 1);
            assert!(*got >= base / 2 && *got <= base, "{got:?} for {base:?}");
        }
    }

    #[test]
    fn a_stop_flag_cuts_the_wait_short() {
        let stop = AtomicBool::new(true);
        let t0 = Instant::now();
        assert!(!sleep_unless_stopped(&stop, Duration::from_secs(60)));
        assert!(t0.elapsed() < Duration::from_secs(1));
        stop.store(false, Ordering::Relaxed);
        assert!(sleep_unless_stopped(&stop, Duration::ZERO));
    }
}
