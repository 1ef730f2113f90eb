//! `linkem`: a userspace link emulator for the benchmark kit (see `bench/README.md`).
//!
//! Two TUN devices, one in each network namespace, joined only through this process, which applies per
//! direction a fixed delay, jitter, random and bursty loss, a rate limit or a Mahimahi capacity trace
//! behind a bounded drop-tail queue, and a link on/off schedule. The model of one direction
//! ([`link::Link`]) is sans-IO: time is passed in, so it is tested with virtual time.

pub mod hist;
pub mod link;
pub mod report;
pub mod rng;
pub mod spec;
pub mod trace;
pub mod tun;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Spec(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
