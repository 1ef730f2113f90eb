//! Running under systemd (`dist/quicft.service`, `Type=notify`): readiness once every listener is
//! bound, and watchdog keep-alives while the runtime is responsive. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

/// Tells systemd the server is serving.
pub fn ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

/// Tells systemd a reload (SIGHUP) is in progress; [`ready`] ends it.
pub fn reloading() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
}

/// Tells systemd the server is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Sends `WATCHDOG=1` at half the interval systemd asks for (`WatchdogSec=`), from a task on the
/// server's runtime: a runtime that stops running tasks stops the keep-alives, and systemd
/// restarts the service.
pub async fn watchdog() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tick.tick().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
}
