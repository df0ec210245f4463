//! Microsoft To Do: every task list tracked by its own task delta, each task stored as an
//! iCalendar VTODO (`.ics`) that carries Graph's JSON, from which a restore recreates the
//! task. The delta rounds run in the shared Outlook pipeline ([`crate::outlook`]).

pub mod backup;
pub mod ics;
pub mod restore;

/// The first request of the service for user `u`: what a backup asks for first.
pub fn root(u: &str) -> String {
    format!("/users/{u}/todo/lists?$top=250")
}
