//! The deterministic generator: from a seed and the sizes in [`Config`], an organisation with
//! users on several domains, nested mail folders with non-ASCII names, messages with
//! attachments (some large), contacts, recurring and single events, To Do lists, OneDrive
//! files of many sizes, and SharePoint sites with sub-sites, libraries and lists.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::calendar::graph_time;
use crate::drive::Drive;
use crate::mail::{Addr, Attachment, Message};
use crate::model::{Doc, Mailbox, Sim, User};
use crate::sites::{List, ListItem, Site};
use crate::store::Store;
use crate::util::{drive_item_id, guid, outlook_id, splitmix, Content};
use crate::Config;

pub fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const GIVEN: &[&str] = &[
    "Adele",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Megan",
    "Nestor",
    "Ingrid",
    "Aiko",
    "Björn",
    "Françoise",
    "Diego",
    "Alex",
    "Lee",
    "Priya",
    "Mirjam",
];
const SURNAMES: &[&str] = &[
    "Vance",
    "Ångström",
    "Müller",
    "Żółkowski",
    "Kierkegård",
    "Bowen",
    "Wilke",
    "Ødegaard",
    "Tanaka",
    "Nyström",
    "Lefèvre",
    "García",
    "Wilber",
    "Gu",
    "Raman",
    "Kovačević",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Accountant",
    "Sales lead",
    "Designer",
    "Director",
    "Support agent",
    "Lawyer",
    "Researcher",
];
const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "Re: Budget 2026 – Überarbeitung",
    "Lunch on Thursday?",
    "Contrat signé / résumé",
    "Invoice 4711",
    "Fwd: 会議の議事録",
    "Design review notes",
    "Urgent: server migration",
    "Welcome aboard 🎉",
    "Travel plans — São Paulo",
];
const FOLDER_NAMES: &[&str] = &[
    "Projekte",
    "Réunions",
    "Ärger & Ideen",
    "日本語フォルダー",
    "Q1/Q2 plans",
    "Kunden",
    "Ψ archive",
    "Older",
];
const FILE_NAMES: &[&str] = &[
    "Bericht",
    "résumé",
    "budget",
    "Übersicht",
    "photo",
    "notes",
    "契約書",
    "slides",
    "data export",
    "plan",
];
const EXTENSIONS: &[&str] = &["docx", "xlsx", "pdf", "txt", "jpg", "pptx", "csv", "zip"];

pub fn domain_names(n: usize) -> Vec<String> {
    let base = [
        "contoso.example",
        "fabrikam.example",
        "northwind.example",
        "tailspin.example",
    ];
    (0..n.max(1))
        .map(|i| {
            base.get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("domain{i}.example"))
        })
        .collect()
}

fn ascii_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ë' | 'é' | 'è' => 'e',
            'ç' => 'c',
            'Å' | 'å' | 'ä' | 'Ä' => 'a',
            'ü' | 'Ü' => 'u',
            'Ł' | 'ł' => 'l',
            'ø' | 'Ø' | 'ö' => 'o',
            'Ż' | 'ż' => 'z',
            'ó' => 'o',
            'č' => 'c',
            c => c,
        })
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

pub fn generate(cfg: &Config) -> Sim {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let start = Utc
        .with_ymd_and_hms(2026, 1, 5, 8, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let domains = domain_names(cfg.domains);
    let mut sim = Sim {
        seq: 0,
        day: 0,
        start,
        delta_epoch: 0,
        tenant_id: cfg.tenant_id.clone(),
        domains: domains.clone(),
        users: Vec::new(),
        mailboxes: Vec::new(),
        drives: BTreeMap::new(),
        sites: Vec::new(),
        uploads: HashMap::new(),
        att_uploads: HashMap::new(),
        rng: StdRng::seed_from_u64(splitmix(cfg.seed ^ 0xda7)),
        hostname: format!(
            "{}.sharepoint.example",
            domains[0].split('.').next().unwrap_or("contoso")
        ),
    };
    for i in 0..cfg.users {
        let given = GIVEN[i % GIVEN.len()];
        let surname = SURNAMES[(i * 7 + i / GIVEN.len()) % SURNAMES.len()];
        let domain = &domains[i % domains.len()];
        let upn = format!(
            "{}.{}{}@{}",
            ascii_fold(given),
            ascii_fold(surname),
            if i >= GIVEN.len() {
                i.to_string()
            } else {
                String::new()
            },
            domain
        );
        let id = guid(&mut rng);
        let drive_id = format!(
            "b!{}",
            crate::util::b64(guid(&mut rng).as_bytes()).replace(['+', '/', '='], "x")
        );
        sim.users.push(User {
            idx: i,
            id,
            display_name: format!("{given} {surname}"),
            given_name: given.into(),
            surname: surname.into(),
            upn,
            job_title: TITLES[i % TITLES.len()].into(),
            drive_id,
        });
    }
    for i in 0..cfg.users {
        let mb = mailbox(cfg, &mut sim, &mut rng, i);
        sim.mailboxes.push(mb);
        onedrive(cfg, &mut sim, &mut rng, i);
    }
    sites(cfg, &mut sim, &mut rng);
    sim
}

pub fn new_message(
    sim: &Sim,
    rng: &mut StdRng,
    user: usize,
    received: DateTime<Utc>,
    cfg: &Config,
    n: usize,
) -> Message {
    let me = &sim.users[user];
    let other = &sim.users[rng.gen_range(0..sim.users.len())];
    let external = rng.gen_bool(0.3);
    let from = if external {
        Addr {
            name: "Newsletter Team".into(),
            address: "news@updates.example.org".into(),
        }
    } else {
        Addr {
            name: other.display_name.clone(),
            address: other.upn.clone(),
        }
    };
    let subject = SUBJECTS[rng.gen_range(0..SUBJECTS.len())].to_string();
    let words = [
        "meeting",
        "draft",
        "numbers",
        "Überblick",
        "ça va",
        "follow-up",
        "deadline",
        "日程",
        "review",
        "thanks",
    ];
    let body_words: Vec<&str> = (0..rng.gen_range(20..120))
        .map(|_| words[rng.gen_range(0..words.len())])
        .collect();
    let body = format!(
        "<html><body><p>Hello {},</p><p>{}</p><p>— {}</p></body></html>",
        me.given_name,
        body_words.join(" "),
        from.name
    );
    let mut attachments = Vec::new();
    if cfg.attachment_every > 0 && n.is_multiple_of(cfg.attachment_every) {
        let k = rng.gen_range(1..=2);
        for j in 0..k {
            let large = (n / cfg.attachment_every) % 4 == 3 && j == 0;
            let len = if large {
                cfg.large_attachment_bytes
            } else {
                rng.gen_range(2_000..60_000)
            };
            let ext = EXTENSIONS[rng.gen_range(0..EXTENSIONS.len())];
            let name = format!(
                "{} {}.{ext}",
                FILE_NAMES[rng.gen_range(0..FILE_NAMES.len())],
                n
            );
            attachments.push(Attachment {
                id: outlook_id("AAMkAGI2att", &[user as u64, rng.gen(), j as u64 + 1]),
                content_type: crate::drive::mime_type(&name).to_string(),
                name,
                content: Content::Generated {
                    seed: rng.gen(),
                    len,
                },
                inline: false,
            });
        }
    }
    Message {
        subject,
        from,
        to: vec![Addr {
            name: me.display_name.clone(),
            address: me.upn.clone(),
        }],
        cc: if rng.gen_bool(0.2) {
            vec![Addr {
                name: other.display_name.clone(),
                address: other.upn.clone(),
            }]
        } else {
            Vec::new()
        },
        body,
        html: true,
        received,
        sent: received - Duration::seconds(rng.gen_range(5..600)),
        is_read: rng.gen_bool(0.7),
        is_draft: false,
        importance: if rng.gen_bool(0.1) {
            "high".into()
        } else {
            "normal".into()
        },
        flag: if rng.gen_bool(0.1) {
            "flagged".into()
        } else {
            "notFlagged".into()
        },
        categories: if rng.gen_bool(0.15) {
            vec!["Blue category".into()]
        } else {
            Vec::new()
        },
        internet_message_id: format!("<{:016x}.{}@{}>", rng.gen::<u64>(), n, sim.domains[0]),
        conversation_id: outlook_id("AAQkAGI2", &[user as u64, rng.gen()]),
        attachments,
        ext: BTreeMap::new(),
        mime: None,
    }
}

fn mailbox(cfg: &Config, sim: &mut Sim, rng: &mut StdRng, u: usize) -> Mailbox {
    let mut mail: Store<Message> = Store::new(u as u64, 1);
    let seq = sim.next_seq();
    let inbox = mail.add_folder(None, "Inbox", Some("inbox"), false, seq);
    let drafts = mail.add_folder(None, "Drafts", Some("drafts"), false, seq);
    let sent = mail.add_folder(None, "Sent Items", Some("sentitems"), false, seq);
    mail.add_folder(None, "Deleted Items", Some("deleteditems"), false, seq);
    mail.add_folder(None, "Junk Email", Some("junkemail"), false, seq);
    let archive = mail.add_folder(None, "Archive", Some("archive"), false, seq);
    mail.add_folder(None, "Outbox", Some("outbox"), false, seq);
    mail.add_folder(
        None,
        "Conversation History",
        Some("conversationhistory"),
        false,
        seq,
    );
    let hidden = mail.add_folder(None, "Verborgene Ablage", None, true, seq);
    mail.add_folder(Some(inbox), "Hidden rules", None, true, seq);
    // A nested tree under the inbox, `folder_depth` levels deep, two folders per level.
    let mut tree = vec![inbox];
    let mut level = vec![inbox];
    for d in 0..cfg.folder_depth {
        let mut next = Vec::new();
        for (i, parent) in level.iter().enumerate() {
            for j in 0..2 {
                let name = FOLDER_NAMES[(d * 3 + i * 2 + j + u) % FOLDER_NAMES.len()];
                let name = if mail.children(Some(*parent)).any(|f| f.name == name) {
                    format!("{name} {j}")
                } else {
                    name.to_string()
                };
                let k = mail.add_folder(Some(*parent), &name, None, false, seq);
                next.push(k);
            }
        }
        tree.extend(&next);
        level = next;
    }
    tree.extend([sent, archive, hidden]);
    let mut n = 0;
    for (fi, folder) in tree.iter().enumerate() {
        let count = if *folder == inbox {
            cfg.messages_per_folder * 2
        } else {
            cfg.messages_per_folder
        };
        for _ in 0..count {
            n += 1;
            let received = sim.start
                - Duration::minutes(rng.gen_range(60..60 * 24 * 400))
                - Duration::seconds(fi as i64);
            let msg = new_message(sim, rng, u, received, cfg, n);
            let seq = sim.next_seq();
            mail.insert(*folder, msg, received, seq);
        }
    }
    let mut draft = new_message(sim, rng, u, sim.start, cfg, 1);
    draft.is_draft = true;
    draft.subject = "Entwurf: unfinished thoughts".into();
    let seq = sim.next_seq();
    mail.insert(drafts, draft, sim.start, seq);

    let mut contacts: Store<Doc> = Store::new(u as u64, 2);
    let seq = sim.next_seq();
    let default = contacts.add_folder(None, "Contacts", Some("contacts"), false, seq);
    let clients = contacts.add_folder(Some(default), "Kunden – Übersee", None, false, seq);
    let nested = contacts.add_folder(Some(clients), "Été 2026", None, false, seq);
    for i in 0..cfg.contacts_per_user {
        let folder = [default, default, clients, nested][i % 4];
        let given = GIVEN[rng.gen_range(0..GIVEN.len())];
        let surname = SURNAMES[rng.gen_range(0..SURNAMES.len())];
        let doc = json!({
            "givenName": given, "surname": surname, "displayName": format!("{given} {surname}"),
            "emailAddresses": [{ "name": format!("{given} {surname}"), "address": format!("{}.{}@partner{}.example", ascii_fold(given), ascii_fold(surname), i % 3) }],
            "businessPhones": [format!("+44 20 7946 {:04}", rng.gen_range(0..10000))],
            "mobilePhone": Value::Null, "companyName": (["Litware", "Adatum", "Wingtip"][i % 3]), "jobTitle": TITLES[i % TITLES.len()],
            "categories": [], "personalNotes": "", "birthday": Value::Null,
        });
        let seq = sim.next_seq();
        contacts.insert(folder, obj(doc), sim.start - Duration::days(30), seq);
    }

    let mut cal: Store<Doc> = Store::new(u as u64, 3);
    let seq = sim.next_seq();
    let calendar = cal.add_folder(None, "Calendar", Some("calendar"), false, seq);
    let team = cal.add_folder(None, "Team-Kalender", None, false, seq);
    let me = sim.users[u].clone();
    for i in 0..cfg.events_per_user {
        let folder = if i % 3 == 2 { team } else { calendar };
        let day = rng.gen_range(-20i64..40);
        let start = sim.start + Duration::days(day) + Duration::hours(rng.gen_range(0..8));
        let recurring = i % 3 == 0;
        let mut doc = json!({
            "subject": format!("{} {}", ["Stand-up", "1:1", "Planung", "Kundentermin", "Review"][i % 5], i),
            "body": { "contentType": "html", "content": "<p>Agenda to follow.</p>" },
            "start": graph_time(start), "end": graph_time(start + Duration::minutes(30 + 30 * (i as i64 % 3))),
            "location": { "displayName": (["Room Ångström", "Teams", "Café"][i % 3]) },
            "isAllDay": false, "isCancelled": false, "showAs": "busy", "sensitivity": "normal", "importance": "normal",
            "organizer": { "emailAddress": { "name": me.display_name, "address": me.upn } },
            "attendees": [{ "type": "required", "status": { "response": "none", "time": "0001-01-01T00:00:00Z" },
                "emailAddress": { "name": me.display_name, "address": me.upn } }],
            "type": if recurring { "seriesMaster" } else { "singleInstance" },
        });
        if recurring {
            doc["recurrence"] = json!({
                "pattern": { "type": "weekly", "interval": 1, "daysOfWeek": [start.format("%A").to_string().to_ascii_lowercase()], "firstDayOfWeek": "sunday" },
                "range": { "type": "numbered", "startDate": start.format("%Y-%m-%d").to_string(), "numberOfOccurrences": 10, "recurrenceTimeZone": "UTC" },
            });
        }
        let seq = sim.next_seq();
        let key = cal.insert(
            folder,
            obj(doc.clone()),
            sim.start - Duration::days(60),
            seq,
        );
        if recurring {
            // The third occurrence was moved by an hour: an exception of the series.
            let original = start + Duration::weeks(2);
            let moved = original + Duration::hours(1);
            let mut ex = doc.clone();
            ex["type"] = json!("exception");
            ex["recurrence"] = Value::Null;
            ex["start"] = graph_time(moved);
            ex["end"] = graph_time(moved + Duration::minutes(30 + 30 * (i as i64 % 3)));
            ex["originalStart"] = json!(iso(original));
            ex["_master"] = json!(key);
            let seq = sim.next_seq();
            cal.insert(folder, obj(ex), sim.start - Duration::days(10), seq);
        }
    }

    let mut todo: Store<Doc> = Store::new(u as u64, 4);
    let seq = sim.next_seq();
    let tasks = todo.add_folder(None, "Tasks", Some("defaultList"), false, seq);
    let shopping = todo.add_folder(None, "Einkäufe 🛒", None, false, seq);
    for (li, list) in [tasks, shopping].into_iter().enumerate() {
        for i in 0..cfg.tasks_per_list {
            let doc = json!({
                "title": format!("{} {}", ["Steuererklärung", "Buy milk", "Call Søren", "Renew passport"][(i + li) % 4], i),
                "status": if i % 3 == 0 { "completed" } else { "notStarted" },
                "importance": "normal",
                "isReminderOn": false,
                "body": { "content": "", "contentType": "text" },
                "dueDateTime": graph_time(sim.start + Duration::days(i as i64 * 3)),
                "categories": [],
            });
            let seq = sim.next_seq();
            todo.insert(list, obj(doc), sim.start - Duration::days(5), seq);
        }
    }
    Mailbox {
        mail,
        contacts,
        calendars: cal,
        todo,
    }
}

pub fn obj(v: Value) -> Doc {
    match v {
        Value::Object(m) => m,
        _ => Doc::new(),
    }
}

/// A file size drawn so that most files are small, some medium, and a few reach the
/// configured maximum.
pub fn file_size(rng: &mut StdRng, cfg: &Config, n: usize) -> u64 {
    if n % 7 == 6 {
        cfg.large_file_bytes
    } else if n % 3 == 2 {
        rng.gen_range(200_000..1_500_000).min(cfg.large_file_bytes)
    } else {
        rng.gen_range(0..40_000)
    }
}

pub fn file_name(rng: &mut StdRng, n: usize) -> String {
    format!(
        "{} {n}.{}",
        FILE_NAMES[rng.gen_range(0..FILE_NAMES.len())],
        EXTENSIONS[rng.gen_range(0..EXTENSIONS.len())]
    )
}

fn fill_drive(cfg: &Config, sim: &mut Sim, rng: &mut StdRng, drive: &mut Drive, files: usize) {
    let seq = sim.next_seq();
    let now = sim.start - Duration::days(90);
    let root = drive.root;
    let docs = drive.add(drive_item_id(rng), root, "Documents", None, now, seq);
    let pics = drive.add(drive_item_id(rng), root, "Pictures", None, now, seq);
    let deep = drive.add(drive_item_id(rng), docs, "Projekte 2026", None, now, seq);
    let deeper = drive.add(drive_item_id(rng), deep, "Über & Co", None, now, seq);
    let folders = [root, docs, pics, deep, deeper];
    for n in 0..files {
        let folder = folders[n % folders.len()];
        let mut name = file_name(rng, n);
        if drive.child(folder, &name).is_some() {
            name = format!("{n} {name}");
        }
        let len = file_size(rng, cfg, n);
        let seq = sim.next_seq();
        let t = sim.start - Duration::days(rng.gen_range(1..80));
        drive.add(
            drive_item_id(rng),
            folder,
            &name,
            Some(Content::Generated {
                seed: rng.gen(),
                len,
            }),
            t,
            seq,
        );
    }
}

fn onedrive(cfg: &Config, sim: &mut Sim, rng: &mut StdRng, u: usize) {
    let user = sim.users[u].clone();
    let seq = sim.next_seq();
    let personal = user.upn.replace(['@', '.'], "_");
    let mut drive = Drive::new(
        user.drive_id.clone(),
        "OneDrive",
        "business",
        &user.display_name,
        &user.id,
        format!(
            "https://{}-my.sharepoint.example/personal/{personal}/Documents",
            sim.hostname.split('.').next().unwrap_or("contoso")
        ),
        drive_item_id(rng),
        sim.start - Duration::days(120),
        seq,
    );
    fill_drive(cfg, sim, rng, &mut drive, cfg.files_per_user);
    sim.drives.insert(drive.id.clone(), drive);
}

fn new_site(
    cfg: &Config,
    sim: &mut Sim,
    rng: &mut StdRng,
    name: &str,
    display: &str,
    path: String,
    parent: Option<usize>,
) -> usize {
    let collection = match parent {
        Some(p) => sim.sites[p].id.split(',').nth(1).unwrap_or("").to_string(),
        None => guid(rng),
    };
    let id = format!("{},{},{}", sim.hostname, collection, guid(rng));
    let drive_id = format!(
        "b!{}",
        crate::util::b64(guid(rng).as_bytes()).replace(['+', '/', '='], "y")
    );
    let seq = sim.next_seq();
    let mut drive = Drive::new(
        drive_id.clone(),
        "Documents",
        "documentLibrary",
        display,
        &id,
        format!(
            "https://{}{}/Shared Documents",
            sim.hostname,
            path.trim_end_matches('/')
        ),
        drive_item_id(rng),
        sim.start - Duration::days(200),
        seq,
    );
    fill_drive(cfg, sim, rng, &mut drive, cfg.files_per_user.div_ceil(2));
    sim.drives.insert(drive_id.clone(), drive);
    let created = sim.start - Duration::days(200);
    let mut items = Vec::new();
    for i in 0..(3 + cfg.tasks_per_list) {
        let f = obj(
            json!({ "Title": format!("Issue {i}: {}", ["Drucker defekt", "VPN slow", "Accès refusé", "New laptop"][i % 4]),
            "Status": (["Active", "Resolved", "Closed"][i % 3]), "Priority": (["(1) High", "(2) Normal", "(3) Low"][i % 3]) }),
        );
        items.push(ListItem {
            id: i as u64 + 1,
            fields: f,
            created,
            modified: created,
            version: 1,
        });
    }
    let lists = vec![
        List {
            id: guid(rng),
            name: "Shared Documents".into(),
            display_name: "Documents".into(),
            template: "documentLibrary".into(),
            drive_id: Some(drive_id.clone()),
            items: Vec::new(),
            created,
        },
        List {
            id: guid(rng),
            name: "Issue tracker".into(),
            display_name: "Issue tracker".into(),
            template: "genericList".into(),
            drive_id: None,
            items,
            created,
        },
    ];
    sim.sites.push(Site {
        id,
        name: name.into(),
        display_name: display.into(),
        path,
        parent,
        drives: vec![drive_id],
        lists,
        created,
    });
    sim.sites.len() - 1
}

fn sites(cfg: &Config, sim: &mut Sim, rng: &mut StdRng) {
    new_site(cfg, sim, rng, "", "Communication site", "/".into(), None);
    for i in 0..cfg.sites {
        let name = format!("Team{i}");
        let top = new_site(
            cfg,
            sim,
            rng,
            &name,
            &format!("Team {i} – Zusammenarbeit"),
            format!("/sites/{name}"),
            None,
        );
        for j in 0..2 {
            let sub = new_site(
                cfg,
                sim,
                rng,
                &format!("sub{j}"),
                &format!("Sub-site {j}"),
                format!("/sites/{name}/sub{j}"),
                Some(top),
            );
            if j == 0 {
                new_site(
                    cfg,
                    sim,
                    rng,
                    "deep",
                    "Deep sub-site",
                    format!("/sites/{name}/sub{j}/deep"),
                    Some(sub),
                );
            }
        }
    }
}
