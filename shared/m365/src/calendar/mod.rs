//! Exchange Online calendars: every calendar's events listed (Graph v1.0 tracks event
//! changes only as occurrences in a window, which cannot bring back a series master),
//! series masters stored with their exceptions as one iCalendar object (`.ics`) that
//! carries Graph's JSON; a restore recreates the series and applies its exceptions.

pub mod backup;
pub mod ics;
pub mod restore;

/// The first request of the service for user `u`: what a backup asks for first.
pub fn root(u: &str) -> String {
    format!("/users/{u}/calendars?$top=250")
}
