//! Attribute maps and values written as JSON straight from their protobuf bytes, exactly as
//! `encode::attributes` writes the decoded values (the signal encoders' tests compare the two).

use bytes::{BufMut, BytesMut};

use super::protobuf::{Fields, Unusual, MAX_DEPTH};
use crate::encode::attributes::{
    is_plain, write_bytes, write_double, write_int, write_str, write_strindex, write_string_value, write_tag,
    TAGS, TAG_MAP,
};

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
