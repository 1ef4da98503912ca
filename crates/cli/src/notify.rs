//! systemd's readiness protocol (`sd_notify`, through the `sd-notify` crate): `READY=1` once
//! the sockets are bound, `RELOADING=1` around a reload, `STOPPING=1` on the way out, and
//! `WATCHDOG=1` while the daemon is healthy when the unit sets `WatchdogSec=`.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing, so the same binary runs
//! under a terminal, a container or a service manager. A failed send is logged and otherwise
//! ignored: the service manager, not the daemon, decides what a missing notification means.

use sd_notify::NotifyState;
use std::sync::mpsc;
use std::thread::Scope;
use std::time::Duration;

fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not tell the service manager {what}");
    }
}

/// Startup finished; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    send("READY", &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload has begun; [`ready`] ends it. systemd 253 and later want the monotonic time with it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(t) = NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    send("RELOADING", &states);
}

/// Shutdown has begun.
pub fn stopping() {
    send("STOPPING", &[NotifyState::Stopping]);
}

/// The watchdog feeder: it runs while this is alive and ends once this is dropped (the scope it was
/// started in joins it).
#[derive(Debug)]
pub struct Watchdog {
    _stop: mpsc::Sender<()>,
}

/// Starts feeding the watchdog when the service manager asked for one (`WATCHDOG_USEC`, and
/// `WATCHDOG_PID` unset or ours): every half period, `WATCHDOG=1` if `healthy()` says so, nothing
/// otherwise, so that a stuck daemon is restarted. None when no watchdog is configured.
pub fn watchdog<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    healthy: impl Fn() -> bool + Send + 'scope,
) -> Option<Watchdog> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(Duration::from_millis(10));
    tracing::info!(period = ?period, "feeding the systemd watchdog every {every:?} while healthy");
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("ipsla-watchdog".into())
        .spawn_scoped(scope, move || {
            let mut was_healthy = true;
            // ends when the Watchdog (the only sender) is dropped
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                let ok = healthy();
                if ok {
                    send("WATCHDOG", &[NotifyState::Watchdog]);
                } else if was_healthy {
                    tracing::error!("unhealthy: the scheduler has stopped turning; not feeding the watchdog");
                }
                was_healthy = ok;
            }
        })
        .ok()?;
    Some(Watchdog { _stop: tx })
}
