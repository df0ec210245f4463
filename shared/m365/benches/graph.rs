//! Backup throughput against the Graph simulator at Graph's documented limits: 4 concurrent
//! requests and 10,000 requests per 10 minutes per mailbox, every request taking
//! `BENCH_LATENCY_MS`. Backs up every user of a generated organisation at once (one
//! backup per mailbox, as a deployment runs them), then one simulated day later again, and
//! prints Graph requests per item, items/s and the share of the 4-concurrent ceiling
//! reached. See bench/README.md for the definitions. Exit status 0 when the runs were
//! correct (targets are reported, not enforced).

use domain::TaskId;
use engine::{BackupOptions, Engine, NewTask};
use serde_json::Value;
use std::time::Instant;
use testkit::env::TestEnv;
use zeroize::Zeroizing;

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("graph bench: {name} must be a whole number, got {v:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    /// Every request Graph counts (a batch's inner requests one by one, the envelope too).
    graph: u64,
    /// HTTP round trips: requests outside batches, envelopes included.
    http: u64,
    inner: u64,
    batches: u64,
    /// Requests that touch a mailbox (Outlook), inner ones included.
    outlook: u64,
    throttled: u64,
    max_in_flight: u64,
    /// Slot-seconds the mailboxes spent serving requests.
    busy: f64,
}

impl Counts {
    fn minus(&self, b: &Counts) -> Counts {
        Counts {
            graph: self.graph - b.graph,
            http: self.http - b.http,
            inner: self.inner - b.inner,
            batches: self.batches - b.batches,
            outlook: self.outlook - b.outlook,
            throttled: self.throttled - b.throttled,
            busy: self.busy - b.busy,
            // The most in flight at once, over this round and those before.
            max_in_flight: self.max_in_flight,
        }
    }
}

fn counts(sim: &graphsim::Running) -> Counts {
    let s = graphsim::server::lock(&sim.shared.stats).clone();
    Counts {
        graph: s.requests,
        http: s.requests - s.batch_inner,
        inner: s.batch_inner,
        batches: s.batches,
        outlook: s.mailboxes.values().map(|m| m.requests).sum(),
        throttled: s.by_status.get(&429).copied().unwrap_or(0),
        busy: s.mailboxes.values().map(|m| m.busy_ns as f64 / 1e9).sum(),
        max_in_flight: s
            .mailboxes
            .values()
            .map(|m| m.max_in_flight)
            .max()
            .unwrap_or(0),
    }
}

struct Round {
    /// Graph-counted requests by route.
    routes: Vec<(String, u64)>,
    wall: f64,
    items: u64,
    read: u64,
    errors: u64,
    c: Counts,
}

async fn backup_all(
    engine: &Engine,
    task: &engine::TaskRecord,
    accounts: &[engine::AccountInfo],
    sim: &graphsim::Running,
) -> Round {
    // Counters are read before and after rather than reset: a reset would also restart
    // the simulator's 10-minute windows.
    let before = counts(sim);
    let routes_before = graphsim::server::lock(&sim.shared.stats).by_route.clone();
    let connector = engine
        .connector(task, &m365::Opener)
        .await
        .expect("the connector opens");
    let opts = BackupOptions::default();
    let t0 = Instant::now();
    let runs = futures::future::join_all(accounts.iter().map(|a| async {
        engine
            .backup(task, &a.id, connector.as_ref(), &opts)
            .await
            .and_then(|end| end.into_snapshot())
    }))
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let routes: Vec<(String, u64)> = graphsim::server::lock(&sim.shared.stats)
        .by_route
        .iter()
        .map(|(k, v)| (k.clone(), v - routes_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let mut r = Round {
        routes,
        wall,
        items: 0,
        read: 0,
        errors: 0,
        c: counts(sim).minus(&before),
    };
    for s in runs {
        let s = s.unwrap_or_else(|e| {
            eprintln!("graph bench: a backup failed: {e}");
            std::process::exit(1)
        });
        r.items += s.stats.items;
        r.read += s.stats.items_read;
        r.errors += s.error_count;
    }
    r
}

/// Changes of the day the simulator reports for users: new, edited and moved items
/// (deletions ask nothing of a backup but a delta row).
fn day_changes(report: &Value) -> u64 {
    fn count(v: &Value, key: &str) -> u64 {
        match v {
            Value::Array(a) if !key.contains("deleted") && key != "newFolders" => a.len() as u64,
            Value::Object(o) => o.iter().map(|(k, v)| count(v, k)).sum(),
            _ => 0,
        }
    }
    report["users"]
        .as_array()
        .map(|us| us.iter().map(|u| count(u, "")).sum())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let users = env_num("BENCH_USERS", 4) as usize;
    let per_folder = env_num("BENCH_MESSAGES_PER_FOLDER", 250) as usize;
    let latency = env_num("BENCH_LATENCY_MS", 50);
    let cfg = graphsim::Config {
        users,
        domains: 1,
        messages_per_folder: per_folder,
        folder_depth: 2,
        attachment_every: 10,
        large_attachment_bytes: 400_000,
        contacts_per_user: 20,
        events_per_user: 4,
        tasks_per_list: 5,
        files_per_user: 4,
        large_file_bytes: 1 << 20,
        sites: 0,
        faults: graphsim::Faults {
            latency_ms: latency,
            mailbox_concurrency: 4,
            mailbox_requests_per_10_min: 10_000,
            ..graphsim::Faults::default()
        },
        ..graphsim::Config::default()
    };
    let sim = graphsim::spawn(cfg).await.expect("the simulator starts");
    // The one test environment (testkit): the engine on the embedded adapters in a temp
    // directory, with a clock the bench moves a day between the runs.
    let env = TestEnv::new();
    let engine = env.engine("bench");
    let scfg = &sim.shared.cfg;
    let settings = m365::M365Settings {
        graph_url: sim.base_url.clone(),
        login_url: sim.base_url.clone(),
        ..m365::M365Settings::new(&scfg.tenant_id, &scfg.client_id)
    };
    // Adding the task signs in (a listing of users); the rounds count from after it.
    let task = engine
        .add_task(
            NewTask {
                name: TaskId::new("m365").unwrap(),
                source: settings.to_source(),
                secret: Some(Zeroizing::new(scfg.client_secret.clone())),
                backup_hour: None,
            },
            &m365::Opener,
        )
        .await
        .expect("task added");
    let connector = engine.connector(&task, &m365::Opener).await.unwrap();
    let accounts: Vec<_> = engine
        .refresh_accounts(&task, connector.as_ref())
        .await
        .expect("accounts")
        .into_iter()
        .filter(|a| !a.id.as_str().starts_with("site+"))
        .collect();
    let mailboxes = accounts.len() as u64;
    eprintln!("graph bench: {mailboxes} mailboxes, {latency} ms per request; day 1…");

    let d1 = backup_all(&engine, &task, &accounts, &sim).await;
    env.advance(chrono::Duration::days(1));
    let report = {
        let mut s = sim.shared.sim();
        graphsim::day::advance(&sim.shared.cfg, &mut s)
    };
    let changes = day_changes(&report);
    eprintln!("graph bench: day 2 ({changes} changes)…");
    let d2 = backup_all(&engine, &task, &accounts, &sim).await;

    // The ceiling: each mailbox serves at most 4 requests at a time, so no client gets
    // more Outlook requests per second out of it than 4 over the time a request takes to
    // serve. The share of it a backup reached is the time the mailboxes' 4 slots were
    // serving its requests over 4 times the wall time (see bench/README.md).
    let serve_ms = 1000.0 * d1.c.busy / d1.c.outlook.max(1) as f64;
    let ceiling = 4.0 * 1000.0 / serve_ms * mailboxes as f64;
    let achieved = d1.c.outlook as f64 / d1.wall;
    let share = d1.c.busy / (4.0 * d1.wall * mailboxes as f64);
    let per_new = d2.c.graph as f64 / changes.max(1) as f64;
    let per_new_http = d2.c.http as f64 / changes.max(1) as f64;

    let rows: Vec<(String, String, String)> = vec![
        (
            "mailboxes; latency per request".into(),
            format!("{mailboxes}; {latency} ms"),
            String::new(),
        ),
        (
            "day 1: items stored".into(),
            d1.items.to_string(),
            String::new(),
        ),
        (
            "day 1: wall s".into(),
            format!("{:.2}", d1.wall),
            String::new(),
        ),
        (
            "day 1: items/s".into(),
            format!("{:.1}", d1.items as f64 / d1.wall),
            String::new(),
        ),
        (
            "day 1: HTTP requests (batches)".into(),
            format!("{} ({})", d1.c.http, d1.c.batches),
            String::new(),
        ),
        (
            "day 1: inner (batched) requests".into(),
            d1.c.inner.to_string(),
            String::new(),
        ),
        (
            "day 1: Graph-counted requests".into(),
            d1.c.graph.to_string(),
            String::new(),
        ),
        (
            "day 1: Graph requests per item".into(),
            format!("{:.3}", d1.c.graph as f64 / d1.items.max(1) as f64),
            String::new(),
        ),
        (
            "day 1: HTTP requests per item".into(),
            format!("{:.3}", d1.c.http as f64 / d1.items.max(1) as f64),
            String::new(),
        ),
        (
            "day 1: Outlook requests/s".into(),
            format!("{achieved:.1}"),
            String::new(),
        ),
        (
            "day 1: time a request holds a slot (ms)".into(),
            format!("{serve_ms:.1}"),
            String::new(),
        ),
        (
            "4-concurrent ceiling (req/s)".into(),
            format!("{ceiling:.1}"),
            String::new(),
        ),
        (
            "share of the ceiling".into(),
            format!("{:.1} %", share * 100.0),
            ">= 95 %".into(),
        ),
        (
            "day 1: 429s; most in flight per mailbox".into(),
            format!("{}; {}", d1.c.throttled, d1.c.max_in_flight),
            "0; <= 4".into(),
        ),
        (
            "day 2: new/changed items (sim report)".into(),
            changes.to_string(),
            String::new(),
        ),
        (
            "day 2: items read".into(),
            d2.read.to_string(),
            String::new(),
        ),
        (
            "day 2: HTTP requests (batches)".into(),
            format!("{} ({})", d2.c.http, d2.c.batches),
            String::new(),
        ),
        (
            "day 2: Graph-counted requests".into(),
            d2.c.graph.to_string(),
            String::new(),
        ),
        (
            "day 2: HTTP requests per new item".into(),
            format!("{per_new_http:.3}"),
            "<= 1.1".into(),
        ),
        (
            "day 2: Graph-counted requests per new item".into(),
            format!("{per_new:.3}"),
            String::new(),
        ),
        (
            "day 2: wall s".into(),
            format!("{:.2}", d2.wall),
            String::new(),
        ),
    ];
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let results = [
        (12, pass(share >= 0.95)),
        (13, pass(d1.c.throttled == 0 && d1.c.max_in_flight <= 4)),
        (18, pass(per_new_http <= 1.1)),
    ];
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!("Microsoft 365 backup against graphsim at Graph's limits");
    println!();
    println!("{:w0$}  {:>w1$}  {:9}  result", "metric", "value", "target");
    println!(
        "{}  {}  {}  ------",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(9)
    );
    for (i, (a, b, t)) in rows.iter().enumerate() {
        let res = results.iter().find(|(j, _)| *j == i).map_or("", |r| r.1);
        let t = if t.is_empty() { "-" } else { t.as_str() };
        let line = format!("{a:w0$}  {b:>w1$}  {t:9}  {res}");
        println!("{}", line.trim_end());
    }
    println!();
    println!("day 2: Graph-counted requests by route, per mailbox");
    let mut routes = d2.routes.clone();
    routes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (route, n) in &routes {
        println!("{:>8.1}  {route}", *n as f64 / mailboxes.max(1) as f64);
    }
    let errors = d1.errors + d2.errors;
    if errors > 0 {
        eprintln!("graph bench: {errors} item errors");
        std::process::exit(1);
    }
}
