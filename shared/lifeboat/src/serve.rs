//! `lifeboat serve`: the HTTP API on one machine, with the same router the Lambda API
//! function runs, a worker that runs backup, restore and export jobs as they are queued,
//! and the daily scheduler. `lifeboat token` mints a bearer token for it.
//!
//! The queue is in process: jobs queued but not yet run when the server stops are not
//! kept (scheduled backups are queued again by the next day's tick; on-demand requests
//! must be made again).

use anyhow::{Context as _, Result};
use domain::TenantId;
use engine::Ports;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The file holding the key that signs and verifies local API tokens.
const API_KEY_FILE: &str = "api.key";

/// How often the local scheduler looks for due tasks (on AWS: every 15 minutes).
const TICK: Duration = Duration::from_secs(60);

/// How long a job is hidden from other workers while one runs it.
const VISIBILITY: Duration = Duration::from_secs(20 * 60);

/// The key of local API tokens: 32 random bytes, created on first use, readable by the
/// owner only.
pub fn api_key(home: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let path = home.join(API_KEY_FILE);
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(Zeroizing::new(k)),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; delete it to make a new one (issued tokens stop working)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut key = Zeroizing::new(vec![0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match &mut f {
        Ok(f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => api_key(home),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

/// Serves until the process is stopped.
pub async fn serve(ports: Ports, home: &Path, listen: &str) -> Result<()> {
    let key = api_key(home)?;
    let queue = Arc::new(embedded::MemQueue::new(5));
    let ctx = jobs::Context::new(
        ports.clone(),
        queue.clone(),
        Arc::new(connectors::BuiltIn),
        "local",
    );
    let state = api::AppState {
        ports,
        backups: queue.clone(),
        transfers: queue,
        auth: Arc::new(api::Hs256::new(&key)),
        link_ttl: Duration::from_secs(24 * 3600),
        connectors: Arc::new(connectors::OverNetwork),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The address first, on its own line, so scripts can read it (the port may be 0).
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;

    let worker = ctx.clone();
    tokio::spawn(async move {
        let mut last_tick: Option<std::time::Instant> = None;
        loop {
            if last_tick.is_none_or(|t| t.elapsed() >= TICK) {
                match jobs::tick(&worker).await {
                    Ok(r) if r.queued > 0 => {
                        tracing::info!(queued = r.queued, "daily backups queued")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "scheduler tick failed"),
                }
                last_tick = Some(std::time::Instant::now());
            }
            match jobs::drain(&worker, VISIBILITY).await {
                Ok(r) => {
                    for h in r.handled.iter().filter(|h| h.error.is_some()) {
                        tracing::warn!(error = h.error.as_deref().unwrap_or(""), "job failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "job queue failed"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    api::serve(listener, state).await?;
    Ok(())
}

/// A token for `tenant`, valid for `hours`.
pub fn token(home: &Path, tenant: &str, hours: i64) -> Result<String> {
    let key = api_key(home)?;
    let tenant = TenantId::new(tenant)?;
    Ok(api::Hs256::new(&key).mint(&tenant, "lifeboat-cli", chrono::Duration::hours(hours)))
}
