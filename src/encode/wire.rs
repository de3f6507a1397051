//! Reading OTLP protobuf straight from its wire bytes, so the hot path encodes records into rows
//! without first building prost's owned structs (an allocation per string, attribute and value):
//! spans, log records and metric data points of every type.
//!
//! Only the encodings protobuf encoders produce are read here. Anything else — a singular field
//! given twice, a known field with another wire type, a group, text that is not UTF-8, a
//! malformed length or varint, nesting deeper than [`MAX_DEPTH`] — is [`Unusual`], and the
//! caller decodes that request with prost instead, which merges, rejects or accepts it by the
//! protobuf rules. Either way a request gets exactly the rows the prost path gives it; the
//! signal encoders' tests check that over random requests.

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::{common::v1::InstrumentationScope, resource::v1::Resource};
use prost::Message;

use super::{
    attributes::{
        is_plain, write_bytes, write_double, write_int, write_str, write_strindex, write_string_value,
        write_tag, TAGS, TAG_MAP,
    },
    copy::Rows,
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
    mut record: impl FnMut(&mut Rows, &[u8], (i64, i64)) -> Result<Result<(), validate::Rejection>, Unusual>,
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
                    if let Err(reason) = record(enc.out.rows_mut(table), item, ids)? {
                        enc.out.reject(1, reason);
                    }
                }
                // The whole group is refused already; the record's own verdict does not count.
                None => drop(record(&mut Rows::default(), item, (0, 0))?),
            }
            Ok(())
        },
    )?;
    Ok(enc.out)
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

/// An encoding left to prost (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unusual;

/// Nesting of AnyValues read here; deeper ones go to prost (whose own limit is 100 messages).
pub const MAX_DEPTH: usize = 24;

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    pub fn varint(self) -> Result<u64, Unusual> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(Unusual),
        }
    }

    pub fn fixed64(self) -> Result<u64, Unusual> {
        match self {
            Value::Fixed64(v) => Ok(v),
            _ => Err(Unusual),
        }
    }

    pub fn fixed32(self) -> Result<u32, Unusual> {
        match self {
            Value::Fixed32(v) => Ok(v),
            _ => Err(Unusual),
        }
    }

    pub fn bytes(self) -> Result<&'a [u8], Unusual> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(Unusual),
        }
    }

    pub fn str(self) -> Result<&'a str, Unusual> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Unusual)
    }
}

/// The fields of one message, in wire order.
pub struct Fields<'a> {
    buf: &'a [u8],
    /// Singular fields (numbers below 64) already seen.
    seen: u64,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, seen: 0 }
    }

    /// Marks singular field `number` as seen; a second one is [`Unusual`].
    pub fn once(&mut self, number: u32) -> Result<(), Unusual> {
        let bit = 1u64.checked_shl(number).ok_or(Unusual)?;
        if self.seen & bit != 0 {
            return Err(Unusual);
        }
        self.seen |= bit;
        Ok(())
    }

    /// How many bytes of the message are left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline(always)]
    fn read(&mut self) -> Result<(u32, Value<'a>), Unusual> {
        let key = varint(&mut self.buf)?;
        let number = u32::try_from(key >> 3).map_err(|_| Unusual)?;
        if number == 0 {
            return Err(Unusual);
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.buf)?),
            1 => Value::Fixed64(u64::from_le_bytes(take(&mut self.buf, 8)?.try_into().map_err(|_| Unusual)?)),
            2 => {
                let len = usize::try_from(varint(&mut self.buf)?).map_err(|_| Unusual)?;
                Value::Bytes(take(&mut self.buf, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(take(&mut self.buf, 4)?.try_into().map_err(|_| Unusual)?)),
            _ => return Err(Unusual),
        };
        Ok((number, value))
    }
}

/// The stretch of a message from the first to the last occurrence of a repeated field, so
/// that a second pass over that field reads only those bytes: a whole number of fields, since
/// it starts and ends at field boundaries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stretch {
    start: usize,
    end: usize,
}

impl Stretch {
    /// Takes in the field that `fields` (reading a message of `len` bytes) has just read, which
    /// began `before` bytes from the end.
    #[inline]
    pub fn cover(&mut self, len: usize, before: usize, fields: &Fields<'_>) {
        if self.end == 0 {
            self.start = len - before;
        }
        self.end = len - fields.remaining();
    }

    /// Whether the field never occurred.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    pub fn of<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        &message[self.start..self.end]
    }
}

/// A varint; one byte (field keys, short lengths, small numbers) is the common case.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64, Unusual> {
    match buf.split_first() {
        Some((&byte, rest)) if byte < 0x80 => {
            *buf = rest;
            Ok(u64::from(byte))
        }
        _ => long_varint(buf),
    }
}

#[inline(never)]
fn long_varint(buf: &mut &[u8]) -> Result<u64, Unusual> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(Unusual)?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return if i == 9 && byte > 1 { Err(Unusual) } else { Ok(value) };
        }
    }
    Err(Unusual)
}

#[inline(always)]
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Unusual> {
    if buf.len() < n {
        return Err(Unusual);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Unusual>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.buf = &[];
        }
        Some(field)
    }
}

/// How many times field `number` occurs in `message`.
pub fn count(message: &[u8], number: u32) -> Result<usize, Unusual> {
    let mut n = 0;
    for field in Fields::new(message) {
        n += usize::from(field?.0 == number);
    }
    Ok(n)
}

/// Writes a map key's bytes as a JSON string; returns whether it holds U+0000 (which a key
/// cannot be stored with).
///
/// # Errors
/// [`Unusual`] when the bytes are not UTF-8.
#[inline]
pub fn write_key(buf: &mut BytesMut, bytes: &[u8]) -> Result<bool, Unusual> {
    if is_plain(bytes) {
        write_plain(buf, bytes);
        return Ok(false);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Unusual)?;
    write_str(buf, text);
    Ok(text.as_bytes().contains(&0))
}

/// Writes a string value's bytes as `write_string_value` writes the decoded string: a JSON
/// string, or the `$nul` tag when it holds U+0000.
///
/// # Errors
/// [`Unusual`] when the bytes are not UTF-8.
#[inline]
pub fn write_text(buf: &mut BytesMut, bytes: &[u8]) -> Result<(), Unusual> {
    if is_plain(bytes) {
        write_plain(buf, bytes);
        return Ok(());
    }
    write_string_value(buf, std::str::from_utf8(bytes).map_err(|_| Unusual)?);
    Ok(())
}

/// Bytes that need no escaping, quoted.
#[inline]
fn write_plain(buf: &mut BytesMut, bytes: &[u8]) {
    buf.reserve(bytes.len() + 2);
    buf.put_u8(b'"');
    buf.put_slice(bytes);
    buf.put_u8(b'"');
}

/// Writes the JSON of an AnyValue message (see `attributes`), as `write_any_value` with
/// `Order::AsSent` writes the decoded value. Returns whether a map key in it holds U+0000.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
pub fn write_any_value(buf: &mut BytesMut, message: &[u8], depth: usize) -> Result<bool, Unusual> {
    if depth > MAX_DEPTH {
        return Err(Unusual);
    }
    // A string under 128 bytes, the commonest value, as encoders write it.
    if let [0x0a, len, text @ ..] = message {
        if *len < 0x80 && text.len() == usize::from(*len) {
            write_text(buf, text)?;
            return Ok(false);
        }
    }
    let mut value = None;
    for field in Fields::new(message) {
        let (number, v) = field?;
        if (1..=8).contains(&number) {
            // The oneof: more than one member given is left to prost.
            if value.replace((number, v)).is_some() {
                return Err(Unusual);
            }
        }
    }
    let Some((number, v)) = value else {
        buf.put_slice(b"null");
        return Ok(false);
    };
    match number {
        1 => write_text(buf, v.bytes()?)?,
        2 => buf.put_slice(if v.varint()? != 0 { b"true" } else { b"false" }),
        3 => write_int(buf, v.varint()? as i64),
        4 => write_double(buf, f64::from_bits(v.fixed64()?)),
        5 => {
            buf.put_u8(b'[');
            let mut nul = false;
            let mut first = true;
            let mut fields = Fields::new(v.bytes()?);
            for field in &mut fields {
                let (number, value) = field?;
                if number == 1 {
                    if !first {
                        buf.put_u8(b',');
                    }
                    first = false;
                    nul |= write_any_value(buf, value.bytes()?, depth + 1)?;
                }
            }
            buf.put_u8(b']');
            return Ok(nul);
        }
        6 => {
            let list = v.bytes()?;
            if only_key(list)?.is_some_and(|key| TAGS.iter().any(|tag| tag.as_bytes() == key)) {
                write_tag(buf, TAG_MAP);
                let nul = write_attributes(buf, list, 1, depth + 1)?;
                buf.put_u8(b'}');
                return Ok(nul);
            }
            return write_attributes(buf, list, 1, depth + 1);
        }
        7 => write_bytes(buf, v.bytes()?),
        _ => write_strindex(buf, v.varint()? as i32),
    }
    Ok(false)
}

/// The key of a KeyValueList's only entry, if it has exactly one.
fn only_key(list: &[u8]) -> Result<Option<&[u8]>, Unusual> {
    let mut only = None;
    let mut entries = 0;
    for field in Fields::new(list) {
        let (number, value) = field?;
        if number == 1 {
            entries += 1;
            only = Some(value.bytes()?);
        }
    }
    match only {
        Some(entry) if entries == 1 => Ok(Some(key_value(entry)?.0)),
        _ => Ok(None),
    }
}

/// A KeyValue's key (its bytes, checked as UTF-8 when written) and its value's message, if it
/// has one.
fn key_value(entry: &[u8]) -> Result<(&[u8], Option<&[u8]>), Unusual> {
    // As encoders write it: the key (field 1), then the value (field 2), each under 128 bytes.
    if let [0x0a, key_len, rest @ ..] = entry {
        if let Some((key, [0x12, value_len, value @ ..])) = rest.split_at_checked(usize::from(*key_len)) {
            if *key_len < 0x80 && *value_len < 0x80 && value.len() == usize::from(*value_len) {
                return Ok((key, Some(value)));
            }
        }
    }
    let mut fields = Fields::new(entry);
    let (mut key, mut value) = (&[][..], None);
    while let Some(field) = fields.next() {
        let (number, v) = field?;
        match number {
            1 => {
                fields.once(1)?;
                key = v.bytes()?;
            }
            2 => {
                fields.once(2)?;
                value = Some(v.bytes()?);
            }
            3 => {
                fields.once(3)?;
                v.varint()?;
            }
            _ => {}
        }
    }
    Ok((key, value))
}

/// Writes the KeyValues that are field `number` of `message` as a JSON object, as
/// `write_attributes` with `Order::AsSent` writes the decoded map. Returns whether a key, at any
/// depth, holds U+0000.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
pub fn write_attributes(
    buf: &mut BytesMut,
    message: &[u8],
    number: u32,
    depth: usize,
) -> Result<bool, Unusual> {
    buf.put_u8(b'{');
    let mut nul = false;
    let mut first = true;
    for field in Fields::new(message) {
        let (n, entry) = field?;
        if n != number {
            continue;
        }
        let (key, value) = key_value(entry.bytes()?)?;
        if !first {
            buf.put_u8(b',');
        }
        first = false;
        nul |= write_key(buf, key)?;
        buf.put_u8(b':');
        match value {
            Some(value) => nul |= write_any_value(buf, value, depth)?,
            None => buf.put_slice(b"null"),
        }
    }
    buf.put_u8(b'}');
    Ok(nul)
}

/// Whether an AnyValue message holds a map anywhere (itself, or inside its arrays).
fn has_map(message: &[u8], depth: usize) -> Result<bool, Unusual> {
    if depth > MAX_DEPTH {
        return Err(Unusual);
    }
    for field in Fields::new(message) {
        match field? {
            (6, _) => return Ok(true),
            (5, array) => {
                for element in Fields::new(array.bytes()?) {
                    let (number, value) = element?;
                    if number == 1 && has_map(value.bytes()?, depth + 1)? {
                        return Ok(true);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Writes the KeyValues that are field `number` of `message` as a JSON object sorted by key, as
/// `write_attributes` with `Order::Sorted` writes the decoded map, when no value holds a map
/// (whose own entries that order would sort too): then returns whether a key holds
/// U+0000. With a map among the values it writes nothing and returns `None`.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
pub fn write_sorted_flat_attributes(
    buf: &mut BytesMut,
    message: &[u8],
    number: u32,
) -> Result<Option<bool>, Unusual> {
    // Points seldom have more than a few attributes: those are sorted on the stack.
    const ON_STACK: usize = 8;
    let mut stack: [(&[u8], Option<&[u8]>); ON_STACK] = [(&[], None); ON_STACK];
    let mut heap = Vec::new();
    let mut len = 0;
    for field in Fields::new(message) {
        let (n, entry) = field?;
        if n != number {
            continue;
        }
        let (key, value) = key_value(entry.bytes()?)?;
        if let Some(value) = value {
            if has_map(value, 0)? {
                return Ok(None);
            }
        }
        match stack.get_mut(len) {
            Some(slot) => *slot = (key, value),
            None => {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack);
                }
                heap.push((key, value));
            }
        }
        len += 1;
    }
    let pairs = if len <= ON_STACK { &mut stack[..len] } else { &mut heap[..] };
    // Stable, as the decoded path's sort is: equal keys keep the order they were sent in.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    buf.put_u8(b'{');
    let mut nul = false;
    for (i, &(key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        nul |= write_key(buf, key)?;
        buf.put_u8(b':');
        match value {
            Some(value) => nul |= write_any_value(buf, value, 1)?,
            None => buf.put_slice(b"null"),
        }
    }
    buf.put_u8(b'}');
    Ok(Some(nul))
}

/// The values of a `repeated fixed64` or `repeated double` field, packed or not, appended to
/// `out` as their bits.
pub fn push_fixed64s(out: &mut Vec<u64>, value: Value<'_>) -> Result<(), Unusual> {
    match value {
        Value::Fixed64(v) => out.push(v),
        Value::Bytes(packed) if packed.len() % 8 == 0 => {
            out.extend(packed.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())));
        }
        _ => return Err(Unusual),
    }
    Ok(())
}

/// The values of a `repeated uint64` field, packed or not, appended to `out`.
pub fn push_varints(out: &mut Vec<u64>, value: Value<'_>) -> Result<(), Unusual> {
    match value {
        Value::Varint(v) => out.push(v),
        Value::Bytes(mut packed) => {
            // At most one value a byte.
            out.reserve(packed.len());
            while !packed.is_empty() {
                out.push(varint(&mut packed)?);
            }
        }
        _ => return Err(Unusual),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_lengths_are_read_or_refused() {
        let mut buf: &[u8] = &[0xac, 0x02];
        assert_eq!(varint(&mut buf), Ok(300));
        let mut too_long: &[u8] = &[0xff; 11];
        assert_eq!(varint(&mut too_long), Err(Unusual));
        let mut overflow: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(varint(&mut overflow), Err(Unusual));
        // Field 1, length 5, but only 2 bytes follow.
        assert!(Fields::new(&[0x0a, 5, 1, 2]).any(|f| f.is_err()));
        // A group (wire type 3) and field number 0.
        assert!(Fields::new(&[0x0b]).any(|f| f.is_err()));
        assert!(Fields::new(&[0x00, 1]).any(|f| f.is_err()));
    }

    #[test]
    fn a_singular_field_given_twice_is_unusual() {
        let mut fields = Fields::new(&[]);
        assert_eq!(fields.once(3), Ok(()));
        assert_eq!(fields.once(3), Err(Unusual));
        // An AnyValue with two members of its oneof.
        let mut buf = BytesMut::new();
        assert_eq!(write_any_value(&mut buf, &[0x10, 1, 0x18, 2], 0), Err(Unusual));
        // Text that is not UTF-8.
        assert_eq!(write_any_value(&mut buf, &[0x0a, 2, 0xff, 0xfe], 0), Err(Unusual));
    }
}
