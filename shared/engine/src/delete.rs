//! Deleting a tenant: what happens when a customer leaves. The keys go first
//! (crypto-shredding), then objects, then catalog records; safe to run again after an
//! interruption.

use crate::{Engine, Result};
use ports::{catalog_keys, CatalogExt, Condition, ObjectKey, ObjectStoreExt};

impl Engine {
    /// Deletes everything of this tenant. The key service destroys the tenant's key first,
    /// so from that moment no copy of any of its wrapped data keys, and so nothing stored,
    /// can be decrypted; then tasks leave the schedule, objects are deleted, then catalog
    /// records. Safe to run again after an interruption.
    pub async fn delete_tenant(&self) -> Result<()> {
        self.ports.keys.destroy_tenant_keys(&self.tenant).await?;
        let catalog = &self.ports.catalog;
        let tasks = self.tasks().await?;
        for t in &tasks {
            // Out of the schedule first, so no backup starts while the rest goes.
            self.retire_task(t).await?;
        }
        let store = &self.ports.store;
        for (key, _) in store
            .list_all(&ObjectKey::tenant_prefix(&self.tenant))
            .await?
        {
            store.delete(&key).await?;
        }
        for t in &tasks {
            for a in self.accounts(t).await? {
                for part in [
                    catalog_keys::snapshots(&self.tenant, &t.name, &a),
                    catalog_keys::pending(&self.tenant, &t.name, &a),
                ] {
                    for r in catalog.query_all(&part.pk, &part.prefix).await? {
                        catalog.delete(&part.pk, &r.sk, Condition::None).await?;
                    }
                }
            }
        }
        let dir = catalog_keys::tenant_directory(&self.tenant);
        for r in catalog.query_all(&dir.pk, &dir.prefix).await? {
            catalog.delete(&dir.pk, &r.sk, Condition::None).await?;
        }
        Ok(())
    }
}
