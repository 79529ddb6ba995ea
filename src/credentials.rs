//! Who the server runs as: `--user` and `--group`, resolved once, before
//! anything is bound, from the user database (`/etc/passwd`,
//! `/etc/group`, or whatever NSS serves).
//!
//! sockvisor binds the sockets as its own user (root, for port 80) and
//! every worker of every generation drops to this user between `fork` and
//! `exec` (see `spawn`): supplementary groups first, then the group, then
//! the user, real, effective and saved alike, so the drop cannot stop half
//! way with root still held. A non-root uid has no capabilities left after
//! that, ambient ones included. It owns no process and makes no system call
//! but the user-database look-ups.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

/// The identity a child takes before `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as `initgroups` would set them.
    pub groups: Vec<u32>,
    /// For `USER` and `LOGNAME`.
    pub name: String,
    /// For `HOME`.
    pub home: PathBuf,
}

impl RunAs {
    /// Resolves `--user NAME|UID` and `--group NAME|GID`. A numeric uid
    /// without an entry in the user database needs `--group`.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
        if user.parse::<u32>() == Ok(u32::MAX)
            || group.is_some_and(|g| g.parse::<u32>() == Ok(u32::MAX))
        {
            return Err(format!(
                "--user {user}: uid and gid {} are no identity (the kernel reads them as \"unchanged\", which would leave the server root); give a real one",
                u32::MAX
            ));
        }
        let run_as = Self::look_up(user, group)?;
        // (uid_t)-1 and (gid_t)-1 are no identity: to setresuid(2) and
        // setresgid(2) they mean "leave it as it is", and the server would
        // keep root's.
        if run_as.uid == u32::MAX {
            return Err(format!(
                "--user {user}: uid {} is not a user (the kernel reads it as \"unchanged\", which would leave the server root); give a real uid",
                u32::MAX
            ));
        }
        if run_as.gid == u32::MAX || run_as.groups.contains(&u32::MAX) {
            return Err(format!(
                "--user {user}: gid {} is not a group (the kernel reads it as \"unchanged\", which would leave the server root's group); give a real gid",
                u32::MAX
            ));
        }
        Ok(run_as)
    }

    fn look_up(user: &str, group: Option<&str>) -> Result<RunAs, String> {
        let entry = lookup_user(user)?;
        let gid = match (group, &entry) {
            (Some(group), _) => lookup_group(group)?,
            (None, Some(entry)) => entry.gid.as_raw(),
            (None, None) => {
                return Err(format!(
                    "--user {user}: uid {user} has no entry in the user database; give --group too"
                ));
            }
        };
        let Some(entry) = entry else {
            let uid: u32 = user.parse().unwrap_or_default();
            return Ok(RunAs {
                uid,
                gid,
                groups: vec![gid],
                name: user.to_string(),
                home: PathBuf::from("/"),
            });
        };
        let name = std::ffi::CString::new(entry.name.as_bytes())
            .map_err(|_| format!("--user {user}: the user's name holds a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
            .map_err(|e| format!("--user {user}: cannot list the user's groups: {e}"))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(RunAs {
            uid: entry.uid.as_raw(),
            gid,
            groups,
            name: entry.name,
            home: entry.dir,
        })
    }

    /// `HOME`, `USER` and `LOGNAME`, as login sets them.
    pub fn environment(&self) -> [(String, String); 3] {
        [
            ("HOME".to_string(), self.home.display().to_string()),
            ("USER".to_string(), self.name.clone()),
            ("LOGNAME".to_string(), self.name.clone()),
        ]
    }
}

fn lookup_user(user: &str) -> Result<Option<User>, String> {
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    };
    match found {
        Ok(Some(entry)) => Ok(Some(entry)),
        Ok(None) if user.parse::<u32>().is_ok() => Ok(None),
        // An image with no /etc/passwd (FROM scratch): a uid is a uid.
        Err(nix::errno::Errno::ENOENT) if user.parse::<u32>().is_ok() => Ok(None),
        Ok(None) => Err(format!(
            "unknown user '{user}' (not in the user database; create it, or give a numeric uid)"
        )),
        Err(e) => Err(format!("--user {user}: cannot read the user database: {e}")),
    }
}

fn lookup_group(group: &str) -> Result<u32, String> {
    let found = match group.parse::<u32>() {
        Ok(gid) => {
            return Ok(Group::from_gid(Gid::from_raw(gid))
                .ok()
                .flatten()
                .map_or(gid, |g| g.gid.as_raw()));
        }
        Err(_) => Group::from_name(group),
    };
    match found {
        Ok(Some(entry)) => Ok(entry.gid.as_raw()),
        Ok(None) => Err(format!(
            "unknown group '{group}' (not in the group database; create it, or give a numeric gid)"
        )),
        Err(e) => Err(format!(
            "--group {group}: cannot read the group database: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_user_brings_its_group_home_and_supplementary_groups() {
        let root = RunAs::resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.home, PathBuf::from("/root"));
        assert!(root.groups.contains(&0));
        assert_eq!(root.environment()[1], ("USER".into(), "root".into()));
    }

    #[test]
    fn an_unknown_user_or_group_is_named_in_the_error() {
        let why = RunAs::resolve("no-such-user-here", None).unwrap_err();
        assert!(why.contains("unknown user 'no-such-user-here'"), "{why}");
        let why = RunAs::resolve("root", Some("no-such-group-here")).unwrap_err();
        assert!(why.contains("unknown group 'no-such-group-here'"), "{why}");
    }

    #[test]
    fn a_numeric_uid_without_an_entry_needs_a_group() {
        let why = RunAs::resolve("4000000", None).unwrap_err();
        assert!(why.contains("give --group"), "{why}");
        let bare = RunAs::resolve("4000000", Some("4000001")).unwrap();
        assert_eq!(
            (bare.uid, bare.gid, bare.groups.clone()),
            (4000000, 4000001, vec![4000001])
        );
    }

    #[test]
    fn the_ids_the_kernel_reads_as_unchanged_are_refused() {
        for (user, group) in [
            ("4294967295", Some("1")),
            ("4294967295", None),
            ("4000000", Some("4294967295")),
        ] {
            let why = RunAs::resolve(user, group).unwrap_err();
            assert!(
                why.contains("uid and gid 4294967295 are no identity"),
                "{why}"
            );
        }
    }
}
