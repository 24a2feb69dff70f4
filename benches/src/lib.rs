//! Benchmark harnesses and load generators behind `otedama bench` and
//! `otedama loadgen`. Every benchmark is open-loop where it measures
//! latency, prints HdrHistogram percentiles, runs its baseline in the same
//! run with the same core layout, and ends with one JSON line.

pub mod alloc;
pub mod api;
pub mod baseline_book;
pub mod chain;
pub mod gateway;
pub mod harness;
pub mod hashers;
pub mod journal;
pub mod loadgen;
pub mod matching;
pub mod recovery;
pub mod runtimes;
pub mod stratum;
pub mod stratum_load;
