//! The key service suite: data keys round-trip under their own context only, and an altered
//! wrapped key is refused, never unwrapped to other bytes.

use crate::{assert_kind, assert_ok, unique};
use ports::{EncryptionContext, ErrorKind, KeyService};
use std::collections::BTreeMap;

/// Runs every key service check against `keys`.
pub async fn key_service_suite(keys: &dyn KeyService) {
    let tenant = domain::TenantId::new(unique("tk")).expect("valid tenant");
    let task = domain::TaskId::new("mail").expect("valid task");
    let ctx = EncryptionContext::for_task(&tenant, &task);

    // Round trip, twice: unwrapping does not consume anything.
    let dk = assert_ok(keys.generate_data_key(&ctx).await, "generate");
    assert!(!dk.wrapped.is_empty(), "a wrapped key has bytes");
    assert_ne!(
        &dk.wrapped[..],
        &dk.plaintext[..],
        "the wrapped form is not the plaintext"
    );
    for _ in 0..2 {
        let back = assert_ok(keys.decrypt_data_key(&dk.wrapped, &ctx).await, "decrypt");
        assert_eq!(*back, *dk.plaintext, "decrypt returns the generated key");
    }
    let shown = format!("{dk:?}");
    assert!(
        !shown.contains(&format!("{:?}", &dk.plaintext[..4])),
        "Debug hides the key"
    );

    // Two keys differ, in plaintext and wrapped form.
    let dk2 = assert_ok(keys.generate_data_key(&ctx).await, "generate again");
    assert_ne!(*dk.plaintext, *dk2.plaintext, "two data keys differ");
    assert_ne!(dk.wrapped, dk2.wrapped, "two wrapped keys differ");
    assert_ne!(*dk.plaintext, [0u8; 32], "a data key is not all zeros");

    // Another context does not unwrap it.
    let other_task = domain::TaskId::new("drive").expect("valid task");
    let other_tenant = domain::TenantId::new(unique("tk")).expect("valid tenant");
    let mut extra = ctx.clone();
    extra.0.insert("account".into(), "someone".into());
    let contexts = [
        (
            "another task",
            EncryptionContext::for_task(&tenant, &other_task),
        ),
        (
            "another tenant",
            EncryptionContext::for_task(&other_tenant, &task),
        ),
        ("an empty context", EncryptionContext::default()),
        ("an extra pair", extra),
    ];
    for (what, other) in &contexts {
        assert_kind(
            keys.decrypt_data_key(&dk.wrapped, other).await,
            ErrorKind::Integrity,
            &format!("decrypt under {what}"),
        );
    }

    // The context's byte form keeps pair boundaries: {"a": "bc"} is not {"ab": "c"}.
    let pairs = |k: &str, v: &str| EncryptionContext(BTreeMap::from([(k.into(), v.into())]));
    let dk3 = assert_ok(keys.generate_data_key(&pairs("a", "bc")).await, "generate");
    assert_kind(
        keys.decrypt_data_key(&dk3.wrapped, &pairs("ab", "c")).await,
        ErrorKind::Integrity,
        "decrypt with the pair boundary moved",
    );
    let back = assert_ok(
        keys.decrypt_data_key(&dk3.wrapped, &pairs("a", "bc")).await,
        "decrypt",
    );
    assert_eq!(*back, *dk3.plaintext);

    // An empty context is a context like any other.
    let empty = EncryptionContext::default();
    let dk4 = assert_ok(
        keys.generate_data_key(&empty).await,
        "generate, empty context",
    );
    let back = assert_ok(
        keys.decrypt_data_key(&dk4.wrapped, &empty).await,
        "decrypt, empty",
    );
    assert_eq!(*back, *dk4.plaintext);

    // Altered wrapped keys: a flipped bit in the body or the tag, one byte short.
    let n = dk.wrapped.len();
    for at in [n / 2, n * 3 / 4, n - 1] {
        let mut bad = dk.wrapped.clone();
        bad[at] ^= 0x01;
        assert_kind(
            keys.decrypt_data_key(&bad, &ctx).await,
            ErrorKind::Integrity,
            &format!("decrypt with byte {at} of {n} flipped"),
        );
    }
    assert_kind(
        keys.decrypt_data_key(&dk.wrapped[..n - 1], &ctx).await,
        ErrorKind::Integrity,
        "decrypt of a truncated wrapped key",
    );

    // Crypto-shredding: after the tenant's keys are destroyed, no wrapped key of it opens
    // again, another tenant's keys are untouched, and destroying twice is fine.
    let survivor = domain::TenantId::new(unique("tk")).expect("valid tenant");
    let sctx = EncryptionContext::for_task(&survivor, &task);
    let kept = assert_ok(
        keys.generate_data_key(&sctx).await,
        "generate, other tenant",
    );
    assert_ok(
        keys.destroy_tenant_keys(&tenant).await,
        "destroy the tenant's keys",
    );
    for (i, w) in [&dk.wrapped, &dk2.wrapped].into_iter().enumerate() {
        assert!(
            keys.decrypt_data_key(w, &ctx).await.is_err(),
            "data key {i} of a shredded tenant still opens"
        );
    }
    let back = assert_ok(
        keys.decrypt_data_key(&kept.wrapped, &sctx).await,
        "decrypt, other tenant after shredding",
    );
    assert_eq!(*back, *kept.plaintext);
    assert_ok(keys.destroy_tenant_keys(&tenant).await, "destroy again");
    assert_ok(
        keys.destroy_tenant_keys(&survivor).await,
        "destroy the other",
    );
}
