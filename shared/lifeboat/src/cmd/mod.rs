//! One module per command: each parses its arguments, calls one use case of the engine and
//! renders what it returns (a line for people, the engine's views with `--json`).

pub mod backup;
pub mod diff;
pub mod export;
pub mod prune;
pub mod restore;
pub mod snapshots;
pub mod task;
pub mod verify;

/// Exit status when the work finished but some items could not be handled (as restic's 3).
pub const EXIT_PARTIAL: u8 = 3;
/// Exit status when `verify` finds damage.
pub const EXIT_DAMAGE: u8 = 2;
