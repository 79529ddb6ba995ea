//! The variables other socket managers use to describe inherited sockets,
//! for `--fd-env`, so that apps written for einhorn or Server::Starter run
//! unchanged. systemd's `LISTEN_*` are set by `spawn` whatever is chosen
//! here.
//!
//! Pure: it formats variables from the listeners' bound addresses.

use crate::cli::FdEnv;

/// One listener as these conventions see it: its fd in the child and the
/// address sockvisor bound (`tcp://…`, `udp://…`, `unix:…`).
pub struct Passed<'a> {
    pub fd: i32,
    pub bound: &'a str,
}

/// What a generation needs to know beyond the sockets.
pub struct Context<'a> {
    pub generation: u32,
    /// The worker's slot, 0..N-1.
    pub worker: u32,
    pub sockvisor_pid: i32,
    pub control_path: &'a str,
}

pub fn variables(
    styles: &[FdEnv],
    sockets: &[Passed<'_>],
    context: &Context<'_>,
) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for style in styles {
        match style {
            FdEnv::Einhorn => einhorn(&mut vars, sockets, context),
            FdEnv::ServerStarter => server_starter(&mut vars, sockets, context),
        }
    }
    vars
}

/// einhorn: the count, each fd and its family, the worker's index; the
/// worker checks that its parent is EINHORN_MASTER_PID and acks on
/// EINHORN_SOCK_PATH.
fn einhorn(vars: &mut Vec<(String, String)>, sockets: &[Passed<'_>], context: &Context<'_>) {
    vars.push(("EINHORN_FD_COUNT".into(), sockets.len().to_string()));
    for (index, socket) in sockets.iter().enumerate() {
        vars.push((format!("EINHORN_FD_{index}"), socket.fd.to_string()));
        vars.push((
            format!("EINHORN_FD_FAMILY_{index}"),
            family(socket.bound).into(),
        ));
    }
    vars.push((
        "EINHORN_MASTER_PID".into(),
        context.sockvisor_pid.to_string(),
    ));
    vars.push(("EINHORN_SOCK_PATH".into(), context.control_path.into()));
    vars.push(("EINHORN_CHILD_INDEX".into(), context.worker.to_string()));
}

/// Server::Starter: `address=fd` pairs separated by `;`, and the
/// generation.
fn server_starter(vars: &mut Vec<(String, String)>, sockets: &[Passed<'_>], context: &Context<'_>) {
    let ports: Vec<String> = sockets
        .iter()
        .map(|s| format!("{}={}", plain_address(s.bound), s.fd))
        .collect();
    vars.push(("SERVER_STARTER_PORT".into(), ports.join(";")));
    vars.push((
        "SERVER_STARTER_GENERATION".into(),
        context.generation.to_string(),
    ));
}

fn family(bound: &str) -> &'static str {
    if bound.starts_with("unix:") {
        "AF_UNIX"
    } else if bound.contains("://[") {
        "AF_INET6"
    } else {
        "AF_INET"
    }
}

/// `127.0.0.1:8080` for `tcp://127.0.0.1:8080`, the path for `unix:/path`.
fn plain_address(bound: &str) -> &str {
    bound
        .split_once("://")
        .map(|(_, rest)| rest)
        .or_else(|| bound.strip_prefix("unix:"))
        .unwrap_or(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context<'static> {
        Context {
            generation: 3,
            worker: 2,
            sockvisor_pid: 100,
            control_path: "/run/sockvisor/app.sock",
        }
    }

    fn sockets() -> Vec<Passed<'static>> {
        vec![
            Passed {
                fd: 3,
                bound: "tcp://127.0.0.1:8080",
            },
            Passed {
                fd: 4,
                bound: "tcp://[::1]:8081",
            },
            Passed {
                fd: 5,
                bound: "unix:/run/app.sock",
            },
        ]
    }

    fn get<'a>(vars: &'a [(String, String)], key: &str) -> &'a str {
        &vars
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key}"))
            .1
    }

    #[test]
    fn einhorn_gets_count_fds_families_master_and_socket() {
        let vars = variables(&[FdEnv::Einhorn], &sockets(), &context());
        assert_eq!(get(&vars, "EINHORN_FD_COUNT"), "3");
        assert_eq!(get(&vars, "EINHORN_FD_0"), "3");
        assert_eq!(get(&vars, "EINHORN_FD_2"), "5");
        assert_eq!(get(&vars, "EINHORN_FD_FAMILY_0"), "AF_INET");
        assert_eq!(get(&vars, "EINHORN_FD_FAMILY_1"), "AF_INET6");
        assert_eq!(get(&vars, "EINHORN_FD_FAMILY_2"), "AF_UNIX");
        assert_eq!(get(&vars, "EINHORN_MASTER_PID"), "100");
        assert_eq!(get(&vars, "EINHORN_SOCK_PATH"), "/run/sockvisor/app.sock");
        assert_eq!(get(&vars, "EINHORN_CHILD_INDEX"), "2");
    }

    #[test]
    fn server_starter_gets_address_fd_pairs_and_the_generation() {
        let vars = variables(&[FdEnv::ServerStarter], &sockets(), &context());
        assert_eq!(
            get(&vars, "SERVER_STARTER_PORT"),
            "127.0.0.1:8080=3;[::1]:8081=4;/run/app.sock=5"
        );
        assert_eq!(get(&vars, "SERVER_STARTER_GENERATION"), "3");
    }

    #[test]
    fn nothing_extra_without_a_style() {
        assert!(variables(&[], &sockets(), &context()).is_empty());
    }
}
