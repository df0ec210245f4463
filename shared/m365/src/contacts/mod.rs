//! Exchange Online contacts: the default folder and every folder below it, each tracked by
//! its own contact delta and each contact stored as a vCard (`.vcf`) that carries Graph's
//! JSON, from which a restore recreates the contact exactly. The delta rounds run in the
//! shared Outlook pipeline ([`crate::outlook`]).

pub mod backup;
pub mod restore;
pub mod vcard;

/// The first request of the service for user `u`: what a backup asks for first.
pub fn root(u: &str) -> String {
    format!("/users/{u}/contactFolders?$top=250")
}
