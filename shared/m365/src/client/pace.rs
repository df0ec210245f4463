//! Keeping under Graph's limits instead of running into them: at most four requests in
//! flight per mailbox, Outlook's request budget per mailbox and SharePoint's resource-unit
//! budget per tenant, each a sliding window shared by every client of the same app and
//! tenant in the process.

use super::Graph;
use reqwest::Method;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Exchange Online allows an application four concurrent requests per mailbox; more are
/// answered 429 (MailboxConcurrency), so the client never sends a fifth.
pub const MAILBOX_CONCURRENCY: usize = 4;

/// The service limits a backup keeps under, so that it slows down before Graph has to
/// throttle it: Outlook's requests per mailbox in a window (10,000 per 10 minutes per app
/// and mailbox), SharePoint's resource units per app and tenant in a window (1,200 a minute
/// for a tenant of up to 1,000 licences; 2,400, 3,600, 4,800 and 6,000 from 1k, 5k, 15k
/// and 50k licences), and whether `$batch` may combine requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Throttle {
    /// Requests per mailbox per window; 0 lifts the budget.
    pub mailbox_requests: u64,
    pub mailbox_window_secs: u64,
    /// SharePoint and OneDrive resource units per window for the tenant; 0 lifts it.
    pub sharepoint_resource_units: u64,
    pub sharepoint_window_secs: u64,
    /// Combine small reads of one mailbox into `$batch` requests of up to 20.
    pub batch: bool,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            mailbox_requests: 10_000,
            mailbox_window_secs: 600,
            sharepoint_resource_units: 1_200,
            sharepoint_window_secs: 60,
            batch: true,
        }
    }
}

/// Added to each budget's window: a request is counted here just before it leaves, and
/// by Graph when it arrives.
const WINDOW_MARGIN: Duration = Duration::from_millis(250);

/// Requests (or resource units) spent in a sliding window: the times and amounts of the
/// last window's spending.
#[derive(Default)]
struct Window {
    spent: std::collections::VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    /// Spends `n` when the window allows it, or says how long to wait first.
    fn spend(&mut self, n: u64, budget: u64, len: Duration) -> Option<Duration> {
        let now = Instant::now();
        while let Some(&(t, k)) = self.spent.front() {
            if now.duration_since(t) >= len {
                self.spent.pop_front();
                self.total -= k;
            } else {
                break;
            }
        }
        let n = n.min(budget);
        if self.total + n <= budget {
            self.spent.push_back((now, n));
            self.total += n;
            return None;
        }
        // Wait until enough of the oldest spending has left the window.
        let mut freed = 0;
        for &(t, k) in &self.spent {
            freed += k;
            if self.total - freed + n <= budget {
                return Some((t + len).saturating_duration_since(now) + Duration::from_millis(5));
            }
        }
        Some(len)
    }
}

/// What a SharePoint or OneDrive request costs in resource units, as Microsoft's table
/// prices Graph requests (1: one item, a delta with a token, a download; 2: a list, a delta
/// without a token, a write; 5: permissions); `None` for requests outside SharePoint.
pub fn resource_units(method: &Method, path: &str) -> Option<u64> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let i = segs.iter().position(|s| s == "v1.0").map_or(0, |i| i + 1);
    let segs = &segs[i.min(segs.len())..];
    let first = segs.first()?.as_str();
    let sharepoint = first == "sites"
        || first == "drives"
        || (first == "users" && segs.get(2).is_some_and(|s| s == "drive"));
    if !sharepoint {
        return None;
    }
    let query = query.to_ascii_lowercase();
    if segs.iter().any(|s| s == "permissions") || query.contains("permissions") {
        return Some(5);
    }
    if method != Method::GET {
        return Some(2);
    }
    let last = segs.last().map(String::as_str).unwrap_or("");
    if last == "delta" || last.starts_with("delta(") {
        return Some(if query.contains("token=") || last.contains("token=") {
            1
        } else {
            2
        });
    }
    let lists = [
        "children", "items", "lists", "sites", "drives", "columns", "versions",
    ];
    Some(if lists.contains(&last) { 2 } else { 1 })
}

/// What an app has spent of its budgets with one tenant: shared by every client of the
/// same app and tenant in this process, since Graph counts per app and tenant, not per
/// connection.
#[derive(Default)]
pub(super) struct Budgets {
    mailboxes: Mutex<HashMap<String, Window>>,
    resource_units: Mutex<Window>,
}

pub(super) fn budgets_of(key: String) -> Arc<Budgets> {
    static ALL: std::sync::OnceLock<Mutex<HashMap<String, Arc<Budgets>>>> =
        std::sync::OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(key).or_default().clone()
}

impl Graph {
    pub(super) fn mailbox(&self, key: &str) -> Arc<Semaphore> {
        let mut m = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Semaphore::new(MAILBOX_CONCURRENCY)))
            .clone()
    }

    /// Waits until `mailbox` may take `n` more requests within its budget.
    pub(super) async fn pace_mailbox(&self, mailbox: &str, n: u64) {
        let (budget, len) = (
            self.throttle.mailbox_requests,
            Duration::from_secs(self.throttle.mailbox_window_secs.max(1)) + WINDOW_MARGIN,
        );
        if budget == 0 {
            return;
        }
        loop {
            let wait = {
                let mut b = self
                    .budgets
                    .mailboxes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                b.entry(mailbox.to_ascii_lowercase())
                    .or_default()
                    .spend(n, budget, len)
            };
            match wait {
                None => return,
                Some(w) => {
                    tracing::debug!(
                        wait_ms = w.as_millis() as u64,
                        "mailbox budget spent; pacing"
                    );
                    tokio::time::sleep(w).await;
                }
            }
        }
    }

    /// Waits until the tenant's SharePoint budget allows a request costing `cost` units.
    pub(super) async fn pace_sharepoint(&self, cost: u64) {
        let (budget, len) = (
            self.throttle.sharepoint_resource_units,
            Duration::from_secs(self.throttle.sharepoint_window_secs.max(1)) + WINDOW_MARGIN,
        );
        if budget == 0 {
            return;
        }
        loop {
            let wait = self
                .budgets
                .resource_units
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .spend(cost, budget, len);
            match wait {
                None => return,
                Some(w) => {
                    tracing::debug!(
                        wait_ms = w.as_millis() as u64,
                        "SharePoint budget spent; pacing"
                    );
                    tokio::time::sleep(w).await;
                }
            }
        }
    }
}
