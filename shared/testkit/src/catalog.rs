//! The catalog suite: conditional puts and deletes, prefix queries with paging in both
//! directions, all-or-nothing transactions and DynamoDB's limits.

use crate::{assert_kind, assert_ok, unique};
use ports::{
    Catalog, CatalogExt, Condition, ErrorKind, Record, TxOp, MAX_RECORD_BYTES,
    MAX_TRANSACTION_ITEMS,
};

/// Runs every catalog check against `catalog`, in partitions named afresh for this run.
pub async fn catalog_suite(catalog: &dyn Catalog) {
    let base = unique("tk-");
    put_and_get(catalog, &format!("{base}-pg")).await;
    conditional_puts(catalog, &format!("{base}-cp")).await;
    conditional_deletes(catalog, &format!("{base}-cd")).await;
    record_size(catalog, &format!("{base}-sz")).await;
    query_prefixes(catalog, &base).await;
    query_paging(catalog, &format!("{base}-qp")).await;
    transactions(catalog, &format!("{base}-tx")).await;
    transaction_limits(catalog, &format!("{base}-tl")).await;
    optimistic_race(catalog, &format!("{base}-race")).await;
}

fn rec(pk: &str, sk: &str, version: u64, value: &[u8]) -> Record {
    Record {
        pk: pk.to_string(),
        sk: sk.to_string(),
        version,
        value: value.to_vec(),
    }
}

async fn get(c: &dyn Catalog, pk: &str, sk: &str) -> Option<Record> {
    assert_ok(c.get(pk, sk).await, &format!("get {pk}/{sk}"))
}

async fn put_and_get(c: &dyn Catalog, pk: &str) {
    assert_eq!(
        get(c, pk, "missing").await,
        None,
        "a missing record is Ok(None)"
    );
    let r = rec(pk, "one", 1, b"hello");
    assert_ok(c.put(r.clone(), Condition::None).await, "put");
    assert_eq!(get(c, pk, "one").await, Some(r), "put then get");
    let r2 = rec(pk, "one", 7, b"");
    assert_ok(
        c.put(r2.clone(), Condition::None).await,
        "unconditional overwrite",
    );
    assert_eq!(
        get(c, pk, "one").await,
        Some(r2),
        "overwritten, empty value kept"
    );
    let big = rec(pk, "big", u64::from(u32::MAX) + 5, &[0xAB; 1000]);
    assert_ok(
        c.put(big.clone(), Condition::None).await,
        "put large version",
    );
    assert_eq!(
        get(c, pk, "big").await,
        Some(big),
        "versions above u32 survive"
    );
}

async fn conditional_puts(c: &dyn Catalog, pk: &str) {
    // Absent.
    assert_ok(
        c.put(rec(pk, "k", 1, b"v1"), Condition::Absent).await,
        "put Absent on nothing",
    );
    assert_kind(
        c.put(rec(pk, "k", 1, b"other"), Condition::Absent).await,
        ErrorKind::ConditionFailed,
        "put Absent on a record",
    );
    assert_eq!(
        get(c, pk, "k").await,
        Some(rec(pk, "k", 1, b"v1")),
        "kept after a failed Absent"
    );

    // Exists.
    assert_kind(
        c.put(rec(pk, "none", 1, b"x"), Condition::Exists).await,
        ErrorKind::ConditionFailed,
        "put Exists on nothing",
    );
    assert_eq!(
        get(c, pk, "none").await,
        None,
        "a failed Exists writes nothing"
    );
    assert_ok(
        c.put(rec(pk, "k", 1, b"v1b"), Condition::Exists).await,
        "put Exists on a record",
    );

    // Version.
    assert_ok(
        c.put(rec(pk, "k", 2, b"v2"), Condition::Version(1)).await,
        "put Version(1)",
    );
    assert_kind(
        c.put(rec(pk, "k", 2, b"lost"), Condition::Version(1)).await,
        ErrorKind::ConditionFailed,
        "put with a stale version",
    );
    assert_kind(
        c.put(rec(pk, "k", 4, b"lost"), Condition::Version(3)).await,
        ErrorKind::ConditionFailed,
        "put with a future version",
    );
    assert_eq!(
        get(c, pk, "k").await,
        Some(rec(pk, "k", 2, b"v2")),
        "kept after failed Version"
    );
    assert_kind(
        c.put(rec(pk, "nothing", 1, b"x"), Condition::Version(1))
            .await,
        ErrorKind::ConditionFailed,
        "put Version on nothing",
    );
    assert_eq!(get(c, pk, "nothing").await, None);
}

async fn conditional_deletes(c: &dyn Catalog, pk: &str) {
    assert_ok(
        c.delete(pk, "missing", Condition::None).await,
        "delete missing, no condition",
    );
    assert_ok(
        c.delete(pk, "missing", Condition::Absent).await,
        "delete missing, Absent",
    );
    assert_kind(
        c.delete(pk, "missing", Condition::Exists).await,
        ErrorKind::ConditionFailed,
        "delete missing, Exists",
    );
    assert_kind(
        c.delete(pk, "missing", Condition::Version(1)).await,
        ErrorKind::ConditionFailed,
        "delete missing, Version",
    );

    let r = rec(pk, "k", 3, b"v");
    assert_ok(c.put(r.clone(), Condition::None).await, "put");
    assert_kind(
        c.delete(pk, "k", Condition::Absent).await,
        ErrorKind::ConditionFailed,
        "delete a record, Absent",
    );
    assert_kind(
        c.delete(pk, "k", Condition::Version(2)).await,
        ErrorKind::ConditionFailed,
        "delete a record, wrong version",
    );
    assert_eq!(
        get(c, pk, "k").await,
        Some(r.clone()),
        "kept after failed deletes"
    );
    assert_ok(
        c.delete(pk, "k", Condition::Version(3)).await,
        "delete, right version",
    );
    assert_eq!(get(c, pk, "k").await, None, "deleted");

    assert_ok(c.put(r.clone(), Condition::None).await, "put again");
    assert_ok(c.delete(pk, "k", Condition::Exists).await, "delete, Exists");
    assert_eq!(get(c, pk, "k").await, None, "deleted");
    assert_ok(c.put(r, Condition::None).await, "put again");
    assert_ok(
        c.delete(pk, "k", Condition::None).await,
        "delete, no condition",
    );
    assert_eq!(get(c, pk, "k").await, None, "deleted");
}

async fn record_size(c: &dyn Catalog, pk: &str) {
    // Well under the limit whatever an adapter adds for attribute names.
    let fits = rec(pk, "fits", 1, &vec![7; MAX_RECORD_BYTES - 4096]);
    assert_ok(
        c.put(fits.clone(), Condition::None).await,
        "put a record near the limit",
    );
    assert_eq!(
        get(c, pk, "fits").await,
        Some(fits),
        "near-limit record reads back"
    );

    let over = rec(pk, "over", 1, &vec![7; MAX_RECORD_BYTES]);
    assert!(over.size() > MAX_RECORD_BYTES);
    assert_kind(
        c.put(over, Condition::None).await,
        ErrorKind::InvalidInput,
        "put over MAX_RECORD_BYTES",
    );
    assert_eq!(
        get(c, pk, "over").await,
        None,
        "an oversized record is not written"
    );
}

async fn query_all_pages(
    c: &dyn Catalog,
    pk: &str,
    prefix: &str,
    limit: usize,
    descending: bool,
) -> (Vec<String>, usize) {
    let mut after: Option<String> = None;
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let what = format!("query {pk} {prefix:?} limit {limit} desc {descending}");
        let page = assert_ok(
            c.query(pk, prefix, after.as_deref(), limit, descending)
                .await,
            &what,
        );
        pages += 1;
        assert!(pages <= 10_000, "{what}: paging does not end");
        assert!(page.records.len() <= limit, "{what}: page over the limit");
        for r in &page.records {
            assert_eq!(r.pk, pk, "{what}: record of another partition");
        }
        out.extend(page.records.into_iter().map(|r| r.sk));
        match page.next {
            Some(n) => after = Some(n),
            None => return (out, pages),
        }
    }
}

/// A prefix selects exactly the sort keys starting with its bytes: SQL wildcards in it are
/// plain characters, and neighbouring partitions never leak in.
async fn query_prefixes(c: &dyn Catalog, base: &str) {
    let pk = format!("{base}-q");
    let neighbour = format!("{base}-qx");
    let sks = [
        "a",
        "a%c",
        "a/1",
        "a/2",
        "a_b",
        "ab",
        "abc",
        "axb",
        "b",
        "snap#1",
        "snap#2",
        "snap$",
        "é",
        "éa",
        "\u{10FFFF}",
        "\u{10FFFF}z",
    ];
    for sk in sks {
        assert_ok(
            c.put(rec(&pk, sk, 1, sk.as_bytes()), Condition::None).await,
            "put",
        );
    }
    for sk in ["a", "ab", "zz"] {
        assert_ok(
            c.put(rec(&neighbour, sk, 1, b"n"), Condition::None).await,
            "put neighbour",
        );
    }
    let expect = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = sks
            .iter()
            .filter(|s| s.starts_with(prefix))
            .map(|s| s.to_string())
            .collect();
        v.sort();
        v
    };
    for prefix in [
        "",
        "a",
        "a_",
        "a%",
        "ab",
        "a/",
        "snap#",
        "snap",
        "é",
        "\u{10FFFF}",
        "z",
        "abcd",
    ] {
        for desc in [false, true] {
            let (got, _) = query_all_pages(c, &pk, prefix, 100, desc).await;
            let mut want = expect(prefix);
            if desc {
                want.reverse();
            }
            assert_eq!(got, want, "query prefix {prefix:?} descending {desc}");
        }
    }
    let page = assert_ok(c.query(&pk, "a", None, 100, false).await, "query");
    assert!(
        page.records
            .iter()
            .all(|r| r.value == r.sk.as_bytes() && r.version == 1),
        "query returns whole records"
    );
    let all = assert_ok(c.query_all(&pk, "").await, "query_all");
    assert_eq!(
        all.len(),
        sks.len(),
        "query_all sees the whole partition, nothing more"
    );
}

async fn query_paging(c: &dyn Catalog, pk: &str) {
    const N: usize = 23;
    let sks: Vec<String> = (0..N).map(|i| format!("item#{i:03}")).collect();
    for sk in &sks {
        assert_ok(c.put(rec(pk, sk, 1, b"."), Condition::None).await, "put");
    }
    // Records outside the prefix on both sides.
    for sk in ["item", "item$", "iten#000", "ite"] {
        assert_ok(
            c.put(rec(pk, sk, 1, b"."), Condition::None).await,
            "put outsider",
        );
    }
    for limit in [1, 5, 10, N - 1, N, N + 1, 1000] {
        let (asc, pages) = query_all_pages(c, pk, "item#", limit, false).await;
        assert_eq!(asc, sks, "ascending pages with limit {limit}");
        assert!(pages >= N.div_ceil(limit), "limit {limit} honoured");
        let (desc, _) = query_all_pages(c, pk, "item#", limit, true).await;
        let mut want = sks.clone();
        want.reverse();
        assert_eq!(desc, want, "descending pages with limit {limit}");
    }
    let first = assert_ok(c.query(pk, "item#", None, 5, false).await, "first page");
    assert_eq!(first.records.len(), 5, "a full first page when more remain");
    assert!(first.next.is_some(), "next is set when more remain");
    let first = assert_ok(
        c.query(pk, "item#", None, 5, true).await,
        "first page, descending",
    );
    assert_eq!(
        first.records[0].sk,
        sks[N - 1],
        "descending starts at the largest"
    );
    assert!(
        first.next.is_some(),
        "next is set when more remain, descending"
    );
}

async fn transactions(c: &dyn Catalog, pk: &str) {
    let other_pk = format!("{pk}-other");
    assert_ok(
        c.put(rec(pk, "existing", 4, b"e"), Condition::None).await,
        "put",
    );
    assert_ok(
        c.put(rec(pk, "doomed", 1, b"d"), Condition::None).await,
        "put",
    );
    assert_ok(
        c.put(rec(pk, "checked", 9, b"c"), Condition::None).await,
        "put",
    );

    // A failing condition anywhere: nothing happens, whatever the position of the op.
    let failing_ops: Vec<(&str, TxOp)> = vec![
        (
            "Check Exists on nothing",
            TxOp::Check {
                pk: pk.into(),
                sk: "nothing".into(),
                cond: Condition::Exists,
            },
        ),
        (
            "Check with a wrong version",
            TxOp::Check {
                pk: pk.into(),
                sk: "checked".into(),
                cond: Condition::Version(8),
            },
        ),
        (
            "Put Absent on a record",
            TxOp::Put(rec(pk, "existing", 5, b"x"), Condition::Absent),
        ),
        (
            "Delete with a wrong version",
            TxOp::Delete {
                pk: pk.into(),
                sk: "doomed".into(),
                cond: Condition::Version(2),
            },
        ),
    ];
    for (name, bad) in failing_ops {
        for at_start in [true, false] {
            let mut ops = vec![
                TxOp::Put(rec(pk, "new", 1, b"n"), Condition::Absent),
                TxOp::Put(rec(&other_pk, "new", 1, b"n"), Condition::None),
                TxOp::Delete {
                    pk: pk.into(),
                    sk: "doomed".into(),
                    cond: Condition::Exists,
                },
                TxOp::Put(rec(pk, "existing", 5, b"changed"), Condition::Version(4)),
            ];
            // One operation per record: drop the good one on the failing op's record.
            ops.retain(|op| op.keys() != bad.keys());
            if at_start {
                ops.insert(0, bad.clone());
            } else {
                ops.push(bad.clone());
            }
            assert_kind(c.transact(ops).await, ErrorKind::ConditionFailed, name);
            assert_eq!(get(c, pk, "new").await, None, "{name}: no put happened");
            assert_eq!(
                get(c, &other_pk, "new").await,
                None,
                "{name}: no put happened"
            );
            assert!(
                get(c, pk, "doomed").await.is_some(),
                "{name}: no delete happened"
            );
            assert_eq!(
                get(c, pk, "existing").await,
                Some(rec(pk, "existing", 4, b"e")),
                "{name}: no update happened"
            );
        }
    }

    // Every condition holds: every write happens. The same sort key in two partitions is
    // two records.
    let ops = vec![
        TxOp::Put(rec(pk, "new", 1, b"n"), Condition::Absent),
        TxOp::Put(rec(&other_pk, "new", 1, b"o"), Condition::Absent),
        TxOp::Put(rec(pk, "existing", 5, b"changed"), Condition::Version(4)),
        TxOp::Delete {
            pk: pk.into(),
            sk: "doomed".into(),
            cond: Condition::Exists,
        },
        TxOp::Delete {
            pk: pk.into(),
            sk: "never-was".into(),
            cond: Condition::None,
        },
        TxOp::Check {
            pk: pk.into(),
            sk: "checked".into(),
            cond: Condition::Version(9),
        },
        TxOp::Check {
            pk: pk.into(),
            sk: "nothing".into(),
            cond: Condition::Absent,
        },
    ];
    assert_ok(c.transact(ops).await, "transaction whose conditions hold");
    assert_eq!(get(c, pk, "new").await, Some(rec(pk, "new", 1, b"n")));
    assert_eq!(
        get(c, &other_pk, "new").await,
        Some(rec(&other_pk, "new", 1, b"o"))
    );
    assert_eq!(
        get(c, pk, "existing").await,
        Some(rec(pk, "existing", 5, b"changed"))
    );
    assert_eq!(
        get(c, pk, "doomed").await,
        None,
        "deleted in the transaction"
    );
    assert_eq!(
        get(c, pk, "checked").await,
        Some(rec(pk, "checked", 9, b"c")),
        "Check writes nothing"
    );
    assert_eq!(get(c, pk, "nothing").await, None, "Check writes nothing");
    assert_eq!(get(c, pk, "never-was").await, None);

    // A single operation works as the plain call does.
    assert_ok(
        c.transact(vec![TxOp::Put(
            rec(pk, "single", 1, b"s"),
            Condition::Absent,
        )])
        .await,
        "one-op transaction",
    );
    assert_kind(
        c.transact(vec![TxOp::Put(
            rec(pk, "single", 1, b"s"),
            Condition::Absent,
        )])
        .await,
        ErrorKind::ConditionFailed,
        "one-op transaction, condition fails",
    );
}

async fn transaction_limits(c: &dyn Catalog, pk: &str) {
    let puts = |n: usize, tag: &str| -> Vec<TxOp> {
        (0..n)
            .map(|i| TxOp::Put(rec(pk, &format!("{tag}{i:03}"), 1, b"x"), Condition::None))
            .collect()
    };
    assert_kind(
        c.transact(puts(MAX_TRANSACTION_ITEMS + 1, "over")).await,
        ErrorKind::InvalidInput,
        "more than MAX_TRANSACTION_ITEMS operations",
    );
    assert!(
        assert_ok(c.query(pk, "over", None, 10, false).await, "query")
            .records
            .is_empty(),
        "an oversized transaction writes nothing"
    );
    assert_ok(
        c.transact(puts(MAX_TRANSACTION_ITEMS, "max")).await,
        "exactly the maximum",
    );
    let (written, _) = query_all_pages(c, pk, "max", 1000, false).await;
    assert_eq!(
        written.len(),
        MAX_TRANSACTION_ITEMS,
        "all of the maximum written"
    );

    let dup_cases: Vec<(&str, Vec<TxOp>)> = vec![
        (
            "two puts of one record",
            vec![
                TxOp::Put(rec(pk, "dup", 1, b"a"), Condition::None),
                TxOp::Put(rec(pk, "dup", 2, b"b"), Condition::None),
            ],
        ),
        (
            "a put and a check of one record",
            vec![
                TxOp::Put(rec(pk, "dup", 1, b"a"), Condition::None),
                TxOp::Check {
                    pk: pk.into(),
                    sk: "dup".into(),
                    cond: Condition::Absent,
                },
            ],
        ),
        (
            "a put and a delete of one record",
            vec![
                TxOp::Put(rec(pk, "fresh", 1, b"a"), Condition::None),
                TxOp::Delete {
                    pk: pk.into(),
                    sk: "dup".into(),
                    cond: Condition::None,
                },
                TxOp::Put(rec(pk, "dup", 1, b"a"), Condition::None),
            ],
        ),
    ];
    for (name, ops) in dup_cases {
        assert_kind(c.transact(ops).await, ErrorKind::InvalidInput, name);
        assert_eq!(get(c, pk, "dup").await, None, "{name}: nothing written");
        assert_eq!(get(c, pk, "fresh").await, None, "{name}: nothing written");
    }

    let ops = vec![
        TxOp::Put(rec(pk, "small", 1, b"a"), Condition::None),
        TxOp::Put(
            rec(pk, "huge", 1, &vec![0; MAX_RECORD_BYTES]),
            Condition::None,
        ),
    ];
    assert_kind(
        c.transact(ops).await,
        ErrorKind::InvalidInput,
        "an oversized record",
    );
    assert_eq!(
        get(c, pk, "small").await,
        None,
        "oversized transaction writes nothing"
    );
}

/// Writers doing read, change, write back with `Version(old)` lose no update.
async fn optimistic_race(c: &dyn Catalog, pk: &str) {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 5;
    assert_ok(
        c.put(rec(pk, "counter", 1, b"0"), Condition::Absent).await,
        "put counter",
    );
    let writer = |_: usize| async move {
        let mut done = 0;
        let mut tries = 0;
        while done < ROUNDS {
            tries += 1;
            assert!(tries < 10_000, "a writer never wins");
            let cur = assert_ok(c.get(pk, "counter").await, "get").expect("counter exists");
            let n: u64 = String::from_utf8_lossy(&cur.value).parse().unwrap_or(0);
            let next = rec(
                pk,
                "counter",
                cur.version + 1,
                (n + 1).to_string().as_bytes(),
            );
            match c.put(next, Condition::Version(cur.version)).await {
                Ok(()) => done += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::ConditionFailed, "race put: {e}"),
            }
            tokio::task::yield_now().await;
        }
    };
    futures::future::join_all((0..WRITERS).map(writer)).await;
    let end = get(c, pk, "counter").await.expect("counter exists");
    let total = (WRITERS * ROUNDS) as u64;
    assert_eq!(end.version, 1 + total, "every update counted once");
    assert_eq!(end.value, total.to_string().into_bytes(), "no update lost");
}
