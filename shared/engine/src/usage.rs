//! Billing usage: the accounts a tenant had protected in a month. An account counts when it
//! has at least one snapshot taken in the month; the months that end inside the 14-day
//! trial (from the tenant's first task) are free.

use crate::{Engine, Error, Result};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use domain::{AccountId, TaskId};
use ports::catalog_keys;
use serde::Serialize;

/// How long a new tenant's trial lasts.
pub const TRIAL_DAYS: i64 = 14;

/// One protected account in a month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageAccount {
    pub task: TaskId,
    /// The task's connector.
    pub kind: String,
    pub account: AccountId,
}

/// A month's usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// `YYYY-MM`.
    pub month: String,
    pub protected_accounts: usize,
    /// Zero for a month that ends inside the trial.
    pub billable_accounts: usize,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub accounts: Vec<UsageAccount>,
}

impl Engine {
    /// The usage of `month` (`YYYY-MM`; the current month when `None`).
    ///
    /// # Errors
    /// `Invalid` for a month that is not `YYYY-MM`; a catalog failure.
    pub async fn usage(&self, month: Option<&str>) -> Result<Usage> {
        let now = self.ports.clock.now();
        let (year, month) = match month {
            Some(m) => {
                let d = NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
                    .map_err(|_| Error::Invalid(format!("month {m} is not YYYY-MM")))?;
                (d.year(), d.month())
            }
            None => (now.year(), now.month()),
        };
        // Snapshot ids begin with their time, so one query of one item per account tells
        // whether it has a snapshot in the month.
        let prefix = format!("{year:04}{month:02}");
        let tasks = self.tasks().await?;
        let mut accounts = Vec::new();
        for t in &tasks {
            for a in self.accounts(t).await? {
                let pk = catalog_keys::snapshots(&self.tenant, &t.name, &a).pk;
                let page = self
                    .ports
                    .catalog
                    .query(&pk, &prefix, None, 1, false)
                    .await?;
                if !page.records.is_empty() {
                    accounts.push(UsageAccount {
                        task: t.name.clone(),
                        kind: t.source.kind().to_string(),
                        account: a,
                    });
                }
            }
        }
        let since = tasks.iter().map(|t| t.created_at).min();
        let trial_ends = since.map(|s| s + chrono::Duration::days(TRIAL_DAYS));
        let month_end = Utc
            .with_ymd_and_hms(year + (month / 12) as i32, month % 12 + 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(now);
        let billable = if trial_ends.is_some_and(|t| month_end <= t) {
            0
        } else {
            accounts.len()
        };
        Ok(Usage {
            month: format!("{year:04}-{month:02}"),
            protected_accounts: accounts.len(),
            billable_accounts: billable,
            trial_ends_at: trial_ends,
            accounts,
        })
    }
}
