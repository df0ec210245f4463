//! Files restored to a drive: the drive and folder a snapshot path goes to (the user's
//! OneDrive, or the site's library of the same name), the label's folder or the original
//! place, and the job's conflict rule for a file already there.

use super::{child, ensure_folder, upload};
use crate::client::Fail;
use crate::names::unseg;
use crate::restore::{engine_fail, s, Ctx, R};
use domain::ItemPath;
use engine::OnConflict;
use engine::{Entry, EntryKind};
use serde_json::Value;

/// The drive a snapshot path goes to, and how many of its leading segments name it.
async fn target_drive(cx: &mut Ctx<'_>, path: &ItemPath) -> Result<(String, usize), Fail> {
    let from_site = path.segments()[0] == b"Libraries";
    let skip = if from_site { 2 } else { 1 };
    let key = crate::names::path(&path.segments()[..skip.min(path.segments().len())]);
    if let Some(id) = cx.drives.get(&key) {
        return Ok((id.clone(), skip));
    }
    let id = match &cx.site {
        None => {
            let d =
                cx.g.get_json(&format!("/users/{}/drive?$select=id", cx.user), None)
                    .await?;
            s(&d, "id").to_string()
        }
        Some(site) => {
            let library = path
                .segments()
                .get(1)
                .filter(|_| from_site)
                .map(|l| unseg(l));
            let drives =
                cx.g.get_json(&format!("/sites/{site}/drives?$top=200"), None)
                    .await?;
            let all: Vec<&Value> = drives["value"].as_array().into_iter().flatten().collect();
            all.iter()
                .find(|d| library.as_deref().is_some_and(|l| s(d, "name") == l))
                .or(all.first())
                .map(|d| s(d, "id").to_string())
                .ok_or_else(|| Fail::Protocol("the site has no document library".into()))?
        }
    };
    cx.drives.insert(key, id.clone());
    Ok((id, skip))
}

/// The id of the drive folder a snapshot folder goes to (created when missing).
async fn drive_folder(
    cx: &mut Ctx<'_>,
    drive: &str,
    path: &ItemPath,
    skip: usize,
) -> Result<String, Fail> {
    if let Some(id) = cx.folders.get(path) {
        return Ok(id.clone());
    }
    let id = if path.segments().len() <= skip {
        match cx.job.label.clone() {
            Some(l) => {
                cx.target(format!("{}/{l}", path));
                // Already there: this job ran before (and crashed); see `files`.
                if child(cx.g, drive, "root", &l).await?.is_some() {
                    cx.found.insert(format!("drive:{drive}"));
                }
                ensure_folder(cx.g, drive, "root", &l).await?
            }
            None => {
                cx.target(path.to_string());
                "root".to_string()
            }
        }
    } else {
        let parent = path.parent().expect("below the drive");
        let pid = Box::pin(drive_folder(cx, drive, &parent, skip)).await?;
        ensure_folder(cx.g, drive, &pid, &unseg(path.file_name().unwrap_or(b""))).await?
    };
    cx.folders.insert(path.clone(), id.clone());
    Ok(id)
}

pub(crate) async fn files(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if path.segments()[0] == b"Libraries" && path.segments().len() < 2 {
        return Ok(());
    }
    let (drive, skip) = target_drive(cx, path).await?;
    if entry.kind == EntryKind::Dir {
        drive_folder(cx, &drive, path, skip).await?;
        cx.report.folders += 1;
        return Ok(());
    }
    let parent = path.parent().expect("an item has a parent");
    let pid = drive_folder(cx, &drive, &parent, skip).await?;
    let mut name = unseg(path.file_name().unwrap_or(b""));
    if cx.job.label.is_some() && cx.found.contains(&format!("drive:{drive}")) {
        // A file of the job's own restore folder, as large as the one to restore, was
        // written by the earlier run: an upload appears only once complete.
        if let Some(there) = child(cx.g, &drive, &pid, &name).await? {
            if there.get("file").is_some() && there["size"].as_u64() == Some(entry.size) {
                cx.report.skipped += 1;
                return Ok(());
            }
        }
    }
    if cx.job.label.is_none() {
        if let Some(existing) = child(cx.g, &drive, &pid, &name).await? {
            match cx.job.on_conflict {
                OnConflict::Skip => {
                    cx.report.skipped += 1;
                    return Ok(());
                }
                OnConflict::Replace => {}
                OnConflict::Copy => {
                    let _ = existing;
                    let (stem, ext) = match name.rsplit_once('.') {
                        Some((a, b)) if !a.is_empty() => (a.to_string(), format!(".{b}")),
                        _ => (name.clone(), String::new()),
                    };
                    let mut n = 1;
                    loop {
                        let candidate = if n == 1 {
                            format!("{stem} (restored){ext}")
                        } else {
                            format!("{stem} (restored {n}){ext}")
                        };
                        if child(cx.g, &drive, &pid, &candidate).await?.is_none() {
                            name = candidate;
                            break;
                        }
                        n += 1;
                    }
                }
            }
        }
    }
    match upload(cx.g, &drive, &pid, &name, entry, cx.content).await {
        Ok(()) => {}
        Err(engine::Error::Source { kind, message }) => {
            let f = match kind {
                engine::SourceErrorKind::Auth => Fail::Auth(message),
                engine::SourceErrorKind::Throttled => Fail::Throttled(message),
                engine::SourceErrorKind::Unavailable => Fail::Unavailable(message),
                _ => Fail::Protocol(message),
            };
            return Err(f);
        }
        Err(e) => return Err(engine_fail(e)),
    }
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}
