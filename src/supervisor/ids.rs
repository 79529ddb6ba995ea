//! The names operations go by: an id per upgrade, rollout or scale, which
//! its client follows to get its progress and its one result. Its own
//! module so that the generation and operation modules can both use it
//! without importing each other.

/// One upgrade, rollout or scale, from its request to its result.
pub type UpgradeId = u64;
