//! Exports: a snapshot (or a selection of it) written to one file in an open format,
//! behind one entry point whatever the format. The file is written under a temporary name
//! and renamed when complete, so a failed export never leaves a truncated file that looks
//! whole, and an existing file is never overwritten.
//!
//! - **zip**: every item as it was (mail as `.eml`, contacts `.vcf`, events `.ics`, files
//!   as they are), folders kept; for every source.
//! - **mbox**: the messages (`.eml` items) as one mboxrd file, for any mail source.

mod mbox;
mod zip;

use crate::snapshots::{not_found, selection};
use crate::{Engine, Error, Progress, Result, TaskRecord};
use domain::{ItemFilter, ItemPath};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use vault::SnapshotRecord;

/// The file format of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Zip,
    Mbox,
}

/// What to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// Paths to export; empty means everything.
    pub include: Vec<ItemPath>,
    /// Within `include`, only the items these metadata select (sender, subject, days).
    pub filter: ItemFilter,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub items: u64,
    pub folders: u64,
    /// The items' bytes (not the file's).
    pub bytes: u64,
}

impl Engine {
    /// Writes the selected items of `snap` into a new file at `path`, as `opts.format`.
    ///
    /// # Errors
    /// An existing `path` (never overwritten), a path not in the snapshot, damage in an
    /// exported item (the export is then abandoned and no file is left), or I/O.
    pub async fn export(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        path: &Path,
        opts: &ExportOptions,
        progress: &dyn Progress,
    ) -> Result<ExportReport> {
        self.check_owned(task, snap).await?;
        let vault = self.vault(task).await?.account(&snap.account);
        if path.exists() {
            return Err(Error::Invalid(format!(
                "{} already exists; choose a new file name",
                path.display()
            )));
        }
        let mut selected = Vec::new();
        for inc in selection(&opts.include) {
            let entry = vault.lookup(&snap.root(), &inc).await.map_err(not_found)?;
            selected.push((inc, entry));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial)
            .map_err(|e| Error::io(format!("cannot create {}", partial.display()), e))?;
        let written = match opts.format {
            ExportFormat::Zip => zip::write(&vault, &selected, file, &opts.filter, progress).await,
            ExportFormat::Mbox => {
                mbox::write(&vault, &selected, file, &opts.filter, progress).await
            }
        };
        let renamed = written.and_then(|report| {
            std::fs::rename(&partial, path)
                .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
            Ok(report)
        });
        if renamed.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        renamed
    }
}
