//! What the `quicft-server` binary does besides serving: its subcommands, its logs, and its part
//! in a systemd service. Compiled into the binary only (`main.rs`), never into the library.

pub mod check;
pub mod device_cert;
pub mod logging;
pub mod password;
pub mod systemd;
pub mod users;
