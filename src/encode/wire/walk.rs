//! The walk shared by every export request: resource groups of scope groups of records, with
//! resources and scopes deduplicated as the prost path does.

use opentelemetry_proto::tonic::{common::v1::InstrumentationScope, resource::v1::Resource};
use prost::Message;

use super::protobuf::{Fields, Unusual};
use crate::encode::{
    dims::{KnownIds, RequestEncoder},
    meter, validate, Encoded, TableId,
};

/// Walks an export request (resource groups of scope groups of records, the same shape for
/// every signal: field 1 a repeated group, whose field 1 is the resource or scope, 2 the
/// repeated items and 3 the schema_url), deduplicating resources and scopes as the prost path
/// does and encoding each record into `table` with `record`.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
pub fn encode_request(
    message: &[u8],
    known: &KnownIds,
    table: TableId,
    mut record: impl FnMut(&mut Encoded, &[u8], (i64, i64)) -> Result<Result<(), validate::Rejection>, Unusual>,
) -> Result<Encoded, Unusual> {
    let mut enc = RequestEncoder::new(known);
    // Rows take about 1.25 times the protobuf bytes they come from (the load generator's spans
    // and log records); reserving that at once spares the buffer's doublings and half its slack.
    enc.out.rows_mut(table).reserve(message.len() + message.len() / 3);
    walk_request(
        &mut enc,
        message,
        |_| Ok(1),
        |enc, item, ids| {
            match ids {
                Some(ids) => {
                    if let Err(reason) = record(&mut enc.out, item, ids)? {
                        enc.out.reject(1, reason);
                    }
                }
                // The whole group is refused already; the record's own verdict does not count.
                None => drop(record(&mut Encoded::default(), item, (0, 0))?),
            }
            Ok(())
        },
    )?;
    Ok(enc.out.with_candidates())
}

/// Walks an export request's resource and scope groups for any signal. `weight` says how many
/// records an item stands for (1, or a metric's data points), for the count of a refused
/// group; `item` encodes one item under its (resource, scope) ids, or with `None`, when its
/// group was refused, only reads it, so that bytes prost would reject are [`Unusual`] here too.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
pub fn walk_request<'m>(
    enc: &mut RequestEncoder<'_>,
    message: &'m [u8],
    weight: impl Fn(&'m [u8]) -> Result<usize, Unusual>,
    mut item: impl FnMut(&mut RequestEncoder<'_>, &'m [u8], Option<(i64, i64)>) -> Result<(), Unusual>,
) -> Result<(), Unusual> {
    for field in Fields::new(message) {
        let (number, value) = field?;
        if number != 1 {
            continue;
        }
        let resource_group = group(value.bytes()?)?;
        let resource = resource_group.header.map(Resource::decode).transpose().map_err(|_| Unusual)?;
        let resource_id = match validate::resource(resource.as_ref(), resource_group.schema_url) {
            Ok(()) => Some(enc.resource(resource.as_ref(), resource_group.schema_url)),
            Err(reason) => {
                let mut records = 0;
                for scope_group in &resource_group.items {
                    for scope_item in group(scope_group)?.items {
                        records += weight(scope_item)?;
                    }
                }
                enc.out.reject(records, reason);
                None
            }
        };
        for scope_group in resource_group.items {
            let scope_group = group(scope_group)?;
            let scope =
                scope_group.header.map(InstrumentationScope::decode).transpose().map_err(|_| Unusual)?;
            let ids = match resource_id {
                Some(resource_id) => match validate::scope(scope.as_ref(), scope_group.schema_url) {
                    Ok(()) => Some((resource_id, enc.scope(scope.as_ref(), scope_group.schema_url))),
                    Err(reason) => {
                        let mut records = 0;
                        for scope_item in &scope_group.items {
                            records += weight(scope_item)?;
                        }
                        enc.out.reject(records, reason);
                        None
                    }
                },
                None => None,
            };
            for scope_item in scope_group.items {
                item(enc, scope_item, ids)?;
            }
        }
    }
    Ok(())
}

/// A message's singular message field (1), its repeated field (2), and its `schema_url` (3).
struct Group<'a> {
    header: Option<&'a [u8]>,
    items: Vec<&'a [u8]>,
    schema_url: &'a str,
}

fn group(message: &[u8]) -> Result<Group<'_>, Unusual> {
    let mut fields = Fields::new(message);
    let mut group = Group { header: None, items: Vec::new(), schema_url: "" };
    while let Some(field) = fields.next() {
        let (number, value) = field?;
        match number {
            1 => {
                fields.once(1)?;
                group.header = Some(value.bytes()?);
            }
            // A request of millions of tiny records needs a long list: its growth is paid for.
            2 => meter::push(&mut group.items, value.bytes()?).map_err(|_| Unusual)?,
            3 => {
                fields.once(3)?;
                group.schema_url = value.str()?;
            }
            _ => {}
        }
    }
    Ok(group)
}
