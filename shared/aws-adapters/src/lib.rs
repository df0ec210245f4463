//! The AWS adapters: every port served by an AWS service, for the Lambda functions.
//!
//! | port | adapter | backed by |
//! | --- | --- | --- |
//! | `ObjectStore` | [`S3ObjectStore`] | one S3 bucket, write-once puts (`If-None-Match: *`) |
//! | `Catalog` | [`DynamoCatalog`] | one DynamoDB table (`pk`, `sk`, `ver`, `v`) |
//! | `KeyService` | [`KmsKeyService`] | one KMS key per region, a tenant key per tenant kept wrapped in the catalog |
//! | `Queue` | [`SqsQueue`] | an SQS queue and its dead-letter queue |
//! | `EventBus` | [`EventBridgeBus`] | an EventBridge bus |
//!
//! Each is built from an [`aws_config::SdkConfig`] (see [`load_sdk_config`], which honours
//! `AWS_ENDPOINT_URL` and the usual credential chain) and the names of its resources, which
//! in production come from the SAM template and locally from [`setup`]. Every adapter passes
//! the `testkit` conformance suites against moto's server, as the embedded adapters do
//! locally. Errors are the ports' [`ports::Error`]; messages name the resource and AWS's
//! error code, never a credential, a signature or stored data.
//!
//! **Architecture invariant:** the only crate of the workspace that depends on `aws-sdk-*`,
//! `aws-config` or `aws-smithy-*`; of ours, only `domain` and `ports`. Used by binaries and
//! tests, never by the engine or the vault.

mod dynamo;
mod error;
mod eventbridge;
mod kms;
mod s3;
pub mod setup;
mod sqs;
pub mod testing;

pub use dynamo::{DynamoCatalog, TTL as CATALOG_TTL_ATTRIBUTE};
pub use eventbridge::EventBridgeBus;
pub use kms::KmsKeyService;
pub use s3::{S3ObjectStore, EXPIRING_TAG};
pub use sqs::SqsQueue;

pub use aws_config::SdkConfig;

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The HTTP client every adapter uses: hyper with rustls on ring (the crypto library the
/// rest of Lifeboat uses), trusting the system's root certificates. Plain `http://`
/// endpoints (a local emulator) work too.
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration from the environment, as a Lambda function or a local run has it:
/// region, credentials (environment, profile, container or instance role) and an endpoint
/// override from `AWS_ENDPOINT_URL` (then S3 uses path-style addressing).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}
