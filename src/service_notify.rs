//! sockvisor's own readiness, told to its service manager: when sockvisor
//! runs under systemd with `Type=notify` (it inherited `NOTIFY_SOCKET`), it
//! sends `READY=1` once a generation serves, `RELOADING=1` with
//! `MONOTONIC_USEC=` while an upgrade's new generation starts and `READY=1`
//! again after, `STATUS=` naming the serving generation, and `STOPPING=1`
//! when it stops. With `Type=notify-reload`, systemd's SIGHUP starts the
//! upgrade.
//!
//! What to send is derived from the supervisor's state after each event;
//! this module owns only the socket and the "what was already said".

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::deadline;

/// What the service manager has been told so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Announced {
    pub ready: bool,
    pub reloading: bool,
    pub stopping: bool,
    pub status: String,
}

/// The state to announce, from the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// A generation is serving.
    pub serving: Option<u32>,
    /// A new generation is starting while another serves (an upgrade).
    pub upgrading: bool,
    pub stopping: bool,
}

pub struct ServiceNotifier {
    socket: UnixDatagram,
    address: SocketAddr,
    announced: Announced,
    /// Under `WatchdogSec=`: how often sockvisor pings its manager (half
    /// the manager's interval), and when next. No watchdog, no timer.
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
}

/// The shortest time between two pings of the manager's watchdog: a
/// `WATCHDOG_USEC=1` would otherwise make the loop ping without pause.
const SHORTEST_PING_INTERVAL: Duration = Duration::from_millis(10);

/// The manager's watchdog interval for this process, from
/// `WATCHDOG_USEC` (and `WATCHDOG_PID`, when set, naming this process).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

impl ServiceNotifier {
    /// Connects to the `NOTIFY_SOCKET` sockvisor inherited, if any. The
    /// variable itself is never passed on to the children.
    pub fn from_env() -> Option<ServiceNotifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy();
        let address = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None => SocketAddr::from_pathname(&*path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        // A manager that does not read its socket must not stop the loop:
        // what does not fit is dropped.
        socket.set_nonblocking(true).ok()?;
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        let ping_every = interval.map(|i| (i / 2).max(SHORTEST_PING_INTERVAL));
        Some(ServiceNotifier {
            socket,
            address,
            announced: Announced::default(),
            ping_every,
            next_ping: ping_every.map(|every| deadline::after(Instant::now(), every)),
        })
    }

    /// When the manager must next hear `WATCHDOG=1`.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Pings the manager's watchdog if it is time: the loop is alive.
    pub fn on_tick(&mut self, now: Instant) {
        let (Some(at), Some(every)) = (self.next_ping, self.ping_every) else {
            return;
        };
        if at > now {
            return;
        }
        if let Err(err) = self.socket.send_to_addr(b"WATCHDOG=1", &self.address) {
            tracing::debug!("cannot ping the service manager's watchdog: {err}");
        }
        self.next_ping = Some(deadline::after(now, every));
    }

    /// Tells the service manager whatever changed since the last call.
    pub fn update(&mut self, state: &ServiceState) {
        if let Some(message) = next_message(&mut self.announced, state)
            && let Err(err) = self.socket.send_to_addr(message.as_bytes(), &self.address)
        {
            tracing::debug!("cannot notify the service manager: {err}");
        }
    }
}

/// The message that brings the service manager from `announced` to
/// `state`, if any; updates `announced`.
pub fn next_message(announced: &mut Announced, state: &ServiceState) -> Option<String> {
    let mut lines = Vec::new();
    if state.stopping {
        if !announced.stopping {
            announced.stopping = true;
            lines.push("STOPPING=1".to_string());
            lines.push("STATUS=stopping every generation".to_string());
        }
        return (!lines.is_empty()).then(|| lines.join("\n"));
    }
    if state.upgrading && announced.ready && !announced.reloading {
        announced.reloading = true;
        lines.push("RELOADING=1".to_string());
        lines.push(format!("MONOTONIC_USEC={}", monotonic_usec()));
    }
    if state.serving.is_some() && !state.upgrading && (!announced.ready || announced.reloading) {
        announced.ready = true;
        announced.reloading = false;
        lines.push("READY=1".to_string());
    }
    let status = match state.serving {
        Some(generation) if state.upgrading => {
            format!("generation {generation} serving, upgrade in progress")
        }
        Some(generation) => format!("generation {generation} serving"),
        None => "no generation serving".to_string(),
    };
    if status != announced.status {
        announced.status = status.clone();
        lines.push(format!("STATUS={status}"));
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn monotonic_usec() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000);
    now.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(serving: Option<u32>, upgrading: bool, stopping: bool) -> ServiceState {
        ServiceState {
            serving,
            upgrading,
            stopping,
        }
    }

    #[test]
    fn ready_once_the_first_generation_serves() {
        let mut announced = Announced::default();
        let starting = next_message(&mut announced, &state(None, false, false)).unwrap();
        assert!(!starting.contains("READY=1"));
        let ready = next_message(&mut announced, &state(Some(1), false, false)).unwrap();
        assert_eq!(ready, "READY=1\nSTATUS=generation 1 serving");
        assert_eq!(
            next_message(&mut announced, &state(Some(1), false, false)),
            None
        );
    }

    #[test]
    fn an_upgrade_is_a_reload_with_a_monotonic_timestamp() {
        let mut announced = Announced::default();
        next_message(&mut announced, &state(Some(1), false, false));
        let reloading = next_message(&mut announced, &state(Some(1), true, false)).unwrap();
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        let done = next_message(&mut announced, &state(Some(2), false, false)).unwrap();
        assert_eq!(done, "READY=1\nSTATUS=generation 2 serving");
    }

    #[test]
    fn a_failed_upgrade_returns_to_ready_with_the_old_generation() {
        let mut announced = Announced::default();
        next_message(&mut announced, &state(Some(1), false, false));
        next_message(&mut announced, &state(Some(1), true, false));
        let back = next_message(&mut announced, &state(Some(1), false, false)).unwrap();
        assert_eq!(back, "READY=1\nSTATUS=generation 1 serving");
    }

    #[test]
    fn stopping_is_said_once() {
        let mut announced = Announced::default();
        next_message(&mut announced, &state(Some(1), false, false));
        let stopping = next_message(&mut announced, &state(Some(1), false, true)).unwrap();
        assert!(stopping.starts_with("STOPPING=1"));
        assert_eq!(
            next_message(&mut announced, &state(None, false, true)),
            None
        );
    }

    #[test]
    fn the_managers_watchdog_is_read_from_its_variables() {
        let own = 4242;
        assert_eq!(
            watchdog_interval(Some("3000000"), None, own),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            watchdog_interval(Some("3000000"), Some("4242"), own),
            Some(Duration::from_secs(3))
        );
        assert_eq!(watchdog_interval(Some("3000000"), Some("17"), own), None);
        assert_eq!(watchdog_interval(Some("0"), None, own), None);
        assert_eq!(watchdog_interval(None, None, own), None);
        assert_eq!(watchdog_interval(Some("soon"), None, own), None);
    }
}
