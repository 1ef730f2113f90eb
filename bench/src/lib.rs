//! Shared helpers for the benchmark binaries in `src/bin/`.
pub mod broker_procs;
pub mod ft_load;
pub mod launch;
pub mod mqtt_load;
pub mod net;
pub mod procfs;
pub mod quic;
pub mod size;
pub mod stats;
