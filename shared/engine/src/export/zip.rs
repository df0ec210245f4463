//! The zip export: items as they were (mail as `.eml`, contacts as `.vcf`, files as they
//! are), folders kept. Works for every source.

use super::ExportReport;
use crate::{Error, Progress, Result};
use domain::{escape, ItemFilter, ItemPath};
use std::fs::File;
use std::io::{BufWriter, Write};
use vault::{AccountVault, BlobKind, Entry, EntryKind};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

type Zip = ZipWriter<BufWriter<File>>;

/// Writes the selected entries into a zip at `out` (a new file). Only the items `filter`
/// selects are written; a narrowed zip holds no folder entries of its own (its items'
/// paths carry their folders).
pub(super) async fn write(
    vault: &AccountVault,
    selected: &[(ItemPath, Entry)],
    out: File,
    filter: &ItemFilter,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let mut zip = ZipWriter::new(BufWriter::new(out));
    let mut report = ExportReport::default();
    for (inc, entry) in selected {
        add(vault, &mut zip, entry, inc, filter, &mut report, progress).await?;
    }
    let w = zip
        .finish()
        .map_err(|e| Error::Invalid(format!("zip cannot be finished: {e}")))?;
    let f = w
        .into_inner()
        .map_err(|e| Error::io("zip cannot be written", e.into_error()))?;
    f.sync_all()
        .map_err(|e| Error::io("zip cannot be written", e))?;
    Ok(report)
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
    vault: &'a AccountVault,
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
                    let data = vault.read_blob(c, BlobKind::Data).await.map_err(|e| {
                        Error::Invalid(format!(
                            "{item} cannot be exported: {e} (run `lifeboat verify`)"
                        ))
                    })?;
                    zip.write_all(&data)
                        .map_err(|e| Error::io("zip cannot be written", e))?;
                    progress.advance(data.len() as u64);
                }
                report.items += 1;
                report.bytes += entry.size;
            }
        }
        Ok(())
    })
}
