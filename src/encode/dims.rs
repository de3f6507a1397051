//! Resources and instrumentation scopes: stored once each, keyed by a stable hash of their
//! content (xxh3-64 of a canonical encoding: attributes sorted by key), and referenced by id from
//! every record. [`KnownIds`] remembers which ids are committed, so a request only carries the
//! dimension rows the database may still lack.
//!
//! Rows no record references any more are garbage-collected (`store::maintenance`), so a
//! remembered id is only trusted on the UTC day its row was written: the first request of a new
//! day sends the row again, which moves its `last_seen` to that day. Collection spares rows seen
//! in the last [`crate::store::maintenance::DIMENSION_GRACE_DAYS`] days, so an id a replica still
//! trusts always has its row.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    sync::Mutex,
};

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::{
    common::v1::{EntityRef, InstrumentationScope},
    resource::v1::Resource,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{
    attributes::{write_decoded_sorted, write_str},
    copy::{Table, TableKind},
    Encoded, TableId,
};

pub const RESOURCES: Table = Table {
    name: "resources",
    columns: &["resource_id", "attributes", "dropped_attributes_count", "entity_refs", "schema_url"],
    kind: TableKind::Dimension,
};

pub const SCOPES: Table = Table {
    name: "scopes",
    columns: &["scope_id", "name", "version", "attributes", "dropped_attributes_count", "schema_url"],
    kind: TableKind::Dimension,
};

/// Seeds that keep the id spaces of the dimension kinds apart.
pub const RESOURCE_SEED: u64 = 1;
pub const SCOPE_SEED: u64 = 2;
pub const SERIES_SEED: u64 = 3;

const KNOWN_SHARDS: usize = 16;
/// Ids remembered per shard; a full shard is cleared, which only costs re-sending some rows.
const KNOWN_PER_SHARD: usize = 1 << 16;

/// The ids are already hashes, so the set uses them as they are.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only i64 ids are hashed")
    }
    fn write_i64(&mut self, id: i64) {
        self.0 = id as u64;
    }
}

type IdSet = HashSet<i64, BuildHasherDefault<IdHasher>>;
/// Id -> the UTC day (days since the epoch) its row was last written.
type IdDays = HashMap<i64, i32, BuildHasherDefault<IdHasher>>;

/// Dimension ids known to be committed, with the day their rows were last written; shared by
/// every handler and writer.
pub struct KnownIds {
    shards: [Mutex<IdDays>; KNOWN_SHARDS],
}

impl Default for KnownIds {
    fn default() -> Self {
        Self { shards: std::array::from_fn(|_| Mutex::new(IdDays::default())) }
    }
}

impl KnownIds {
    fn shard(&self, id: i64) -> std::sync::MutexGuard<'_, IdDays> {
        let shard = &self.shards[(id as u64 >> 60) as usize % KNOWN_SHARDS];
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `id`'s row was written on `day`, so that a record of that day may reference it
    /// without sending it again.
    pub fn written_on(&self, id: i64, day: i32) -> bool {
        self.shard(id).get(&id) == Some(&day)
    }

    /// Records ids whose rows committed in a transaction begun on `day`.
    pub fn insert_all(&self, ids: &[i64], day: i32) {
        for &id in ids {
            let mut shard = self.shard(id);
            if shard.len() >= KNOWN_PER_SHARD {
                shard.clear();
            }
            shard.insert(id, day);
        }
    }
}

/// Encodes one request: the records' tables plus the dimension rows they need.
pub struct RequestEncoder<'a> {
    known: &'a KnownIds,
    pub out: Encoded,
    /// Dimension ids this request already decided about.
    seen: IdSet,
    /// The UTC day the request is encoded on.
    today: i32,
    scratch: BytesMut,
}

/// One resource group of a decoded export request (`ResourceSpans`, `ResourceLogs`,
/// `ResourceMetrics`): its resource, schema URL and scope groups.
pub type ResourceParts<'r, S> = (Option<&'r Resource>, &'r str, &'r [S]);

/// One scope group: its scope, schema URL and items (spans, log records, metrics).
pub type ScopeParts<'r, I> = (Option<&'r InstrumentationScope>, &'r str, &'r [I]);

/// Walks a decoded export request: stores each resource and scope once, and hands every item
/// to `item` with its resource and scope ids; the items under a resource or scope that
/// `validate` refuses are counted as refused (`count` says how many records an item holds).
/// The decoded-request counterpart of `wire::walk_request`.
#[inline]
pub fn walk_decoded<'r, R, S: 'r, I: 'r>(
    known: &KnownIds,
    groups: &'r [R],
    resource_parts: impl Fn(&'r R) -> ResourceParts<'r, S>,
    scope_parts: impl Fn(&'r S) -> ScopeParts<'r, I>,
    count: impl Fn(&I) -> usize,
    mut item: impl FnMut(&mut RequestEncoder<'_>, &'r I, i64, i64),
) -> Encoded {
    let mut enc = RequestEncoder::new(known);
    let items = |scopes: &'r [S]| -> usize {
        scopes.iter().map(|s| scope_parts(s).2.iter().map(&count).sum::<usize>()).sum()
    };
    for group in groups {
        let (resource, schema_url, scopes) = resource_parts(group);
        if let Err(reason) = super::validate::resource(resource, schema_url) {
            enc.out.reject(items(scopes), reason);
            continue;
        }
        let resource_id = enc.resource(resource, schema_url);
        for scope_group in scopes {
            let (scope, schema_url, records) = scope_parts(scope_group);
            if let Err(reason) = super::validate::scope(scope, schema_url) {
                enc.out.reject(records.iter().map(&count).sum(), reason);
                continue;
            }
            let scope_id = enc.scope(scope, schema_url);
            for record in records {
                item(&mut enc, record, resource_id, scope_id);
            }
        }
    }
    enc.out
}

impl<'a> RequestEncoder<'a> {
    pub fn new(known: &'a KnownIds) -> Self {
        Self {
            known,
            out: Encoded::default(),
            seen: IdSet::default(),
            today: crate::time::epoch_day(std::time::SystemTime::now()),
            scratch: BytesMut::new(),
        }
    }

    /// The ids known to be committed.
    pub fn known(&self) -> &'a KnownIds {
        self.known
    }

    /// Whether the row for `id` must be written: not committed today, and not already in this
    /// request.
    pub fn needs(&mut self, id: i64) -> bool {
        if !self.seen.insert(id) || self.known.written_on(id, self.today) {
            return false;
        }
        self.out.new_dimension_ids.push(id);
        true
    }

    /// The id of a resource (with the schema_url of the message that carried it), adding its row
    /// if the database may lack it. An absent resource is stored as an empty one.
    pub fn resource(&mut self, resource: Option<&Resource>, schema_url: &str) -> i64 {
        let empty = Resource::default();
        let resource = resource.unwrap_or(&empty);
        let mut canon = std::mem::take(&mut self.scratch);
        canon.clear();
        write_decoded_sorted(&mut canon, &resource.attributes);
        let attributes_len = canon.len();
        canon.put_u32(resource.dropped_attributes_count);
        let refs_at = canon.len();
        if !resource.entity_refs.is_empty() {
            write_entity_refs(&mut canon, &resource.entity_refs);
        }
        let refs_end = canon.len();
        canon.put_slice(schema_url.as_bytes());
        let id = xxh3_64_with_seed(&canon, RESOURCE_SEED) as i64;
        if self.needs(id) {
            let mut row = self.out.rows_mut(TableId::Resources).row(&RESOURCES);
            row.int8(id);
            row.jsonb_text(&canon[..attributes_len]);
            row.int8(i64::from(resource.dropped_attributes_count));
            if refs_end > refs_at {
                row.jsonb_text(&canon[refs_at..refs_end]);
            } else {
                row.null();
            }
            row.text(schema_url);
        }
        self.scratch = canon;
        id
    }

    /// The id of an instrumentation scope (with its message's schema_url), adding its row if
    /// the database may lack it. An absent scope is stored as an empty one.
    pub fn scope(&mut self, scope: Option<&InstrumentationScope>, schema_url: &str) -> i64 {
        let empty = InstrumentationScope::default();
        let scope = scope.unwrap_or(&empty);
        let mut canon = std::mem::take(&mut self.scratch);
        canon.clear();
        write_decoded_sorted(&mut canon, &scope.attributes);
        let attributes_len = canon.len();
        canon.put_u32(scope.dropped_attributes_count);
        for part in [&scope.name, &scope.version] {
            canon.put_u64(part.len() as u64);
            canon.put_slice(part.as_bytes());
        }
        canon.put_slice(schema_url.as_bytes());
        let id = xxh3_64_with_seed(&canon, SCOPE_SEED) as i64;
        if self.needs(id) {
            let mut row = self.out.rows_mut(TableId::Scopes).row(&SCOPES);
            row.int8(id);
            row.text(&scope.name);
            row.text(&scope.version);
            row.jsonb_text(&canon[..attributes_len]);
            row.int8(i64::from(scope.dropped_attributes_count));
            row.text(schema_url);
        }
        self.scratch = canon;
        id
    }

    /// A buffer for building canonical content; give it back with [`Self::return_scratch`].
    pub fn take_scratch(&mut self) -> BytesMut {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf
    }

    pub fn return_scratch(&mut self, buf: BytesMut) {
        self.scratch = buf;
    }
}

/// `[{"type", "schema_url", "id_keys", "description_keys"}]`.
pub fn write_entity_refs(buf: &mut BytesMut, refs: &[EntityRef]) {
    buf.put_u8(b'[');
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"type\":");
        write_str(buf, &r.r#type);
        buf.put_slice(b",\"schema_url\":");
        write_str(buf, &r.schema_url);
        for (name, keys) in [("id_keys", &r.id_keys), ("description_keys", &r.description_keys)] {
            buf.put_slice(b",\"");
            buf.put_slice(name.as_bytes());
            buf.put_slice(b"\":[");
            for (j, key) in keys.iter().enumerate() {
                if j > 0 {
                    buf.put_u8(b',');
                }
                write_str(buf, key);
            }
            buf.put_u8(b']');
        }
        buf.put_u8(b'}');
    }
    buf.put_u8(b']');
}

/// Reads `entity_refs` back (the inverse of [`write_entity_refs`]).
///
/// # Errors
/// When the JSON does not have the shape `write_entity_refs` gives it.
pub fn entity_refs_from_json(
    json: &serde_json::Value,
) -> Result<Vec<EntityRef>, super::attributes::MappingError> {
    let bad = || super::attributes::MappingError::NotAMap(json.to_string());
    let text = |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_owned);
    let keys = |v: &serde_json::Value, key: &str| -> Option<Vec<String>> {
        v.get(key)?.as_array()?.iter().map(|k| k.as_str().map(str::to_owned)).collect()
    };
    json.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|r| {
            let entity = || {
                Some(EntityRef {
                    r#type: text(r, "type")?,
                    schema_url: text(r, "schema_url")?,
                    id_keys: keys(r, "id_keys")?,
                    description_keys: keys(r, "description_keys")?,
                })
            };
            entity().ok_or_else(bad)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_id_is_trusted_only_on_the_day_its_row_was_written() {
        let known = KnownIds::default();
        known.insert_all(&[7, -3], 100);
        assert!(known.written_on(7, 100) && known.written_on(-3, 100));
        assert!(!known.written_on(7, 101), "the next day the row is sent again");
        assert!(!known.written_on(8, 100));
        known.insert_all(&[7], 101);
        assert!(known.written_on(7, 101) && !known.written_on(7, 100));
    }

    #[test]
    fn a_request_sends_each_row_it_needs_once() {
        let known = KnownIds::default();
        let mut encoder = RequestEncoder::new(&known);
        let first = encoder.resource(None, "");
        assert_eq!(encoder.resource(None, ""), first);
        assert_eq!(encoder.out.new_dimension_ids, [first]);

        // Written today: the next request leaves it out; written yesterday: it is sent again.
        let today = encoder.today;
        known.insert_all(&[first], today);
        let mut encoder = RequestEncoder::new(&known);
        encoder.resource(None, "");
        assert!(encoder.out.new_dimension_ids.is_empty());
        known.insert_all(&[first], today - 1);
        let mut encoder = RequestEncoder::new(&known);
        encoder.resource(None, "");
        assert_eq!(encoder.out.new_dimension_ids, [first]);
    }
}
