//! Servers under test as child processes: started on free loopback ports with their output in a
//! log file, polled until they listen, stopped with SIGTERM by PID (SIGKILL by PID when they do not
//! exit in time, or when the handle is dropped while they still run).
//!
//! quicft-server and `relay_broker` take the same flags (`--data-dir`, `--quic`, `--tcp`,
//! `--tls`); [`Ports`] picks them and [`FtServer`] is quicft-server as the file-transfer tools run
//! it. The broker bench's brokers (`crate::broker_procs`) are started through [`Launched`] too.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::net::free_port;
use crate::procfs;

/// A child process the bench started.
pub struct Launched {
    pub pid: u32,
    pub log: PathBuf,
    /// For messages: `quicft-server`, `mosquitto` …
    name: String,
    child: Option<Child>,
}

impl Launched {
    /// Spawns `cmd` with stdin closed and stdout and stderr into a new file `log`. `hint` says how
    /// to get the binary when it cannot be started.
    pub fn spawn(cmd: &mut Command, name: &str, log: &Path, hint: &str) -> Result<Launched> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} ({hint})", cmd.get_program().to_string_lossy()))?;
        Ok(Launched {
            pid: child.id(),
            log: log.to_owned(),
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// Polls `ready` every 20 ms until it holds; fails (with the log's tail) when the process
    /// exits first or `timeout` passes. `addr` is what the message says it should listen on.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        addr: SocketAddr,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "{} exited at start ({status}):\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not listening on {addr} after {} s:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// CPU time used so far (user, system).
    pub fn stat(&self) -> Result<procfs::Stat> {
        procfs::pid_stat(self.pid)
    }

    /// SIGTERM by PID, then waits up to `grace`; SIGKILL by PID after that. `Ok(false)` when it
    /// had to be killed; an error when it exited with a failure (every server here exits 0 on
    /// SIGTERM).
    pub fn stop(&mut self, grace: Duration) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
                }
                return Ok(true);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether something accepts TCP connections on `addr`.
pub fn listening(addr: &SocketAddr) -> bool {
    TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
}

/// Free loopback ports for a server that takes quicft-server's listener flags.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub quic: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
}

impl Ports {
    /// QUIC and TCP, and TLS when `with_tls`.
    pub fn pick(with_tls: bool) -> Result<Ports> {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Ports {
            quic: loopback(free_port(true)?),
            tcp: loopback(free_port(false)?),
            tls: match with_tls {
                true => Some(loopback(free_port(false)?)),
                false => None,
            },
        })
    }

    /// `--data-dir D --quic Q --tcp T`, and `--tls A` when TLS was picked.
    pub fn args(&self, cmd: &mut Command, data_dir: &Path) {
        cmd.arg("--data-dir").arg(data_dir).args([
            "--quic",
            &self.quic.to_string(),
            "--tcp",
            &self.tcp.to_string(),
        ]);
        if let Some(tls) = self.tls {
            cmd.args(["--tls", &tls.to_string()]);
        }
    }
}

/// A `quicft-server` child process on free loopback ports, TLS and HTTP off: the server the
/// file-transfer and device tools measure.
pub struct FtServer {
    pub pid: u32,
    pub quic: SocketAddr,
    pub tcp: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    process: Launched,
}

impl FtServer {
    /// Starts the server (with `--config` when given) and waits until its TCP port accepts and its
    /// development CA exists (it binds QUIC before TCP, so QUIC is up too).
    /// `env`: extra environment variables for the server only (e.g. glibc malloc tunables).
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        config: Option<&Path>,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<FtServer> {
        let ports = Ports::pick(false)?;
        let mut cmd = Command::new(bin);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        ports.args(&mut cmd, data_dir);
        cmd.args([
            "--tls", "off", "--http", "off", "--ws", "off", "--wss", "off",
        ]);
        let process = Launched::spawn(
            &mut cmd,
            "quicft-server",
            log,
            "cargo build --release -p quicft-server",
        )?;
        let mut s = FtServer {
            pid: process.pid,
            quic: ports.quic,
            tcp: ports.tcp,
            data_dir: data_dir.to_owned(),
            log: log.to_owned(),
            process,
        };
        let ca = s.ca();
        s.process
            .wait_until(Duration::from_secs(20), ports.tcp, || {
                listening(&ports.tcp) && ca.exists()
            })?;
        Ok(s)
    }

    /// The development CA the server generated on first start.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("certs").join("ca.pem")
    }

    /// Where the server keeps partial files (its default `store_dir`).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("transfers")
    }

    pub fn export_dir(&self, client_id: &str) -> PathBuf {
        self.data_dir.join("exports").join(client_id)
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// CPU time used so far (user, system), in clock ticks.
    pub fn cpu_ticks(&self) -> Result<(u64, u64)> {
        let s = self.process.stat()?;
        Ok((s.utime, s.stime))
    }

    /// Minor page faults so far (see [`procfs::Stat::minflt`]).
    pub fn minor_faults(&self) -> Result<u64> {
        Ok(self.process.stat()?.minflt)
    }

    /// SIGTERM by PID, then up to 10 s for a clean exit (SIGKILL by PID after that).
    pub fn stop(mut self) -> Result<()> {
        if !self.process.stop(Duration::from_secs(10))? {
            bail!("quicft-server ignored SIGTERM for 10 s and was killed");
        }
        Ok(())
    }
}
