//! Sockets handed to sockvisor itself by its service manager (systemd socket
//! activation): taken over instead of bound, with their names, and passed
//! on to every generation like bound ones.
//!
//! The rules are `sd_listen_fds`'s: the variables count only when
//! `LISTEN_PID` is sockvisor's own pid; the sockets are fds 3, 4, …;
//! `LISTEN_FDNAMES`, when present, names each of them. This module must not
//! bind anything.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};

use super::bind::Listener;

/// The first inherited descriptor, as in systemd's `SD_LISTEN_FDS_START`.
const LISTEN_FDS_START: RawFd = 3;

/// Takes the sockets sockvisor was started with, if they are meant for it.
pub fn take_inherited() -> Result<Vec<Listener>, String> {
    let var = |name| std::env::var(name).ok();
    let (Some(pid), Some(count)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (e.g. a wrapper that forked): ignore.
        return Ok(Vec::new());
    }
    let count: usize = count
        .parse()
        .map_err(|_| format!("LISTEN_FDS='{count}' from the service manager is not a number"))?;
    // Every one of them is an open descriptor: no more than the open-file
    // limit allows (and nothing is allocated for more).
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    if count as u64 > limit.saturating_sub(LISTEN_FDS_START as u64) {
        return Err(format!(
            "LISTEN_FDS={count} from the service manager is more descriptors than sockvisor can have open (its open-file limit is {limit}); check what starts sockvisor"
        ));
    }
    let names: Vec<String> = match var("LISTEN_FDNAMES") {
        Some(names) => names.split(':').map(str::to_string).collect(),
        None => vec![super::DEFAULT_NAME.to_string(); count],
    };
    if names.len() != count {
        return Err(format!(
            "LISTEN_FDNAMES names {} sockets but LISTEN_FDS says {count}",
            names.len()
        ));
    }
    if let Some(bad) = names.iter().find(|n| !crate::fdstore::name_is_valid(n)) {
        return Err(format!(
            "LISTEN_FDNAMES from the service manager holds the invalid name {:?} (names are 1 to 255 printable ASCII characters without ':' or spaces)",
            crate::output::printable(bad)
        ));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(index, name)| take_one(LISTEN_FDS_START + index as RawFd, name))
        .collect()
}

fn take_one(fd: RawFd, name: String) -> Result<Listener, String> {
    // SAFETY: only borrowed to inspect it; fstat fails cleanly (EBADF) if
    // the descriptor is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = fstat(borrowed)
        .map_err(|e| format!("inherited fd {fd} from the service manager is not usable: {e}"))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!(
            "inherited fd {fd} from the service manager is not a socket"
        ));
    }
    // SAFETY: the service manager passed this open socket to this process
    // (LISTEN_PID is ours) and nothing else in sockvisor owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Only generations get it, at their own fd numbers.
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("inherited fd {fd}: {e}"))?;
    Ok(Listener::inherited(owned, fd, name))
}
