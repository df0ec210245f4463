//! The connectors this build of Lifeboat has (a local folder, IMAP, Microsoft 365, Google:
//! Gmail backup so far, restore to come). The
//! engine sees only its `Connector` trait; the command line, the local server and the
//! Lambda functions open a task's connector through [`BuiltIn`], so adding a source means
//! adding its connector here and nowhere else.

use engine::{Connector, Connectors, TaskRecord};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Every connector of this build, by the name tasks record (`folder`, `imap`, `m365`,
/// `google`):
/// what runners open tasks with.
pub struct BuiltIn;

/// The connectors a task may be added with over the HTTP API: those that reach their
/// source over the network. A local folder is added on its own machine, with the command
/// line: a tenant of a shared server must not be able to back up (and so read) the
/// server's own files.
pub struct OverNetwork;

/// The names of the connectors [`BuiltIn`] opens.
pub const ALL: &[&str] = &[
    folder::CONNECTOR,
    imap::connector::SOURCE,
    m365::SOURCE,
    google::SOURCE,
];

/// The names of the connectors [`OverNetwork`] opens.
pub const OVER_NETWORK: &[&str] = &[imap::connector::SOURCE, m365::SOURCE, google::SOURCE];

fn open(
    names: &[&str],
    task: &TaskRecord,
    secret: Option<Zeroizing<String>>,
) -> engine::Result<Arc<dyn Connector>> {
    let kind = task.source.kind();
    if !names.contains(&kind) {
        return Err(engine::Error::Invalid(format!(
            "task {} uses the {kind} connector, which is not offered here (these are: {})",
            task.name,
            names.join(", ")
        )));
    }
    match kind {
        folder::CONNECTOR => folder::FolderConnector::open_dyn(task, secret),
        imap::connector::SOURCE => Ok(Arc::new(imap::ImapConnector::open(task, secret)?)),
        m365::SOURCE => m365::open(&task.source.settings, secret),
        google::SOURCE => google::open(&task.source.settings, secret),
        other => unreachable!("{other} is listed but not opened"),
    }
}

impl Connectors for BuiltIn {
    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        open(ALL, task, secret)
    }

    fn offers(&self, connector: &str) -> bool {
        ALL.contains(&connector)
    }
}

impl Connectors for OverNetwork {
    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        open(OVER_NETWORK, task, secret)
    }

    fn offers(&self, connector: &str) -> bool {
        OVER_NETWORK.contains(&connector)
    }
}
