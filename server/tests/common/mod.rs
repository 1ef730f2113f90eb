//! The `quicft-server` binary started as an operator starts it, for the binary's own tests: JSON
//! log lines read on a thread (so that a missing line fails a test instead of hanging it), the
//! listeners' addresses taken from them, and the process killed when the test ends however it ends.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_quicft-server");

/// A running server binary.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts the binary with `args` plus `--log-format json`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends a signal (`-HUP`, `-TERM` …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// The next log line, parsed; fails after 30 s without one.
    pub fn next_line(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no log line within 30 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
    }

    /// Skips log lines up to the first whose message is `message`, and returns it.
    pub fn wait_for(&self, message: &str) -> serde_json::Value {
        loop {
            let v = self.next_line();
            if v["fields"]["message"] == message {
                return v;
            }
        }
    }

    /// The address in a "… listening" line (logged as `Some(127.0.0.1:1234)`).
    pub fn listening(&self, message: &str) -> String {
        let v = self.wait_for(message);
        let a = v["fields"]["addr"].as_str().unwrap();
        a.trim_start_matches("Some(")
            .trim_end_matches(')')
            .to_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
