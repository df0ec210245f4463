//! The API over real HTTP: authentication, every route, jobs run by the same runner the
//! Lambda functions use, and tenant isolation (another tenant's ids are 404, never data).
//! It runs on the one test environment ([`TestEnv`]) and the one fake connector
//! ([`FakeSource`]), which is also the only connector the API may add tasks of, as the
//! network connectors are in production.

use chrono::{TimeZone, Utc};
use domain::{TaskId, TenantId};
use embedded::MemQueue;
use engine::{Connectors, NewTask, SourceErrorKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use testkit::env::{backup_all, fake_task, TestEnv};
use testkit::fake::{fake_source, FakeConnectors, FakeItem, FakeSource, FAKE};
use zeroize::Zeroizing;

/// acme's mailbox.
const ANNA: &str = "anna@acme.example";

/// The folder a restore into the source writes into: named after the job's creation time,
/// the test's first moment.
const RESTORE_LABEL: &str = "Lifeboat Restore 2026-11-25 02-00-00 UTC";

/// acme's source: one mailbox, shown as "Anna", with two messages.
fn acme_source() -> Arc<FakeSource> {
    let source = FakeSource::new();
    source.set_account_name(ANNA, "Anna");
    let day = |d: u32| {
        Utc.with_ymd_and_hms(2026, 11, d, 9, 0, 0)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    };
    source.put(
        ANNA,
        1,
        FakeItem::new("Inbox", b"invoice")
            .with_meta(&[
                ("from", "bob@globex.example"),
                ("subject", "Quarterly invoice"),
            ])
            .at(day(3)),
    );
    source.put(
        ANNA,
        2,
        FakeItem::new("Inbox/Projects", b"lunch")
            .with_meta(&[("from", "carol@acme.example"), ("subject", "Lunch?")])
            .at(day(20)),
    );
    source
}

struct Server {
    env: TestEnv,
    base: String,
    auth: Arc<api::Hs256>,
    worker: jobs::Context,
    /// acme's source, which the worker and the API open.
    source: Arc<FakeSource>,
    http: reqwest::Client,
}

impl Server {
    /// The API, offering the fake connector for new tasks.
    async fn start() -> Server {
        Server::start_offering(None).await
    }

    /// The API, offering `offered` for new tasks (the fake connector when `None`). The
    /// worker opens acme's source.
    async fn start_offering(offered: Option<Arc<dyn Connectors>>) -> Server {
        let env = TestEnv::new();
        let queue = Arc::new(MemQueue::new(3));
        let auth = Arc::new(api::Hs256::new(&[7u8; 32]));
        let source = acme_source();
        let fake = FakeConnectors::new(&source);
        let worker = jobs::Context::new(
            env.ports.clone(),
            queue.clone(),
            Arc::new(fake.clone()),
            "test-worker",
        );

        // acme: two tasks of its source, the mail task with a credential, each backed up;
        // globex: one task of a source of its own, backed up.
        let acme = env.engine("acme");
        let docs = fake_task(&acme, "docs", &fake).await;
        let mail = acme
            .add_task(
                NewTask {
                    name: TaskId::new("mail").unwrap(),
                    source: fake_source(),
                    secret: Some(Zeroizing::new("s3cret-password".into())),
                    backup_hour: None,
                },
                &fake,
            )
            .await
            .unwrap();
        let gsource = FakeSource::new();
        gsource.put(
            "gus@globex.example",
            1,
            FakeItem::new("Plans", b"globex only"),
        );
        let gfake = FakeConnectors::new(&gsource);
        let globex = env.engine("globex");
        let share = fake_task(&globex, "share", &gfake).await;
        backup_all(&acme, &docs, &fake).await;
        backup_all(&acme, &mail, &fake).await;
        backup_all(&globex, &share, &gfake).await;

        let state = api::AppState {
            ports: env.ports.clone(),
            backups: queue.clone(),
            transfers: queue.clone(),
            auth: auth.clone(),
            link_ttl: Duration::from_secs(3600),
            connectors: offered.unwrap_or_else(|| Arc::new(fake.clone())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state));
        Server {
            env,
            base,
            auth,
            worker,
            source,
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

    /// The paths the restores so far wrote into acme's source, from the `from`-th on.
    fn restored_from(&self, from: usize) -> Vec<String> {
        self.source.restored()[from..]
            .iter()
            .map(|r| {
                assert_eq!(r.account.as_str(), ANNA);
                r.path.clone()
            })
            .collect()
    }

    /// The names of a tenant's tasks.
    async fn task_names(&self, tenant: &str) -> Vec<String> {
        let v = self.get(tenant, "/v1/tasks").await;
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
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
    assert_eq!(tasks["tasks"][1]["kind"], FAKE);
    assert!(
        !tasks.to_string().contains("s3cret"),
        "no credential in listings"
    );
    assert!(
        !tasks.to_string().contains("sealed"),
        "no sealed credential either"
    );

    let accts = s.get("acme", "/v1/tasks/mail/accounts").await;
    assert_eq!(accts["accounts"][0]["id"], ANNA);
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
        hits(&s.get("acme", "/v1/tasks/docs/search?name=2.eml").await),
        ["Inbox/Projects/2.eml"]
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
            Some(json!({"account": ANNA})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    // The same request again, inside the cooldown: 429 with the seconds left of it.
    let again = s
        .http
        .post(format!("{}/v1/tasks/docs/backups", s.base))
        .bearer_auth(s.token("acme"))
        .json(&json!({"account": ANNA}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&wait), "{wait}");
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cooldown", "{body}");
    // Another account, or the whole task, is not the same request.
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
        .get(
            "acme",
            "/v1/tasks/docs/accounts/anna@acme.example/snapshots",
        )
        .await;
    assert_eq!(docs["snapshots"].as_array().unwrap().len(), 2);
    let accts = s.get("acme", "/v1/tasks/docs/accounts").await;
    assert!(accts["accounts"][0]["last_snapshot"].is_string());

    // A restore job, and its status.
    let (st, job) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(json!({"account": ANNA, "snapshot": "latest", "include": ["Inbox/Projects"]})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["state"], "queued");
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(json!({"account": ANNA, "snapshot": "latest", "include": ["Inbox/Typo"]})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // The destination rules are checked when the restore is asked for: another account
    // must be one of the task's.
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(
                json!({"account": ANNA, "snapshot": "latest", "to_account": "nobody@acme.example"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let done = s
        .get("acme", &format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["items"], 1);
    assert_eq!(
        s.restored_from(0),
        [format!("{RESTORE_LABEL}/Inbox/Projects/2.eml")]
    );

    // A restore of the whole mailbox narrowed by sender and days: one message comes back.
    let before = s.source.restored().len();
    let (st, job) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(json!({"account": ANNA, "snapshot": "latest",
                "filter": {"sender": "GLOBEX", "since": "2026-11-01", "until": "2026-11-05"}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/mail/restores",
            Some(json!({"account": ANNA, "snapshot": "latest",
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
    assert_eq!(
        s.restored_from(before),
        [format!("{RESTORE_LABEL}/Inbox/1.eml")]
    );

    // An export job and its download.
    let (st, job) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": ANNA, "snapshot": "latest"})),
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

    // A repack with no grace (nothing else runs): the job reports the task's packs, and
    // the snapshot still exports whole from wherever its blobs now lie.
    let (st, bad) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/prunes",
            Some(json!({"grace_hours": -1})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
    let (st, job) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/prunes",
            Some(json!({"repack": true, "grace_hours": 0})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "repack");
    assert!(job.get("account").is_none(), "{job}");
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let done = s
        .get("acme", &format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    assert!(
        done["report"]["total"]["packs"].as_u64().unwrap() >= 2,
        "{done}"
    );
    assert_eq!(done["report"]["accounts"][0]["account"], ANNA, "{done}");
    // An export of the same account right away would wait out its cooldown.
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": ANNA, "snapshot": "latest"})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    s.env.clock.advance(chrono::Duration::seconds(
        jobs::cooldown::EXPORT_COOLDOWN.as_secs() as i64,
    ));
    let (st, again) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": ANNA, "snapshot": "latest"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    jobs::drain(&s.worker, Duration::from_secs(60))
        .await
        .unwrap();
    let again = s
        .get(
            "acme",
            &format!("/v1/jobs/{}", again["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(again["state"], "done", "{again}");
    assert_eq!(again["export_bytes"], json!(bytes.len()));

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
        .get(
            "acme",
            "/v1/tasks/docs/accounts/anna@acme.example/snapshots",
        )
        .await;
    let snap = snaps["snapshots"][0]["id"].as_str().unwrap().to_string();
    let (_, export) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": ANNA, "snapshot": "latest"})),
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
            "/v1/tasks/docs/accounts/anna@acme.example/snapshots".into(),
            None,
        ),
        (
            "GET",
            format!("/v1/tasks/docs/accounts/anna@acme.example/snapshots/{snap}/items"),
            None,
        ),
        ("GET", "/v1/tasks/docs/search?name=2.eml".into(), None),
        (
            "POST",
            "/v1/tasks/mail/restores".into(),
            Some(json!({"account": ANNA, "snapshot": "latest"})),
        ),
        (
            "POST",
            "/v1/tasks/docs/exports".into(),
            Some(json!({"account": ANNA, "snapshot": snap})),
        ),
        ("POST", "/v1/tasks/docs/prunes".into(), Some(json!({}))),
        ("GET", format!("/v1/jobs/{job}"), None),
        ("GET", format!("/v1/jobs/{job}/download"), None),
    ];
    for (method, path, body) in &probes {
        let (st, v) = s.call(Some("globex"), method, path, body.clone()).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains("2.eml") && !text.contains("anna"),
            "{method} {path} leaked: {text}"
        );
        // The same call by acme works, so the 404 is isolation, not a broken probe (after
        // any cooldown of acme's own earlier request).
        s.env.clock.advance(chrono::Duration::minutes(16));
        let (st, v) = s.call(Some("acme"), method, path, body.clone()).await;
        assert!(st.is_success(), "{method} {path} as acme: {st} {v}");
    }
    // globex's own view holds nothing of acme's.
    let tasks = s.get("globex", "/v1/tasks").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
    let accts = s.get("globex", "/v1/tasks/share/accounts").await;
    assert_eq!(accts["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(accts["accounts"][0]["id"], "gus@globex.example");
    let usage = s.get("globex", "/v1/billing/usage").await;
    assert_eq!(usage["protected_accounts"], 1);
}

#[tokio::test]
async fn every_documented_route_exists() {
    let s = Server::start().await;
    let doc: Value = serde_json::from_str(api::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 16);
    for (path, ops) in paths {
        let concrete = path
            .replace("{task}", "docs")
            .replace("{account}", ANNA)
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

/// A task added through the API signs in to its source first (the connector's check),
/// and has its first backup queued at once, as today's: the worker backs it up without
/// waiting for the schedule, and the day's tick does not queue it again. Bad requests and
/// refused credentials are refused with one line and store nothing.
#[tokio::test]
async fn adding_a_task_queues_its_first_backup_at_once() {
    let s = Server::start().await;
    let checks = s.source.checks();
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks",
            Some(json!({
                "name": "newmail",
                "source": FAKE,
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
    assert_eq!(s.source.checks(), checks + 1, "the source was signed in to");
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

    // A credential the source refuses: the task is not kept.
    s.source
        .refuse(SourceErrorKind::Auth, "the mail server refused the login");
    let (st, v) = s
        .call(
            Some("acme"),
            "POST",
            "/v1/tasks",
            Some(json!({"name": "refused", "source": FAKE, "settings": {}, "secret": "typo"})),
        )
        .await;
    s.source.accept();
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "source_auth", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("refused the login"), "{msg}");
    assert!(!msg.contains("typo"), "{msg}");

    for (body, why) in [
        (
            json!({"name": "newmail", "source": FAKE, "settings": {}}),
            "already exists",
        ),
        (
            json!({"name": "f", "source": "folder", "settings": {"path": "/"}}),
            "folder connector",
        ),
        (
            json!({"name": "x", "source": FAKE, "settings": []}),
            "JSON object",
        ),
        (
            json!({"name": "x", "source": FAKE, "settings": {}, "backup_hour_utc": 24}),
            "0 to 23",
        ),
        (
            json!({"name": "x", "source": FAKE, "colour": "red"}),
            "not valid JSON",
        ),
        (
            json!({"name": "Bad Name!", "source": FAKE}),
            "invalid task name",
        ),
    ] {
        let (st, v) = s
            .call(Some("acme"), "POST", "/v1/tasks", Some(body.clone()))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{body}: {msg}");
        assert!(!msg.contains('\n'));
    }
    let names = s.task_names("acme").await;
    assert_eq!(names, ["docs", "mail", "newmail"]);
    let (st, _) = s.call(None, "POST", "/v1/tasks", Some(json!({}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// With the connectors production offers the API (`connectors::OverNetwork`), a local
/// folder cannot be added through it, under either of its names: a tenant must not make
/// the server back up (and so read) the server's own files. The same folder is a valid
/// task where all connectors are offered, as on the command line (`connectors::BuiltIn`).
#[tokio::test]
async fn a_folder_task_cannot_be_added_through_the_api() {
    let s = Server::start_offering(Some(Arc::new(connectors::OverNetwork))).await;
    let dir = s.env.folder("server-files");
    std::fs::write(dir.join("passwd"), b"root:x:0:0").unwrap();
    let folder = folder::FolderSettings::new(&dir).unwrap().to_source();
    for source in [folder::CONNECTOR, "files"] {
        let (st, v) = s
            .call(
                Some("acme"),
                "POST",
                "/v1/tasks",
                Some(json!({"name": "f", "source": source, "settings": folder.settings})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{source}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("not offered here"), "{source}: {msg}");
    }
    // The command line adds it.
    s.env
        .engine("acme")
        .add_task(
            NewTask {
                name: TaskId::new("local").unwrap(),
                source: folder,
                secret: None,
                backup_hour: None,
            },
            &connectors::BuiltIn,
        )
        .await
        .unwrap();
    assert_eq!(s.task_names("acme").await, ["docs", "local", "mail"]);
}
