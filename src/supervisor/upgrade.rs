//! Upgrades as the operator sees them: an identifier, progress notices,
//! one final result, and the outcome remembered for `status`.

use std::time::Instant;

pub type UpgradeId = u64;

/// Something to tell whoever asked for an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Progress {
        upgrade: UpgradeId,
        message: String,
    },
    Finished {
        upgrade: UpgradeId,
        result: Result<String, String>,
    },
}

/// Why an upgrade request was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeRejection {
    /// Another generation is still starting.
    Busy(String),
    /// sockvisor is stopping.
    Stopping,
    /// The new generation could not be spawned.
    SpawnFailed(String),
}

impl std::fmt::Display for UpgradeRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeRejection::Busy(message) | UpgradeRejection::SpawnFailed(message) => {
                f.write_str(message)
            }
            UpgradeRejection::Stopping => f.write_str("sockvisor is stopping; upgrade refused"),
        }
    }
}

/// An upgrade in flight.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub id: UpgradeId,
    /// The generation it started.
    pub new: u32,
    /// Once the new one is ready: the generation it replaced, until that one
    /// has exited.
    pub draining: Option<u32>,
}

/// How the last finished upgrade ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub generation: u32,
    pub ok: bool,
    pub message: String,
    pub finished: Instant,
}
