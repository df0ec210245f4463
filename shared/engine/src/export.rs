//! Export of a snapshot (or a selection) as a zip: files as they were, folders kept. The
//! zip is written to a temporary name and renamed when complete, so a failed export never
//! leaves a truncated zip that looks whole.

use crate::browse::{not_found, selection};
use crate::{Engine, Error, Progress, Result, TaskRecord};
use domain::{escape, ItemFilter, ItemPath};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use vault::{Entry, EntryKind, SnapshotRecord, Vault};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExportReport {
    pub files: u64,
    pub folders: u64,
    pub bytes: u64,
}

type Zip = ZipWriter<BufWriter<File>>;

impl Engine {
    /// Writes the selected items of `snap` into a new zip file at `zip_path`.
    ///
    /// # Errors
    /// A path not in the snapshot, an existing `zip_path` (never overwritten), damage in
    /// an exported item (the export is then abandoned and no zip is left), or I/O.
    pub async fn export_zip(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        zip_path: &Path,
        include: &[ItemPath],
        progress: &dyn Progress,
    ) -> Result<ExportReport> {
        self.export_zip_selected(
            task,
            snap,
            zip_path,
            include,
            &ItemFilter::default(),
            progress,
        )
        .await
    }

    /// [`Engine::export_zip`] of only the items `filter` selects within `include` (the
    /// zip then holds no folder entries of its own: its items' paths carry their folders).
    ///
    /// # Errors
    /// As [`Engine::export_zip`].
    pub async fn export_zip_selected(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        zip_path: &Path,
        include: &[ItemPath],
        filter: &ItemFilter,
        progress: &dyn Progress,
    ) -> Result<ExportReport> {
        let vault = self.vault(task).await?;
        if zip_path.exists() {
            return Err(Error::Invalid(format!(
                "{} already exists; choose a new file name",
                zip_path.display()
            )));
        }
        let includes = selection(include);
        let mut selected = Vec::new();
        for inc in &includes {
            selected.push((
                inc.clone(),
                vault.lookup(&snap.root(), inc).await.map_err(not_found)?,
            ));
        }
        let mut partial = zip_path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let file = File::create(&partial)
            .map_err(|e| Error::io(format!("cannot create {}", partial.display()), e))?;
        let mut zip = ZipWriter::new(BufWriter::new(file));
        let mut report = ExportReport::default();
        let res = async {
            for (inc, entry) in &selected {
                add(&vault, &mut zip, entry, inc, filter, &mut report, progress).await?;
            }
            let w = zip
                .finish()
                .map_err(|e| Error::Invalid(format!("zip cannot be finished: {e}")))?;
            let f = w
                .into_inner()
                .map_err(|e| Error::io("zip cannot be written", e.into_error()))?;
            f.sync_all()
                .map_err(|e| Error::io("zip cannot be written", e))?;
            Ok::<_, Error>(())
        }
        .await;
        match res {
            Ok(()) => {
                std::fs::rename(&partial, zip_path)
                    .map_err(|e| Error::io(format!("cannot create {}", zip_path.display()), e))?;
                Ok(report)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }
}

fn zip_name(item: &ItemPath) -> String {
    item.segments()
        .iter()
        .map(|s| escape(s))
        .collect::<Vec<_>>()
        .join("/")
}

fn zip_err(e: zip::result::ZipError) -> Error {
    Error::Invalid(format!("zip cannot be written: {e}"))
}

fn add<'a>(
    vault: &'a Vault,
    zip: &'a mut Zip,
    entry: &'a Entry,
    item: &'a ItemPath,
    filter: &'a ItemFilter,
    report: &'a mut ExportReport,
    progress: &'a dyn Progress,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let narrowed = !filter.is_empty();
        if narrowed && entry.kind != EntryKind::Dir && !filter.matches(&entry.meta, entry.mtime_ns)
        {
            return Ok(());
        }
        match entry.kind {
            EntryKind::Dir => {
                if !item.is_root() && !narrowed {
                    zip.add_directory(zip_name(item), SimpleFileOptions::default())
                        .map_err(zip_err)?;
                    report.folders += 1;
                }
                if let Some(sub) = entry.subtree {
                    let node = vault.read_tree(&sub).await?;
                    for child in &node.entries {
                        let child_item = item.join(&child.name)?;
                        add(vault, zip, child, &child_item, filter, report, progress).await?;
                    }
                }
            }
            EntryKind::Symlink => {
                let target = entry.link.clone().unwrap_or_default();
                zip.add_symlink(
                    zip_name(item),
                    escape(&target),
                    SimpleFileOptions::default(),
                )
                .map_err(zip_err)?;
            }
            EntryKind::File => {
                let opts = SimpleFileOptions::default()
                    .compression_method(CompressionMethod::Deflated)
                    .large_file(entry.size >= u32::MAX as u64)
                    .unix_permissions(if entry.mode == 0 { 0o644 } else { entry.mode });
                zip.start_file(zip_name(item), opts).map_err(zip_err)?;
                for c in &entry.content {
                    let data = vault.read_blob(c, false).await.map_err(|e| {
                        Error::Invalid(format!(
                            "{item} cannot be exported: {e} (run `lifeboat verify`)"
                        ))
                    })?;
                    zip.write_all(&data)
                        .map_err(|e| Error::io("zip cannot be written", e))?;
                    progress.advance(data.len() as u64);
                }
                report.files += 1;
                report.bytes += entry.size;
            }
        }
        Ok(())
    })
}
