//! `DynamoCatalog`: the catalog port on one DynamoDB table. An item is `pk` (string,
//! partition key), `sk` (string, sort key), `ver` (number: the record's version) and `v`
//! (binary: the value). Conditions become condition expressions; transactions become one
//! `TransactWriteItems`.

use crate::error::{failure, invalid, Failure};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem};
use ports::catalog_limits::{check_keys, check_query, check_record, check_transaction};
use ports::{Catalog, Condition, Error, ErrorKind, Page, Record, Result, TxOp};
use std::collections::HashMap;

const PK: &str = "pk";
const SK: &str = "sk";
const VER: &str = "ver";
const VAL: &str = "v";
/// The table's time-to-live attribute (Unix seconds): `TimeToLiveSpecification` in the
/// template, and [`crate::setup::create_table`] for tests.
pub const TTL: &str = "ttl";

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB table (string keys `pk` and `sk`) as a catalog.
///
/// Reads are strongly consistent: callers read a record, change it and write it back under
/// `Condition::Version`, and an eventually consistent read would only make them lose races.
#[derive(Clone, Debug)]
pub struct DynamoCatalog {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// A condition as DynamoDB takes it: the expression, its names and its values.
struct Expr {
    text: Option<&'static str>,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

fn expr(cond: Condition) -> Expr {
    let names = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    };
    match cond {
        Condition::None => Expr {
            text: None,
            names: None,
            values: None,
        },
        Condition::Absent => Expr {
            text: Some("attribute_not_exists(#pk)"),
            names: names(&[("#pk", PK)]),
            values: None,
        },
        Condition::Exists => Expr {
            text: Some("attribute_exists(#pk)"),
            names: names(&[("#pk", PK)]),
            values: None,
        },
        Condition::Version(v) => Expr {
            text: Some("#ver = :ver"),
            names: names(&[("#ver", VER)]),
            values: Some(HashMap::from([(
                ":ver".to_string(),
                AttributeValue::N(v.to_string()),
            )])),
        },
    }
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(pk.to_string())),
        (SK.to_string(), AttributeValue::S(sk.to_string())),
    ])
}

fn item(r: Record) -> Item {
    let mut it = key(&r.pk, &r.sk);
    it.insert(VER.to_string(), AttributeValue::N(r.version.to_string()));
    it.insert(VAL.to_string(), AttributeValue::B(Blob::new(r.value)));
    it
}

impl DynamoCatalog {
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoCatalog::from_client(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    pub fn from_client(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoCatalog {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn what(&self, pk: &str, sk: &str) -> String {
        format!("catalog record {pk}/{sk} in table {}", self.table)
    }

    /// The mapping shared by every call: a failed condition, a missing table.
    fn map(&self, f: Failure) -> Error {
        match f.code.as_deref() {
            Some("ConditionalCheckFailedException") => {
                Error::new(ErrorKind::ConditionFailed, f.error.to_string())
            }
            Some("ResourceNotFoundException") => Error::new(
                ErrorKind::Other,
                format!(
                    "DynamoDB table {} does not exist (check the configured table name, or create it)",
                    self.table
                ),
            ),
            Some("TransactionConflictException") => {
                Error::new(ErrorKind::Unavailable, f.error.to_string())
            }
            _ => f.error,
        }
    }

    fn record(&self, it: &Item) -> Result<Record> {
        let bad = |what: &str| {
            let pk = match it.get(PK) {
                Some(AttributeValue::S(s)) => s.as_str(),
                _ => "?",
            };
            Error::new(
                ErrorKind::Other,
                format!(
                    "an item of partition {pk} in table {} is not a catalog record: {what}",
                    self.table
                ),
            )
        };
        let s = |name: &str| match it.get(name) {
            Some(AttributeValue::S(s)) => Ok(s.clone()),
            _ => Err(bad(&format!("no string {name}"))),
        };
        let version = match it.get(VER) {
            Some(AttributeValue::N(n)) => n.parse().map_err(|_| bad("ver is not a u64"))?,
            _ => return Err(bad("no number ver")),
        };
        let value = match it.get(VAL) {
            Some(AttributeValue::B(b)) => b.clone().into_inner(),
            _ => return Err(bad("no binary v")),
        };
        Ok(Record {
            pk: s(PK)?,
            sk: s(SK)?,
            version,
            value,
        })
    }
}

impl DynamoCatalog {
    async fn put_item(&self, record: Record, cond: Condition, ttl: Option<u64>) -> Result<()> {
        check_record(&record)?;
        let what = self.what(&record.pk, &record.sk);
        let e = expr(cond);
        let mut it = item(record);
        if let Some(t) = ttl {
            it.insert(TTL.to_string(), AttributeValue::N(t.to_string()));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .set_condition_expression(e.text.map(str::to_string))
            .set_expression_attribute_names(e.names)
            .set_expression_attribute_values(e.values)
            .send()
            .await
            .map_err(|e| self.map(failure(e, "DynamoDB", what)))?;
        Ok(())
    }
}

#[async_trait]
impl Catalog for DynamoCatalog {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>> {
        check_keys(pk, sk)?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.map(failure(e, "DynamoDB", self.what(pk, sk))))?;
        out.item().map(|it| self.record(it)).transpose()
    }

    async fn put(&self, record: Record, cond: Condition) -> Result<()> {
        self.put_item(record, cond, None).await
    }

    async fn put_expiring(&self, record: Record, cond: Condition, expires_at: u64) -> Result<()> {
        self.put_item(record, cond, Some(expires_at)).await
    }

    async fn delete(&self, pk: &str, sk: &str, cond: Condition) -> Result<()> {
        check_keys(pk, sk)?;
        let e = expr(cond);
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .set_condition_expression(e.text.map(str::to_string))
            .set_expression_attribute_names(e.names)
            .set_expression_attribute_values(e.values)
            .send()
            .await
            .map_err(|e| self.map(failure(e, "DynamoDB", self.what(pk, sk))))?;
        Ok(())
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> Result<Page> {
        check_query(pk, limit)?;
        let mut names = HashMap::from([("#pk".to_string(), PK.to_string())]);
        let mut values = HashMap::from([(":pk".to_string(), AttributeValue::S(pk.to_string()))]);
        // DynamoDB refuses an empty string in a key condition: no prefix, no sort key
        // condition.
        let condition = if sk_prefix.is_empty() {
            "#pk = :pk"
        } else {
            names.insert("#sk".to_string(), SK.to_string());
            values.insert(":pre".to_string(), AttributeValue::S(sk_prefix.to_string()));
            "#pk = :pk AND begins_with(#sk, :pre)"
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .set_exclusive_start_key(after.map(|a| key(pk, a)))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .scan_index_forward(!descending)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                self.map(failure(
                    e,
                    "DynamoDB",
                    format!("catalog query of {pk}/{sk_prefix}* in table {}", self.table),
                ))
            })?;
        let records = out
            .items()
            .iter()
            .map(|it| self.record(it))
            .collect::<Result<Vec<_>>>()?;
        let next = match out.last_evaluated_key().and_then(|k| k.get(SK)) {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Page { records, next })
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<()> {
        check_transaction(&ops)?;
        let mut items = Vec::with_capacity(ops.len());
        for op in ops {
            let item = match op {
                TxOp::Put(r, cond) => {
                    let e = expr(cond);
                    TransactWriteItem::builder().put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item(r)))
                            .set_condition_expression(e.text.map(str::to_string))
                            .set_expression_attribute_names(e.names)
                            .set_expression_attribute_values(e.values)
                            .build()
                            .map_err(|_| invalid("transaction put could not be built"))?,
                    )
                }
                TxOp::Delete { pk, sk, cond } => {
                    let e = expr(cond);
                    TransactWriteItem::builder().delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(&pk, &sk)))
                            .set_condition_expression(e.text.map(str::to_string))
                            .set_expression_attribute_names(e.names)
                            .set_expression_attribute_values(e.values)
                            .build()
                            .map_err(|_| invalid("transaction delete could not be built"))?,
                    )
                }
                // A check of no condition always holds; DynamoDB wants an expression in
                // every check, so it is left out.
                TxOp::Check {
                    cond: Condition::None,
                    ..
                } => continue,
                TxOp::Check { pk, sk, cond } => {
                    let e = expr(cond);
                    TransactWriteItem::builder().condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(&pk, &sk)))
                            .set_condition_expression(e.text.map(str::to_string))
                            .set_expression_attribute_names(e.names)
                            .set_expression_attribute_values(e.values)
                            .build()
                            .map_err(|_| invalid("transaction check could not be built"))?,
                    )
                }
            };
            items.push(item.build());
        }
        if items.is_empty() {
            return Ok(());
        }
        let what = format!("catalog transaction in table {}", self.table);
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // Why a transaction was cancelled is in its reasons, one per operation.
        let reasons: Vec<String> = err
            .as_service_error()
            .and_then(|s| match s {
                TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                _ => None,
            })
            .map(|c| {
                c.cancellation_reasons()
                    .iter()
                    .filter_map(|r| r.code().map(str::to_string))
                    .filter(|c| c != "None")
                    .collect()
            })
            .unwrap_or_default();
        let f = failure(err, "DynamoDB", &what);
        match cancellation_kind(&reasons) {
            Some(kind) => Err(Error::new(
                kind,
                format!("{what} cancelled: {}", reasons.join(", ")),
            )),
            None => Err(self.map(f)),
        }
    }
}

/// What a cancelled transaction means, from its cancellation reasons (one code per
/// operation, `None` for those that were fine). A failed condition anywhere decides it:
/// retrying cannot help then, whatever else happened.
fn cancellation_kind(reasons: &[String]) -> Option<ErrorKind> {
    let has = |code: &str| reasons.iter().any(|r| r == code);
    if has("ConditionalCheckFailed") {
        Some(ErrorKind::ConditionFailed)
    } else if has("ThrottlingError") || has("ProvisionedThroughputExceeded") {
        Some(ErrorKind::Throttled)
    } else if has("TransactionConflict") {
        Some(ErrorKind::Unavailable)
    } else if has("ValidationError") || has("ItemCollectionSizeLimitExceeded") {
        Some(ErrorKind::InvalidInput)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_reasons_map_to_kinds() {
        let kind = |codes: &[&str]| {
            cancellation_kind(&codes.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            kind(&["ConditionalCheckFailed"]),
            Some(ErrorKind::ConditionFailed)
        );
        assert_eq!(
            kind(&["TransactionConflict", "ConditionalCheckFailed"]),
            Some(ErrorKind::ConditionFailed),
            "a failed condition outweighs a conflict"
        );
        assert_eq!(kind(&["ThrottlingError"]), Some(ErrorKind::Throttled));
        assert_eq!(
            kind(&["ProvisionedThroughputExceeded"]),
            Some(ErrorKind::Throttled)
        );
        assert_eq!(kind(&["TransactionConflict"]), Some(ErrorKind::Unavailable));
        assert_eq!(kind(&["ValidationError"]), Some(ErrorKind::InvalidInput));
        assert_eq!(kind(&[]), None);
    }
}
