//! Cooldowns on what a tenant asks for by hand. An on-demand backup or an export sets a
//! fetcher or a restorer working for minutes; without a floor between two requests, a
//! script (or an impatient user) could keep every instance busy and starve the scheduled
//! backups of every other tenant. The API answers a request inside the cooldown with 429
//! and `Retry-After`.

use chrono::{DateTime, Utc};
use ports::{catalog_keys::CatalogKey, Catalog, Condition, ErrorKind, Record};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Between two on-demand backups of the same task (or of the same account of it).
pub const BACKUP_COOLDOWN: Duration = Duration::from_secs(15 * 60);

/// Between two exports of the same account.
pub const EXPORT_COOLDOWN: Duration = Duration::from_secs(2 * 60);

#[derive(Serialize, Deserialize)]
struct Claimed {
    /// Unix seconds until which a new request is refused.
    until: i64,
}

/// Claims `key` for `cooldown` from `now`: `Ok(None)` when the request may go ahead,
/// `Ok(Some(wait))` when an earlier one is younger than its cooldown (`wait` is what is
/// left of it). Two racing requests cannot both go ahead: the write is conditional on
/// what was read, and the loser waits a whole cooldown.
///
/// # Errors
/// The catalog's, when it cannot be read or written.
pub async fn claim(
    catalog: &dyn Catalog,
    key: &CatalogKey,
    now: DateTime<Utc>,
    cooldown: Duration,
) -> ports::Result<Option<Duration>> {
    let previous = catalog.get(&key.pk, &key.sk).await?;
    let cond = match &previous {
        None => Condition::Absent,
        Some(r) => {
            // A record we cannot read is an old format: it claims nothing.
            if let Ok(c) = serde_json::from_slice::<Claimed>(&r.value) {
                let left = c.until - now.timestamp();
                if left > 0 {
                    return Ok(Some(Duration::from_secs(left as u64)));
                }
            }
            Condition::Version(r.version)
        }
    };
    let until = now.timestamp() + cooldown.as_secs() as i64;
    let mut record = Record::new(
        key.pk.clone(),
        key.sk.clone(),
        serde_json::to_vec(&Claimed { until }).expect("serialises"),
    );
    record.version = previous.map_or(1, |r| r.version + 1);
    // Nobody needs the record once its cooldown is over; a day later it goes.
    let expires = u64::try_from(until).unwrap_or(0) + 24 * 3600;
    match catalog.put_expiring(record, cond, expires).await {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(Some(cooldown)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn key() -> CatalogKey {
        ports::catalog_keys::on_demand(
            &domain::TenantId::new("acme").unwrap(),
            &domain::TaskId::new("mail").unwrap(),
            "backup",
        )
    }

    #[tokio::test]
    async fn a_second_request_inside_the_cooldown_waits_for_what_is_left() {
        let env = testkit::env::TestEnv::new();
        let catalog = env.catalog.clone();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let cool = Duration::from_secs(900);
        assert_eq!(
            claim(catalog.as_ref(), &key(), t0, cool).await.unwrap(),
            None
        );
        let later = t0 + chrono::Duration::seconds(600);
        assert_eq!(
            claim(catalog.as_ref(), &key(), later, cool).await.unwrap(),
            Some(Duration::from_secs(300))
        );
        // Once it is over, the next request goes ahead and starts a new cooldown.
        let after = t0 + chrono::Duration::seconds(900);
        assert_eq!(
            claim(catalog.as_ref(), &key(), after, cool).await.unwrap(),
            None
        );
        assert!(claim(catalog.as_ref(), &key(), after, cool)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn of_two_racing_requests_one_goes_ahead() {
        let env = testkit::env::TestEnv::new();
        let catalog = env.catalog.clone();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let cool = Duration::from_secs(120);
        let k = key();
        let (a, b) = tokio::join!(
            claim(catalog.as_ref(), &k, t0, cool),
            claim(catalog.as_ref(), &k, t0, cool)
        );
        let went = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|w| w.is_none())
            .count();
        assert_eq!(went, 1);
    }
}
