//! What every Otedama benchmark shares: explicit core pinning, a cheap
//! cycle clock, CPU time from `getrusage`, a stall meter that makes VM
//! noise visible, HdrHistogram summaries, and medians with their spread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Cores online on this host (not just those the caller may run on).
pub fn online_cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// Pins the calling thread to `core`. Returns false, with a warning, if the
/// host has no such core.
pub fn pin(core: usize) -> bool {
    if core >= online_cores() {
        eprintln!("warning: core {core} does not exist ({} cores); running unpinned", online_cores());
        return false;
    }
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

/// Sets the calling thread's timer slack to 1 ns until the guard drops.
/// A thread's sleeps may end up to its slack late (50 µs by default), so a
/// load generator sleeping until its next order is due would send late by
/// that much, and every round trip measured from the planned send time
/// would carry it. Restored on drop, so processes spawned later from this
/// thread (the engine under test) inherit the default, not this.
pub fn precise_timers() -> PreciseTimers {
    // SAFETY: prctl with integer arguments only.
    let old = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    PreciseTimers(old.max(1) as libc::c_ulong)
}

/// See [`precise_timers`].
pub struct PreciseTimers(libc::c_ulong);

impl Drop for PreciseTimers {
    fn drop(&mut self) {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, self.0) };
    }
}

/// CPU time (user + system) of the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_THREAD)
}

/// CPU time (user + system) of the whole process, in ns.
pub fn process_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_SELF)
}

fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A clock cheap enough to time one operation of ~20 ns: the time-stamp
/// counter, calibrated against the monotonic clock. Falls back to
/// `Instant` off x86-64.
#[derive(Clone, Copy)]
pub struct Clock {
    ns_per_tick: f64,
    origin: Instant,
}

impl Clock {
    pub fn calibrate() -> Clock {
        let origin = Instant::now();
        let (t0, c0) = (Instant::now(), Self::raw());
        std::thread::sleep(Duration::from_millis(50));
        let (t1, c1) = (Instant::now(), Self::raw());
        let ns = (t1 - t0).as_nanos() as f64;
        let ticks = c1.wrapping_sub(c0).max(1) as f64;
        let ns_per_tick = if cfg!(target_arch = "x86_64") { ns / ticks } else { 1.0 };
        Clock { ns_per_tick, origin }
    }

    #[inline(always)]
    pub fn raw() -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: rdtsc has no preconditions.
            unsafe { core::arch::x86_64::_rdtsc() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_nanos() as u64
        }
    }

    #[inline(always)]
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as f64 * self.ns_per_tick) as u64
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A histogram of nanoseconds from 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// The percentiles every benchmark prints.
pub const PERCENTILES: &[(f64, &str)] = &[(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9"), (99.99, "p99.99"), (100.0, "max")];

/// Prints one line of percentiles for `h` (values in ns) scaled by `div`
/// into `unit`.
pub fn print_histogram(label: &str, h: &Histogram<u64>, div: f64, unit: &str) {
    let parts: Vec<String> = PERCENTILES
        .iter()
        .map(|(q, name)| {
            let v = if *q >= 100.0 { h.max() } else { h.value_at_quantile(q / 100.0) };
            format!("{name} {:.2}", v as f64 / div)
        })
        .collect();
    println!("  {label:<34} n={:<10} {} ({unit})", h.len(), parts.join("  "));
}

/// Median of `v` and its spread (max − min).
pub fn median_spread(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    (m, s[s.len() - 1] - s[0])
}

/// A thread that sleeps `period` over and over on a given core and
/// records how late it wakes up: a direct reading of how much the host
/// (other threads, the hypervisor) delays runnable work on that core.
pub struct StallMeter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Histogram<u64>>>,
}

/// What the stall meter saw.
#[derive(Debug, Clone, Copy)]
pub struct Stalls {
    pub samples: u64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl StallMeter {
    pub fn start(core: Option<usize>, period: Duration) -> StallMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("stall-meter".into())
            .spawn(move || {
                if let Some(c) = core {
                    pin(c);
                }
                let mut h = histogram();
                while !s.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    std::thread::sleep(period);
                    let late = t.elapsed().saturating_sub(period);
                    let _ = h.record(late.as_nanos().max(1) as u64);
                }
                h
            })
            .expect("spawn stall meter");
        StallMeter { stop, handle: Some(handle) }
    }

    pub fn stop(mut self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("running").join().expect("stall meter");
        Stalls { samples: h.len(), p99_us: h.value_at_quantile(0.99) as f64 / 1e3, max_us: h.max() as f64 / 1e3 }
    }
}

/// A description of the machine for the JSON line.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let clocksource = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource").unwrap_or_default();
    json!({
        "cores": online_cores(),
        "cpu": cpu,
        "clocksource": clocksource.trim(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median_spread(&[3.0, 1.0, 2.0]), (2.0, 2.0));
        assert_eq!(median_spread(&[4.0, 1.0, 2.0, 3.0]), (2.5, 3.0));
        assert_eq!(median_spread(&[]), (0.0, 0.0));
    }

    #[test]
    fn clock_agrees_with_the_monotonic_clock() {
        let c = Clock::calibrate();
        let (t0, r0) = (Instant::now(), Clock::raw());
        std::thread::sleep(Duration::from_millis(20));
        let (t1, r1) = (Instant::now(), Clock::raw());
        let want = (t1 - t0).as_nanos() as f64;
        let got = c.ticks_to_ns(r1 - r0) as f64;
        assert!((got - want).abs() / want < 0.05, "tsc {got} ns vs monotonic {want} ns");
    }

    #[test]
    fn cpu_time_advances_with_work() {
        let a = thread_cpu_ns();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_ns() - a >= 10_000_000);
    }
}
