//! One simulated day of use, touching every service: new mail, messages read, moved and
//! deleted; contacts, events and tasks added, edited and deleted; OneDrive and library files
//! added, edited, moved and deleted; list items added, edited and deleted. The report names
//! every change, so a test can check that a backup picks up exactly these.

use chrono::Duration;
use rand::Rng;
use serde_json::{json, Value};

use crate::calendar::graph_time;
use crate::gen::{file_name, file_size, new_message, obj};
use crate::model::Sim;
use crate::util::{drive_item_id, Content};
use crate::Config;

pub fn advance(cfg: &Config, sim: &mut Sim) -> Value {
    sim.day += 1;
    let mut rng = std::mem::replace(&mut sim.rng, rand::SeedableRng::seed_from_u64(0));
    let mut users = Vec::new();
    for u in 0..sim.users.len() {
        users.push(advance_user(cfg, sim, &mut rng, u));
    }
    let sites = advance_sites(cfg, sim, &mut rng);
    sim.rng = rng;
    json!({ "day": sim.day, "users": users, "sites": sites })
}

fn advance_user(cfg: &Config, sim: &mut Sim, rng: &mut rand::rngs::StdRng, u: usize) -> Value {
    let mut added = Vec::new();
    let mut updated = Vec::new();
    let mut moved = Vec::new();
    let mut deleted = Vec::new();
    let inbox = sim.mailboxes[u].mail.folder_key("inbox").unwrap_or(1);
    let sub = sim.mailboxes[u]
        .mail
        .children(Some(inbox))
        .find(|f| !f.hidden)
        .map(|f| f.key);
    let folder_id = |sim: &Sim, k: u64| {
        sim.mailboxes[u]
            .mail
            .folders
            .get(&k)
            .map(|f| f.id.clone())
            .unwrap_or_default()
    };

    // Existing messages to change are picked before today's mail arrives.
    let candidates: Vec<u64> = sim.mailboxes[u]
        .mail
        .items
        .values()
        .filter(|e| !e.data.is_draft)
        .map(|e| e.key)
        .collect();
    let pick = |rng: &mut rand::rngs::StdRng, taken: &mut Vec<u64>| -> Option<u64> {
        let pool: Vec<u64> = candidates
            .iter()
            .copied()
            .filter(|k| !taken.contains(k))
            .collect();
        let k = *pool.get(rng.gen_range(0..pool.len().max(1)))?;
        taken.push(k);
        Some(k)
    };
    let mut taken = Vec::new();
    for _ in 0..2 {
        if let Some(k) = pick(rng, &mut taken) {
            let seq = sim.next_seq();
            let now = sim.now();
            if let Some(e) = sim.mailboxes[u].mail.touch(k, now, seq) {
                e.data.is_read = !e.data.is_read;
                let (id, imm, f) = (e.rest_id.clone(), e.imm_id.clone(), e.folder);
                updated
                    .push(json!({ "folderId": folder_id(sim, f), "id": id, "immutableId": imm }));
            }
        }
    }
    if let Some(to) = sub {
        let in_inbox: Vec<u64> = candidates
            .iter()
            .copied()
            .filter(|k| {
                !taken.contains(k)
                    && sim.mailboxes[u]
                        .mail
                        .items
                        .get(k)
                        .is_some_and(|e| e.folder == inbox)
            })
            .collect();
        if let Some(&k) = in_inbox.first() {
            taken.push(k);
            let seq = sim.next_seq();
            let now = sim.now();
            let old = sim.mailboxes[u].mail.items[&k].rest_id.clone();
            sim.mailboxes[u].mail.move_item(k, to, now, seq);
            let e = &sim.mailboxes[u].mail.items[&k];
            moved.push(json!({ "fromFolderId": folder_id(sim, inbox), "toFolderId": folder_id(sim, to), "oldId": old, "newId": e.rest_id, "immutableId": e.imm_id }));
        }
    }
    if let Some(k) = pick(rng, &mut taken) {
        let seq = sim.next_seq();
        let f = sim.mailboxes[u].mail.items[&k].folder;
        if let Some(e) = sim.mailboxes[u].mail.delete(k, seq) {
            deleted.push(
                json!({ "folderId": folder_id(sim, f), "id": e.rest_id, "immutableId": e.imm_id }),
            );
        }
    }
    // A folder created today, with one message in it: connectors must notice new folders.
    let seq = sim.next_seq();
    let new_folder = sim.mailboxes[u].mail.add_folder(
        Some(inbox),
        &format!("Tag {} – neu", sim.day),
        None,
        false,
        seq,
    );
    let new_folder_id = folder_id(sim, new_folder);
    {
        let seq = sim.next_seq();
        let now = sim.now();
        let msg = new_message(sim, rng, u, now, cfg, 20_000 + sim.day as usize);
        let k = sim.mailboxes[u].mail.insert(new_folder, msg, now, seq);
        let e = &sim.mailboxes[u].mail.items[&k];
        added.push(json!({ "folderId": new_folder_id, "id": e.rest_id, "immutableId": e.imm_id }));
    }
    let new_count = (cfg.messages_per_folder / 2).max(1);
    for i in 0..new_count {
        let folder = if i == 0 { sub.unwrap_or(inbox) } else { inbox };
        let seq = sim.next_seq();
        let now = sim.now();
        let msg = new_message(sim, rng, u, now, cfg, 10_000 + sim.day as usize * 100 + i);
        let k = sim.mailboxes[u].mail.insert(folder, msg, now, seq);
        let e = &sim.mailboxes[u].mail.items[&k];
        added.push(
            json!({ "folderId": folder_id(sim, folder), "id": e.rest_id, "immutableId": e.imm_id }),
        );
    }

    // Files.
    let drive_id = sim.users[u].drive_id.clone();
    let mut f_added = Vec::new();
    let mut f_modified = Vec::new();
    let mut f_deleted = Vec::new();
    let files: Vec<u64> = sim.drives[&drive_id]
        .items
        .values()
        .filter(|i| !i.is_folder)
        .map(|i| i.key)
        .collect();
    let mut f_moved = Vec::new();
    if files.len() >= 3 {
        let a = files[rng.gen_range(0..files.len())];
        let mut b = files[rng.gen_range(0..files.len())];
        if b == a {
            b = files[(files.iter().position(|k| *k == a).unwrap_or(0) + 1) % files.len()];
        }
        // One more file moves to another folder (the root, or `Documents` from the root).
        if let Some(&m) = files.iter().find(|k| **k != a && **k != b) {
            let seq = sim.next_seq();
            let now = sim.now();
            let d = sim.drives.get_mut(&drive_id).expect("user drive exists");
            let to = match d.items[&m].parent {
                Some(p) if p != d.root => Some(d.root),
                _ => d.child(d.root, "Documents"),
            };
            if let Some(to) = to {
                move_file(d, m, to, now, seq);
                f_moved.push(json!(d.items[&m].id));
            }
        }
        let seq = sim.next_seq();
        let now = sim.now();
        let len = rng.gen_range(1_000..80_000);
        let seed = rng.gen();
        let d = sim.drives.get_mut(&drive_id).expect("user drive exists");
        d.set_content(a, Content::Generated { seed, len }, now, seq);
        f_modified.push(json!(d.items[&a].id));
        let seq = sim.next_seq();
        let d = sim.drives.get_mut(&drive_id).expect("user drive exists");
        f_deleted.push(json!(d.items[&b].id));
        d.delete(b, now, seq);
    }
    for i in 0..2 {
        let seq = sim.next_seq();
        let now = sim.now();
        let name = format!("day {} {}", sim.day, file_name(rng, i));
        let len = file_size(rng, cfg, i + 1);
        let seed = rng.gen();
        let id = drive_item_id(rng);
        let d = sim.drives.get_mut(&drive_id).expect("user drive exists");
        let parent = if i == 0 {
            d.root
        } else {
            d.child(d.root, "Documents").unwrap_or(d.root)
        };
        let k = d.add(
            id,
            parent,
            &name,
            Some(Content::Generated { seed, len }),
            now,
            seq,
        );
        f_added.push(json!(d.items[&k].id));
    }

    let (events, cts, tasks) = change_outlook_items(sim, rng, u);

    // A new meeting, contact and task.
    let seq = sim.next_seq();
    let now = sim.now();
    let start = now + Duration::days(2);
    let event = obj(json!({
        "subject": format!("Neuer Termin Tag {}", sim.day),
        "body": { "contentType": "html", "content": "<p>Added today.</p>" },
        "start": graph_time(start), "end": graph_time(start + Duration::minutes(45)),
        "isAllDay": false, "isCancelled": false, "type": "singleInstance", "showAs": "busy",
    }));
    let cal = sim.mailboxes[u]
        .calendars
        .folder_key("calendar")
        .unwrap_or(1);
    let ek = sim.mailboxes[u].calendars.insert(cal, event, now, seq);
    let seq = sim.next_seq();
    let contacts = sim.mailboxes[u]
        .contacts
        .folder_key("contacts")
        .unwrap_or(1);
    let ck = sim.mailboxes[u].contacts.insert(
        contacts,
        obj(json!({ "givenName": "Dagny", "surname": format!("Tag{}", sim.day), "displayName": format!("Dagny Tag{}", sim.day),
            "emailAddresses": [{ "address": format!("dagny{}@partner.example", sim.day) }] })),
        now,
        seq,
    );
    let seq = sim.next_seq();
    let list = sim.mailboxes[u].todo.folder_key("defaultList").unwrap_or(1);
    let tk = sim.mailboxes[u].todo.insert(list, obj(json!({ "title": format!("Follow up day {}", sim.day), "status": "notStarted", "importance": "normal" })), now, seq);
    let mb = &sim.mailboxes[u];
    json!({
        "user": sim.users[u].upn,
        "mail": { "added": added, "updated": updated, "moved": moved, "deleted": deleted, "newFolders": [new_folder_id] },
        "drive": { "driveId": drive_id, "added": f_added, "modified": f_modified, "moved": f_moved, "deleted": f_deleted },
        "events": { "added": [mb.calendars.items[&ek].imm_id], "updated": events.0, "deleted": events.1 },
        "contacts": { "added": [mb.contacts.items[&ck].imm_id], "updated": cts.0, "deleted": cts.1 },
        "tasks": { "added": [mb.todo.items[&tk].imm_id], "updated": tasks.0, "deleted": tasks.1 },
    })
}

/// Each site's first library gets a new file, one file edited, one moved and one deleted;
/// its first generic list gets an item added, one edited and one deleted.
fn advance_sites(cfg: &Config, sim: &mut Sim, rng: &mut rand::rngs::StdRng) -> Vec<Value> {
    let mut out = Vec::new();
    for si in 0..sim.sites.len() {
        let Some(drive_id) = sim.sites[si].drives.first().cloned() else {
            continue;
        };
        let seq = sim.next_seq();
        let now = sim.now();
        let name = format!("Protokoll Tag {} {}", sim.day, file_name(rng, si));
        let len = file_size(rng, cfg, si + 1);
        let seed = rng.gen();
        let id = drive_item_id(rng);
        let edit_seed = rng.gen();
        let edit_len = rng.gen_range(1_000..40_000);
        let Some(d) = sim.drives.get_mut(&drive_id) else {
            continue;
        };
        // Files there before today: the first is edited, the second moved, the last deleted.
        let old: Vec<u64> = d
            .items
            .values()
            .filter(|i| !i.is_folder)
            .map(|i| i.key)
            .collect();
        let root = d.root;
        let k = d.add(
            id,
            root,
            &name,
            Some(Content::Generated { seed, len }),
            now,
            seq,
        );
        let file_id = d.items[&k].id.clone();
        let (mut modified, mut moved, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
        if old.len() >= 3 {
            d.set_content(
                old[0],
                Content::Generated {
                    seed: edit_seed,
                    len: edit_len,
                },
                now,
                seq,
            );
            modified.push(json!(d.items[&old[0]].id));
            let folder = d
                .items
                .values()
                .find(|i| i.is_folder && i.parent == Some(root))
                .map(|i| i.key);
            let to = match d.items[&old[1]].parent {
                Some(p) if p != root => Some(root),
                _ => folder,
            };
            if let Some(to) = to {
                move_file(d, old[1], to, now, seq);
                moved.push(json!(d.items[&old[1]].id));
            }
            let last = old[old.len() - 1];
            deleted.push(json!(d.items[&last].id));
            d.delete(last, now, seq);
        }
        let (mut edited, mut added_items, mut deleted_items) = (Vec::new(), Vec::new(), Vec::new());
        let day = sim.day;
        if let Some(list) = sim.sites[si]
            .lists
            .iter_mut()
            .find(|l| l.template == "genericList")
        {
            if let Some(item) = list.items.first_mut() {
                item.fields.insert(
                    "Status".into(),
                    json!(if day.is_multiple_of(2) {
                        "Active"
                    } else {
                        "Resolved"
                    }),
                );
                item.modified = now;
                item.version += 1;
                edited.push(json!({ "listId": list.id, "itemId": item.id.to_string() }));
            }
            if list.items.len() >= 3 {
                let gone = list.items.remove(list.items.len() - 1);
                deleted_items.push(json!({ "listId": list.id, "itemId": gone.id.to_string() }));
            }
            let id = list.items.iter().map(|i| i.id).max().unwrap_or(0) + 100;
            list.items.push(crate::sites::ListItem {
                id,
                fields: obj(
                    json!({ "Title": format!("Issue day {day}: Beamer flackert"),
                    "Status": "Active", "Priority": "(2) Normal" }),
                ),
                created: now,
                modified: now,
                version: 1,
            });
            added_items.push(json!({ "listId": list.id, "itemId": id.to_string() }));
        }
        out.push(json!({ "siteId": sim.sites[si].id, "driveId": drive_id, "addedFiles": [file_id],
            "modifiedFiles": modified, "movedFiles": moved, "deletedFiles": deleted,
            "addedListItems": added_items, "editedListItems": edited, "deletedListItems": deleted_items }));
    }
    out
}

/// Moves a drive item under another folder, as a PATCH of its `parentReference` does: both
/// the old and the new folders change.
fn move_file(
    d: &mut crate::drive::Drive,
    key: u64,
    to: u64,
    now: chrono::DateTime<chrono::Utc>,
    seq: u64,
) {
    let Some(from) = d.items.get(&key).and_then(|i| i.parent) else {
        return;
    };
    if let Some(i) = d.items.get_mut(&key) {
        i.parent = Some(to);
        i.version += 1;
    }
    d.bump_parents(from, now, seq);
    d.bump_parents(key, now, seq);
}

type Changed = (Vec<String>, Vec<String>);

/// One existing contact, event and task edited and another of each deleted. Events are
/// single ones: series and their exceptions change together and are left alone.
fn change_outlook_items(
    sim: &mut Sim,
    rng: &mut rand::rngs::StdRng,
    u: usize,
) -> (Changed, Changed, Changed) {
    let day = sim.day;
    let mut out = Vec::new();
    for which in 0..3 {
        let (seq_edit, seq_del, now) = (sim.next_seq(), sim.next_seq(), sim.now());
        let mb = &mut sim.mailboxes[u];
        let store = match which {
            0 => &mut mb.calendars,
            1 => &mut mb.contacts,
            _ => &mut mb.todo,
        };
        let keys: Vec<u64> = store
            .items
            .values()
            .filter(|e| {
                which != 0 || e.data.get("type").and_then(Value::as_str) == Some("singleInstance")
            })
            .map(|e| e.key)
            .collect();
        let mut changed: Changed = (Vec::new(), Vec::new());
        if keys.len() >= 2 {
            let a = keys[rng.gen_range(0..keys.len())];
            let b = keys[(keys.iter().position(|k| *k == a).unwrap_or(0) + 1) % keys.len()];
            if let Some(e) = store.touch(a, now, seq_edit) {
                let (field, value) = match which {
                    0 => ("subject", format!("Verschoben (Tag {day})")),
                    1 => ("jobTitle", format!("Leitung seit Tag {day}")),
                    _ => ("status", "completed".to_string()),
                };
                e.data.insert(field.into(), json!(value));
                changed.0.push(e.imm_id.clone());
            }
            if let Some(e) = store.delete(b, seq_del) {
                changed.1.push(e.imm_id);
            }
        }
        out.push(changed);
    }
    let tasks = out.pop().unwrap_or_default();
    let contacts = out.pop().unwrap_or_default();
    let events = out.pop().unwrap_or_default();
    (events, contacts, tasks)
}

/// Delivers into the inbox a message whose Graph properties are sound but whose MIME is
/// broken in the way `kind` names. `None` for an unknown kind.
pub fn deliver_malformed(cfg: &Config, sim: &mut Sim, u: usize, kind: &str) -> Option<Value> {
    let upn = sim.users[u].upn.clone();
    let mime: Vec<u8> = match kind {
        "truncated-multipart" => format!(
            "From: Scanner <scanner@{d}>\r\nTo: {upn}\r\nSubject: Scan 0042\r\n\
             Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <trunc.0042@{d}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0042\"\r\n\r\n\
             --b0042\r\nContent-Type: text/plain\r\n\r\nThe scan is attached.\r\n\
             --b0042\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5n",
            d = sim.domains[0]
        )
        .into_bytes(),
        "bad-base64" => format!(
            "From: Legacy <legacy@{d}>\r\nTo: {upn}\r\nSubject: Report\r\n\
             Date: Tue, 24 Nov 2026 08:05:00 +0000\r\nMessage-ID: <b64.0043@{d}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8g!!not*base64**@@\x01==\r\n=QQ\r\n",
            d = sim.domains[0]
        )
        .into_bytes(),
        "8bit-headers" => {
            let mut m = b"From: M\xfcller \xe9\xff <mueller@".to_vec();
            m.extend_from_slice(sim.domains[0].as_bytes());
            m.extend_from_slice(b">\r\nTo: ");
            m.extend_from_slice(upn.as_bytes());
            m.extend_from_slice(
                b"\r\nSubject: Pr\xfcfung \x80\x81\xfe\r\nDate: Tue, 24 Nov 2026 08:10:00 +0000\r\n\
                  Content-Type: text/plain\r\n\r\nGr\xfc\xdfe\r\n",
            );
            m
        }
        _ => return None,
    };
    let seq = sim.next_seq();
    let now = sim.now();
    let mut rng = std::mem::replace(&mut sim.rng, rand::SeedableRng::seed_from_u64(0));
    let mut msg = new_message(sim, &mut rng, u, now, cfg, 1);
    sim.rng = rng;
    msg.subject = format!("Malformed ({kind})");
    msg.attachments.clear();
    msg.mime = Some(std::sync::Arc::new(mime));
    let mb = &mut sim.mailboxes[u].mail;
    let inbox = mb.folder_key("inbox")?;
    let k = mb.insert(inbox, msg, now, seq);
    let e = &mb.items[&k];
    Some(
        json!({ "user": upn, "folderId": mb.folders[&inbox].id, "id": e.rest_id, "immutableId": e.imm_id }),
    )
}
