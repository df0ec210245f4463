//! `graphsim`: serves a simulated Microsoft 365 organisation over HTTP until stopped.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "graphsim",
    about = "A Microsoft Graph v1.0 simulator for tests, demos and benchmarks"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    users: usize,
    #[arg(long, default_value_t = 2)]
    domains: usize,
    #[arg(long, default_value_t = 6)]
    messages_per_folder: usize,
    #[arg(long, default_value_t = 2)]
    folder_depth: usize,
    #[arg(long, default_value_t = 8)]
    files_per_user: usize,
    #[arg(long, default_value_t = 6 << 20)]
    large_file_bytes: u64,
    #[arg(long, default_value_t = 3 << 20)]
    large_attachment_bytes: u64,
    #[arg(long, default_value_t = 8)]
    contacts_per_user: usize,
    #[arg(long, default_value_t = 6)]
    events_per_user: usize,
    #[arg(long, default_value_t = 4)]
    tasks_per_list: usize,
    #[arg(long, default_value_t = 1)]
    sites: usize,
    #[arg(long)]
    tenant_id: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    /// The secret clients must present; read from the environment so it stays out of
    /// shell history and process lists.
    #[arg(long, env = "GRAPHSIM_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    #[arg(long, default_value_t = 3599)]
    token_lifetime_secs: u64,
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    unavailable_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    gateway_timeout_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    vanish_rate: f64,
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Concurrent requests per mailbox before 429 (Graph: 4).
    #[arg(long, default_value_t = 4)]
    mailbox_concurrency: usize,
    /// Requests per mailbox per 10 minutes before 429 (Graph: 10,000; 0 lifts it).
    #[arg(long, default_value_t = 10_000)]
    mailbox_requests_per_10_min: u64,
    /// SharePoint resource units per minute for the tenant (1,200 up to 1,000 licences;
    /// 0, the default, lifts the budget).
    #[arg(long, default_value_t = 0)]
    sharepoint_ru_per_minute: u64,
    /// Delta tokens older than this many simulated days (see `/_sim/advance-day`) are gone.
    #[arg(long)]
    delta_token_days: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for (name, rate) in [
        ("throttle", a.throttle_rate),
        ("unavailable", a.unavailable_rate),
        ("gateway-timeout", a.gateway_timeout_rate),
        ("vanish", a.vanish_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "--{name}-rate must be between 0 and 1, got {rate}"
        );
    }
    let mut cfg = graphsim::Config {
        host: a.host,
        port: a.port,
        seed: a.seed,
        users: a.users,
        domains: a.domains,
        messages_per_folder: a.messages_per_folder,
        folder_depth: a.folder_depth,
        files_per_user: a.files_per_user,
        large_file_bytes: a.large_file_bytes,
        large_attachment_bytes: a.large_attachment_bytes,
        contacts_per_user: a.contacts_per_user,
        events_per_user: a.events_per_user,
        tasks_per_list: a.tasks_per_list,
        sites: a.sites,
        token_lifetime: Duration::from_secs(a.token_lifetime_secs),
        delta_token_max_days: a.delta_token_days,
        ..Default::default()
    };
    anyhow::ensure!(cfg.users > 0, "--users must be at least 1");
    if let Some(t) = a.tenant_id {
        cfg.tenant_id = t;
    }
    if let Some(c) = a.client_id {
        cfg.client_id = c;
    }
    if let Some(s) = a.client_secret {
        cfg.client_secret = s;
    }
    cfg.faults.throttle_rate = a.throttle_rate;
    cfg.faults.unavailable_rate = a.unavailable_rate;
    cfg.faults.gateway_timeout_rate = a.gateway_timeout_rate;
    cfg.faults.vanish_rate = a.vanish_rate;
    cfg.faults.retry_after_secs = a.retry_after_secs;
    cfg.faults.latency_ms = a.latency_ms;
    cfg.faults.mailbox_concurrency = a.mailbox_concurrency;
    cfg.faults.mailbox_requests_per_10_min = a.mailbox_requests_per_10_min;
    cfg.faults.sharepoint_ru_per_window = a.sharepoint_ru_per_minute;
    let (tenant, client) = (cfg.tenant_id.clone(), cfg.client_id.clone());
    let running = graphsim::spawn(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", a.host, a.port))?;
    println!("{}", running.base_url);
    eprintln!(
        "graph: {}  token: {}  tenant: {tenant}  client id: {client}",
        running.graph_url(),
        running.token_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
