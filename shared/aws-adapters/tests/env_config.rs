//! `load_sdk_config` builds working adapters from the environment alone, as a Lambda
//! function (or a local run against an emulator) has it. A test binary of its own: it sets
//! process environment variables, which no other test may see change.

use aws_adapters::{load_sdk_config, setup, testing, S3ObjectStore};
use bytes::Bytes;
use ports::{ObjectKey, ObjectStore};

#[tokio::test]
async fn the_environment_names_endpoint_region_and_credentials() {
    // By host name, as a real endpoint is: S3 addresses an IP endpoint path-style anyway.
    let endpoint = testing::endpoint().replace("127.0.0.1", "localhost");
    for (k, v) in [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", testing::TEST_REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ] {
        // The only test of this binary, before any other thread reads the environment.
        std::env::set_var(k, v);
    }
    let sdk = load_sdk_config().await;
    assert_eq!(sdk.endpoint_url(), Some(endpoint.as_str()));
    assert_eq!(sdk.region().map(|r| r.as_ref()), Some(testing::TEST_REGION));

    // An emulator has no per-bucket host names: this works only with path-style requests.
    let bucket = testkit::unique("lb-env-");
    setup::create_bucket(&sdk, &bucket).await.unwrap();
    let store = S3ObjectStore::new(&sdk, bucket);
    let k = ObjectKey::new(
        &testkit::unique_tenant(),
        &domain::TaskId::new("t").unwrap(),
        "pack",
        "aa",
    );
    store.put_if_absent(&k, Bytes::from("env")).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Bytes::from("env"));
}
