//! How much CPU a journal's writeback threads take at 50,000 records a
//! second under two settings: the `[journal]` defaults (a 50 µs spin after
//! each pass, then a wake-up per record) and the Stratum share journals'
//! (no spin, a 1 ms timer). Batch durability, syncs spaced 100 ms, 150-byte
//! records every 20 µs for 2 s, in the system temp directory.
//!
//! `cargo run --release -p otedama-journal --example writeback_cpu [defaults|share]`
//! (an argument runs only that setting, e.g. under a profiler)
//!
//! The journal threads' CPU is the process's (getrusage) minus the
//! appending thread's own.

use std::time::{Duration, Instant};

use otedama_journal::{Durability, Journal, Options};

fn cpu_s(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut r) };
    (r.ru_utime.tv_sec + r.ru_stime.tv_sec) as f64 + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) as f64 / 1e6
}

fn main() {
    let settings = [("[journal] defaults: 50 µs spin, a wake-up per record", 50, 0), ("share journals: no spin, 1 ms timer", 0, 1000)];
    let only = std::env::args().nth(1);
    for (i, (name, spin_us, delay_us)) in settings.into_iter().enumerate() {
        if only.as_deref().is_some_and(|o| o != ["defaults", "share"][i]) {
            continue;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = Options {
            segment_bytes: 16 << 20,
            durability: Durability::Batch,
            flusher_spin: Duration::from_micros(spin_us),
            writeback_delay: Duration::from_micros(delay_us),
            sync_interval: Duration::from_millis(100),
            ..Options::default()
        };
        let mut j = Journal::open(dir.path(), opts).expect("open");
        let payload = [7u8; 150];
        let (all0, me0, t0) = (cpu_s(libc::RUSAGE_SELF), cpu_s(libc::RUSAGE_THREAD), Instant::now());
        for k in 0..100_000u64 {
            let due = t0 + Duration::from_nanos(k * 20_000);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            j.append(otedama_journal::kinds::BENCH, 1, k, &payload).expect("append");
        }
        let wall = t0.elapsed().as_secs_f64();
        let used = (cpu_s(libc::RUSAGE_SELF) - all0) - (cpu_s(libc::RUSAGE_THREAD) - me0);
        j.close().expect("close");
        println!("{name}: journal threads {:.0} ms of CPU in {wall:.2} s ({:.0}% of a core)", used * 1e3, used / wall * 100.0);
    }
}
