//! What DynamoDB refuses before it looks at a condition: empty or overlong keys, items over
//! 400 KB, transactions of more than 100 operations or with two on one record, a query
//! without a partition or with a zero limit. Both catalog adapters check here, with the same
//! messages, so that nothing that works locally fails on AWS.

use crate::{Error, ErrorKind, Record, Result, TxOp, MAX_RECORD_BYTES, MAX_TRANSACTION_ITEMS};
use std::collections::HashSet;

/// DynamoDB's limit on a partition key (bytes).
pub const MAX_PK_BYTES: usize = 2048;
/// DynamoDB's limit on a sort key (bytes).
pub const MAX_SK_BYTES: usize = 1024;

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// A partition key DynamoDB accepts.
///
/// # Errors
/// `InvalidInput` for an empty key or one over [`MAX_PK_BYTES`].
pub fn check_pk(pk: &str) -> Result<()> {
    if pk.is_empty() || pk.len() > MAX_PK_BYTES {
        return Err(invalid(format!(
            "partition key must be 1 to {MAX_PK_BYTES} bytes, is {}",
            pk.len()
        )));
    }
    Ok(())
}

/// Keys DynamoDB accepts for a get, put or delete.
///
/// # Errors
/// `InvalidInput` for an empty or overlong key.
pub fn check_keys(pk: &str, sk: &str) -> Result<()> {
    check_pk(pk)?;
    if sk.is_empty() || sk.len() > MAX_SK_BYTES {
        return Err(invalid(format!(
            "sort key of partition {pk} must be 1 to {MAX_SK_BYTES} bytes, is {}",
            sk.len()
        )));
    }
    Ok(())
}

/// A record DynamoDB accepts: its keys, and its size as [`Record::size`] counts it.
///
/// # Errors
/// `InvalidInput`.
pub fn check_record(r: &Record) -> Result<()> {
    check_keys(&r.pk, &r.sk)?;
    if r.size() > MAX_RECORD_BYTES {
        return Err(invalid(format!(
            "record {}/{} is {} bytes, over the {MAX_RECORD_BYTES}-byte item limit",
            r.pk,
            r.sk,
            r.size()
        )));
    }
    Ok(())
}

/// A query DynamoDB accepts.
///
/// # Errors
/// `InvalidInput` for a bad partition key or a zero limit (DynamoDB refuses `Limit: 0`).
pub fn check_query(pk: &str, limit: usize) -> Result<()> {
    check_pk(pk)?;
    if limit == 0 {
        return Err(invalid("query limit must be at least 1".into()));
    }
    Ok(())
}

/// A transaction DynamoDB accepts.
///
/// # Errors
/// `InvalidInput` for no operation or more than [`MAX_TRANSACTION_ITEMS`], two operations
/// on one record, or a record it would refuse.
pub fn check_transaction(ops: &[TxOp]) -> Result<()> {
    if ops.is_empty() || ops.len() > MAX_TRANSACTION_ITEMS {
        return Err(invalid(format!(
            "a transaction holds 1 to {MAX_TRANSACTION_ITEMS} operations, not {}",
            ops.len()
        )));
    }
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        match op {
            TxOp::Put(r, _) => check_record(r)?,
            TxOp::Delete { pk, sk, .. } | TxOp::Check { pk, sk, .. } => check_keys(pk, sk)?,
        }
        let (pk, sk) = op.keys();
        if !seen.insert((pk, sk)) {
            return Err(invalid(format!(
                "a transaction touches record {pk}/{sk} twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_checked_before_sending() {
        let ok = Record::new("p", "s", vec![0; 1000]);
        assert!(check_record(&ok).is_ok());
        for bad in [
            Record::new("", "s", vec![]),
            Record::new("p", "", vec![]),
            Record::new("p".repeat(MAX_PK_BYTES + 1), "s", vec![]),
            Record::new("p", "s".repeat(MAX_SK_BYTES + 1), vec![]),
            Record::new("p", "s", vec![0; MAX_RECORD_BYTES]),
        ] {
            assert_eq!(
                check_record(&bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }
}
