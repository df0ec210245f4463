//! Creates the AWS resources the adapters use, for tests and local runs against an
//! emulator. Production resources come from the SAM template; these calls make the same
//! shapes (the table's keys, the queue's redrive policy) so that tests see what production
//! has. Each call is idempotent where AWS allows it: a bucket or table that already exists is
//! fine.

use crate::error::failure;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use ports::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::time::Duration;

/// How long `create_table` waits for a new table to become active.
const TABLE_READY_WAIT: Duration = Duration::from_secs(60);

/// The names of one set of resources.
#[derive(Clone, Debug)]
pub struct Resources {
    pub bucket: String,
    pub table: String,
    /// The KMS key's id.
    pub key_id: String,
    pub queue_url: String,
    pub dead_letter_url: String,
    pub bus: String,
}

/// Creates every resource, named after `prefix` (lowercase letters, digits and `-`):
/// bucket and table `<prefix>`, key alias `alias/<prefix>`, queue `<prefix>-jobs` whose
/// messages go to `<prefix>-jobs-dlq` after `max_receives` receives, bus `<prefix>`.
///
/// # Errors
/// Whatever AWS refuses (a name taken by another account, a bad name).
pub async fn create_all(
    sdk: &aws_config::SdkConfig,
    prefix: &str,
    max_receives: u32,
) -> Result<Resources> {
    create_bucket(sdk, prefix).await?;
    create_table(sdk, prefix).await?;
    let key_id = create_key(sdk, Some(&format!("alias/{prefix}"))).await?;
    let (queue_url, dead_letter_url) =
        create_queue(sdk, &format!("{prefix}-jobs"), max_receives).await?;
    create_event_bus(sdk, prefix).await?;
    Ok(Resources {
        bucket: prefix.to_string(),
        table: prefix.to_string(),
        key_id,
        queue_url,
        dead_letter_url,
        bus: prefix.to_string(),
    })
}

/// Creates an S3 bucket in the SDK's region; one we already own is fine.
pub async fn create_bucket(sdk: &aws_config::SdkConfig, bucket: &str) -> Result<()> {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    let mut req = s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses a location constraint.
    if let Some(region) = sdk.region().map(|r| r.as_ref()) {
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(region.into())
                    .build(),
            );
        }
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let f = failure(e, "S3", format!("creating S3 bucket {bucket}"));
            if f.is_code("BucketAlreadyOwnedByYou") {
                Ok(())
            } else {
                Err(f.error)
            }
        }
    }
}

/// Creates the catalog table (string keys `pk` and `sk`, on demand) and waits until it is
/// active; one that exists is fine.
pub async fn create_table(sdk: &aws_config::SdkConfig, table: &str) -> Result<()> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|_| Error::new(ErrorKind::Other, "attribute definition"))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|_| Error::new(ErrorKind::Other, "key schema"))
    };
    let what = format!("creating DynamoDB table {table}");
    let created = ddb
        .create_table()
        .table_name(table)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    if let Err(e) = created {
        let f = failure(e, "DynamoDB", &what);
        if !f.is_code("ResourceInUseException") {
            return Err(f.error);
        }
    }
    let deadline = tokio::time::Instant::now() + TABLE_READY_WAIT;
    loop {
        let out = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| failure(e, "DynamoDB", &what).error)?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("{what}: not active after {TABLE_READY_WAIT:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // As the template's TimeToLiveSpecification: day markers expire.
    let spec = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
        .attribute_name(crate::dynamo::TTL)
        .enabled(true)
        .build()
        .map_err(|_| Error::new(ErrorKind::Other, "time to live specification"))?;
    let ttl = ddb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await;
    if let Err(e) = ttl {
        let f = failure(e, "DynamoDB", &what);
        // Already enabled (a table made earlier) is a validation error: fine.
        if !(f.is_code("ValidationException") && f.error.to_string().contains("already")) {
            return Err(f.error);
        }
    }
    Ok(())
}

/// Creates a symmetric KMS key (and `alias`, when given, e.g. `alias/lifeboat`); returns
/// the key's id.
pub async fn create_key(sdk: &aws_config::SdkConfig, alias: Option<&str>) -> Result<String> {
    let kms = aws_sdk_kms::Client::new(sdk);
    let out = kms
        .create_key()
        .description("Lifeboat: wraps tenant keys")
        .send()
        .await
        .map_err(|e| failure(e, "KMS", "creating a KMS key").error)?;
    let key_id = out
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "KMS returned no key id"))?;
    if let Some(alias) = alias {
        kms.create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await
            .map_err(|e| failure(e, "KMS", format!("creating KMS alias {alias}")).error)?;
    }
    Ok(key_id)
}

/// Creates queue `name` and its dead-letter queue `<name>-dlq`, to which a message goes
/// once received more than `max_receives` times; returns both URLs.
pub async fn create_queue(
    sdk: &aws_config::SdkConfig,
    name: &str,
    max_receives: u32,
) -> Result<(String, String)> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq_name = format!("{name}-dlq");
    let dlq_url = sqs
        .create_queue()
        .queue_name(&dlq_name)
        // Dead letters wait the longest SQS allows (14 days) to be looked at.
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| failure(e, "SQS", format!("creating SQS queue {dlq_name}")).error)?
        .queue_url()
        .map(str::to_string)
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "SQS returned no queue URL"))?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failure(e, "SQS", format!("reading SQS queue {dlq_name}")).error)?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "SQS returned no queue ARN"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives.max(1),
    })
    .to_string();
    let attrs = HashMap::from([(QueueAttributeName::RedrivePolicy, redrive)]);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs))
        .send()
        .await
        .map_err(|e| failure(e, "SQS", format!("creating SQS queue {name}")).error)?
        .queue_url()
        .map(str::to_string)
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "SQS returned no queue URL"))?;
    Ok((url, dlq_url))
}

/// Creates an EventBridge bus; one that exists is fine.
pub async fn create_event_bus(sdk: &aws_config::SdkConfig, name: &str) -> Result<()> {
    let eb = aws_sdk_eventbridge::Client::new(sdk);
    match eb.create_event_bus().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let f = failure(e, "EventBridge", format!("creating EventBridge bus {name}"));
            if f.is_code("ResourceAlreadyExistsException") {
                Ok(())
            } else {
                Err(f.error)
            }
        }
    }
}
