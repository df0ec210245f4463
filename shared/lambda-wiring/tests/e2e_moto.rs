//! Lifeboat's AWS shape end to end on moto: the functions' handlers (`lambda_wiring::handle_sqs`,
//! `jobs::tick`, the API router behind `lambda_http`) over the real AWS adapters, driven
//! the way Lambda drives them: SQS batches become real `aws_lambda_events` SQS events, API
//! Gateway requests become real HTTP API (v2) events carrying the JWT authorizer's claims.
//!
//! Every AWS request goes through a metering proxy in front of moto, which counts requests
//! per service and operation (and DynamoDB's request units), so that the cost report is
//! priced from what went over the wire, not from what the code was believed to do.
//!
//! Each function reaches the proxy on a port of its own, so the proxy also knows which
//! function made each request and on which resource. When a stack is dropped it writes
//! that list (`$CARGO_TARGET_TMPDIR/aws-ops/`), and `infra/iam_check.py` proves from it
//! that `template.yaml` grants each function what it does and little more (moto enforces
//! no IAM, so only this catches a missing permission before a real deployment does).

use aws_lambda_events::event::sqs::SqsEvent;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, TimeZone, Utc};
use domain::{AccountId, ItemPath, TaskId, TenantId};
use engine::{Engine, NewTask, NoProgress, SourceConfig};
use lambda_http::tower::ServiceExt;
use lambda_wiring::{Cloud, Names};
use ports::{catalog_keys, FixedClock, ObjectKey, ObjectStoreExt, Queue, QueueMessage};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use testkit::faults::{FaultPlan, FaultyCatalog, FaultyKeys, FaultyStore};

// ---------------------------------------------------------------------------------------
// The metering proxy.

/// Requests of one service operation, and the DynamoDB request units they consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Tally {
    calls: u64,
    read_units: f64,
    write_units: f64,
}

type Tallies = BTreeMap<(String, String), Tally>;

/// Who makes a request: one of the template's functions, or the harness itself (setting
/// up, reading what the functions wrote, and Lambda's own SQS polling, which is
/// attributed to the function it polls for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Scheduler,
    Fetcher,
    Restorer,
    Api,
    Harness,
}

impl Role {
    const ALL: [Role; 5] = [
        Role::Scheduler,
        Role::Fetcher,
        Role::Restorer,
        Role::Api,
        Role::Harness,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Fetcher => "fetcher",
            Role::Restorer => "restorer",
            Role::Api => "api",
            Role::Harness => "harness",
        }
    }
}

/// One AWS operation a function performed: `(role, service, operation, resource)`, the
/// resource as the request named it (a table, `bucket/key`, a queue URL, a key id, a bus).
type Op = (Role, String, String, String);

/// A reverse proxy in front of moto that tallies every request it forwards.
struct Meter {
    upstream: String,
    http: reqwest::Client,
    tally: Mutex<Tallies>,
    /// Woken after each pack upload that S3 accepted.
    pack_put: tokio::sync::Notify,
    /// The entries of every `PutEvents` that EventBridge accepted, as sent.
    events: Mutex<Vec<Value>>,
    /// `(pk, sk, ttl)` of every accepted DynamoDB `PutItem` that carried a time to live.
    expiring: Mutex<Vec<(String, String, u64)>>,
    /// Every operation each function performed, for the permissions check.
    ops: Mutex<std::collections::BTreeSet<Op>>,
}

/// Headers that describe one hop, not the request: the forwarding client sets its own.
const HOP: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
];

impl Meter {
    /// Starts the proxy with a port per role; returns the endpoint of each.
    async fn start(upstream: &str) -> (Arc<Meter>, BTreeMap<Role, String>) {
        let meter = Arc::new(Meter {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            tally: Mutex::new(BTreeMap::new()),
            pack_put: tokio::sync::Notify::new(),
            events: Mutex::new(Vec::new()),
            expiring: Mutex::new(Vec::new()),
            ops: Mutex::new(Default::default()),
        });
        let mut urls = BTreeMap::new();
        for role in Role::ALL {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new()
                .fallback(forward)
                .with_state((meter.clone(), role));
            tokio::spawn(async move { axum::serve(listener, app).await.ok() });
            urls.insert(role, format!("http://{addr}"));
        }
        (meter, urls)
    }

    fn tallies(&self) -> Tallies {
        self.tally.lock().unwrap().clone()
    }

    fn calls(&self, service: &str, op: &str) -> u64 {
        self.tally
            .lock()
            .unwrap()
            .get(&(service.to_string(), op.to_string()))
            .map_or(0, |t| t.calls)
    }

    fn record(
        &self,
        role: Role,
        parts: &axum::http::request::Parts,
        req: &[u8],
        status: StatusCode,
        resp: &[u8],
    ) {
        let (service, op) = classify(parts, req);
        {
            let mut ops = self.ops.lock().unwrap();
            for (op, resource) in resources(&service, &op, parts, req) {
                ops.insert((role, service.clone(), op, resource));
            }
        }
        let (read_units, write_units) = if service == "dynamodb" {
            dynamo_units(&op, req, resp)
        } else {
            (0.0, 0.0)
        };
        // Counted before the waiter is woken, so that it sees this call in the tally.
        let pack_put = service == "s3"
            && op == "PutObject"
            && parts.uri.path().contains("/pack/")
            && status.is_success();
        if service == "events" && op == "PutEvents" && status.is_success() {
            let sent: Value = serde_json::from_slice(req).unwrap_or(Value::Null);
            let accepted: Value = serde_json::from_slice(resp).unwrap_or(Value::Null);
            assert_eq!(
                accepted["FailedEntryCount"].as_u64().unwrap_or(0),
                0,
                "{accepted}"
            );
            if let Some(entries) = sent["Entries"].as_array() {
                self.events.lock().unwrap().extend(entries.iter().cloned());
            }
        }
        if service == "dynamodb" && op == "PutItem" && status.is_success() {
            let sent: Value = serde_json::from_slice(req).unwrap_or(Value::Null);
            let item = &sent["Item"];
            if let Some(ttl) = item["ttl"]["N"].as_str().and_then(|n| n.parse().ok()) {
                let key = |k: &str| item[k]["S"].as_str().unwrap_or("").to_string();
                self.expiring
                    .lock()
                    .unwrap()
                    .push((key("pk"), key("sk"), ttl));
            }
        }
        let mut t = self.tally.lock().unwrap();
        let e = t.entry((service, op)).or_default();
        e.calls += 1;
        e.read_units += read_units;
        e.write_units += write_units;
        drop(t);
        if pack_put {
            self.pack_put.notify_one();
        }
    }
}

async fn forward(
    State((m, role)): State<(Arc<Meter>, Role)>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !HOP.contains(&k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    let sent = m
        .http
        .request(parts.method.clone(), format!("{}{target}", m.upstream))
        .headers(headers)
        .body(body.clone())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let resp_body = resp.bytes().await.unwrap_or_default();
    m.record(role, &parts, &body, status, &resp_body);
    let mut out = axum::response::Response::new(axum::body::Body::from(resp_body));
    *out.status_mut() = status;
    for (k, v) in &resp_headers {
        if !matches!(k.as_str(), "transfer-encoding" | "connection") {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    out
}

/// The AWS service (from the SigV4 credential scope) and operation of a request.
fn classify(parts: &axum::http::request::Parts, body: &[u8]) -> (String, String) {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let query = parts.uri.query().unwrap_or("");
    let scope = header("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .map(|c| c.split(',').next().unwrap_or("").to_string())
        .or_else(|| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Credential="))
                .map(|c| c.replace("%2F", "/").replace("%2f", "/"))
        })
        .unwrap_or_default();
    let service = scope.split('/').nth(3).unwrap_or("unknown").to_string();
    if let Some(target) = header("x-amz-target") {
        let op = target.rsplit('.').next().unwrap_or(target);
        return (service, op.to_string());
    }
    if let Some(action) = std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.split('&').find_map(|p| p.strip_prefix("Action=")))
    {
        return (service, action.to_string());
    }
    let in_bucket = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .count()
        > 1;
    let has = |q: &str| {
        query
            .split('&')
            .any(|p| p == q || p.starts_with(&format!("{q}=")))
    };
    let op = match (parts.method.as_str(), in_bucket) {
        ("POST", true) if has("uploads") => "CreateMultipartUpload",
        ("PUT", true) if has("partNumber") => "UploadPart",
        ("POST", true) if has("uploadId") => "CompleteMultipartUpload",
        ("DELETE", true) if has("uploadId") => "AbortMultipartUpload",
        ("GET", false) if has("uploads") => "ListMultipartUploads",
        ("GET", true) => "GetObject",
        ("GET", false) => "ListObjectsV2",
        ("PUT", true) => "PutObject",
        ("PUT", false) => "CreateBucket",
        ("HEAD", true) => "HeadObject",
        ("HEAD", false) => "HeadBucket",
        ("DELETE", _) => "DeleteObject",
        ("POST", _) if query.contains("delete") => "DeleteObjects",
        _ => "Other",
    };
    (service, op.to_string())
}

/// The resources a request names, with the operation on each: a DynamoDB transaction is
/// one operation per item (`TransactWriteItems:Put`...), since IAM authorises each item's
/// action, not the transaction.
fn resources(
    service: &str,
    op: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Vec<(String, String)> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    match service {
        "dynamodb" => match op {
            "TransactWriteItems" | "TransactGetItems" => json["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_object()?.iter().next())
                .map(|(kind, v)| (format!("{op}:{kind}"), s(&v["TableName"])))
                .collect(),
            "BatchWriteItem" | "BatchGetItem" => json["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(table, _)| (op.to_string(), table.clone()))
                .collect(),
            _ => vec![(op.to_string(), s(&json["TableName"]))],
        },
        "s3" => {
            let path = parts.uri.path().trim_start_matches('/').to_string();
            let mut out = vec![(op.to_string(), path.clone())];
            // Tags set with the upload need their own permission.
            if parts.headers.contains_key("x-amz-tagging") {
                out.push(("PutObjectTagging".to_string(), path));
            }
            out
        }
        "sqs" => vec![(op.to_string(), s(&json["QueueUrl"]))],
        "kms" => vec![(op.to_string(), s(&json["KeyId"]))],
        "events" => json["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (op.to_string(), s(&e["EventBusName"])))
            .collect(),
        _ => vec![(op.to_string(), String::new())],
    }
}

/// DynamoDB's size of an attribute value (names and values; binary counted decoded).
fn attr_bytes(v: &Value) -> f64 {
    let Some((kind, x)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0.0;
    };
    let str_len = |x: &Value| x.as_str().map_or(0, str::len) as f64;
    let b64_len =
        |x: &Value| (x.as_str().map_or(0, |s| s.trim_end_matches('=').len()) * 3 / 4) as f64;
    let list = |x: &Value| x.as_array().cloned().unwrap_or_default();
    match kind.as_str() {
        "S" => str_len(x),
        "N" => (str_len(x) / 2.0).ceil() + 1.0,
        "B" => b64_len(x),
        "BOOL" | "NULL" => 1.0,
        "SS" | "NS" => list(x).iter().map(str_len).sum(),
        "BS" => list(x).iter().map(b64_len).sum(),
        "M" => 3.0 + item_bytes(x) + x.as_object().map_or(0, |o| o.len()) as f64,
        "L" => 3.0 + list(x).iter().map(|e| 1.0 + attr_bytes(e)).sum::<f64>(),
        _ => 0.0,
    }
}

fn item_bytes(item: &Value) -> f64 {
    item.as_object()
        .map(|o| o.iter().map(|(k, v)| k.len() as f64 + attr_bytes(v)).sum())
        .unwrap_or(0.0)
}

/// The request units a DynamoDB request consumed, by DynamoDB's rules: a write is one unit
/// per KB of the item (two in a transaction), a read one per 4 KB read (half when
/// eventually consistent), at least one either way. A failed conditional write is charged.
fn dynamo_units(op: &str, req: &[u8], resp: &[u8]) -> (f64, f64) {
    let req: Value = serde_json::from_slice(req).unwrap_or(Value::Null);
    let resp: Value = serde_json::from_slice(resp).unwrap_or(Value::Null);
    let consistent = req["ConsistentRead"].as_bool().unwrap_or(false);
    let read = |bytes: f64| {
        let u = (bytes / 4096.0).ceil().max(1.0);
        if consistent {
            u
        } else {
            u / 2.0
        }
    };
    let write = |bytes: f64| (bytes / 1024.0).ceil().max(1.0);
    match op {
        "GetItem" => (read(item_bytes(&resp["Item"])), 0.0),
        "Query" => {
            let bytes = resp["Items"]
                .as_array()
                .map_or(0.0, |a| a.iter().map(item_bytes).sum());
            (read(bytes), 0.0)
        }
        "PutItem" => (0.0, write(item_bytes(&req["Item"]))),
        "DeleteItem" | "UpdateItem" => (0.0, 1.0),
        "TransactWriteItems" => {
            let units = req["TransactItems"].as_array().map_or(0.0, |a| {
                a.iter()
                    .map(|t| 2.0 * write(item_bytes(&t["Put"]["Item"])))
                    .sum()
            });
            (0.0, units)
        }
        _ => (0.0, 0.0),
    }
}

// ---------------------------------------------------------------------------------------
// One region's stack on moto, and Lambda's way of calling the functions.

const TENANT_CLAIM: &str = "tenant";

fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, 0).unwrap()
}

#[derive(Clone, Copy)]
enum Which {
    Backups,
    Transfers,
}

impl Which {
    /// The function the queue's event source invokes.
    fn role(self) -> Role {
        match self {
            Which::Backups => Role::Fetcher,
            Which::Transfers => Role::Restorer,
        }
    }
}

struct Stack {
    dir: tempfile::TempDir,
    /// The name the stack's resources are named after (and its operations file).
    prefix: String,
    /// Each role's SDK configuration: the same moto, through the proxy's port for the role.
    sdks: BTreeMap<Role, aws_adapters::SdkConfig>,
    names: Names,
    backup_dlq: String,
    transfer_dlq: String,
    meter: Arc<Meter>,
    clock: Arc<FixedClock>,
    /// Time spent inside the handlers, and how many invocations (Lambda's bill).
    handler_time: Mutex<(Duration, u64)>,
    invocations: AtomicU64,
    /// Faults injected into the functions' ports (not the test's own reads).
    faults: Mutex<Option<Arc<FaultPlan>>>,
}

impl Stack {
    /// Creates the stack's resources on moto, named after `name` and this process.
    async fn new(name: &str) -> Stack {
        let direct = aws_adapters::testing::sdk_config().await;
        let prefix = format!("e2e-{name}-{}", std::process::id());
        use aws_adapters::setup;
        setup::create_bucket(&direct, &prefix).await.unwrap();
        setup::create_table(&direct, &prefix).await.unwrap();
        let key = setup::create_key(&direct, None).await.unwrap();
        let (backups, backup_dlq) = setup::create_queue(&direct, &format!("{prefix}-backups"), 5)
            .await
            .unwrap();
        let (transfers, transfer_dlq) =
            setup::create_queue(&direct, &format!("{prefix}-transfers"), 5)
                .await
                .unwrap();
        setup::create_event_bus(&direct, &prefix).await.unwrap();
        let (meter, urls) = Meter::start(aws_adapters::testing::endpoint()).await;
        let sdks = urls
            .into_iter()
            .map(|(role, url)| (role, direct.to_builder().endpoint_url(url).build()))
            .collect();
        Stack {
            dir: tempfile::tempdir().unwrap(),
            prefix: prefix.clone(),
            sdks,
            names: Names {
                table: prefix.clone(),
                bucket: prefix.clone(),
                kms_key: key,
                backup_queue: backups,
                transfer_queue: transfers,
                event_bus: Some(prefix.clone()),
            },
            backup_dlq,
            transfer_dlq,
            meter,
            clock: Arc::new(FixedClock::new(at(25, 2, 5))),
            handler_time: Mutex::new((Duration::ZERO, 0)),
            invocations: AtomicU64::new(0),
            faults: Mutex::new(None),
        }
    }

    /// A fresh instance of `role`'s function (a cold start: nothing cached, KMS asked
    /// again), on the test's clock, with the faults of the moment.
    fn instance(&self, role: Role) -> Cloud {
        let sdk = &self.sdks[&role];
        let mut c = Cloud::new(sdk, &self.names);
        c.ports.clock = self.clock.clone();
        c.backups = Arc::new(aws_adapters::SqsQueue::new(
            sdk,
            self.names.backup_queue.clone(),
            Some(self.backup_dlq.clone()),
        ));
        c.transfers = Arc::new(aws_adapters::SqsQueue::new(
            sdk,
            self.names.transfer_queue.clone(),
            Some(self.transfer_dlq.clone()),
        ));
        if let Some(plan) = self.faults.lock().unwrap().clone() {
            c.ports.store = Arc::new(FaultyStore {
                inner: c.ports.store.clone(),
                plan: plan.clone(),
            });
            c.ports.catalog = Arc::new(FaultyCatalog {
                inner: c.ports.catalog.clone(),
                plan: plan.clone(),
            });
            c.ports.keys = Arc::new(FaultyKeys {
                inner: c.ports.keys.clone(),
                plan,
            });
        }
        c
    }

    /// What the test reads with: the same stack, never faulty.
    fn engine(&self, tenant: &str) -> Engine {
        let mut c = Cloud::new(&self.sdks[&Role::Harness], &self.names);
        c.ports.clock = self.clock.clone();
        Engine::new(c.ports, TenantId::new(tenant).unwrap())
    }

    /// The queue as the harness sees it (to look at, not to poll for a function).
    fn queue(&self, which: Which) -> Arc<dyn Queue> {
        self.queue_as(which, Role::Harness)
    }

    /// The queue as `role` reaches it.
    fn queue_as(&self, which: Which, role: Role) -> Arc<dyn Queue> {
        let c = self.instance(role);
        match which {
            Which::Backups => c.backups,
            Which::Transfers => c.transfers,
        }
    }

    fn request_id(&self) -> String {
        format!("req-{}", self.invocations.fetch_add(1, Ordering::SeqCst))
    }

    fn timed(&self, t: Duration) {
        let mut h = self.handler_time.lock().unwrap();
        h.0 += t;
        h.1 += 1;
    }

    /// A `folder` task of `tenant` over a folder holding `files`, backed up daily at
    /// `hour`. (Added on the machine itself, as the command line does: the API adds only
    /// connectors that reach their source over the network.)
    async fn folder_task(&self, tenant: &str, task: &str, hour: u8, files: &[(&str, Vec<u8>)]) {
        let path = self.dir.path().join(format!("{tenant}-{task}"));
        std::fs::create_dir_all(&path).unwrap();
        for (name, data) in files {
            write(&path, name, data);
        }
        let e = self.engine(tenant);
        e.add_task(
            NewTask {
                name: TaskId::new(task).unwrap(),
                source: folder::FolderSettings::new(&path).unwrap().to_source(),
                secret: None,
                backup_hour: Some(hour),
            },
            &connectors::BuiltIn,
        )
        .await
        .unwrap();
    }

    /// The scheduler function, invoked by its EventBridge schedule.
    async fn tick(&self) -> ports::Result<jobs::TickReport> {
        let cloud = self.instance(Role::Scheduler);
        let ctx = cloud.jobs(&self.request_id(), None);
        let t0 = Instant::now();
        let r = jobs::tick(&ctx).await;
        self.timed(t0.elapsed());
        r
    }

    /// One poll of Lambda's SQS event source: receive a batch, invoke the function with it
    /// as an SQS event, delete the messages it did not report as failed. Returns how many
    /// messages were delivered and how many failed.
    async fn invoke_once(&self, which: Which, visibility: Duration) -> (usize, usize) {
        let (bodies, failed) = self
            .invoke_batch(which, visibility, ports::QUEUE_MAX_BATCH)
            .await;
        (bodies.len(), failed)
    }

    /// As [`Stack::invoke_once`] with batches of at most `max` (the template's fetcher
    /// takes one message per invocation); returns the bodies delivered.
    async fn invoke_batch(
        &self,
        which: Which,
        visibility: Duration,
        max: usize,
    ) -> (Vec<String>, usize) {
        // Lambda polls the queue with the function's own role.
        let role = which.role();
        let queue = self.queue_as(which, role);
        let msgs = queue.receive(max, visibility).await.unwrap();
        if msgs.is_empty() {
            return (Vec::new(), 0);
        }
        let (event, receipts) = sqs_event(&msgs, &self.names, which);
        let cloud = self.instance(role);
        let deadline = SystemTime::now() + Duration::from_secs(900);
        let ctx = cloud.jobs(&self.request_id(), Some(deadline));
        let t0 = Instant::now();
        let resp = lambda_wiring::handle_sqs(&ctx, event).await;
        self.timed(t0.elapsed());
        let failed: HashSet<String> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        for (id, receipt) in receipts {
            if !failed.contains(&id) {
                queue.delete(&receipt).await.unwrap();
            }
        }
        (msgs.into_iter().map(|m| m.body).collect(), failed.len())
    }

    /// Invokes the function until its queue is empty, waiting out the visibility timeout
    /// of failed messages so that SQS delivers them again.
    async fn run_queue(&self, which: Which, visibility: Duration) -> (usize, usize) {
        let (mut delivered, mut failed, mut waiting) = (0, 0, 0);
        for _ in 0..200 {
            let (n, f) = self.invoke_once(which, visibility).await;
            delivered += n;
            failed += f;
            waiting += f;
            if n == 0 {
                if waiting == 0 {
                    return (delivered, failed);
                }
                waiting = 0;
                tokio::time::sleep(visibility + Duration::from_millis(300)).await;
            }
        }
        panic!("the queue did not empty: {delivered} delivered, {failed} failed");
    }

    /// The API function, invoked by API Gateway (HTTP API, JWT authorizer) with `claims`.
    async fn api(
        &self,
        method: &str,
        target: &str,
        body: Option<Value>,
        tenant: Option<&str>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut context = json!({
            "accountId": "123456789012",
            "apiId": "lifeboat",
            "domainName": "api.lifeboat.example",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": "e2e"
            },
            "requestId": self.request_id(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:02:05:00 +0000",
            "timeEpoch": 1795572300000u64
        });
        if let Some(t) = tenant {
            context["authorizer"] = json!({"jwt": {"claims": {"sub": "user-1", TENANT_CLAIM: t}}});
        }
        let event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": query,
            "headers": {"host": "api.lifeboat.example", "content-type": "application/json"},
            "requestContext": context,
            "body": body.map(|b| b.to_string()),
            "isBase64Encoded": false
        });
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        let router = api::router(self.instance(Role::Api).api());
        let t0 = Instant::now();
        let resp = router.oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        self.timed(t0.elapsed());
        (parts.status, parts.headers, bytes)
    }

    async fn api_json(
        &self,
        method: &str,
        target: &str,
        body: Option<Value>,
        tenant: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self.api(method, target, body, tenant).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn snapshot_count(&self, tenant: &str, task: &str) -> usize {
        let e = self.engine(tenant);
        let t = e.task(task).await.unwrap();
        e.snapshots(&t).await.unwrap().len()
    }

    async fn verify_clean(&self, tenant: &str, task: &str) {
        let e = self.engine(tenant);
        let t = e.task(task).await.unwrap();
        let report = e.verify(&t, &NoProgress).await.unwrap();
        assert!(report.is_ok(), "{tenant}/{task}: {:?}", report.damage);
        assert!(report.packs > 0);
    }
}

fn write(folder: &Path, name: &str, data: &[u8]) {
    let p = folder.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Bytes that do not compress (xorshift), so that sizes mean what they say.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

static MESSAGE_IDS: AtomicU64 = AtomicU64::new(0);

/// The SQS event Lambda's event source mapping would send for `msgs`, as Lambda sends it
/// (JSON), and each record's message id with its receipt handle. The queue port does not
/// expose SQS's own message ids, so each delivery gets a fresh one, as a redelivery would.
fn sqs_event(
    msgs: &[QueueMessage],
    names: &Names,
    which: Which,
) -> (SqsEvent, Vec<(String, String)>) {
    let queue = match which {
        Which::Backups => &names.backup_queue,
        Which::Transfers => &names.transfer_queue,
    };
    let queue_name = queue.rsplit('/').next().unwrap_or(queue);
    let mut receipts = Vec::new();
    let records: Vec<Value> = msgs
        .iter()
        .map(|m| {
            let id = format!(
                "0b5c5e5a-0000-4000-8000-{:012x}",
                MESSAGE_IDS.fetch_add(1, Ordering::SeqCst)
            );
            receipts.push((id.clone(), m.receipt.clone()));
            json!({
                "messageId": id,
                "receiptHandle": m.receipt,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": "1795572300000",
                    "SenderId": "AROAEXAMPLE:scheduler",
                    "ApproximateFirstReceiveTimestamp": "1795572300000"
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue_name}"),
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
    assert_eq!(event.records.len(), msgs.len());
    (event, receipts)
}

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(1);

fn docs_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("report.txt", b"quarterly numbers: all good".to_vec()),
        ("plans/2027.md", b"# Plans\n\nShip it.".to_vec()),
        ("photo.bin", noise(1, 300 * 1024)),
    ]
}

impl Drop for Stack {
    /// Writes what each function did on AWS, for `infra/iam_check.py`, with the names that
    /// tie the stack's resources to the template's (a failed test's list is written too:
    /// what it did up to the failure was done).
    fn drop(&mut self) {
        let ops: Vec<Value> = self
            .meter
            .ops
            .lock()
            .unwrap()
            .iter()
            .filter(|(role, ..)| *role != Role::Harness)
            .map(|(role, service, op, resource)| json!([role.name(), service, op, resource]))
            .collect();
        let names = json!({
            "CatalogTable": self.names.table,
            "VaultBucket": self.names.bucket,
            "VaultKey": self.names.kms_key,
            "BackupQueue": self.names.backup_queue,
            "TransferQueue": self.names.transfer_queue,
            "BackupDeadLetters": self.backup_dlq,
            "TransferDeadLetters": self.transfer_dlq,
            "EventBus": self.names.event_bus,
        });
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aws-ops");
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(
                dir.join(format!("{}.json", self.prefix)),
                json!({"names": names, "ops": ops}).to_string(),
            )
        });
        if let Err(e) = written {
            eprintln!(
                "the operations of {} could not be written: {e}",
                self.prefix
            );
        }
    }
}

/// A stack where acme's `docs` task has been backed up by its daily schedule.
async fn backed_up(name: &str) -> Stack {
    let s = Stack::new(name).await;
    s.folder_task("acme", "docs", 2, &docs_files()).await;
    let tick = s.tick().await.unwrap();
    assert_eq!((tick.queued, tick.failed), (1, 0), "{tick:?}");
    // The folder's account is recorded at its first listing, not when the task is added:
    // the tick queues the task's listing job, which queues the folder's backup.
    assert_eq!(tick.jobs, 1, "{tick:?}");
    let (bodies, failed) = s.invoke_batch(Which::Backups, LONG, 1).await;
    assert_eq!((bodies.len(), failed), (1, 0));
    assert_eq!(job_account(&bodies[0]), None, "the listing job");
    let (bodies, failed) = s.invoke_batch(Which::Backups, LONG, 1).await;
    assert_eq!((bodies.len(), failed), (1, 0));
    assert_eq!(job_account(&bodies[0]).as_deref(), Some(folder::ACCOUNT));
    assert_eq!(s.invoke_once(Which::Backups, LONG).await, (0, 0));
    s
}

// ---------------------------------------------------------------------------------------

/// Schedule → SQS → fetcher → S3 and DynamoDB → API lists and browses → export through the
/// transfer queue → download; a restore to a local folder's source is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_is_listed_browsed_and_exported_through_the_api() {
    let s = backed_up("happy").await;
    let acme = Some("acme");

    // S3 holds the packs, DynamoDB the snapshot; a second tick the same day queues nothing.
    let packs = s
        .instance(Role::Harness)
        .ports
        .store
        .list_all(&ObjectKey::kind_prefix(
            &TenantId::new("acme").unwrap(),
            &TaskId::new("docs").unwrap(),
            vault::PACK_KIND,
        ))
        .await
        .unwrap();
    assert!(!packs.is_empty());
    assert_eq!(s.snapshot_count("acme", "docs").await, 1);
    assert_eq!(s.tick().await.unwrap().queued, 0);
    assert_eq!(s.invoke_once(Which::Backups, LONG).await, (0, 0));
    // The day's shard markers expire (DynamoDB's time to live) three days on; nothing
    // else the run wrote does.
    let expiring = s.meter.expiring.lock().unwrap().clone();
    let in_3_days = (at(25, 2, 5) + chrono::Duration::days(3)).timestamp() as u64;
    assert!(expiring.len() >= 3 * 16, "{expiring:?}");
    let markers = catalog_keys::schedule_done("2026-11-25").pk;
    assert!(
        expiring
            .iter()
            .all(|(pk, _, ttl)| *pk == markers && *ttl == in_3_days),
        "{expiring:?}"
    );

    // The API lists the task and its snapshot and browses it.
    let (st, v) = s.api_json("GET", "/v1/tasks", None, acme).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"][0]["name"], "docs");
    assert_eq!(v["tasks"][0]["kind"], "folder");
    let (st, v) = s
        .api_json("GET", "/v1/tasks/docs/accounts", None, acme)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["accounts"][0]["id"], folder::ACCOUNT);
    assert!(v["accounts"][0]["last_error"].is_null(), "{v}");
    let (st, v) = s
        .api_json(
            "GET",
            "/v1/tasks/docs/accounts/folder/snapshots?from=2026-11-25&to=2026-11-25",
            None,
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{v}");
    assert_eq!(snaps[0]["items"], 3);
    let snap = snaps[0]["id"].as_str().unwrap().to_string();
    let (_, v) = s
        .api_json(
            "GET",
            "/v1/tasks/docs/accounts/folder/snapshots?from=2026-11-26",
            None,
            acme,
        )
        .await;
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 0);
    let (st, v) = s
        .api_json(
            "GET",
            &format!("/v1/tasks/docs/accounts/folder/snapshots/{snap}/items"),
            None,
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut names: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().into(),
                i["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("photo.bin", "item"),
            ("plans", "folder"),
            ("report.txt", "item")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let (st, v) = s
        .api_json(
            "GET",
            "/v1/tasks/docs/accounts/folder/snapshots/latest/items?path=plans",
            None,
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"][0]["name"], "2027.md");
    assert_eq!(v["items"][0]["size"], 17);
    let (st, v) = s
        .api_json("GET", "/v1/billing/usage?month=2026-11", None, acme)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["protected_accounts"], 1);

    // A local folder has no connector to restore into: refused, nothing queued.
    let (st, v) = s
        .api_json(
            "POST",
            "/v1/tasks/docs/restores",
            Some(json!({"account": "folder", "snapshot": "latest"})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("export"),
        "{v}"
    );
    assert_eq!(s.invoke_once(Which::Transfers, LONG).await, (0, 0));
    // A path not in the snapshot is refused at once.
    let (st, _) = s
        .api_json(
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": "folder", "snapshot": snap, "include": ["nope.txt"]})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // An export: queued, run by the restorer from the transfer queue, then downloadable.
    let (st, v) = s
        .api_json(
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": "folder", "snapshot": snap})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "queued");
    let job = v["id"].as_str().unwrap().to_string();
    assert_eq!(s.invoke_once(Which::Backups, LONG).await, (0, 0));
    assert_eq!(s.run_queue(Which::Transfers, LONG).await, (1, 0));
    let (st, v) = s
        .api_json("GET", &format!("/v1/jobs/{job}"), None, acme)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "done", "{v}");
    let link = v["download"].as_str().unwrap().to_string();
    let (st, headers, body) = s.api("GET", &link, None, acme).await;
    let zip = if st.is_redirection() {
        // A presigned S3 link: fetched without the API, as a browser would.
        let url = headers["location"].to_str().unwrap().to_string();
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{url}");
        r.bytes().await.unwrap().to_vec()
    } else {
        assert_eq!(st, StatusCode::OK);
        body.to_vec()
    };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    for (name, data) in docs_files() {
        let mut f = archive
            .by_name(name)
            .unwrap_or_else(|_| panic!("{name} is not in the export"));
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, data, "{name}");
    }

    // A file changes and an on-demand backup stores it in a second small pack; the backup
    // hour moves (a transaction that also deletes the old schedule entry); a repack without
    // grace runs as a job on the restorer, merging the small packs and deleting them: the
    // vault still verifies clean.
    // Ten of them, so that the fetcher also compacts the account's index (more than
    // vault::COMPACT_FROM segments), deleting the segments it merged.
    for day in 0..10 {
        // Past the cooldown between two on-demand backups of one task.
        s.clock.advance(chrono::Duration::minutes(16));
        write(
            &s.dir.path().join("acme-docs"),
            "notes/changed.txt",
            format!("changed after the first backup, {day} times").as_bytes(),
        );
        let (st, v) = s
            .api_json("POST", "/v1/tasks/docs/backups", Some(json!({})), acme)
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        let (done, failed) = s.run_queue(Which::Backups, LONG).await;
        assert_eq!(failed, 0);
        assert!(done >= 1, "the on-demand backup ran");
    }
    let compacted = s
        .meter
        .ops
        .lock()
        .unwrap()
        .iter()
        .any(|(role, svc, op, res)| {
            *role == Role::Fetcher && svc == "s3" && op == "DeleteObject" && res.contains("/idx/")
        });
    assert!(compacted, "the fetcher never compacted the index");
    let (st, v) = s
        .api_json(
            "PUT",
            "/v1/tasks/docs/schedule",
            Some(json!({"backup_hour_utc": 5})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s
        .api_json(
            "POST",
            "/v1/tasks/docs/prunes",
            Some(json!({"repack": true, "grace_hours": 0})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = v["id"].as_str().unwrap().to_string();
    assert_eq!(s.run_queue(Which::Transfers, LONG).await, (1, 0));
    let (st, v) = s
        .api_json("GET", &format!("/v1/jobs/{job}"), None, acme)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "done", "{v}");
    s.verify_clean("acme", "docs").await;
    assert!(
        s.meter.calls("s3", "DeleteObject") >= 1,
        "the repack deleted no pack"
    );
    assert!(s
        .queue(Which::Backups)
        .dead_letters()
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .queue(Which::Transfers)
        .dead_letters()
        .await
        .unwrap()
        .is_empty());
}

/// S3, DynamoDB and KMS throttle and fail (some writes failing after taking effect): the
/// failed messages come back through SQS's visibility timeout and every backup finishes,
/// once, with no half-made snapshot ever visible and the vault verifying clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_are_retried_through_sqs_and_every_backup_completes_once() {
    for every in [4, 7] {
        let s = Stack::new(&format!("faults{every}")).await;
        let tasks = ["alpha", "beta"];
        for (i, t) in tasks.iter().enumerate() {
            s.folder_task(
                "acme",
                t,
                2,
                &[
                    ("a.txt", format!("acme {t}").into_bytes()),
                    ("b.bin", noise(i as u64, 40 * 1024)),
                ],
            )
            .await;
        }
        let plan = FaultPlan::new(every, 10);
        *s.faults.lock().unwrap() = Some(plan.clone());
        let mut done = false;
        // The schedule ticks every 15 minutes; SQS redelivers what failed.
        for round in 0..16 {
            s.clock
                .set(at(25, 2, 5) + chrono::Duration::minutes(15 * round));
            let _ = s.tick().await;
            loop {
                let (n, _) = s.invoke_once(Which::Backups, SHORT).await;
                // Whatever is visible is whole: at most one snapshot, and it browses.
                for t in tasks {
                    let e = s.engine("acme");
                    let task = e.task(t).await.unwrap();
                    let snaps = e.snapshots(&task).await.unwrap();
                    assert!(
                        snaps.len() <= 1,
                        "every {every}: {t}: {} snapshots",
                        snaps.len()
                    );
                    for snap in snaps {
                        let items = e.list(&task, &snap, &ItemPath::root()).await.unwrap();
                        assert_eq!(items.len(), 2, "every {every}: {t}");
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let mut finished = 0;
            for t in tasks {
                let state = jobs::account_state(
                    &s.engine("acme").ports().clone(),
                    &TenantId::new("acme").unwrap(),
                    &TaskId::new(t).unwrap(),
                    &AccountId::new(folder::ACCOUNT).unwrap(),
                )
                .await
                .unwrap();
                if state.and_then(|st| st.day_done).as_deref() == Some("2026-11-25") {
                    finished += 1;
                }
            }
            if finished == tasks.len() && s.invoke_once(Which::Backups, SHORT).await == (0, 0) {
                done = true;
                break;
            }
            tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
        }
        assert!(done, "every {every}: the backups did not finish");
        assert!(
            plan.injected() >= 4,
            "every {every}: only {} faults",
            plan.injected()
        );
        assert!(s
            .queue(Which::Backups)
            .dead_letters()
            .await
            .unwrap()
            .is_empty());
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(s.snapshot_count("acme", t).await, 1, "every {every}: {t}");
            s.verify_clean("acme", t).await;
            let e = s.engine("acme");
            let task = e.task(t).await.unwrap();
            let snap = e.snapshots(&task).await.unwrap().pop().unwrap();
            let items = e.list(&task, &snap, &ItemPath::root()).await.unwrap();
            let sizes: Vec<u64> = items.iter().map(|i| i.size).collect();
            assert_eq!(
                sizes,
                [format!("acme {t}").len() as u64, 40 * 1024],
                "every {every}: {t} ({i})"
            );
        }
    }
}

/// A fetcher killed in the middle of a backup (after a pack went up, before the snapshot
/// was committed) leaves its message undeleted; SQS delivers it again once the visibility
/// timeout (the template's 90 minutes, past the dead run's 20-minute lease) has passed,
/// and the backup finishes with exactly one snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fetcher_is_redelivered_and_finishes_with_one_snapshot() {
    let s = Stack::new("killed").await;
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("big/{i:02}.bin"), noise(100 + i, 1024 * 1024)))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    s.folder_task("acme", "media", 2, &files).await;
    assert_eq!(s.tick().await.unwrap().queued, 1);
    // The task's listing job records the folder's account and queues its backup.
    let (bodies, failed) = s.invoke_batch(Which::Backups, LONG, 1).await;
    assert_eq!((bodies.len(), failed), (1, 0));
    assert_eq!(job_account(&bodies[0]), None, "the listing job");

    let visibility = Duration::from_secs(2);
    let queue = s.queue_as(Which::Backups, Role::Fetcher);
    let msgs = queue.receive(1, visibility).await.unwrap();
    assert_eq!(msgs.len(), 1);
    let (event, _) = sqs_event(&msgs, &s.names, Which::Backups);
    let cloud = s.instance(Role::Fetcher);
    let ctx = cloud.jobs(
        "req-killed",
        Some(SystemTime::now() + Duration::from_secs(900)),
    );
    let run = tokio::spawn(async move { lambda_wiring::handle_sqs(&ctx, event).await });
    tokio::time::timeout(Duration::from_secs(60), s.meter.pack_put.notified())
        .await
        .expect("no pack was uploaded");
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    assert!(s.meter.calls("s3", "PutObject") >= 1);
    assert_eq!(
        s.snapshot_count("acme", "media").await,
        0,
        "the run was killed before its commit"
    );

    // The dead run's lease has expired by the time SQS delivers the message again.
    s.clock.advance(chrono::Duration::minutes(90));
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    let (delivered, failed) = s.run_queue(Which::Backups, visibility).await;
    assert_eq!((delivered, failed), (1, 0));
    assert_eq!(s.snapshot_count("acme", "media").await, 1);
    s.verify_clean("acme", "media").await;
    let e = s.engine("acme");
    let task = e.task("media").await.unwrap();
    let snap = e.snapshots(&task).await.unwrap().pop().unwrap();
    assert_eq!(snap.stats.items, 12);
    // A late duplicate of the day's job finds the day done.
    let dup = msgs[0].body.clone();
    queue.send_batch(&[dup]).await.unwrap();
    assert_eq!(s.run_queue(Which::Backups, visibility).await, (1, 0));
    assert_eq!(s.snapshot_count("acme", "media").await, 1);
    assert!(queue.dead_letters().await.unwrap().is_empty());
}

/// The tenant comes from the authorizer's verified claims only: another tenant's claims
/// on acme's ids find nothing (404, or an empty list), and a request without claims (or
/// with a claim that names no valid tenant) is refused with 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_claims_see_nothing_and_no_claims_are_refused() {
    let s = backed_up("tenants").await;
    let (st, v) = s
        .api_json(
            "POST",
            "/v1/tasks/docs/exports",
            Some(json!({"account": "folder", "snapshot": "latest"})),
            Some("acme"),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = v["id"].as_str().unwrap().to_string();
    let snap = s.engine("acme");
    let task = snap.task("docs").await.unwrap();
    let snap = snap
        .snapshots(&task)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .id
        .to_string();

    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/tasks/docs".into(), None),
        (
            "PUT",
            "/v1/tasks/docs/schedule".into(),
            Some(json!({"backup_hour_utc": 3})),
        ),
        ("GET", "/v1/tasks/docs/accounts".into(), None),
        ("POST", "/v1/tasks/docs/backups".into(), Some(json!({}))),
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
        ("GET", "/v1/tasks/docs/search?subject=x".into(), None),
        (
            "POST",
            "/v1/tasks/docs/restores".into(),
            Some(json!({"account": "folder", "snapshot": snap})),
        ),
        (
            "POST",
            "/v1/tasks/docs/exports".into(),
            Some(json!({"account": "folder", "snapshot": snap})),
        ),
        ("GET", format!("/v1/jobs/{job}"), None),
        ("GET", format!("/v1/jobs/{job}/download"), None),
    ];
    for (method, path, body) in &routes {
        let (st, v) = s.api_json(method, path, body.clone(), Some("globex")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains("report.txt") && !text.contains(&snap),
            "{method} {path}: {v}"
        );
    }
    let (st, v) = s.api_json("GET", "/v1/tasks", None, Some("globex")).await;
    assert_eq!(
        (st, v["tasks"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    let (st, v) = s
        .api_json("GET", "/v1/billing/usage", None, Some("globex"))
        .await;
    assert_eq!(
        (st, v["protected_accounts"].as_u64()),
        (StatusCode::OK, Some(0))
    );
    // Nothing globex asked for was queued or changed.
    assert_eq!(s.invoke_once(Which::Backups, LONG).await, (0, 0));
    let (_, v) = s
        .api_json("GET", "/v1/tasks/docs", None, Some("acme"))
        .await;
    assert_eq!(v["backup_hour_utc"], 2);

    for (method, path, body) in routes
        .iter()
        .chain([("GET", "/v1/tasks".to_string(), None)].iter())
    {
        for claim in [None, Some("../acme")] {
            let (st, v) = s.api_json(method, path, body.clone(), claim).await;
            assert_eq!(
                st,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {claim:?}: {v}"
            );
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    let (st, _) = s.api_json("GET", "/health", None, None).await;
    assert_eq!(st, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Microsoft 365 through the Graph simulator.

/// The Graph simulator, in process, and a client of its own to check what restores did.
struct Graph {
    sim: graphsim::Running,
    http: reqwest::Client,
    token: String,
}

impl Graph {
    async fn start(cfg: graphsim::Config) -> Graph {
        let sim = graphsim::spawn(cfg).await.expect("the simulator starts");
        let http = reqwest::Client::new();
        let token = sim.admin_token();
        Graph { sim, http, token }
    }

    /// A new task's request body: the simulator's endpoints, the app's id and secret.
    fn new_task(&self, name: &str, hour: u8) -> Value {
        let c = &self.sim.shared.cfg;
        json!({
            "name": name,
            "source": "m365",
            "settings": {
                "tenant_id": c.tenant_id,
                "client_id": c.client_id,
                "graph_url": self.sim.base_url,
                "login_url": self.sim.base_url,
            },
            "secret": c.client_secret,
            "backup_hour_utc": hour,
        })
    }

    fn upns(&self) -> Vec<String> {
        self.sim
            .shared
            .sim()
            .users
            .iter()
            .map(|u| u.upn.clone())
            .collect()
    }

    async fn get(&self, path: &str) -> Value {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.sim.graph_url())
        };
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .header("Prefer", "IdType=\"ImmutableId\"")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Every item of a collection, following next links.
    async fn all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(u) = next {
            let page = self.get(&u).await;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            next = page["@odata.nextLink"].as_str().map(str::to_string);
        }
        out
    }

    /// A day of use: new mail, changed files, … (`/_sim/advance-day`).
    async fn advance_day(&self) {
        let r = self
            .http
            .post(format!("{}/_sim/advance-day", self.sim.base_url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// The files of a user's OneDrive: path below the root, and content.
    fn onedrive(&self, upn: &str) -> Vec<(String, Vec<u8>)> {
        let sim = self.sim.shared.sim();
        let user = sim.users.iter().find(|u| u.upn == upn).unwrap();
        let drive = &sim.drives[&user.drive_id];
        let mut out = Vec::new();
        for item in drive.items.values() {
            let Some(content) = item.content.as_ref().filter(|_| !item.is_folder) else {
                continue;
            };
            let mut parts = vec![item.name.clone()];
            let mut parent = item.parent;
            while let Some(p) = parent {
                let it = &drive.items[&p];
                if it.parent.is_some() {
                    parts.push(it.name.clone());
                }
                parent = it.parent;
            }
            parts.reverse();
            out.push((parts.join("/"), content.range(0, content.len())));
        }
        out
    }
}

/// A small organisation: users with mail (nested folders, attachments), contacts,
/// calendars, To Do and OneDrive, and SharePoint sites.
fn small_org(large_file_bytes: u64) -> graphsim::Config {
    graphsim::Config {
        users: 2,
        domains: 1,
        messages_per_folder: 3,
        folder_depth: 1,
        attachment_every: 3,
        large_attachment_bytes: 120_000,
        contacts_per_user: 3,
        events_per_user: 3,
        tasks_per_list: 2,
        files_per_user: 5,
        large_file_bytes,
        sites: 1,
        ..graphsim::Config::default()
    }
}

fn job_account(body: &str) -> Option<String> {
    match domain::JobEnvelope::decode(body).ok()?.job {
        domain::JobKind::Backup(b) => b.account.map(|a| a.to_string()),
        _ => None,
    }
}

/// Microsoft 365 end to end: a task added through the API has its first backup queued at
/// once (the fetcher lists the organisation's users and sites and fans out, one job per
/// account); the next day the scheduler's tick queues one job per known account in SQS
/// batches; S3 and DynamoDB hold the snapshots, which the API lists and browses; a restore
/// goes back into the simulator (a `Lifeboat Restore <ts>` folder, checked through Graph)
/// and an export of a OneDrive is streamed to S3, downloaded by its presigned link and
/// checked byte for byte. Every backup, restore and
/// export is announced on EventBridge, without personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_m365_task_is_backed_up_by_schedule_restored_into_graph_and_exported() {
    let s = Stack::new("m365").await;
    let graph = Graph::start(small_org(3 << 20)).await;
    let acme = Some("acme");

    // 01:00: the task is added; its first backup is queued at once.
    s.clock.set(at(25, 1, 0));
    let (st, v) = s
        .api_json("POST", "/v1/tasks", Some(graph.new_task("m365", 2)), acme)
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "m365");
    assert_eq!(v["first_backup_queued"], true, "{v}");
    let secret = graph.sim.shared.cfg.client_secret.clone();
    assert!(!v.to_string().contains(&secret));
    // One listing job, which fans out into one job per account.
    let (bodies, failed) = s.invoke_batch(Which::Backups, LONG, 1).await;
    assert_eq!((bodies.len(), failed), (1, 0));
    assert_eq!(job_account(&bodies[0]), None);
    let (delivered, failed) = s.run_queue(Which::Backups, LONG).await;
    assert_eq!(failed, 0);
    let (st, v) = s
        .api_json("GET", "/v1/tasks/m365/accounts", None, acme)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let accounts: Vec<String> = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let upns = graph.upns();
    assert!(upns.iter().all(|u| accounts.contains(u)), "{accounts:?}");
    let sites = accounts.iter().filter(|a| !a.contains('@')).count();
    assert!(sites >= 1, "a SharePoint site is an account: {accounts:?}");
    assert_eq!(delivered, accounts.len());
    for a in v["accounts"].as_array().unwrap() {
        assert!(a["last_snapshot"].is_string(), "{a}");
        assert!(a["last_error"].is_null(), "{a}");
    }

    // 02:05, the task's hour: today's backup is done, nothing is queued again.
    s.clock.set(at(25, 2, 5));
    let tick = s.tick().await.unwrap();
    assert_eq!((tick.queued, tick.already), (0, 1), "{tick:?}");
    assert_eq!(s.invoke_once(Which::Backups, LONG).await, (0, 0));

    // Day 2: a day of changes; the tick queues one job per account and a listing job, ten
    // to an SQS request.
    graph.advance_day().await;
    s.clock.set(at(26, 2, 5));
    let batches = s.meter.calls("sqs", "SendMessageBatch");
    let tick = s.tick().await.unwrap();
    assert_eq!((tick.queued, tick.failed), (1, 0), "{tick:?}");
    assert_eq!(tick.jobs as usize, accounts.len() + 1, "{tick:?}");
    assert_eq!(
        s.meter.calls("sqs", "SendMessageBatch") - batches,
        (accounts.len() as u64 + 1).div_ceil(10)
    );
    let (delivered, failed) = s.run_queue(Which::Backups, LONG).await;
    assert_eq!((delivered, failed), (accounts.len() + 1, 0));

    // The API lists and browses the snapshots (of the user with the largest OneDrive).
    let upn = upns
        .iter()
        .max_by_key(|u| graph.onedrive(u).iter().map(|f| f.1.len()).sum::<usize>())
        .unwrap()
        .clone();
    let (st, v) = s
        .api_json(
            "GET",
            &format!("/v1/tasks/m365/accounts/{upn}/snapshots"),
            None,
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{v}");
    assert!(
        snaps.iter().all(|x| x["items"].as_u64().unwrap() > 0),
        "{v}"
    );
    let (st, v) = s
        .api_json(
            "GET",
            &format!("/v1/tasks/m365/accounts/{upn}/snapshots/latest/items"),
            None,
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let top: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for service in ["Mail", "OneDrive", "Contacts", "Calendar"] {
        assert!(top.contains(&service), "{top:?}");
    }
    let (st, v) = s
        .api_json(
            "GET",
            &format!("/v1/tasks/m365/accounts/{upn}/snapshots/latest/items?path=Mail/Inbox"),
            None,
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "item"),
        "{v}"
    );

    // A restore of the inbox, into a new `Lifeboat Restore <ts>` folder of the mailbox.
    s.clock.set(at(26, 9, 30));
    let (st, v) = s
        .api_json(
            "POST",
            "/v1/tasks/m365/restores",
            Some(json!({"account": upn, "snapshot": "latest", "include": ["Mail/Inbox"]})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let restore_job = v["id"].as_str().unwrap().to_string();
    assert_eq!(s.run_queue(Which::Transfers, LONG).await, (1, 0));
    let (_, v) = s
        .api_json("GET", &format!("/v1/jobs/{restore_job}"), None, acme)
        .await;
    assert_eq!(v["state"], "done", "{v}");
    let restored_items = v["report"]["items"].as_u64().unwrap();
    assert!(restored_items > 0, "{v}");
    let label = domain::restore_label(domain::RESTORE_PREFIX, at(26, 9, 30));
    let folders = graph
        .all(&format!("/users/{upn}/mailFolders?$top=100"))
        .await;
    let restored = folders
        .iter()
        .find(|f| f["displayName"] == label.as_str())
        .unwrap_or_else(|| panic!("no folder {label}"));
    let inner = graph
        .all(&format!(
            "/users/{upn}/mailFolders/{}/childFolders",
            restored["id"].as_str().unwrap()
        ))
        .await;
    let inbox = inner
        .iter()
        .find(|f| f["displayName"] == "Inbox")
        .expect("Inbox inside the restore folder");
    let subjects = |msgs: &[Value]| {
        let mut v: Vec<String> = msgs
            .iter()
            .map(|m| m["subject"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    };
    let got = graph
        .all(&format!(
            "/users/{upn}/mailFolders/{}/messages?$top=100",
            inbox["id"].as_str().unwrap()
        ))
        .await;
    let orig = graph
        .all(&format!("/users/{upn}/mailFolders/inbox/messages?$top=100"))
        .await;
    assert!(!orig.is_empty());
    assert_eq!(subjects(&got), subjects(&orig));

    // An export of the OneDrive.
    let parts_before = s.meter.calls("s3", "UploadPart");
    let (st, v) = s
        .api_json(
            "POST",
            "/v1/tasks/m365/exports",
            Some(json!({"account": upn, "snapshot": "latest", "include": ["OneDrive"]})),
            acme,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let export_job = v["id"].as_str().unwrap().to_string();
    assert_eq!(s.run_queue(Which::Transfers, LONG).await, (1, 0));
    let (_, v) = s
        .api_json("GET", &format!("/v1/jobs/{export_job}"), None, acme)
        .await;
    assert_eq!(v["state"], "done", "{v}");
    let link = v["download"].as_str().unwrap().to_string();
    let (st, headers, _) = s.api("GET", &link, None, acme).await;
    assert!(st.is_redirection(), "{st}");
    let url = headers["location"].to_str().unwrap().to_string();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let zip = r.bytes().await.unwrap().to_vec();
    // The zip went up through the streamed write: in parts when larger than one (the
    // multipart path itself is run by the conformance suite on moto), else in one put.
    let parts = zip.len().div_ceil(ports::STREAM_PART_BYTES) as u64;
    let multipart = u64::from(parts > 1);
    assert_eq!(s.meter.calls("s3", "CreateMultipartUpload"), multipart);
    assert_eq!(s.meter.calls("s3", "CompleteMultipartUpload"), multipart);
    assert_eq!(
        s.meter.calls("s3", "UploadPart") - parts_before,
        multipart * parts
    );
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let files = graph.onedrive(&upn);
    assert!(!files.is_empty());
    for (path, data) in files {
        let name = names
            .iter()
            .find(|n| n.ends_with(&format!("/{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the export: {names:?}"))
            .clone();
        let mut f = archive.by_name(&name).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert!(
            got == data,
            "{path}: {} bytes, expected {}",
            got.len(),
            data.len()
        );
    }

    // EventBridge got one event per account's backup each day, then the restore's and the
    // export's; ids and counts only.
    let events = s.meter.events.lock().unwrap().clone();
    let of = |t: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["DetailType"] == t)
            .map(|e| serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap())
            .collect()
    };
    let backups = of(jobs::events::BACKUP_COMPLETED);
    assert_eq!(backups.len(), 2 * accounts.len(), "{events:?}");
    assert!(of(jobs::events::BACKUP_FAILED).is_empty());
    assert!(events.iter().all(|e| e["Source"] == "lifeboat"));
    assert!(events
        .iter()
        .all(|e| e["EventBusName"] == s.names.event_bus.as_deref().unwrap()));
    let text = serde_json::to_string(&events).unwrap();
    for a in &accounts {
        assert!(!text.contains(a.as_str()), "{a} in an event");
    }
    let refs: HashSet<&str> = backups
        .iter()
        .map(|d| d["account_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), accounts.len());
    for d in &backups {
        assert_eq!(d["tenant"], "acme");
        assert_eq!(d["task"], "m365");
        assert!(d["items"].as_u64().unwrap() > 0, "{d}");
        assert!(d["snapshot"].is_string());
    }
    let restores = of(jobs::events::RESTORE_COMPLETED);
    assert_eq!(restores.len(), 1);
    assert_eq!(restores[0]["job"], restore_job.as_str());
    assert_eq!(restores[0]["items"], restored_items);
    let exports = of(jobs::events::EXPORT_COMPLETED);
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["job"], export_job.as_str());
    assert!(exports[0]["bytes"].as_u64().unwrap() > 0);

    for which in [Which::Backups, Which::Transfers] {
        assert!(s.queue(which).dead_letters().await.unwrap().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// The cost report.

/// US East (N. Virginia) list prices, in dollars per request (or unit).
mod price {
    /// PUT, COPY, POST and LIST: $0.005 per 1,000.
    pub const S3_WRITE: f64 = 0.005 / 1_000.0;
    /// GET, HEAD and other reads: $0.0004 per 1,000. DELETE is free.
    pub const S3_READ: f64 = 0.0004 / 1_000.0;
    /// On-demand write request unit: $0.625 per million (since November 2024; $1.25 before).
    pub const DDB_WRU: f64 = 0.625 / 1_000_000.0;
    /// On-demand read request unit: $0.125 per million ($0.25 before November 2024).
    pub const DDB_RRU: f64 = 0.125 / 1_000_000.0;
    /// The pre-November-2024 on-demand prices, to show the target holds at them too.
    pub const DDB_WRU_2023: f64 = 1.25 / 1_000_000.0;
    pub const DDB_RRU_2023: f64 = 0.25 / 1_000_000.0;
    /// KMS API requests: $0.03 per 10,000.
    pub const KMS: f64 = 0.03 / 10_000.0;
    /// SQS standard queue requests: $0.40 per million (each 64 KB of payload one request).
    pub const SQS: f64 = 0.40 / 1_000_000.0;
    /// EventBridge custom events: $1.00 per million (we put one event per request).
    pub const EVENTS: f64 = 1.00 / 1_000_000.0;
    /// Lambda on arm64: $0.0000133334 per GB-second, $0.20 per million requests.
    pub const LAMBDA_GB_S: f64 = 0.000_013_333_4;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1_000_000.0;
}

/// What one tallied operation costs, at the given DynamoDB unit prices.
fn cost(service: &str, op: &str, t: &Tally, wru: f64, rru: f64) -> f64 {
    match service {
        "s3" => match op {
            "DeleteObject" | "DeleteObjects" | "AbortMultipartUpload" => 0.0,
            "PutObject"
            | "ListObjectsV2"
            | "CreateBucket"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "CompleteMultipartUpload"
            | "ListMultipartUploads"
            | "Other" => t.calls as f64 * price::S3_WRITE,
            _ => t.calls as f64 * price::S3_READ,
        },
        "dynamodb" => t.write_units * wru + t.read_units * rru,
        "kms" => t.calls as f64 * price::KMS,
        "sqs" => t.calls as f64 * price::SQS,
        "events" => t.calls as f64 * price::EVENTS,
        _ => 0.0,
    }
}

fn diff(after: &Tallies, before: &Tallies) -> Tallies {
    after
        .iter()
        .filter_map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            let d = Tally {
                calls: a.calls - b.calls,
                read_units: a.read_units - b.read_units,
                write_units: a.write_units - b.write_units,
            };
            (d.calls > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// What one fetcher invocation cost: the requests it made and the time it took.
#[derive(Clone, Default)]
struct Spent {
    tallies: Tallies,
    time: Duration,
    invocations: u64,
}

impl Spent {
    fn add(&mut self, t: &Tallies, time: Duration) {
        for (k, v) in t {
            let e = self.tallies.entry(k.clone()).or_default();
            e.calls += v.calls;
            e.read_units += v.read_units;
            e.write_units += v.write_units;
        }
        self.time += time;
        self.invocations += 1;
    }

    fn calls(&self) -> u64 {
        self.tallies.values().map(|t| t.calls).sum()
    }

    /// Dollars, at the current DynamoDB prices (or those before November 2024).
    fn dollars(&self, old_prices: bool) -> f64 {
        let (wru, rru) = if old_prices {
            (price::DDB_WRU_2023, price::DDB_RRU_2023)
        } else {
            (price::DDB_WRU, price::DDB_RRU)
        };
        let requests: f64 = self
            .tallies
            .iter()
            .map(|((service, op), t)| cost(service, op, t, wru, rru))
            .sum();
        let gb = 2048.0 / 1024.0;
        requests
            + self.time.as_secs_f64() * gb * price::LAMBDA_GB_S
            + self.invocations as f64 * price::LAMBDA_REQUEST
    }
}

/// One day of the schedule, the way the template runs it: the scheduler's tick, then the
/// fetcher one message per invocation (its `BatchSize: 1`). Returns what the tick and the
/// listing job cost together (`None`), and what each account's backup cost.
async fn daily_run(s: &Stack) -> BTreeMap<Option<String>, Spent> {
    let mut out: BTreeMap<Option<String>, Spent> = BTreeMap::new();
    let before = s.meter.tallies();
    let t0 = Instant::now();
    let tick = s.tick().await.unwrap();
    assert_eq!((tick.queued, tick.failed), (1, 0), "{tick:?}");
    out.entry(None)
        .or_default()
        .add(&diff(&s.meter.tallies(), &before), t0.elapsed());
    loop {
        let before = s.meter.tallies();
        let t0 = Instant::now();
        let (bodies, failed) = s.invoke_batch(Which::Backups, LONG, 1).await;
        if bodies.is_empty() {
            break;
        }
        assert_eq!(failed, 0);
        out.entry(job_account(&bodies[0]))
            .or_default()
            .add(&diff(&s.meter.tallies(), &before), t0.elapsed());
    }
    out
}

/// The AWS bill of one protected Microsoft 365 account for a month of daily backups,
/// storage excluded, from the requests the e2e run made. Target: at most $0.02 per
/// account-month.
///
/// The run: acme's `m365` task over the Graph simulator (three users, each with mail in
/// nested folders with attachments, contacts, a calendar, To Do lists and a OneDrive; and
/// the SharePoint sites, each an account of its own) is backed up by its daily schedule on
/// day 1 (a full backup), then on day 2 after the simulator's day of use (new and deleted
/// mail, changed files, …). Each day is one scheduler tick, which queues one job per
/// account and one listing job, and one fetcher invocation per message, as the template's
/// `BatchSize: 1` runs them, each a cold Lambda instance (so KMS is asked for the tenant
/// key every time; warm instances would ask less). Every request to S3, DynamoDB, KMS, SQS
/// and EventBridge passes the metering proxy and is counted per service and operation, and
/// per account by the invocation that made it. Lambda's side (receives and deletes by the
/// event source mapping) is counted as our single deletes, at least as many as Lambda's
/// batched ones.
///
/// Pricing (us-east-1 list prices, see [`price`]):
/// - S3: PUT/POST/LIST $0.005 per 1,000, GET/HEAD $0.0004 per 1,000, DELETE free.
/// - DynamoDB on demand: $0.625 per million write units, $0.125 per million read units
///   (the prices since November 2024; the report also shows the total at the earlier
///   $1.25/$0.25). Units are counted from the wire: a write is one unit per KB of item
///   (attribute names plus values), twice that inside `TransactWriteItems`; a strongly
///   consistent read is one unit per 4 KB returned (a `Query` sums its items first); at
///   least one unit per request; a failed conditional write is charged too.
/// - KMS $0.03 per 10,000 requests; SQS $0.40 per million requests; EventBridge $1.00 per
///   million events.
/// - Lambda: the time spent inside the handlers, at 2,048 MB on arm64
///   ($0.0000133334 per GB-second), plus $0.20 per million invocations. Against moto and
///   an in-process Graph simulator on a shared test machine this overstates the time a
///   function waits on AWS and on Graph.
///
/// Per account-month = 30 × the cost of day 2 (an incremental day): the account's own
/// invocation, plus an equal share of the tick and the listing job (a cost of the task,
/// split among its accounts; the tick's scan of the schedule index is a fixed cost of the
/// region, charged here in full to this one task, so the figure is an upper bound).
/// Storage (S3 GB-months, DynamoDB GB-months) is excluded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_report_per_m365_account_month_is_within_target() {
    let s = Stack::new("cost").await;
    let graph = Graph::start(graphsim::Config {
        users: 3,
        messages_per_folder: 5,
        folder_depth: 2,
        files_per_user: 8,
        large_file_bytes: 2 << 20,
        ..small_org(0)
    })
    .await;
    let e = s.engine("acme");
    let settings = graph.new_task("m365", 2)["settings"].clone();
    e.add_task(
        NewTask {
            name: TaskId::new("m365").unwrap(),
            source: SourceConfig::new("m365", settings),
            secret: Some(zeroize::Zeroizing::new(
                graph.sim.shared.cfg.client_secret.clone(),
            )),
            backup_hour: None,
        },
        &connectors::BuiltIn,
    )
    .await
    .unwrap();

    s.clock.set(at(25, 2, 5));
    let day1 = daily_run(&s).await;
    graph.advance_day().await;
    s.clock.set(at(26, 2, 5));
    let day2 = daily_run(&s).await;
    let accounts: Vec<String> = day2.keys().flatten().cloned().collect();
    assert!(accounts.len() >= 4, "{accounts:?}");
    assert_eq!(
        day1.keys().flatten().cloned().collect::<Vec<_>>(),
        accounts,
        "day 1 fanned out to the same accounts"
    );
    let task = e.task("m365").await.unwrap();
    let snaps = e.snapshots(&task).await.unwrap();
    assert_eq!(snaps.len(), 2 * accounts.len());

    let sum = |days: &BTreeMap<Option<String>, Spent>| {
        let mut all = Spent::default();
        for sp in days.values() {
            all.add(&sp.tallies, sp.time);
            all.invocations += sp.invocations - 1;
        }
        all
    };
    let (all1, all2) = (sum(&day1), sum(&day2));
    let mut out = String::new();
    out.push_str(&format!(
        "\nAWS requests of an m365 task's daily backup: {} accounts, {} users (mail, contacts, calendar, To Do, OneDrive) and {} sites (us-east-1 list prices; storage excluded)\n{:<7} {:<24} {:>7} {:>7} {:>9} {:>12}\n",
        accounts.len(),
        accounts.iter().filter(|a| a.contains('@')).count(),
        accounts.iter().filter(|a| !a.contains('@')).count(),
        "service", "operation", "day 1", "day 2", "units d2", "$/month d2"
    ));
    let keys: std::collections::BTreeSet<_> = all1
        .tallies
        .keys()
        .chain(all2.tallies.keys())
        .cloned()
        .collect();
    for (service, op) in &keys {
        let k = (service.clone(), op.clone());
        let t1 = all1.tallies.get(&k).copied().unwrap_or_default();
        let t2 = all2.tallies.get(&k).copied().unwrap_or_default();
        let c = 30.0 * cost(service, op, &t2, price::DDB_WRU, price::DDB_RRU);
        let units = if service == "dynamodb" {
            format!("{:.0}W {:.0}R", t2.write_units, t2.read_units)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{service:<7} {op:<24} {:>7} {:>7} {units:>9} {c:>12.6}\n",
            t1.calls, t2.calls
        ));
    }
    out.push_str(&format!(
        "{:<7} {:<24} {:>7} {:>7} {:>9}\n",
        "lambda",
        "seconds / invocations",
        format!("{:.1}/{}", all1.time.as_secs_f64(), all1.invocations),
        format!("{:.1}/{}", all2.time.as_secs_f64(), all2.invocations),
        ""
    ));

    let shared = day2.get(&None).cloned().unwrap_or_default();
    let share = 30.0 * shared.dollars(false) / accounts.len() as f64;
    out.push_str(&format!(
        "\nper account, day 2 (incremental) x 30, with a 1/{} share of the tick and listing job (${share:.6}/month each)\n{:<36} {:>6} {:>7} {:>9} {:>9} {:>9} {:>11}\n",
        accounts.len(),
        "account", "kind", "items", "requests", "lambda s", "$/month", "$/month '23"
    ));
    let mut worst = 0.0f64;
    let mut total = 0.0;
    let mut total_2023 = 0.0;
    for a in &accounts {
        let sp = &day2[&Some(a.clone())];
        let items = snaps
            .iter()
            .filter(|x| x.account.as_str() == a)
            .map(|x| x.stats.items)
            .max()
            .unwrap_or(0);
        let month = 30.0 * sp.dollars(false) + share;
        let month_2023 =
            30.0 * sp.dollars(true) + 30.0 * shared.dollars(true) / accounts.len() as f64;
        worst = worst.max(month).max(month_2023);
        total += month;
        total_2023 += month_2023;
        let kind = if a.contains('@') { "user" } else { "site" };
        let shown: String = if a.len() > 36 {
            format!("{}…", &a[..35])
        } else {
            a.clone()
        };
        out.push_str(&format!(
            "{shown:<36} {kind:>6} {items:>7} {:>9} {:>9.2} {month:>9.6} {month_2023:>11.6}\n",
            sp.calls(),
            sp.time.as_secs_f64()
        ));
    }
    let avg = total / accounts.len() as f64;
    let avg_2023 = total_2023 / accounts.len() as f64;
    out.push_str(&format!(
        "per account-month (30 incremental days): average ${avg:.4}, highest ${worst:.4}  (target <= $0.02; average at pre-Nov-2024 DynamoDB prices ${avg_2023:.4})\n"
    ));
    println!("{out}");
    // The run made requests of every kind it must have made.
    for (service, op) in [
        ("s3", "PutObject"),
        ("dynamodb", "PutItem"),
        ("dynamodb", "Query"),
        ("kms", "Decrypt"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "ReceiveMessage"),
        ("events", "PutEvents"),
    ] {
        assert!(
            all2.tallies
                .contains_key(&(service.to_string(), op.to_string())),
            "day 2 made no {service} {op}: {out}"
        );
    }
    assert!(avg > 0.0);
    assert!(worst <= 0.02, "over target: {out}");
}
