//! One page of a redb table keyed `namespace/name` (or `name`): the range
//! read shared by [`super::local::LocalStore`] and the Raft replica.
//!
//! Keys sort bytewise, as etcd's do, so a `continue` position is a key and
//! a page costs its own objects (plus counting the keys after it), not the
//! whole collection.

use redb::{ReadableTable, StorageError};
use serde_json::Value;

use super::StoreError;

/// A later page's `revision` must still be in the store's watch window
/// (`oldest` and after): an older one is `Expired` (410, list again).
pub(crate) fn check_revision(revision: Option<u64>, oldest: u64) -> Result<(), StoreError> {
    match revision {
        Some(r) if r < oldest => Err(StoreError::Expired {
            requested: r,
            oldest,
        }),
        _ => Ok(()),
    }
}

/// Up to `limit` decoded values after `after` (exclusive), restricted to
/// `namespace/` when given; and how many keys of the range follow them.
pub(crate) fn read<T>(
    table: &T,
    namespace: Option<&str>,
    after: Option<&str>,
    limit: usize,
    err: impl Fn(StorageError) -> StoreError,
    mut decode: impl FnMut(&str, &[u8]) -> Result<Value, StoreError>,
) -> Result<(Vec<Value>, u64), StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let prefix = namespace.map(|ns| format!("{ns}/"));
    let start: String = match (&prefix, after) {
        (Some(p), Some(a)) if a > p.as_str() => format!("{a}\0"),
        (Some(p), _) => p.clone(),
        (None, Some(a)) => format!("{a}\0"),
        (None, None) => String::new(),
    };
    let mut items = Vec::new();
    let mut remaining = 0u64;
    for entry in table.range::<&str>(start.as_str()..).map_err(&err)? {
        let (k, v) = entry.map_err(&err)?;
        let k = k.value();
        if prefix.as_ref().is_some_and(|p| !k.starts_with(p.as_str())) {
            break;
        }
        if items.len() < limit {
            items.push(decode(k, v.value())?);
        } else {
            remaining += 1;
        }
    }
    Ok((items, remaining))
}
