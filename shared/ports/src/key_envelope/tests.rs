//! The envelope's tests: over an in-memory root key and store, every way a key can be
//! refused, and racing creators.

use super::*;
use crate::EncryptionContext as Ctx;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A root that counts its calls.
#[derive(Debug)]
struct CountingRoot {
    inner: LocalRootKey,
    generates: AtomicUsize,
    decrypts: AtomicUsize,
}

impl CountingRoot {
    fn new() -> Arc<Self> {
        Arc::new(CountingRoot {
            inner: LocalRootKey::random().unwrap(),
            generates: AtomicUsize::new(0),
            decrypts: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl RootKey for CountingRoot {
    async fn generate(&self, ctx: &Ctx) -> Result<DataKey> {
        self.generates.fetch_add(1, Ordering::SeqCst);
        self.inner.generate(ctx).await
    }

    async fn decrypt(&self, wrapped: &[u8], ctx: &Ctx) -> Result<Zeroizing<[u8; 32]>> {
        self.decrypts.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt(wrapped, ctx).await
    }
}

/// Tenant keys in memory. `hidden_loads` loads answer "none" whatever is there (an
/// instance that looked before another stored its key); with `lose_stores` every store
/// fails as if another writer had been first.
#[derive(Debug, Default)]
struct MemStore {
    keys: Mutex<HashMap<TenantId, Vec<u8>>>,
    hidden_loads: AtomicUsize,
    lose_stores: AtomicBool,
}

impl MemStore {
    fn new() -> Arc<Self> {
        Arc::new(MemStore::default())
    }

    fn get(&self, tenant: &TenantId) -> Option<Vec<u8>> {
        self.keys.lock().unwrap().get(tenant).cloned()
    }

    fn set(&self, tenant: &TenantId, value: Vec<u8>) {
        self.keys.lock().unwrap().insert(tenant.clone(), value);
    }
}

#[async_trait]
impl TenantKeyStore for MemStore {
    async fn load(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>> {
        let hide = self
            .hidden_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Ok(if hide { None } else { self.get(tenant) })
    }

    async fn store_if_absent(&self, tenant: &TenantId, wrapped: &[u8]) -> Result<bool> {
        if self.lose_stores.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mut keys = self.keys.lock().unwrap();
        if keys.contains_key(tenant) {
            return Ok(false);
        }
        keys.insert(tenant.clone(), wrapped.to_vec());
        Ok(true)
    }

    async fn delete(&self, tenant: &TenantId) -> Result<()> {
        self.keys.lock().unwrap().remove(tenant);
        Ok(())
    }
}

type Envelope = KeyEnvelope<Arc<CountingRoot>, Arc<MemStore>>;

fn envelope() -> (Envelope, Arc<CountingRoot>, Arc<MemStore>) {
    let (root, store) = (CountingRoot::new(), MemStore::new());
    (KeyEnvelope::new(root.clone(), store.clone()), root, store)
}

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn ctx(t: &str, task: &str) -> Ctx {
    Ctx::for_task(&tenant(t), &domain::TaskId::new(task).unwrap())
}

fn no_tenant() -> Ctx {
    Ctx(BTreeMap::from([("purpose".into(), "catalog".into())]))
}

fn assert_integrity<T>(r: Result<T>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Integrity, "{what}: {e}"),
    }
}

#[tokio::test]
async fn data_keys_round_trip_and_say_how_they_were_wrapped() {
    let (keys, root, store) = envelope();
    let c = ctx("acme", "mail");
    let dk = keys.generate_data_key(&c).await.unwrap();
    assert_eq!(dk.wrapped.len(), TENANT_WRAPPED_LEN);
    assert_eq!(dk.wrapped[0], WRAP_TENANT);
    assert_eq!(
        *keys.decrypt_data_key(&dk.wrapped, &c).await.unwrap(),
        *dk.plaintext
    );
    let stored = store.get(&tenant("acme")).expect("a stored tenant key");
    assert_eq!(stored[0], TENANT_KEY);

    let plain = keys.generate_data_key(&no_tenant()).await.unwrap();
    assert_eq!(plain.wrapped[0], WRAP_ROOT);
    assert_eq!(
        *keys
            .decrypt_data_key(&plain.wrapped, &no_tenant())
            .await
            .unwrap(),
        *plain.plaintext
    );
    // The tenant key, then the key without a tenant: the root made two keys only.
    assert_eq!(root.generates.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_root_unwraps_a_tenant_key_once_per_instance() {
    let (first, root, store) = envelope();
    let c = ctx("acme", "mail");
    let mut dks = Vec::new();
    for _ in 0..4 {
        dks.push(first.generate_data_key(&c).await.unwrap());
    }
    assert_eq!(root.generates.load(Ordering::SeqCst), 1);
    assert_eq!(
        root.decrypts.load(Ordering::SeqCst),
        0,
        "the maker keeps its key"
    );

    let second = KeyEnvelope::new(root.clone(), store.clone());
    for dk in &dks {
        for _ in 0..3 {
            let back = second.decrypt_data_key(&dk.wrapped, &c).await.unwrap();
            assert_eq!(*back, *dk.plaintext);
        }
    }
    let more = second
        .generate_data_key(&ctx("acme", "drive"))
        .await
        .unwrap();
    assert_eq!(more.wrapped[0], WRAP_TENANT);
    assert_eq!(
        root.decrypts.load(Ordering::SeqCst),
        1,
        "one root call per tenant"
    );
    assert_eq!(root.generates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_loser_of_a_race_to_make_a_tenant_key_uses_the_winners() {
    let (root, store) = (CountingRoot::new(), MemStore::new());
    let winner = KeyEnvelope::new(root.clone(), store.clone());
    let loser = KeyEnvelope::new(root.clone(), store.clone());
    let c = ctx("acme", "mail");
    let won = winner.generate_data_key(&c).await.unwrap();
    let kept = store.get(&tenant("acme")).unwrap();

    // The loser looked before the winner stored its key, so it makes one too; its
    // store finds the winner's there and it loads that instead.
    store.hidden_loads.store(1, Ordering::SeqCst);
    let lost = loser.generate_data_key(&c).await.unwrap();
    assert_eq!(
        root.generates.load(Ordering::SeqCst),
        2,
        "two keys were made"
    );
    assert_eq!(
        store.get(&tenant("acme")).unwrap(),
        kept,
        "the first is kept"
    );
    for (dk, who) in [(&won, "winner's"), (&lost, "loser's")] {
        for k in [&winner, &loser] {
            let back = k.decrypt_data_key(&dk.wrapped, &c).await.unwrap();
            assert_eq!(*back, *dk.plaintext, "the {who} key");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_instances_agree_on_one_tenant_key() {
    let (root, store) = (CountingRoot::new(), MemStore::new());
    let instances: Vec<Arc<Envelope>> = (0..8)
        .map(|_| Arc::new(KeyEnvelope::new(root.clone(), store.clone())))
        .collect();
    let tasks: Vec<_> = instances
        .iter()
        .map(|k| {
            let k = k.clone();
            tokio::spawn(async move { k.generate_data_key(&ctx("acme", "mail")).await })
        })
        .collect();
    let mut made = Vec::new();
    for t in tasks {
        made.push(t.await.unwrap().unwrap());
    }
    for dk in &made {
        for k in &instances {
            let back = k.decrypt_data_key(&dk.wrapped, &ctx("acme", "mail")).await;
            assert_eq!(*back.unwrap(), *dk.plaintext);
        }
    }
}

#[tokio::test]
async fn a_key_destroyed_while_being_made_is_retried_later() {
    let (keys, _, store) = envelope();
    store.lose_stores.store(true, Ordering::SeqCst);
    let err = keys
        .generate_data_key(&ctx("acme", "mail"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    store.lose_stores.store(false, Ordering::SeqCst);
    assert!(keys.generate_data_key(&ctx("acme", "mail")).await.is_ok());
}

#[tokio::test]
async fn a_destroyed_tenant_refuses_its_keys() {
    let (keys, root, store) = envelope();
    let c = ctx("acme", "mail");
    let dk = keys.generate_data_key(&c).await.unwrap();
    let other = keys
        .generate_data_key(&ctx("umbrella", "mail"))
        .await
        .unwrap();

    keys.destroy_tenant_keys(&tenant("acme")).await.unwrap();
    assert!(
        store.get(&tenant("acme")).is_none(),
        "the stored key is deleted"
    );
    let err = keys.decrypt_data_key(&dk.wrapped, &c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("destroyed"), "{err}");
    let fresh = KeyEnvelope::new(root.clone(), store.clone());
    assert_integrity(fresh.decrypt_data_key(&dk.wrapped, &c).await, "fresh");

    // Other tenants are untouched; destroying twice is fine.
    let back = fresh
        .decrypt_data_key(&other.wrapped, &ctx("umbrella", "mail"))
        .await
        .unwrap();
    assert_eq!(*back, *other.plaintext);
    keys.destroy_tenant_keys(&tenant("acme")).await.unwrap();

    // A key made after the shredding is under a new tenant key: old keys stay dead.
    let dk2 = keys.generate_data_key(&c).await.unwrap();
    assert_eq!(
        *fresh.decrypt_data_key(&dk2.wrapped, &c).await.unwrap(),
        *dk2.plaintext
    );
    assert_integrity(keys.decrypt_data_key(&dk.wrapped, &c).await, "old key");
    assert_integrity(
        fresh.decrypt_data_key(&dk.wrapped, &c).await,
        "old key, fresh",
    );
}

#[tokio::test]
async fn another_context_refuses_the_key() {
    let (keys, _, _) = envelope();
    let c = ctx("acme", "mail");
    let dk = keys.generate_data_key(&c).await.unwrap();
    keys.generate_data_key(&ctx("umbrella", "mail"))
        .await
        .unwrap();
    let mut extra = c.clone();
    extra.0.insert("account".into(), "someone".into());
    let only_tenant = Ctx(BTreeMap::from([("tenant".into(), "acme".into())]));
    for (what, other) in [
        ("another task", ctx("acme", "drive")),
        ("another tenant", ctx("umbrella", "mail")),
        ("an empty context", Ctx::default()),
        ("a context without a tenant", no_tenant()),
        ("an extra pair", extra),
        ("the tenant key's context", only_tenant),
    ] {
        assert_integrity(keys.decrypt_data_key(&dk.wrapped, &other).await, what);
    }

    let plain = keys.generate_data_key(&no_tenant()).await.unwrap();
    assert_integrity(
        keys.decrypt_data_key(&plain.wrapped, &Ctx::default()).await,
        "a root-wrapped key under another context",
    );
}

#[tokio::test]
async fn a_root_wrapped_key_is_refused_with_a_tenant_context() {
    let (keys, root, store) = envelope();
    let c = ctx("acme", "mail");
    keys.generate_data_key(&c).await.unwrap();
    let decrypts = root.decrypts.load(Ordering::SeqCst);

    // Made by the root under the very same context: still refused, as it would escape
    // the tenant's shredding.
    let made = root.generate(&c).await.unwrap();
    let mut wrapped = vec![WRAP_ROOT];
    wrapped.extend_from_slice(&made.wrapped);
    assert_integrity(keys.decrypt_data_key(&wrapped, &c).await, "root-wrapped");

    // A key made without a tenant, then presented with one.
    let plain = keys.generate_data_key(&no_tenant()).await.unwrap();
    let mut with_tenant = no_tenant();
    with_tenant.0.insert("tenant".into(), "acme".into());
    assert_integrity(
        keys.decrypt_data_key(&plain.wrapped, &with_tenant).await,
        "a key without a tenant, with one",
    );

    // The stored tenant key itself, as it is and relabelled as a root-wrapped key.
    let stored = store.get(&tenant("acme")).unwrap();
    let tenant_ctx = Ctx(BTreeMap::from([("tenant".into(), "acme".into())]));
    assert_integrity(
        keys.decrypt_data_key(&stored, &tenant_ctx).await,
        "tenant key",
    );
    let mut relabelled = stored.clone();
    relabelled[0] = WRAP_ROOT;
    assert_integrity(
        keys.decrypt_data_key(&relabelled, &tenant_ctx).await,
        "relabelled tenant key",
    );
    assert_eq!(
        root.decrypts.load(Ordering::SeqCst),
        decrypts,
        "none reached the root"
    );
}

#[tokio::test]
async fn every_flipped_byte_is_refused() {
    let (keys, _, _) = envelope();
    for c in [ctx("acme", "mail"), no_tenant()] {
        let dk = keys.generate_data_key(&c).await.unwrap();
        for i in 0..dk.wrapped.len() {
            for bit in [0x01, 0x80] {
                let mut bad = dk.wrapped.clone();
                bad[i] ^= bit;
                assert_integrity(keys.decrypt_data_key(&bad, &c).await, "flipped");
            }
        }
        let n = dk.wrapped.len();
        let mut longer = dk.wrapped.clone();
        longer.push(0);
        for (what, bad) in [
            ("empty", &[][..]),
            ("version only", &dk.wrapped[..1]),
            ("truncated", &dk.wrapped[..n - 1]),
            ("longer", &longer[..]),
        ] {
            assert_integrity(keys.decrypt_data_key(bad, &c).await, what);
        }
    }
}

#[tokio::test]
async fn a_damaged_or_foreign_tenant_key_is_refused() {
    let (keys, root, store) = envelope();
    let c = ctx("acme", "mail");
    let dk = keys.generate_data_key(&c).await.unwrap();
    let stored = store.get(&tenant("acme")).unwrap();
    for i in 0..stored.len() {
        let mut bad = stored.clone();
        bad[i] ^= 0x01;
        store.set(&tenant("acme"), bad);
        let fresh = KeyEnvelope::new(root.clone(), store.clone());
        assert_integrity(fresh.decrypt_data_key(&dk.wrapped, &c).await, "damaged");
    }
    // Another root's store: its tenant key does not open under this root.
    let (other, _, other_store) = envelope();
    other.generate_data_key(&c).await.unwrap();
    store.set(&tenant("acme"), other_store.get(&tenant("acme")).unwrap());
    let fresh = KeyEnvelope::new(root.clone(), store.clone());
    assert_integrity(fresh.decrypt_data_key(&dk.wrapped, &c).await, "foreign");
}

#[tokio::test]
async fn an_invalid_tenant_is_invalid_input() {
    let (keys, _, store) = envelope();
    let bad = Ctx(BTreeMap::from([("tenant".into(), "../etc".into())]));
    let err = keys.generate_data_key(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = keys
        .decrypt_data_key(&[WRAP_TENANT; 61], &bad)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(store.keys.lock().unwrap().is_empty());
}

#[tokio::test]
async fn debug_shows_no_key() {
    let (keys, _, _) = envelope();
    let dk = keys.generate_data_key(&ctx("acme", "mail")).await.unwrap();
    let cached = keys.tenant_key(&tenant("acme"), false).await.unwrap();
    let shown = format!("{keys:?} {cached:?} {:?}", LocalRootKey::random().unwrap());
    for secret in [&cached.0[..], &dk.plaintext[..]] {
        assert!(!shown.contains(&format!("{:?}", &secret[..4])), "{shown}");
    }
    assert!(
        shown.contains("redacted") && shown.contains("cached_tenants: 1"),
        "{shown}"
    );
}

/// Records in memory, for the catalog-backed store (gets, conditional puts, deletes).
#[derive(Default)]
struct MemCatalog(Mutex<HashMap<(String, String), Record>>);

#[async_trait]
impl Catalog for MemCatalog {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>> {
        Ok(self.0.lock().unwrap().get(&(pk.into(), sk.into())).cloned())
    }

    async fn put(&self, record: Record, cond: Condition) -> Result<()> {
        let mut map = self.0.lock().unwrap();
        let k = (record.pk.clone(), record.sk.clone());
        if cond == Condition::Absent && map.contains_key(&k) {
            return Err(Error::new(ErrorKind::ConditionFailed, "exists"));
        }
        map.insert(k, record);
        Ok(())
    }

    async fn delete(&self, pk: &str, sk: &str, _: Condition) -> Result<()> {
        self.0.lock().unwrap().remove(&(pk.into(), sk.into()));
        Ok(())
    }

    async fn query(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: usize,
        _: bool,
    ) -> Result<crate::Page> {
        unimplemented!("not used by the tenant key store")
    }

    async fn transact(&self, _: Vec<crate::TxOp>) -> Result<()> {
        unimplemented!("not used by the tenant key store")
    }
}

#[tokio::test]
async fn the_catalog_store_keeps_one_record_per_tenant() {
    let catalog = Arc::new(MemCatalog::default());
    let store = CatalogTenantKeys::new(catalog.clone());
    let t = tenant("acme");
    let key = catalog_keys::tenant_key(&t);
    assert_eq!(store.load(&t).await.unwrap(), None);
    assert!(store.store_if_absent(&t, b"first").await.unwrap());
    assert!(!store.store_if_absent(&t, b"second").await.unwrap());
    assert_eq!(store.load(&t).await.unwrap().unwrap(), b"first");
    let rec = catalog.get(&key.pk, &key.sk).await.unwrap().unwrap();
    assert_eq!(rec.value, b"first", "the record is the tenant's key record");

    // Behind the envelope: instances sharing the catalog share the tenant key.
    let root = CountingRoot::new();
    let a = KeyEnvelope::new(root.clone(), CatalogTenantKeys::new(catalog.clone()));
    let b = KeyEnvelope::new(root.clone(), CatalogTenantKeys::new(catalog.clone()));
    let c = ctx("umbrella", "mail");
    let dk = a.generate_data_key(&c).await.unwrap();
    assert_eq!(
        *b.decrypt_data_key(&dk.wrapped, &c).await.unwrap(),
        *dk.plaintext
    );
    b.destroy_tenant_keys(&tenant("umbrella")).await.unwrap();
    let gone = catalog_keys::tenant_key(&tenant("umbrella"));
    assert!(catalog.get(&gone.pk, &gone.sk).await.unwrap().is_none());
    assert_integrity(b.decrypt_data_key(&dk.wrapped, &c).await, "destroyed");
    assert_eq!(
        store.load(&t).await.unwrap().unwrap(),
        b"first",
        "others kept"
    );
}
