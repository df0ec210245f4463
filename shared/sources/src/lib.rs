//! The connectors this build of Lifeboat knows (IMAP, Microsoft 365). The engine sees only its `Connector`
//! trait; the CLI, the local server and the Lambda functions open a task's connector
//! through [`BuiltIn`], so adding a source means adding it here and nowhere else.

use engine::{Connector, Connectors, TaskRecord};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Every source of this build, by the name tasks record (`imap`, …).
pub struct BuiltIn;

/// The names of the sources [`BuiltIn`] opens.
pub const SOURCES: &[&str] = &[imap_source::connector::SOURCE, m365::SOURCE];

impl Connectors for BuiltIn {
    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        match task.source.kind() {
            imap_source::connector::SOURCE => {
                Ok(Arc::new(imap_source::ImapConnector::open(task, secret)?))
            }
            m365::SOURCE => {
                let engine::SourceConfig::Source { settings, .. } = &task.source else {
                    unreachable!("a task of a connector source has settings")
                };
                m365::open(settings, secret)
            }
            other => Err(engine::Error::Invalid(format!(
                "task {} uses the {other} source, which this build of Lifeboat does not have (it has: {})",
                task.name,
                SOURCES.join(", ")
            ))),
        }
    }
}
