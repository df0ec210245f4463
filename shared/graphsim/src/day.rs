//! One simulated day of use: new mail, messages read, moved and deleted, files added,
//! edited and deleted, new events, contacts and tasks. The report names every change, so a
//! test can check that delta queries return exactly these.

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
    sim.rng = rng;
    json!({ "day": sim.day, "users": users })
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
    if files.len() >= 2 {
        let a = files[rng.gen_range(0..files.len())];
        let mut b = files[rng.gen_range(0..files.len())];
        if b == a {
            b = files[(files.iter().position(|k| *k == a).unwrap_or(0) + 1) % files.len()];
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
        "drive": { "driveId": drive_id, "added": f_added, "modified": f_modified, "deleted": f_deleted },
        "events": { "added": [mb.calendars.items[&ek].imm_id] },
        "contacts": { "added": [mb.contacts.items[&ck].imm_id] },
        "tasks": { "added": [mb.todo.items[&tk].imm_id] },
    })
}
