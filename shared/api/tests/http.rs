//! The API over real HTTP: authentication, every route, jobs run by the same runner the
//! Lambda functions use, and tenant isolation (another tenant's ids are 404, never data).

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use domain::{AccountId, ItemPath, Service, TaskId, TenantId};
use embedded::{FileKeyService, FsObjectStore, MemQueue, SqliteCatalog};
use engine::{
    AccountInfo, AccountTree, Connector, Connectors, Engine, ItemInfo, Ports, RestoreContent,
    SourceConfig, SourceRestore, SourceRestoreReport, TaskRecord,
};
use ports::FixedClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// A one-mailbox source with two messages; records restores.
#[derive(Default)]
struct Mail {
    restored: Mutex<Vec<String>>,
}

#[async_trait]
impl Connector for Mail {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Ok(vec![AccountInfo {
            id: AccountId::new("anna@acme.example").unwrap(),
            name: "Anna".into(),
            services: vec![Service::Mail],
        }])
    }
    async fn backup(
        &self,
        _: &AccountInfo,
        _: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 9, 0, 0).unwrap();
        for (path, from, subject, when, body) in [
            (
                "Inbox/1.eml",
                "bob@globex.example",
                "Quarterly invoice",
                day(3),
                "invoice",
            ),
            (
                "Inbox/Projects/2.eml",
                "carol@acme.example",
                "Lunch?",
                day(20),
                "lunch",
            ),
        ] {
            tree.put_item(
                &ItemPath::parse(path.as_bytes()).unwrap(),
                ItemInfo {
                    mtime_ns: when.timestamp_nanos_opt().unwrap(),
                    fingerprint: 1,
                    meta: vec![
                        ("from".into(), from.into()),
                        ("subject".into(), subject.into()),
                    ],
                },
                body.as_bytes().to_vec().into(),
            )
            .await?;
        }
        Ok(None)
    }
    async fn restore(
        &self,
        job: &SourceRestore,
        _: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        let mut r = SourceRestoreReport::default();
        for (p, e) in &job.items {
            if e.kind == vault::EntryKind::File {
                self.restored.lock().unwrap().push(p.to_string());
                r.items += 1;
            }
        }
        Ok(r)
    }
}

struct One(Arc<Mail>);
impl Connectors for One {
    fn open(
        &self,
        _: &TaskRecord,
        _: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(self.0.clone())
    }
}

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    auth: Arc<api::Hs256>,
    worker: jobs::Context,
    mail: Arc<Mail>,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FixedClock::new(
            Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap(),
        ));
        let ports = Ports {
            store: Arc::new(FsObjectStore::new(dir.path().join("objects")).unwrap()),
            catalog: Arc::new(SqliteCatalog::open(dir.path().join("catalog.db")).unwrap()),
            keys: Arc::new(FileKeyService::open(dir.path().join("master.key")).unwrap()),
            clock: clock.clone(),
        };
        let queue = Arc::new(MemQueue::new(3));
        let auth = Arc::new(api::Hs256::new(&[7u8; 32]));
        let mail = Arc::new(Mail::default());
        let worker = jobs::Context::new(
            ports.clone(),
            queue.clone(),
            Arc::new(One(mail.clone())),
            "test-worker",
        );

        // acme: a files task and a mail task, each backed up; globex: one files task.
        let acme = Engine::new(ports.clone(), TenantId::new("acme").unwrap());
        let folder = dir.path().join("docs");
        std::fs::create_dir_all(folder.join("reports")).unwrap();
        std::fs::write(folder.join("reports/q3.pdf"), b"%PDF q3").unwrap();
        acme.add_task(
            TaskId::new("docs").unwrap(),
            SourceConfig::Files { path: folder },
        )
        .await
        .unwrap();
        acme.add_task_with_secret(
            TaskId::new("mail").unwrap(),
            SourceConfig::source("test", json!({"host": "mail.acme.example"})),
            Some("s3cret-password"),
        )
        .await
        .unwrap();
        let globex = Engine::new(ports.clone(), TenantId::new("globex").unwrap());
        let gfolder = dir.path().join("gdocs");
        std::fs::create_dir_all(&gfolder).unwrap();
        std::fs::write(gfolder.join("secret-plans.txt"), b"globex only").unwrap();
        globex
            .add_task(
                TaskId::new("share").unwrap(),
                SourceConfig::Files { path: gfolder },
            )
            .await
            .unwrap();
        for (e, t) in [(&acme, "docs"), (&acme, "mail"), (&globex, "share")] {
            let t = e.task(t).await.unwrap();
            for a in e
                .current_accounts(&t, worker.connectors.as_ref())
                .await
                .unwrap()
            {
                e.backup_any(&t, &a, worker.connectors.as_ref(), &engine::NoProgress)
                    .await
                    .unwrap();
            }
        }

        let state = api::AppState {
            ports: ports.clone(),
            backups: queue.clone(),
            transfers: queue.clone(),
            auth: auth.clone(),
            link_ttl: Duration::from_secs(3600),
            connectors: worker.connectors.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state));
        Server {
            _dir: dir,
            base,
            auth,
            worker,
            mail,
            http: reqwest::Client::new(),
        }
    }

    fn token(&self, tenant: &str) -> String {
        self.auth.mint(
            &TenantId::new(tenant).unwrap(),
            "admin@example",
            chrono::Duration::hours(1),
        )
    }

    async fn call(
        &self,
        tenant: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = tenant {
            req = req.bearer_auth(self.token(t));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    async fn get(&self, tenant: &str, path: &str) -> Value {
        let (s, v) = self.call(Some(tenant), "GET", path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        v
    }
}

#[tokio::test]
async fn requests_need_a_valid_token() {
    let s = Server::start().await;
    let (st, v) = s.call(None, "GET", "/health", None).await;
    assert_eq!((st, v["ok"].as_bool()), (StatusCode::OK, Some(true)));
    let (st, v) = s.call(None, "GET", "/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");

    let (st, v) = s.call(None, "GET", "/v1/tasks", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");

    let url = format!("{}/v1/tasks", s.base);
    let expired = s.auth.mint(
        &TenantId::new("acme").unwrap(),
        "x",
        chrono::Duration::hours(-1),
    );
    let r = s.http.get(&url).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));

    let forged = api::Hs256::new(&[8u8; 32]).mint(
        &TenantId::new("acme").unwrap(),
        "x",
        chrono::Duration::hours(1),
    );
    let r = s.http.get(&url).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert!(!v.to_string().contains(&forged), "the token is not echoed");
    let r = s
        .http
        .get(&url)
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn browse_search_backup_restore_export_and_bill() {
    let s = Server::start().await;
    let tasks = s.get("acme", "/v1/tasks").await;
    let names: Vec<_> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "mail"]);
    assert!(
        !tasks.to_string().contains("s3cret"),
        "no credential in listings"
    );
    assert!(
        !tasks.to_string().contains("sealed"),
        "no sealed credential either"
    );

    let accts = s.get("acme", "/v1/tasks/mail/accounts").await;
    assert_eq!(accts["accounts"][0]["id"], "anna@acme.example");
    assert_eq!(accts["accounts"][0]["name"], "Anna");

    let snaps = s
        .get(
            "acme",
            "/v1/tasks/mail/accounts/anna@acme.example/snapshots",
        )
        .await;
    let snap = snaps["snapshots"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(snaps["snapshots"][0]["items"], 2);
    assert!(snaps["snapshots"][0].get("cursor").is_none());
    let none = s
        .get(
            "acme",
            "/v1/tasks/mail/accounts/anna@acme.example/snapshots?from=2026-11-26",
        )
        .await;
    assert_eq!(none["snapshots"].as_array().unwrap().len(), 0);

    let root = s
        .get(
            "acme",
            &format!("/v1/tasks/mail/accounts/anna@acme.example/snapshots/{snap}/items"),
        )
        .await;
    assert_eq!(root["items"][0]["name"], "Inbox");
    assert_eq!(root["items"][0]["kind"], "folder");
    let inbox = s
        .get(
            "acme",
            "/v1/tasks/mail/accounts/anna@acme.example/snapshots/latest/items?path=Inbox",
        )
        .await;
    let one = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "1.eml")
        .unwrap();
    assert_eq!(one["meta"]["subject"], "Quarterly invoice");
    let (st, v) = s
        .call(
            Some("acme"),
            "GET",
            "/v1/tasks/mail/accounts/anna@acme.example/snapshots/latest/items?path=Nope",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // Search by sender, subject, folder, name and date.
    let hits = |v: &Value| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        hits(&s.get("acme", "/v1/tasks/mail/search?sender=GLOBEX").await),
        ["Inbox/1.eml"]
    );
    assert_eq!(
        hits(&s.get("acme", "/v1/tasks/mail/search?subject=lunch").await),
        ["Inbox/Projects/2.eml"]
    );
    assert_eq!(
        hits(&s.get("acme", "/v1/tasks/mail/search?folder=projects").await),
        ["Inbox/Projects/2.eml"]
    );
    assert_eq!(
        hits(
            &s.get(
                "acme",
                "/v1/tasks/mail/search?from=2026-11-10&to=2026-11-30"
            )
            .await
        ),
        ["Inbox/Projects/2.eml"]
    );
    assert_eq!(
        hits(&s.get("acme", "/v1/tasks/docs/search?name=q3").await),
        ["reports/q3.pdf"]
    );
    assert_eq!(
        hits(
            &s.get("acme", "/v1/tasks/mail/search?snapshot=all&sender=acme")
                .await
        )
        .len(),
        1
    );

    // On-demand backup of one account, run by the same runner the fetcher Lambda uses.
    let (st, _) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/backups",
            Some(json!({"account": "folder"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/backups",
            Some(json!({"account": "nobody"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let docs = s
        .get("acme", "/v1/tasks/docs/accounts/folder/snapshots")
        .await;
    assert_eq!(docs["snapshots"].as_array().unwrap().len(), 2);
    let accts = s.get("acme", "/v1/tasks/docs/accounts").await;
    assert!(accts["accounts"][0]["last_snapshot"].is_string());

    // A restore job, and its status.
    let (st, job) = s
        .call(Some("acme"), "POST", "/v1/tasks/mail/restores", Some(json!({"account": "anna@acme.example", "snapshot": "latest", "include": ["Inbox/Projects"]})))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["state"], "queued");
    let (st, v) = s
        .call(Some("acme"), "POST", "/v1/tasks/mail/restores", Some(json!({"account": "anna@acme.example", "snapshot": "latest", "include": ["Inbox/Typo"]})))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/restores",
            Some(json!({"account": "folder", "snapshot": "latest"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a files task restores locally");
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let done = s
        .get("acme", &format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["items"], 1);
    assert_eq!(*s.mail.restored.lock().unwrap(), ["Inbox/Projects/2.eml"]);

    // A restore of the whole mailbox narrowed by sender and days: one message comes back.
    s.mail.restored.lock().unwrap().clear();
    let (st, job) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(json!({"account": "anna@acme.example", "snapshot": "latest",
                "filter": {"sender": "GLOBEX", "since": "2026-11-01", "until": "2026-11-05"}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(json!({"account": "anna@acme.example", "snapshot": "latest",
                "filter": {"since": "the third"}})),
        )
        .await;
    assert!(
        st.is_client_error(),
        "a day that is not a date is refused: {v}"
    );
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let done = s
        .get("acme", &format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["items"], 1);
    assert_eq!(*s.mail.restored.lock().unwrap(), ["Inbox/1.eml"]);

    // An export job and its download.
    let (st, job) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": "folder", "snapshot": "latest"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let done = s.get("acme", &format!("/v1/jobs/{id}")).await;
    assert_eq!(done["download"], format!("/v1/jobs/{id}/download"));
    let zip = s
        .http
        .get(format!("{}/v1/jobs/{id}/download", s.base))
        .bearer_auth(s.token("acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(zip.headers()["content-type"], "application/zip");
    let bytes = zip.bytes().await.unwrap();
    assert_eq!(&bytes[..2], b"PK");
    assert_eq!(done["export_bytes"], bytes.len());

    // Billing: acme's two accounts (one per task) were protected this month, free during
    // the trial; globex's account is not acme's.
    let usage = s.get("acme", "/v1/billing/usage").await;
    assert_eq!(usage["month"], "2026-11");
    assert_eq!(usage["protected_accounts"], 2);
    assert_eq!(usage["billable_accounts"], 0);
    let later = s.get("acme", "/v1/billing/usage?month=2027-01").await;
    assert_eq!(later["protected_accounts"], 0);
    let (st, _) = s
        .call(Some("acme"), "GET", "/v1/billing/usage?month=2026-13", None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Schedule.
    let (st, v) = s
        .call(
            Some("acme"),
            "PUT",
            "/v1/tasks/docs/schedule",
            Some(json!({"backup_hour_utc": 4})),
        )
        .await;
    assert_eq!(
        (st, v["backup_hour_utc"].as_u64()),
        (StatusCode::OK, Some(4))
    );
    let (st, _) = s
        .call(
            Some("acme"),
            "PUT",
            "/v1/tasks/docs/schedule",
            Some(json!({"backup_hour_utc": 25})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn another_tenants_ids_are_not_found() {
    let s = Server::start().await;
    // acme's ids, to be tried by globex.
    let snaps = s
        .get("acme", "/v1/tasks/docs/accounts/folder/snapshots")
        .await;
    let snap = snaps["snapshots"][0]["id"].as_str().unwrap().to_string();
    let (_, export) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": "folder", "snapshot": "latest"})),
        )
        .await;
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let job = export["id"].as_str().unwrap().to_string();

    let probes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/tasks/docs".into(), None),
        (
            "PUT",
            "/v1/tasks/docs/schedule".into(),
            Some(json!({"backup_hour_utc": 3})),
        ),
        ("GET", "/v1/tasks/docs/accounts".into(), None),
        ("POST", "/v1/tasks/docs/backups".into(), None),
        (
            "GET",
            "/v1/tasks/docs/accounts/folder/snapshots".into(),
            None,
        ),
        (
            "GET",
            format!("/v1/tasks/docs/accounts/folder/snapshots/{snap}/items"),
            None,
        ),
        ("GET", "/v1/tasks/docs/search?name=q3".into(), None),
        (
            "POST",
            "/v1/tasks/mail/restores".into(),
            Some(json!({"account": "anna@acme.example", "snapshot": "latest"})),
        ),
        (
            "POST",
            "/v1/tasks/docs/exports".into(),
            Some(json!({"account": "folder", "snapshot": snap})),
        ),
        ("GET", format!("/v1/jobs/{job}"), None),
        ("GET", format!("/v1/jobs/{job}/download"), None),
    ];
    for (method, path, body) in &probes {
        let (st, v) = s.call(Some("globex"), method, path, body.clone()).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains("q3") && !text.contains("anna"),
            "{method} {path} leaked: {text}"
        );
        // The same call by acme works, so the 404 is isolation, not a broken probe.
        let (st, v) = s.call(Some("acme"), method, path, body.clone()).await;
        assert!(st.is_success(), "{method} {path} as acme: {st} {v}");
    }
    // globex's own view holds nothing of acme's.
    let tasks = s.get("globex", "/v1/tasks").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
    let usage = s.get("globex", "/v1/billing/usage").await;
    assert_eq!(usage["protected_accounts"], 1);
}

#[tokio::test]
async fn every_documented_route_exists() {
    let s = Server::start().await;
    let doc: Value = serde_json::from_str(api::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 15);
    for (path, ops) in paths {
        let concrete = path
            .replace("{task}", "docs")
            .replace("{account}", "folder")
            .replace("{snapshot}", "latest")
            .replace("{job}", "nojob");
        for method in ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            let (st, v) = s
                .call(
                    Some("acme"),
                    &method.to_uppercase(),
                    &concrete,
                    Some(json!({})),
                )
                .await;
            let msg = v["error"]["message"].as_str().unwrap_or("");
            assert!(
                !msg.contains("no such route"),
                "{method} {path} is documented but not routed"
            );
            assert_ne!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    let (st, v) = s.call(Some("acme"), "GET", "/v1/nothing-here", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
}

/// A task added through the API has its first backup queued at once, as today's: the
/// worker backs it up without waiting for the schedule, and the day's tick does not queue
/// it again. Bad requests are refused with one line and store nothing.
#[tokio::test]
async fn adding_a_task_queues_its_first_backup_at_once() {
    let s = Server::start().await;
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks",
            Some(json!({
                "name": "newmail",
                "source": "test",
                "settings": {"host": "mail.acme.example"},
                "secret": "n3w-password",
                "backup_hour_utc": 1
            })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "newmail");
    assert_eq!(v["backup_hour_utc"], 1);
    assert_eq!(v["first_backup_queued"], true);
    assert!(!v.to_string().contains("n3w-password"));
    let report = jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        report
            .handled
            .iter()
            .any(|h| matches!(h.outcome, Some(jobs::Outcome::BackedUp { .. }))),
        "{:?}",
        report.handled
    );
    let v = s.get("acme", "/v1/tasks/newmail/accounts").await;
    let accounts = v["accounts"].as_array().unwrap();
    assert!(!accounts.is_empty(), "{v}");
    assert!(
        accounts.iter().all(|a| a["last_snapshot"].is_string()),
        "{v}"
    );
    // Today's backup is done: the day's tick queues the three older tasks (backed up by
    // hand above, never by the schedule) but not the new one.
    let tick = jobs::tick(&s.worker).await.unwrap();
    assert_eq!((tick.queued, tick.already), (3, 1), "{tick:?}");

    for (body, why) in [
        (
            json!({"name": "newmail", "source": "test", "settings": {}}),
            "already exists",
        ),
        (
            json!({"name": "f", "source": "files", "settings": {"path": "/"}}),
            "lifeboat task add",
        ),
        (
            json!({"name": "x", "source": "test", "settings": []}),
            "JSON object",
        ),
        (
            json!({"name": "x", "source": "test", "settings": {}, "backup_hour_utc": 24}),
            "0 to 23",
        ),
        (
            json!({"name": "x", "source": "test", "colour": "red"}),
            "not valid JSON",
        ),
        (json!({"name": "Bad Name!", "source": "test"}), ""),
    ] {
        let (st, v) = s
            .call(Some("acme"), "POST", "/v1/tasks", Some(body.clone()))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{body}: {msg}");
        assert!(!msg.contains('\n'));
    }
    let v = s.get("acme", "/v1/tasks").await;
    let names: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"x") && !names.contains(&"f"), "{names:?}");
    let (st, _) = s.call(None, "POST", "/v1/tasks", Some(json!({}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
