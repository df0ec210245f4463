//! Runs the `testkit` conformance suites against the AWS adapters on moto's server (started
//! once for this test binary, see `aws_adapters::testing`), plus the failures only these
//! adapters meet: a short range body, an oversize message, a destroyed tenant key, a missing
//! bucket or table.

use aws_adapters::{
    setup, testing, DynamoCatalog, EventBridgeBus, KmsKeyService, S3ObjectStore, SdkConfig,
    SqsQueue,
};
use bytes::Bytes;
use ports::{
    Catalog, Condition, EncryptionContext, ErrorKind, Event, EventBus, KeyService, ObjectKey,
    ObjectStore, Queue, Record, MAX_MESSAGE_BYTES,
};
use std::sync::Arc;
use std::time::Duration;
use testkit::{assert_kind, assert_ok, unique};

async fn sdk() -> SdkConfig {
    testing::sdk_config().await
}

/// A fresh resource name (S3 bucket names are lowercase).
fn name(base: &str) -> String {
    unique(base)
}

async fn bucket(sdk: &SdkConfig) -> S3ObjectStore {
    let b = name("lb-s3-");
    setup::create_bucket(sdk, &b).await.unwrap();
    S3ObjectStore::new(sdk, b)
}

async fn catalog(sdk: &SdkConfig) -> DynamoCatalog {
    let t = name("lb-ddb-");
    setup::create_table(sdk, &t).await.unwrap();
    DynamoCatalog::new(sdk, t)
}

async fn keys(sdk: &SdkConfig) -> (KmsKeyService, Arc<DynamoCatalog>) {
    let catalog = Arc::new(catalog(sdk).await);
    let key = setup::create_key(sdk, Some(&format!("alias/{}", name("lb-kms-"))))
        .await
        .unwrap();
    (KmsKeyService::new(sdk, key, catalog.clone()), catalog)
}

fn tenant() -> domain::TenantId {
    testkit::unique_tenant()
}

fn task(name: &str) -> domain::TaskId {
    domain::TaskId::new(name).unwrap()
}

// ---- the suites ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_store_conformance() {
    let sdk = sdk().await;
    testkit::object_store_suite(&bucket(&sdk).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_catalog_conformance() {
    let sdk = sdk().await;
    testkit::catalog_suite(&catalog(&sdk).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_key_service_conformance() {
    let sdk = sdk().await;
    let (keys, _) = keys(&sdk).await;
    testkit::key_service_suite(&keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_conformance() {
    let sdk = sdk().await;
    testkit::queue_suite(
        |max_receives| {
            let sdk = sdk.clone();
            async move {
                let (url, dlq) = setup::create_queue(&sdk, &name("lb-sqs-"), max_receives)
                    .await
                    .unwrap();
                Box::new(SqsQueue::new(&sdk, url, Some(dlq))) as Box<dyn Queue>
            }
        },
        // SQS counts visibility timeouts in whole seconds.
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_bus_conformance() {
    let sdk = sdk().await;
    let bus = name("lb-eb-");
    setup::create_event_bus(&sdk, &bus).await.unwrap();
    testkit::event_bus_suite(&EventBridgeBus::new(&sdk, bus)).await;
}

// ---- S3 ----

#[tokio::test]
async fn a_range_past_the_end_is_refused_not_returned_short() {
    let sdk = sdk().await;
    let store = bucket(&sdk).await;
    let k = ObjectKey::new(&tenant(), &task("t"), "pack", "aa");
    store
        .put_if_absent(&k, Bytes::from(vec![7u8; 100]))
        .await
        .unwrap();
    // S3 answers a range that ends past the object with the bytes it has (206, a short
    // body); those must never be handed out as the range asked for.
    let err = store.get_range(&k, 50, 150).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("ends past its end"), "{err}");
    assert_eq!(store.get_range(&k, 50, 100).await.unwrap().len(), 50);
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_setup_error_not_a_missing_object() {
    let sdk = sdk().await;
    let store = S3ObjectStore::new(&sdk, name("lb-nobucket-"));
    let k = ObjectKey::new(&tenant(), &task("t"), "pack", "aa");
    let results = [
        ("put", store.put_if_absent(&k, Bytes::from("x")).await.err()),
        ("get", store.get(&k).await.err()),
        ("get_range", store.get_range(&k, 0, 1).await.err()),
        ("size", store.size(&k).await.err()),
        ("list", store.list("t/", None).await.err()),
        ("delete", store.delete(&k).await.err()),
    ];
    for (op, err) in results {
        let err = err.unwrap_or_else(|| panic!("{op} on a missing bucket succeeded"));
        assert_eq!(err.kind(), ErrorKind::Other, "{op}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("does not exist") && text.contains(store.bucket()),
            "{op}: {text}"
        );
        assert!(!text.contains('\n'), "{op}: one line: {text}");
    }
}

#[tokio::test]
async fn foreign_objects_in_the_bucket_are_not_listed() {
    let sdk = sdk().await;
    let store = bucket(&sdk).await;
    let t = tenant();
    let k = ObjectKey::new(&t, &task("t"), "pack", "aa");
    store.put_if_absent(&k, Bytes::from("ours")).await.unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.put_object()
        .bucket(store.bucket())
        .key(format!("t/{t}/t/pack/NOT-OURS"))
        .body(Bytes::from("x").into())
        .send()
        .await
        .unwrap();
    let page = store
        .list(&ObjectKey::tenant_prefix(&t), None)
        .await
        .unwrap();
    assert_eq!(page.keys, vec![(k, 4)]);
}

/// Exports carry the tag the bucket's lifecycle rule expires (put whole or in parts);
/// backups carry none, so no rule can ever delete them.
#[tokio::test]
async fn exports_are_tagged_to_expire_and_backups_are_not() {
    let sdk = sdk().await;
    let store = bucket(&sdk).await;
    let t = tenant();
    let small = ObjectKey::new(&t, &task("x"), ports::EXPORT_KIND, "small");
    let big = ObjectKey::new(&t, &task("x"), ports::EXPORT_KIND, "big");
    let pack = ObjectKey::new(&t, &task("x"), "pack", "aa");
    store
        .put_if_absent(&small, Bytes::from("zip"))
        .await
        .unwrap();
    let data = vec![7u8; ports::STREAM_PART_BYTES + 10];
    store
        .put_stream_if_absent(&big, &mut ports::ReadSource(&data[..]))
        .await
        .unwrap();
    store
        .put_stream_if_absent(&pack, &mut ports::ReadSource(&data[..]))
        .await
        .unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let tags = |key: ObjectKey| {
        let s3 = s3.clone();
        let bucket = store.bucket().to_string();
        async move {
            let out = s3
                .get_object_tagging()
                .bucket(bucket)
                .key(key.as_str())
                .send()
                .await
                .unwrap();
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect::<Vec<_>>()
        }
    };
    let expiring = vec![(
        aws_adapters::EXPIRING_TAG.0.to_string(),
        aws_adapters::EXPIRING_TAG.1.to_string(),
    )];
    assert_eq!(tags(small).await, expiring, "a small export");
    assert_eq!(tags(big).await, expiring, "an export in parts");
    assert_eq!(tags(pack).await, Vec::new(), "a pack");
}

// ---- DynamoDB ----

#[tokio::test]
async fn a_missing_table_is_a_clear_setup_error() {
    let sdk = sdk().await;
    let c = DynamoCatalog::new(&sdk, name("lb-notable-"));
    let results = [
        ("get", c.get("p", "s").await.err()),
        (
            "put",
            c.put(Record::new("p", "s", vec![]), Condition::None)
                .await
                .err(),
        ),
        ("delete", c.delete("p", "s", Condition::None).await.err()),
        ("query", c.query("p", "", None, 10, false).await.err()),
        (
            "transact",
            c.transact(vec![ports::TxOp::Put(
                Record::new("p", "s", vec![]),
                Condition::None,
            )])
            .await
            .err(),
        ),
    ];
    for (op, err) in results {
        let err = err.unwrap_or_else(|| panic!("{op} on a missing table succeeded"));
        assert_eq!(err.kind(), ErrorKind::Other, "{op}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("does not exist") && text.contains(c.table()),
            "{op}: {text}"
        );
    }
}

#[tokio::test]
async fn items_that_are_not_records_are_reported_not_misread() {
    let sdk = sdk().await;
    let c = catalog(&sdk).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    use aws_sdk_dynamodb::types::AttributeValue;
    ddb.put_item()
        .table_name(c.table())
        .item("pk", AttributeValue::S("p".into()))
        .item("sk", AttributeValue::S("foreign".into()))
        .item("ver", AttributeValue::S("not a number".into()))
        .send()
        .await
        .unwrap();
    let err = c.get("p", "foreign").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("not a catalog record"), "{err}");
}

// ---- KMS ----

#[tokio::test]
async fn a_wrong_context_or_a_destroyed_tenant_key_is_refused() {
    let sdk = sdk().await;
    let (keys, catalog) = keys(&sdk).await;
    let t = tenant();
    let ctx = EncryptionContext::for_task(&t, &task("mail"));
    let dk = keys.generate_data_key(&ctx).await.unwrap();

    // The tenant key record is in the tenant's partition, wrapped (not the plaintext).
    let tk = ports::catalog_keys::tenant_key(&t);
    let rec = catalog
        .get(&tk.pk, &tk.sk)
        .await
        .unwrap()
        .expect("a tenant key record");
    assert!(rec.value.len() > 32);

    // Another instance (a new Lambda execution environment) unwraps the same key through
    // the catalog record and KMS.
    let other = KmsKeyService::new(&sdk, keys.key_id(), catalog.clone());
    assert_eq!(
        *other.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        *dk.plaintext
    );

    let wrong = EncryptionContext::for_task(&t, &task("drive"));
    assert_kind(
        keys.decrypt_data_key(&dk.wrapped, &wrong).await,
        ErrorKind::Integrity,
        "wrong context",
    );

    keys.destroy_tenant_keys(&t).await.unwrap();
    assert!(catalog.get(&tk.pk, &tk.sk).await.unwrap().is_none());
    let err = other.decrypt_data_key(&dk.wrapped, &ctx).await;
    // `other` still holds the key in its cache: an instance lives for one invocation, and
    // the next one starts without it.
    assert!(err.is_ok(), "the cache of a running instance is kept");
    let fresh = KmsKeyService::new(&sdk, keys.key_id(), catalog.clone());
    let err = fresh.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("destroyed"), "{err}");
    let err = keys.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");

    // A new key made after the shredding is a new tenant key: old keys stay dead.
    let dk2 = keys.generate_data_key(&ctx).await.unwrap();
    assert_eq!(
        *fresh.decrypt_data_key(&dk2.wrapped, &ctx).await.unwrap(),
        *dk2.plaintext
    );
    assert_kind(
        fresh.decrypt_data_key(&dk.wrapped, &ctx).await,
        ErrorKind::Integrity,
        "a shredded key after a new tenant key",
    );
}

#[tokio::test]
async fn racing_instances_agree_on_one_tenant_key() {
    let sdk = sdk().await;
    let (first, catalog) = keys(&sdk).await;
    let id = first.key_id().to_string();
    let t = tenant();
    let ctx = EncryptionContext::for_task(&t, &task("mail"));
    let instances: Vec<KmsKeyService> = (0..6)
        .map(|_| KmsKeyService::new(&sdk, id.clone(), catalog.clone()))
        .collect();
    let made = futures::future::join_all(instances.iter().map(|k| k.generate_data_key(&ctx))).await;
    for dk in &made {
        let dk = dk.as_ref().unwrap();
        for k in &instances {
            assert_eq!(
                *k.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
                *dk.plaintext
            );
        }
    }
}

#[tokio::test]
async fn a_missing_kms_key_is_a_clear_setup_error() {
    let sdk = sdk().await;
    let catalog = Arc::new(catalog(&sdk).await);
    let keys = KmsKeyService::new(&sdk, "alias/lb-no-such-key", catalog);
    let err = keys
        .generate_data_key(&EncryptionContext::for_task(&tenant(), &task("mail")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

// ---- SQS ----

#[tokio::test]
async fn an_oversize_message_is_refused_before_sending() {
    let sdk = sdk().await;
    let (url, dlq) = setup::create_queue(&sdk, &name("lb-sqs-"), 3)
        .await
        .unwrap();
    let q = SqsQueue::new(&sdk, url, Some(dlq));
    let err = q
        .send_batch(&["z".repeat(MAX_MESSAGE_BYTES + 1)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("over the"), "{err}");
    assert_kind(
        q.send_batch(&["nul \0".to_string()]).await,
        ErrorKind::InvalidInput,
        "a character SQS refuses",
    );
    assert!(q
        .receive(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert_kind(
        q.receive(1, Duration::from_secs(12 * 3600 + 1)).await,
        ErrorKind::InvalidInput,
        "visibility over 12 h",
    );
    assert_kind(
        q.receive(0, Duration::ZERO).await,
        ErrorKind::InvalidInput,
        "receive 0",
    );
}

#[tokio::test]
async fn a_missing_queue_is_a_clear_setup_error() {
    let sdk = sdk().await;
    let url = format!("{}/123456789012/{}", testing::endpoint(), name("lb-noq-"));
    let q = SqsQueue::new(&sdk, url.clone(), None);
    let err = q.send_batch(&["x".to_string()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = q.receive(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert_ok(q.dead_letters().await, "no dead-letter queue: none");
}

// ---- EventBridge ----

#[tokio::test]
async fn events_need_an_existing_bus() {
    let sdk = sdk().await;
    let bus = EventBridgeBus::new(&sdk, name("lb-nobus-"));
    let ev = Event {
        source: "lifeboat.test".into(),
        detail_type: "Check".into(),
        detail: "{}".into(),
    };
    let err = bus.put_events(&[ev]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("does not exist") && text.contains(bus.bus()),
        "{text}"
    );
    // An empty batch asks nothing of AWS.
    assert_ok(bus.put_events(&[]).await, "an empty batch");
}

// ---- setup ----

#[tokio::test]
async fn setup_makes_working_resources_and_can_run_again() {
    let sdk = sdk().await;
    let prefix = name("lb-all-");
    let res = setup::create_all(&sdk, &prefix, 3).await.unwrap();
    // Again: what exists is kept (a new KMS key and its alias are the exception, so the
    // parts are called one by one).
    setup::create_bucket(&sdk, &res.bucket).await.unwrap();
    setup::create_table(&sdk, &res.table).await.unwrap();
    setup::create_event_bus(&sdk, &res.bus).await.unwrap();

    let store = S3ObjectStore::new(&sdk, &res.bucket);
    let k = ObjectKey::new(&tenant(), &task("t"), "pack", "aa");
    store.put_if_absent(&k, Bytes::from("x")).await.unwrap();
    let catalog = Arc::new(DynamoCatalog::new(&sdk, &res.table));
    // The key by its alias, as the SAM template hands it to the functions.
    let keys = KmsKeyService::new(&sdk, format!("alias/{prefix}"), catalog);
    let ctx = EncryptionContext::for_task(&tenant(), &task("mail"));
    let dk = keys.generate_data_key(&ctx).await.unwrap();
    assert_eq!(
        *keys.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        *dk.plaintext
    );
    let q = SqsQueue::new(&sdk, &res.queue_url, Some(res.dead_letter_url.clone()));
    q.send_batch(&["job".to_string()]).await.unwrap();
    let got = q.receive(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1);
    q.delete(&got[0].receipt).await.unwrap();
    let bus = EventBridgeBus::new(&sdk, &res.bus);
    bus.put_events(&[Event {
        source: "lifeboat.test".into(),
        detail_type: "Check".into(),
        detail: "{}".into(),
    }])
    .await
    .unwrap();
}

// ---- errors ----

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable_and_names_no_secret() {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(aws_adapters::http_client())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDSECRETLOOKING",
            "very-secret-key",
            Some("session-token-secret".into()),
            None,
            "test",
        ))
        // Port 9 (discard) on loopback: nothing listens there.
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let store = S3ObjectStore::new(&sdk, "any-bucket");
    let err = store
        .get(&ObjectKey::new(&tenant(), &task("t"), "pack", "aa"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let text = format!("{err} {err:?}");
    for secret in [
        "AKIDSECRETLOOKING",
        "very-secret-key",
        "session-token-secret",
    ] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(text.contains("could not reach S3"), "{text}");
}

#[tokio::test]
async fn a_presigned_link_downloads_the_object_until_it_expires() {
    let sdk = sdk().await;
    let store = bucket(&sdk).await;
    let key = ObjectKey::new(&tenant(), &task("exports"), "export", "job-1");
    let zip = Bytes::from_static(b"PK\x03\x04 an export");
    store.put_if_absent(&key, zip.clone()).await.unwrap();
    let link = store
        .presign_get(&key, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("S3 makes links");
    assert!(link.contains("X-Amz-Signature="), "{link}");
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), zip);
    // (moto does not check presigned signatures, so a tampered link cannot be tested
    // here: real S3 answers it 403.)
    // S3 refuses to sign for longer than a week.
    let too_long = store
        .presign_get(&key, Duration::from_secs(8 * 24 * 3600))
        .await;
    assert_eq!(too_long.unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// A record written with an expiry carries DynamoDB's time-to-live attribute, which the
/// table (as `setup` makes it, like the template) expires on; a plain record has none.
#[tokio::test]
async fn expiring_records_carry_the_tables_time_to_live_attribute() {
    let sdk = sdk().await;
    let c = catalog(&sdk).await;
    let raw = aws_sdk_dynamodb::Client::new(&sdk);
    let ttl = raw
        .describe_time_to_live()
        .table_name(c.table())
        .send()
        .await
        .unwrap();
    let desc = ttl.time_to_live_description().unwrap();
    assert_eq!(
        desc.attribute_name(),
        Some(aws_adapters::CATALOG_TTL_ATTRIBUTE)
    );
    assert_eq!(
        desc.time_to_live_status(),
        Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled)
    );
    // Setting it up again is fine.
    setup::create_table(&sdk, c.table()).await.unwrap();

    c.put_expiring(
        Record::new("expiring-test", "marker", Vec::new()),
        Condition::Absent,
        1_795_000_000,
    )
    .await
    .unwrap();
    c.put(
        Record::new("plain-test", "x", b"{}".to_vec()),
        Condition::None,
    )
    .await
    .unwrap();
    let get = |pk: &str, sk: &str| {
        raw.get_item()
            .table_name(c.table())
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk.into()))
            .send()
    };
    let item = get("expiring-test", "marker").await.unwrap();
    let item = item.item().unwrap();
    assert_eq!(
        item.get(aws_adapters::CATALOG_TTL_ATTRIBUTE)
            .and_then(|v| v.as_n().ok())
            .map(String::as_str),
        Some("1795000000")
    );
    let plain = get("plain-test", "x").await.unwrap();
    assert!(!plain
        .item()
        .unwrap()
        .contains_key(aws_adapters::CATALOG_TTL_ATTRIBUTE));
    // An expiring record reads back like any other, and its condition holds.
    let rec = c.get("expiring-test", "marker").await.unwrap().unwrap();
    assert_eq!(rec.version, 1);
    assert_kind(
        c.put_expiring(
            Record::new("expiring-test", "marker", Vec::new()),
            Condition::Absent,
            1,
        )
        .await,
        ErrorKind::ConditionFailed,
        "an expiring put keeps its condition",
    );
}

/// A streamed write is a multipart upload under way while its source is still being read
/// (so no more than a part is ever held), and the object appears only at completion. A
/// source that fails aborts the upload: no object and no parts are left.
#[tokio::test]
async fn a_streamed_write_uploads_parts_as_the_source_is_read() {
    struct Watched {
        left: usize,
        raw: aws_sdk_s3::Client,
        bucket: String,
        seen_uploads: Vec<usize>,
        fail_at_end: bool,
    }
    #[async_trait::async_trait]
    impl ports::ByteSource for Watched {
        async fn next_part(&mut self, max: usize) -> ports::Result<Bytes> {
            let uploads = self
                .raw
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .send()
                .await
                .unwrap();
            self.seen_uploads.push(uploads.uploads().len());
            if self.left == 0 && self.fail_at_end {
                return Err(ports::Error::new(ErrorKind::Unavailable, "source failed"));
            }
            let n = max.min(self.left);
            self.left -= n;
            Ok(Bytes::from(vec![7u8; n]))
        }
    }
    let sdk = sdk().await;
    let store = bucket(&sdk).await;
    let raw = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let t = tenant();
    let len = 2 * ports::STREAM_PART_BYTES + 10;
    let k = ObjectKey::new(&t, &task("exp"), "export", "one");
    let mut src = Watched {
        left: len,
        raw: raw.clone(),
        bucket: store.bucket().to_string(),
        seen_uploads: Vec::new(),
        fail_at_end: false,
    };
    let n = store.put_stream_if_absent(&k, &mut src).await.unwrap();
    assert_eq!(n as usize, len);
    // Read 1 before the upload began; 2, 3 and the final empty read while it was open.
    assert_eq!(src.seen_uploads, [0, 1, 1, 1]);
    assert_eq!(store.size(&k).await.unwrap() as usize, len);
    let after = raw
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(after.uploads().is_empty());

    let broken = ObjectKey::new(&t, &task("exp"), "export", "broken");
    let mut src = Watched {
        left: len,
        raw: raw.clone(),
        bucket: store.bucket().to_string(),
        seen_uploads: Vec::new(),
        fail_at_end: true,
    };
    assert!(store.put_stream_if_absent(&broken, &mut src).await.is_err());
    assert_kind(
        store.size(&broken).await,
        ErrorKind::NotFound,
        "a failed streamed write",
    );
    let after = raw
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(after.uploads().is_empty(), "the failed upload was aborted");
}
