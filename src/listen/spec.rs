//! The `--listen SPEC` language: parsing a spec string into a [`ListenSpec`].
//!
//! This module owns the grammar and its validation only. It never touches the
//! network or the file system; binding is `listen::bind`'s job.
//!
//! ```text
//! SPEC    = ADDRESS [ "," OPTION ]*
//! ADDRESS = HOST:PORT | tcp://HOST:PORT | udp://HOST:PORT
//!         | unix:/absolute/path.sock | unix:@abstract-name
//! HOST    = IPv4 literal | "[" IPv6 literal "]"
//! OPTION  = name=NAME | backlog=N | reuseport | mode=OCTAL | v6only
//! ```
//!
//! An option that is unknown, repeated, or meaningless for the address kind
//! is an error: a misspelt option silently ignored is a production surprise.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Longest name systemd accepts in `LISTEN_FDNAMES` (`FileDescriptorName=`).
const MAX_NAME_LEN: usize = 255;

/// Longest unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_UNIX_PATH_LEN: usize = 107;

/// Name given to a socket that has no `name=`, as `sd_listen_fds_with_names`
/// reports for sockets without a name.
pub const DEFAULT_NAME: &str = "unknown";

/// What kind of socket to open, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    UnixPath(PathBuf),
    /// An abstract unix socket name, without the leading `@`.
    UnixAbstract(String),
    /// A socket sockvisor received from its service manager at this fd;
    /// never produced by the parser.
    Inherited(i32),
}

/// One parsed `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The spec exactly as the operator wrote it, for error messages.
    pub text: String,
    pub address: ListenAddress,
    /// Name passed to the child in `LISTEN_FDNAMES`.
    pub name: String,
    /// `listen(2)` backlog; `None` means the kernel's `somaxconn`.
    pub backlog: Option<u32>,
    pub reuseport: bool,
    /// File mode of a unix socket path, e.g. `0o660`.
    pub mode: Option<u32>,
    /// For IPv6 addresses: accept IPv6 only instead of dual-stack.
    pub v6only: bool,
}

/// Why a spec was rejected. The `Display` form is a full sentence naming the
/// spec and saying how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid listen spec '{}': {}", self.spec, self.reason)
    }
}

impl std::error::Error for SpecError {}

impl ListenSpec {
    /// Parses one `--listen` argument.
    pub fn parse(text: &str) -> Result<ListenSpec, SpecError> {
        let fail = |reason: String| SpecError {
            spec: text.to_string(),
            reason,
        };
        let mut parts = text.split(',');
        let address_text = parts.next().unwrap_or_default();
        let address = parse_address(address_text).map_err(fail)?;
        let mut spec = ListenSpec {
            text: text.to_string(),
            address,
            name: DEFAULT_NAME.to_string(),
            backlog: None,
            reuseport: false,
            mode: None,
            v6only: false,
        };
        let mut seen: Vec<&str> = Vec::new();
        for option in parts {
            let key = option.split('=').next().unwrap_or_default();
            if seen.contains(&key) {
                return Err(fail(format!("option '{key}' is given twice")));
            }
            seen.push(key);
            spec.apply_option(option).map_err(fail)?;
        }
        Ok(spec)
    }

    fn apply_option(&mut self, option: &str) -> Result<(), String> {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        };
        match (key, value) {
            ("name", Some(name)) => self.name = parse_name(name)?,
            ("backlog", Some(n)) => self.backlog = Some(parse_backlog(n)?),
            ("reuseport", None) => {
                if self.is_unix() {
                    return Err("'reuseport' applies to tcp and udp sockets only".into());
                }
                self.reuseport = true;
            }
            ("mode", Some(mode)) => {
                if !matches!(self.address, ListenAddress::UnixPath(_)) {
                    return Err("'mode=' applies to unix socket paths only".into());
                }
                self.mode = Some(parse_mode(mode)?);
            }
            ("v6only", None) => {
                if !self.is_ipv6() {
                    return Err("'v6only' applies to IPv6 addresses only".into());
                }
                self.v6only = true;
            }
            ("name" | "backlog" | "mode", None) => {
                return Err(format!("option '{key}' needs a value, e.g. '{key}=…'"));
            }
            ("reuseport" | "v6only", Some(_)) => {
                return Err(format!("option '{key}' takes no value"));
            }
            _ => {
                return Err(format!(
                    "unknown option '{option}' (known: name=, backlog=, reuseport, mode=, v6only)"
                ));
            }
        }
        if key == "backlog" && matches!(self.address, ListenAddress::Udp(_)) {
            return Err("'backlog=' does not apply to udp sockets".into());
        }
        Ok(())
    }

    fn is_unix(&self) -> bool {
        matches!(
            self.address,
            ListenAddress::UnixPath(_) | ListenAddress::UnixAbstract(_)
        )
    }

    fn is_ipv6(&self) -> bool {
        matches!(
            self.address,
            ListenAddress::Tcp(SocketAddr::V6(_)) | ListenAddress::Udp(SocketAddr::V6(_))
        )
    }
}

fn parse_address(text: &str) -> Result<ListenAddress, String> {
    if text.is_empty() {
        return Err("the address is empty; write e.g. '127.0.0.1:8080'".into());
    }
    if let Some(rest) = text.strip_prefix("unix:") {
        return parse_unix(rest);
    }
    if let Some(rest) = text.strip_prefix("udp://") {
        return parse_inet(rest).map(ListenAddress::Udp);
    }
    // `udp:` or `tcp:` without the slashes (`unix:` takes none).
    for scheme in ["udp", "tcp"] {
        if let Some(rest) = text.strip_prefix(scheme).and_then(|r| r.strip_prefix(':'))
            && !rest.starts_with("//")
        {
            return Err(format!(
                "write '{scheme}://{rest}' ({scheme}:// with two slashes)"
            ));
        }
    }
    let inet = text.strip_prefix("tcp://").unwrap_or(text);
    if let Some((scheme, _)) = inet.split_once("://") {
        return Err(format!(
            "unknown scheme '{scheme}://' (use tcp://, udp:// or unix:)"
        ));
    }
    parse_inet(inet).map(ListenAddress::Tcp)
}

fn parse_inet(text: &str) -> Result<SocketAddr, String> {
    if text.starts_with('[') && text.ends_with(']') {
        return Err(format!(
            "missing ':PORT' after {text}; write e.g. '{text}:8080'"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("missing ':PORT'; write e.g. '127.0.0.1:8080' or '[::]:8080'".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
    let ip: IpAddr = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse()
            .map_err(|_| format!("'{v6}' is not an IPv6 address"))?
    } else if host.contains(':') {
        return Err("an IPv6 address must be in brackets, e.g. '[::1]:8080'".into());
    } else if host.is_empty() {
        return Err("missing host; use '0.0.0.0' for every IPv4 address or '[::]' for all".into());
    } else {
        host.parse().map_err(|_| {
            format!(
                "'{host}' is not an IP address (host names are not resolved; use e.g. 127.0.0.1)"
            )
        })?
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_unix(rest: &str) -> Result<ListenAddress, String> {
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err("the abstract socket name after '@' is empty".into());
        }
        if name.len() > MAX_UNIX_PATH_LEN - 1 {
            return Err(format!(
                "the abstract name is {} bytes; the limit is {}",
                name.len(),
                MAX_UNIX_PATH_LEN - 1
            ));
        }
        return Ok(ListenAddress::UnixAbstract(name.to_string()));
    }
    if rest.is_empty() {
        return Err("the unix socket path is empty; write e.g. 'unix:/run/app.sock'".into());
    }
    if !rest.starts_with('/') {
        return Err(format!(
            "unix socket path '{rest}' is relative; write an absolute path like 'unix:/run/app.sock'"
        ));
    }
    if rest.len() > MAX_UNIX_PATH_LEN {
        return Err(format!(
            "the unix socket path is {} bytes; the kernel's limit is {}",
            rest.len(),
            MAX_UNIX_PATH_LEN
        ));
    }
    Ok(ListenAddress::UnixPath(PathBuf::from(rest)))
}

/// A name must be usable in the colon-separated `LISTEN_FDNAMES`: the same
/// rule as systemd's `FileDescriptorName=`.
fn parse_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("'name=' is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} bytes"));
    }
    if let Some(bad) = name.chars().find(|c| *c == ':' || !c.is_ascii_graphic()) {
        return Err(format!(
            "name '{name}' contains {bad:?}; names are printable ASCII without ':' or spaces"
        ));
    }
    Ok(name.to_string())
}

/// `listen(2)` takes the backlog as an `int`.
fn parse_backlog(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 && n <= i32::MAX as u32 => Ok(n),
        _ => Err(format!(
            "backlog '{text}' is not a number from 1 to {} (the kernel caps it at net.core.somaxconn)",
            i32::MAX
        )),
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "mode '{text}' is not an octal file mode from 0 to 0777, like 0660"
        )),
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "tcp://{addr}"),
            ListenAddress::Udp(addr) => write!(f, "udp://{addr}"),
            ListenAddress::UnixPath(path) => write!(f, "unix:{}", path.display()),
            ListenAddress::UnixAbstract(name) => write!(f, "unix:@{name}"),
            ListenAddress::Inherited(fd) => write!(f, "inherited fd {fd}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ListenSpec {
        ListenSpec::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reason(text: &str) -> String {
        ListenSpec::parse(text).unwrap_err().reason
    }

    #[test]
    fn a_bracketed_address_without_a_port_says_the_port_is_missing() {
        assert_eq!(
            parse_address("[::1]").unwrap_err(),
            "missing ':PORT' after [::1]; write e.g. '[::1]:8080'"
        );
    }

    #[test]
    fn a_scheme_without_its_slashes_is_named() {
        let error = |text: &str| parse_address(text).unwrap_err();
        assert_eq!(
            error("udp:127.0.0.1:53"),
            "write 'udp://127.0.0.1:53' (udp:// with two slashes)"
        );
        assert_eq!(
            error("tcp:[::1]:80"),
            "write 'tcp://[::1]:80' (tcp:// with two slashes)"
        );
    }

    #[test]
    fn bare_host_port_is_tcp() {
        assert_eq!(
            parse("127.0.0.1:8080").address,
            ListenAddress::Tcp("127.0.0.1:8080".parse().unwrap())
        );
    }

    #[test]
    fn tcp_scheme_is_accepted() {
        assert_eq!(
            parse("tcp://0.0.0.0:0").address,
            ListenAddress::Tcp("0.0.0.0:0".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_needs_brackets() {
        assert_eq!(
            parse("[::1]:80").address,
            ListenAddress::Tcp("[::1]:80".parse().unwrap())
        );
        assert!(reason("::1:80").contains("brackets"));
    }

    #[test]
    fn udp_scheme_gives_udp() {
        assert_eq!(
            parse("udp://[::]:53").address,
            ListenAddress::Udp("[::]:53".parse().unwrap())
        );
    }

    #[test]
    fn unix_path_and_abstract_names() {
        assert_eq!(
            parse("unix:/run/a.sock").address,
            ListenAddress::UnixPath("/run/a.sock".into())
        );
        assert_eq!(
            parse("unix:@app").address,
            ListenAddress::UnixAbstract("app".into())
        );
        assert!(reason("unix:@").contains("empty"));
        assert!(reason("unix:").contains("empty"));
    }

    #[test]
    fn unix_path_longer_than_sun_path_is_rejected() {
        let long = format!("unix:/{}", "a".repeat(200));
        assert!(reason(&long).contains("limit"));
    }

    #[test]
    fn options_are_applied() {
        let spec = parse("0.0.0.0:8080,name=http,backlog=4096,reuseport");
        assert_eq!(spec.name, "http");
        assert_eq!(spec.backlog, Some(4096));
        assert!(spec.reuseport);
        let unix = parse("unix:/tmp/x.sock,mode=0660");
        assert_eq!(unix.mode, Some(0o660));
        assert!(parse("[::]:1,v6only").v6only);
    }

    #[test]
    fn unnamed_socket_is_called_unknown_like_systemd() {
        assert_eq!(parse("127.0.0.1:1").name, "unknown");
    }

    #[test]
    fn unknown_option_is_an_error_not_ignored() {
        let r = reason("127.0.0.1:80,nmae=http");
        assert!(r.contains("unknown option 'nmae=http'"), "{r}");
    }

    #[test]
    fn repeated_option_is_an_error() {
        assert!(reason("127.0.0.1:80,name=a,name=b").contains("twice"));
    }

    #[test]
    fn option_for_another_socket_kind_is_an_error() {
        assert!(reason("127.0.0.1:80,mode=0600").contains("unix socket paths only"));
        assert!(reason("unix:/a,reuseport").contains("tcp and udp"));
        assert!(reason("127.0.0.1:80,v6only").contains("IPv6"));
        assert!(reason("udp://127.0.0.1:80,backlog=5").contains("udp"));
    }

    #[test]
    fn name_must_fit_listen_fdnames() {
        assert!(reason("127.0.0.1:1,name=a:b").contains("':'"));
        assert!(reason("127.0.0.1:1,name=").contains("empty"));
        assert!(reason("127.0.0.1:1,name=a b").contains("printable"));
    }

    #[test]
    fn bad_port_and_host_are_explained() {
        assert!(reason("127.0.0.1:99999").contains("0 to 65535"));
        assert!(reason("localhost:80").contains("not resolved"));
        assert!(reason("8080").contains("missing ':PORT'"));
        assert!(reason(":8080").contains("missing host"));
        assert!(reason("http://1.2.3.4:80").contains("unknown scheme"));
        assert!(reason("").contains("empty"));
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(reason("1.2.3.4:1,backlog=0").contains("from 1 to"));
        assert!(reason("unix:/a,mode=999").contains("octal"));
        assert!(reason("1.2.3.4:1,name").contains("needs a value"));
        assert!(reason("1.2.3.4:1,reuseport=1").contains("takes no value"));
    }

    // Inputs the fuzzer (fuzz/fuzz_targets/listen_spec.rs) found worth
    // keeping, each pinned to the rule it exercises.

    #[test]
    fn relative_unix_paths_are_rejected() {
        assert!(reason("unix::").contains("relative"));
        assert!(reason("unix:app.sock").contains("absolute path"));
    }

    #[test]
    fn empty_brackets_are_not_an_ipv6_address() {
        assert!(reason("[]:6").contains("not an IPv6 address"));
        assert!(reason("[::6").contains("brackets"));
    }

    #[test]
    fn a_scheme_without_an_address_is_explained() {
        assert!(reason("tcp://").contains("missing ':PORT'"));
        assert!(reason("udp://").contains("missing ':PORT'"));
    }

    #[test]
    fn control_characters_in_the_host_are_not_an_address() {
        assert!(reason("\0\0\0:3").contains("not an IP address"));
        assert!(reason("\n::/:").contains("port"));
    }

    #[test]
    fn a_trailing_comma_is_an_empty_unknown_option() {
        assert!(reason("0.0.0.0:80,").contains("unknown option ''"));
    }

    #[test]
    fn error_message_names_the_spec() {
        let err = ListenSpec::parse("1.2.3.4:1,bogus").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid listen spec '1.2.3.4:1,bogus': ")
        );
    }
}
