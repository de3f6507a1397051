//! The one mapping between OTLP `AnyValue`/attribute maps and jsonb, in both directions: encode
//! (JSON text written straight into a COPY buffer, from a decoded value and from its protobuf
//! bytes alike: see `source`) for ingest, decode (from `serde_json::Value`) for reading back. The two are exact inverses; the tests check it over random values.
//!
//! | AnyValue            | jsonb                                                     |
//! |---------------------|-----------------------------------------------------------|
//! | string              | string                                                    |
//! | string with U+0000  | `{"$nul": ["a", "b"]}`: the pieces between the U+0000s     |
//! | bool                | `true` / `false`                                          |
//! | int                 | number without a decimal point: `42`                      |
//! | double              | number with a decimal point: `42.0`, `0.5`                 |
//! | double NaN, ±Inf, -0| `{"$double": "NaN"}`, `"Infinity"`, `"-Infinity"`, `"-0"` |
//! | bytes               | `{"$bytes": "<standard base64>"}`                         |
//! | array               | array                                                     |
//! | kvlist              | object                                                    |
//! | empty (no value)    | `null`                                                    |
//! | string_value_strindex | `{"$strindex": n}` (profiles only)                      |
//!
//! PostgreSQL's jsonb cannot hold U+0000, so a string value holding it is written as the pieces
//! around each U+0000, which read back joined by it: `"a\0b"` is `{"$nul": ["a", "b"]}`, `"\0"`
//! is `{"$nul": ["", ""]}`. Keys cannot be written that way: a map key holding U+0000 is refused
//! (see `validate`).
//!
//! A nested kvlist whose only key is one of the `$` tags above is written as
//! `{"$map": {...}}`, so it cannot be mistaken for a tagged value. Attribute maps at the top
//! level (a column) are always plain objects. Map key order is not kept (jsonb orders keys;
//! OTLP maps are unordered), and of duplicate keys, which OTLP forbids, the last one wins.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use serde_json::Value as Json;

use super::{
    genai,
    source::{MapSource, Read, Unusual, ValueSource},
    validate,
};

pub const TAG_DOUBLE: &str = "$double";
pub const TAG_BYTES: &str = "$bytes";
pub const TAG_MAP: &str = "$map";
pub const TAG_STRINDEX: &str = "$strindex";
pub const TAG_NUL: &str = "$nul";
pub const TAGS: [&str; 5] = [TAG_DOUBLE, TAG_BYTES, TAG_MAP, TAG_STRINDEX, TAG_NUL];

/// The order a map's entries are written in.
mod order {
    /// Keys bytewise, at every level: the canonical text that content hashes are taken of.
    pub const CANONICAL: u8 = 1;
    /// jsonb's own order, at every level: shorter keys first, equal lengths bytewise. jsonb
    /// input sorts each object's keys into this order, and its sort returns after one pass over
    /// keys already in it.
    pub const JSONB: u8 = 2;
}

/// Writes an attribute map as a JSON object, for a record's jsonb column: its keys, at every
/// level, in jsonb's own order, which saves PostgreSQL sorting them. Returns whether a key, at
/// any depth, holds U+0000, which no key can be stored with (see `validate`).
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
#[inline]
pub fn write_attributes<'a, M: MapSource<'a>>(buf: &mut BytesMut, map: M) -> Result<bool, Unusual> {
    write_map::<M, { order::JSONB }, false>(buf, map, 0, Cut::Never, &mut |_, _| {})
}

/// Which strings of a map are cut to `llm.max_content_bytes` (see `genai::content`). The
/// writers take `CUTS` as a constant too, so that with no limit (the default) they are the same
/// code as before there were limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// None: every value is stored as sent.
    Never,
    /// Those in the values of content keys (`genai::content::is_key`), longer than this.
    ContentKeys(usize),
    /// Every string longer than this: the map is itself content.
    All(usize),
}

impl Cut {
    /// Content keys cut to the installed limit, if there is one.
    #[inline]
    pub fn content() -> Self {
        genai::content::limit().map_or(Cut::Never, Cut::ContentKeys)
    }

    /// The longest a string in the value of `key` is stored.
    #[inline(always)]
    fn limit_of(self, key: &[u8]) -> usize {
        match self {
            Cut::Never => usize::MAX,
            Cut::All(limit) => limit,
            Cut::ContentKeys(limit) if genai::content::is_key(key) => limit,
            Cut::ContentKeys(_) => usize::MAX,
        }
    }
}

/// [`write_attributes`], the strings of content cut as `cut` says.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
#[inline]
pub fn write_attributes_cut<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    map: M,
    cut: Cut,
) -> Result<bool, Unusual> {
    match cut {
        Cut::Never => write_map::<M, { order::JSONB }, false>(buf, map, 0, cut, &mut |_, _| {}),
        _ => write_map_cut(buf, map, cut, &mut |_, _| {}),
    }
}

/// [`write_attributes`], showing `seen` each top-level entry as it is read: what a record's
/// other readers (a span's peer, its LLM call) look for, found in the one walk over its
/// attributes.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
#[inline]
pub fn write_attributes_seen<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    map: M,
    cut: Cut,
    seen: &mut impl FnMut(&'a [u8], Option<M::Value>),
) -> Result<bool, Unusual> {
    match cut {
        Cut::Never => write_map::<M, { order::JSONB }, false>(buf, map, 0, cut, seen),
        _ => write_map_cut(buf, map, cut, seen),
    }
}

/// [`write_attributes`] with the keys of every map sorted, at every level: one canonical text
/// per map, for the content hashes of resources, scopes and series.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
#[inline]
pub fn write_sorted_attributes<'a, M: MapSource<'a>>(buf: &mut BytesMut, map: M) -> Result<bool, Unusual> {
    write_map::<M, { order::CANONICAL }, false>(buf, map, 0, Cut::Never, &mut |_, _| {})
}

/// Writes one AnyValue as JSON, the keys of its maps in jsonb's order; returns whether a map
/// key in it holds U+0000.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
#[inline]
pub fn write_any_value<'a, V: ValueSource<'a>>(buf: &mut BytesMut, value: V) -> Result<bool, Unusual> {
    write_value::<V, { order::JSONB }, false>(buf, value, 0, usize::MAX)
}

/// [`write_any_value`] of a value that is content: its strings longer than `limit` cut (see
/// `genai::content`).
///
/// # Errors
/// [`Unusual`] for an encoding left to prost.
#[inline]
pub fn write_content_value<'a, V: ValueSource<'a>>(
    buf: &mut BytesMut,
    value: V,
    limit: usize,
) -> Result<bool, Unusual> {
    write_value::<V, { order::JSONB }, true>(buf, value, 0, limit)
}

/// The JSON of a decoded AnyValue, which is always readable (its keys are not checked).
pub fn write_decoded_value(buf: &mut BytesMut, value: &AnyValue) {
    let _nul_in_key = write_any_value(buf, value);
}

/// [`write_sorted_attributes`] of a decoded map, which is always readable; its keys are checked
/// by `validate::attributes`.
pub fn write_decoded_sorted(buf: &mut BytesMut, attributes: &[KeyValue]) {
    let _nul_in_key = write_sorted_attributes(buf, attributes);
}

/// [`write_map`] with content cut: kept out of line, and shown `seen` as a trait object, so
/// that the writers' usual path, with no limit, and its `seen` are inlined as they were before
/// there were limits.
#[inline(never)]
#[cold]
fn write_map_cut<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    map: M,
    cut: Cut,
    seen: &mut dyn FnMut(&'a [u8], Option<M::Value>),
) -> Result<bool, Unusual> {
    write_map::<M, { order::JSONB }, true>(buf, map, 0, cut, &mut |key, value| seen(key, value))
}

/// Entries of a sorted map kept on the stack: most maps have fewer.
const SORTED_ON_STACK: usize = 8;

fn write_map<'a, M: MapSource<'a>, const ORDER: u8, const CUTS: bool>(
    buf: &mut BytesMut,
    map: M,
    depth: usize,
    cut: Cut,
    seen: &mut impl FnMut(&'a [u8], Option<M::Value>),
) -> Result<bool, Unusual> {
    buf.put_u8(b'{');
    let mut nul = false;
    let mut stack: [(&[u8], Option<M::Value>); SORTED_ON_STACK] = [(&[], None); SORTED_ON_STACK];
    let mut heap = Vec::new();
    let mut len = 0;
    for entry in map.entries() {
        let entry = entry?;
        seen(entry.0, entry.1);
        match stack.get_mut(len) {
            Some(slot) => *slot = entry,
            None => {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack);
                }
                heap.push(entry);
            }
        }
        len += 1;
    }
    let entries = if len <= SORTED_ON_STACK { &mut stack[..len] } else { &mut heap[..] };
    // Stable: of equal keys (which OTLP forbids) the last sent is the last written, and jsonb
    // keeps the last.
    if ORDER == order::JSONB {
        entries.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(b.0)));
    } else {
        entries.sort_by(|a, b| a.0.cmp(b.0));
    }
    for (i, &(key, value)) in entries.iter().enumerate() {
        nul |= write_entry::<M, ORDER, CUTS>(
            buf,
            i,
            key,
            value,
            depth,
            if CUTS { cut.limit_of(key) } else { usize::MAX },
        )?;
    }
    buf.put_u8(b'}');
    Ok(nul)
}

#[inline(always)]
fn write_entry<'a, M: MapSource<'a>, const ORDER: u8, const CUTS: bool>(
    buf: &mut BytesMut,
    i: usize,
    key: &[u8],
    value: Option<M::Value>,
    depth: usize,
    limit: usize,
) -> Result<bool, Unusual> {
    if i > 0 {
        buf.put_u8(b',');
    }
    let mut nul = write_key(buf, key)?;
    buf.put_u8(b':');
    match value {
        Some(value) => nul |= write_value::<M::Value, ORDER, CUTS>(buf, value, depth, limit)?,
        None => buf.put_slice(b"null"),
    }
    Ok(nul)
}

fn write_value<'a, V: ValueSource<'a>, const ORDER: u8, const CUTS: bool>(
    buf: &mut BytesMut,
    value: V,
    depth: usize,
    limit: usize,
) -> Result<bool, Unusual> {
    if depth > V::MAX_DEPTH {
        return Err(Unusual);
    }
    match value.read()? {
        Read::Empty => buf.put_slice(b"null"),
        Read::Text(text) if CUTS && text.len() > limit => write_cut_text(buf, text, limit, depth == 0)?,
        Read::Text(text) => write_text(buf, text)?,
        Read::Bool(true) => buf.put_slice(b"true"),
        Read::Bool(false) => buf.put_slice(b"false"),
        Read::Int(i) => write_int(buf, i),
        Read::Double(d) => write_double(buf, d),
        Read::Bytes(bytes) => write_bytes(buf, bytes),
        Read::Array(values) => {
            buf.put_u8(b'[');
            let mut nul = false;
            for (i, value) in values.enumerate() {
                if i > 0 {
                    buf.put_u8(b',');
                }
                nul |= write_value::<V, ORDER, CUTS>(buf, value?, depth + 1, limit)?;
            }
            buf.put_u8(b']');
            return Ok(nul);
        }
        Read::Map(map) => {
            let cut = if CUTS && limit != usize::MAX { Cut::All(limit) } else { Cut::Never };
            if only_key(map)?.is_some_and(is_tag) {
                write_tag(buf, TAG_MAP);
                let nul = write_map::<V::Map, ORDER, CUTS>(buf, map, depth + 1, cut, &mut |_, _| {})?;
                buf.put_u8(b'}');
                return Ok(nul);
            }
            return write_map::<V::Map, ORDER, CUTS>(buf, map, depth + 1, cut, &mut |_, _| {});
        }
        Read::Strindex(i) => write_strindex(buf, i),
    }
    Ok(false)
}

/// The key of a map's only entry, if it has exactly one.
fn only_key<'a, M: MapSource<'a>>(map: M) -> Result<Option<&'a [u8]>, Unusual> {
    let mut entries = map.entries();
    let Some(first) = entries.next() else { return Ok(None) };
    let (key, _) = first?;
    Ok(entries.next().is_none().then_some(key))
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
    Ok(!validate::is_key(text.as_bytes()))
}

/// Writes a string value's bytes: a JSON string, or the `$nul` tag when it holds U+0000.
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

/// A string of content longer than `limit`, cut and marked (see `genai::content`): a whole
/// value (not one inside an array or map) that holds JSON messages has the strings in it cut.
///
/// # Errors
/// [`Unusual`] when the bytes are not UTF-8.
#[cold]
fn write_cut_text(buf: &mut BytesMut, bytes: &[u8], limit: usize, whole: bool) -> Result<(), Unusual> {
    let text = std::str::from_utf8(bytes).map_err(|_| Unusual)?;
    if whole {
        write_string_value(buf, &genai::content::cut_value(text, limit));
    } else {
        write_string_value(buf, &genai::content::cut(text, limit));
    }
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

/// Whether a map key is one of the `$` tags, which a nested map with only that key must escape.
pub fn is_tag(key: &[u8]) -> bool {
    TAGS.iter().any(|tag| tag.as_bytes() == key)
}

pub fn write_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    write_tag(buf, TAG_BYTES);
    buf.put_u8(b'"');
    let at = buf.len();
    buf.resize(at + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
    let written = BASE64.encode_slice(bytes, &mut buf[at..]).unwrap_or(0);
    buf.truncate(at + written);
    buf.put_slice(b"\"}");
}

pub fn write_strindex(buf: &mut BytesMut, index: i32) {
    write_tag(buf, TAG_STRINDEX);
    write_int(buf, i64::from(index));
    buf.put_u8(b'}');
}

/// Opens `{"tag":`; the caller writes the value and the closing brace.
pub fn write_tag(buf: &mut BytesMut, tag: &str) {
    buf.put_u8(b'{');
    write_str(buf, tag);
    buf.put_u8(b':');
}

pub fn write_int(buf: &mut BytesMut, i: impl itoa::Integer) {
    let mut digits = itoa::Buffer::new();
    buf.put_slice(digits.format(i).as_bytes());
}

/// A double as a JSON number that always has a decimal point (so it reads back as a double,
/// never an int), or a `$double` tag for the values JSON and numeric cannot hold.
pub fn write_double(buf: &mut BytesMut, d: f64) {
    let special = if d.is_nan() {
        Some("NaN")
    } else if d == f64::INFINITY {
        Some("Infinity")
    } else if d == f64::NEG_INFINITY {
        Some("-Infinity")
    } else if d == 0.0 && d.is_sign_negative() {
        Some("-0")
    } else {
        None
    };
    if let Some(name) = special {
        write_tag(buf, TAG_DOUBLE);
        write_str(buf, name);
        buf.put_u8(b'}');
        return;
    }
    // The shortest digits that read back as the same double, never with an exponent, as Display
    // writes them (adding ".0" to a whole number). zmij is many times faster, and writes the
    // same text when it chooses no exponent and at most 15 digits: a double's rounding
    // interval is narrower than the gap between two decimals of 15 significant digits, so only
    // one such decimal reads back as the double. With 16 or 17 digits there can be two, and
    // the two pick differently; Display writes those, and any with an exponent.
    let mut digits = zmij::Buffer::new();
    let text = digits.format_finite(d).as_bytes();
    if !text.contains(&b'e') && text.iter().filter(|b| b.is_ascii_digit()).count() <= 15 {
        buf.put_slice(text);
        return;
    }
    let at = buf.len();
    std::fmt::Write::write_fmt(&mut BufWriter(buf), format_args!("{d}")).ok();
    if !buf[at..].contains(&b'.') {
        buf.put_slice(b".0");
    }
}

struct BufWriter<'a>(&'a mut BytesMut);

impl std::fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// For each byte, what JSON needs instead of it in a string: 0 for nothing, `u` for `\u00XX`,
/// or the letter after the backslash.
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether `bytes` are ASCII with nothing JSON must escape (no control character, quote or
/// backslash): as most attribute keys and values are, which then are copied as they are.
/// Reads eight bytes at a time.
#[inline]
pub fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A word's high bit set in a lane where the byte is >= 0x80, < 0x20, '"' or '\\'. Each
    // test is exact about whether such a byte exists, which is all that is asked.
    #[inline(always)]
    fn unplain(w: u64) -> u64 {
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let zero_lanes = (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash);
        (w | below_space | zero_lanes) & HIGH
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    if bytes.len() < 8 {
        return bytes.iter().all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\');
    }
    let mut found = 0;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        found |= unplain(word(at));
        at += 8;
    }
    // The tail as the last eight bytes, overlapping what was read already.
    (found | unplain(word(bytes.len() - 8))) == 0
}

/// Writes a string value: a JSON string, or, when it holds U+0000 (which jsonb cannot), the
/// `$nul` tag with the pieces around each U+0000.
pub fn write_string_value(buf: &mut BytesMut, s: &str) {
    if !s.as_bytes().contains(&0) {
        return write_str(buf, s);
    }
    write_tag(buf, TAG_NUL);
    buf.put_u8(b'[');
    for (i, piece) in s.split('\0').enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        write_str(buf, piece);
    }
    buf.put_slice(b"]}");
}

/// Writes `s` as a JSON string.
pub fn write_str(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.put_u8(b'"');
    if is_plain(bytes) {
        buf.put_slice(bytes);
    } else {
        write_escaped(buf, bytes);
    }
    buf.put_u8(b'"');
}

fn write_escaped(buf: &mut BytesMut, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPES[b as usize];
        if escape == 0 {
            continue;
        }
        buf.put_slice(&bytes[start..i]);
        if escape == b'u' {
            buf.put_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
        } else {
            buf.put_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    buf.put_slice(&bytes[start..]);
}

/// Writes bytes as a JSON string of lowercase hex (trace and span ids).
pub fn write_hex(buf: &mut BytesMut, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.put_u8(b'"');
    for b in bytes {
        buf.put_u8(HEX[(b >> 4) as usize]);
        buf.put_u8(HEX[(b & 0xf) as usize]);
    }
    buf.put_u8(b'"');
}

/// What stored JSON that does not follow the mapping looks like.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("expected a JSON object for an attribute map, found {0}")]
    NotAMap(String),
    #[error("number {0} is neither an int64 nor a double")]
    BadNumber(String),
    #[error("bad {tag} value {value}")]
    BadTag { tag: &'static str, value: String },
}

/// Reads an attribute map written by [`write_attributes`].
///
/// # Errors
/// When `json` is not an object or holds a value the mapping never writes.
pub fn attributes_from_json(json: &Json) -> Result<Vec<KeyValue>, MappingError> {
    let Json::Object(map) = json else {
        return Err(MappingError::NotAMap(json.to_string()));
    };
    map.iter()
        .map(|(key, value)| {
            Ok(KeyValue { key: key.clone(), value: Some(any_value_from_json(value)?), ..Default::default() })
        })
        .collect()
}

/// Reads an AnyValue written by [`write_any_value`].
///
/// # Errors
/// When `json` holds a value the mapping never writes.
pub fn any_value_from_json(json: &Json) -> Result<AnyValue, MappingError> {
    let value = match json {
        Json::Null => None,
        Json::Bool(b) => Some(Value::BoolValue(*b)),
        Json::String(s) => Some(Value::StringValue(s.clone())),
        Json::Number(n) => Some(number_from_json(n)?),
        Json::Array(items) => Some(Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_value_from_json).collect::<Result<_, _>>()?,
        })),
        Json::Object(map) => Some(match map.iter().next() {
            Some((tag, inner)) if map.len() == 1 && TAGS.contains(&tag.as_str()) => {
                tagged_from_json(tag, inner)?
            }
            _ => Value::KvlistValue(KeyValueList { values: attributes_from_json(json)? }),
        }),
    };
    Ok(AnyValue { value })
}

fn number_from_json(n: &serde_json::Number) -> Result<Value, MappingError> {
    if let Some(i) = n.as_i64() {
        Ok(Value::IntValue(i))
    } else if n.is_f64() {
        Ok(Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)))
    } else {
        Err(MappingError::BadNumber(n.to_string()))
    }
}

fn tagged_from_json(tag: &str, inner: &Json) -> Result<Value, MappingError> {
    let bad = |tag| MappingError::BadTag { tag, value: inner.to_string() };
    match tag {
        TAG_DOUBLE => double_from_json(inner).map(Value::DoubleValue),
        TAG_BYTES => inner
            .as_str()
            .and_then(|s| BASE64.decode(s).ok())
            .map(Value::BytesValue)
            .ok_or_else(|| bad(TAG_BYTES)),
        TAG_MAP => Ok(Value::KvlistValue(KeyValueList { values: attributes_from_json(inner)? })),
        TAG_NUL => inner
            .as_array()
            .filter(|pieces| pieces.len() >= 2)
            .and_then(|pieces| pieces.iter().map(Json::as_str).collect::<Option<Vec<&str>>>())
            .map(|pieces| Value::StringValue(pieces.join("\0")))
            .ok_or_else(|| bad(TAG_NUL)),
        _ => inner
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(Value::StringValueStrindex)
            .ok_or_else(|| bad(TAG_STRINDEX)),
    }
}

/// Reads a double written by [`write_double`]: a number, or a `$double` tag's name.
///
/// # Errors
/// When `json` is neither.
pub fn double_from_json(json: &Json) -> Result<f64, MappingError> {
    match json {
        Json::Number(n) => n.as_f64().ok_or_else(|| MappingError::BadNumber(n.to_string())),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "-0" => Ok(-0.0),
            _ => Err(MappingError::BadTag { tag: TAG_DOUBLE, value: s.clone() }),
        },
        Json::Object(map) if map.len() == 1 => match map.get(TAG_DOUBLE) {
            Some(inner) => double_from_json(inner),
            None => Err(MappingError::BadTag { tag: TAG_DOUBLE, value: json.to_string() }),
        },
        _ => Err(MappingError::BadTag { tag: TAG_DOUBLE, value: json.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_json(value: &AnyValue) -> Json {
        let mut buf = BytesMut::new();
        write_decoded_value(&mut buf, value);
        serde_json::from_slice(&buf).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&buf)))
    }

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn natural_json_for_the_common_types() {
        assert_eq!(to_json(&v(Value::StringValue("a\"b\\c\n\u{1}é".into()))), Json::from("a\"b\\c\n\u{1}é"));
        assert_eq!(to_json(&v(Value::IntValue(-42))).to_string(), "-42");
        assert_eq!(to_json(&v(Value::DoubleValue(42.0))).to_string(), "42.0");
        assert_eq!(to_json(&v(Value::BoolValue(true))), Json::Bool(true));
        assert_eq!(to_json(&AnyValue { value: None }), Json::Null);
        assert_eq!(to_json(&v(Value::BytesValue(vec![0, 255]))), serde_json::json!({"$bytes": "AP8="}));
        assert_eq!(to_json(&v(Value::DoubleValue(f64::NAN))), serde_json::json!({"$double": "NaN"}));
    }

    proptest! {
        // Where the fast path and Display differ the values are rare: it takes many cases.
        #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

        #[test]
        fn doubles_are_written_as_display_writes_them(bits in any::<u64>(), small in -1e7f64..1e7) {
            // Also decimals of up to 15 and 16 digits, around where the fast path stops.
            let digits15 = (bits % 1_000_000_000_000_000) as f64 / 10f64.powi((bits % 23) as i32);
            let digits16 = (bits % 10_000_000_000_000_000) as f64 / 10f64.powi((bits % 23) as i32);
            for d in [f64::from_bits(bits), small, small.round(), small / 1e9, digits15, digits16] {
                let mut buf = BytesMut::new();
                write_double(&mut buf, d);
                let expected = match format!("{d}") {
                    _ if !d.is_finite() || (d == 0.0 && d.is_sign_negative()) => None,
                    text if text.contains('.') => Some(text),
                    text => Some(text + ".0"),
                };
                if let Some(expected) = expected {
                    prop_assert_eq!(std::str::from_utf8(&buf).unwrap(), expected);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn strings_read_back_and_plain_ones_are_copied(s in "[ -~]{0,40}|[\\x00-\\x7f]{0,20}|.{0,12}") {
            let plain = s.bytes().all(|b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\');
            prop_assert_eq!(is_plain(s.as_bytes()), plain);
            let mut buf = BytesMut::new();
            write_str(&mut buf, &s);
            prop_assert_eq!(serde_json::from_slice::<String>(&buf).unwrap(), s.clone());
            if plain {
                let quoted = format!("\"{s}\"");
                prop_assert_eq!(&buf[..], quoted.as_bytes());
            }
        }
    }

    #[test]
    fn sorted_order_is_canonical() {
        let kv =
            |k: &str, i| KeyValue { key: k.into(), value: Some(v(Value::IntValue(i))), ..Default::default() };
        let mut a = BytesMut::new();
        let mut b = BytesMut::new();
        write_decoded_sorted(&mut a, &[kv("b", 1), kv("a", 2)]);
        write_decoded_sorted(&mut b, &[kv("a", 2), kv("b", 1)]);
        assert_eq!(a, b);
        assert_eq!(&a[..], b"{\"a\":2,\"b\":1}");
    }

    #[test]
    fn record_maps_are_written_in_jsonb_order_at_every_level() {
        let kv = |k: &str, value| KeyValue { key: k.into(), value: Some(v(value)), ..Default::default() };
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![kv("zz", Value::IntValue(1)), kv("b", Value::IntValue(2))],
        });
        let map = [
            kv("service.name", Value::IntValue(1)),
            kv("b", Value::IntValue(2)),
            kv("ab", nested),
            kv("aa", Value::IntValue(3)),
            kv("b", Value::IntValue(4)),
        ];
        let mut buf = BytesMut::new();
        write_attributes(&mut buf, &map[..]).expect("decoded");
        // Shorter keys first, equal lengths bytewise; of the duplicate "b" the last sent comes
        // last, and jsonb keeps the last.
        assert_eq!(
            std::str::from_utf8(&buf).expect("utf-8"),
            r#"{"b":2,"b":4,"aa":3,"ab":{"b":2,"zz":1},"service.name":1}"#
        );
    }

    pub(crate) fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            Just(AnyValue { value: None }),
            any::<String>().prop_map(|s| v(Value::StringValue(s))),
            "[a\\x00]{0,4}".prop_map(|s| v(Value::StringValue(s))),
            any::<bool>().prop_map(|b| v(Value::BoolValue(b))),
            any::<i64>().prop_map(|i| v(Value::IntValue(i))),
            any::<f64>().prop_map(|d| v(Value::DoubleValue(d))),
            prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e300), Just(5e-324)]
                .prop_map(|d| v(Value::DoubleValue(d))),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| v(Value::BytesValue(b))),
            any::<i32>().prop_map(|i| v(Value::StringValueStrindex(i))),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|values| v(Value::ArrayValue(ArrayValue { values }))),
                proptest::collection::btree_map(
                    prop_oneof![
                        any::<String>(),
                        Just(TAG_MAP.to_string()),
                        Just(TAG_BYTES.to_string()),
                        Just(TAG_NUL.to_string())
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| v(Value::KvlistValue(KeyValueList {
                    values: m
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value: Some(value), ..Default::default() })
                        .collect()
                }))),
            ]
        })
    }

    /// Equality that treats NaN as equal to itself and maps as unordered.
    pub(crate) fn same(a: &AnyValue, b: &AnyValue) -> bool {
        match (&a.value, &b.value) {
            (Some(Value::DoubleValue(x)), Some(Value::DoubleValue(y))) => {
                (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
            }
            (Some(Value::ArrayValue(x)), Some(Value::ArrayValue(y))) => {
                x.values.len() == y.values.len() && x.values.iter().zip(&y.values).all(|(a, b)| same(a, b))
            }
            (Some(Value::KvlistValue(x)), Some(Value::KvlistValue(y))) => same_map(&x.values, &y.values),
            (x, y) => x == y,
        }
    }

    pub(crate) fn same_map(x: &[KeyValue], y: &[KeyValue]) -> bool {
        let empty = AnyValue::default();
        x.len() == y.len()
            && x.iter().all(|kv| {
                y.iter().any(|other| {
                    other.key == kv.key
                        && same(kv.value.as_ref().unwrap_or(&empty), other.value.as_ref().unwrap_or(&empty))
                })
            })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(value in any_value()) {
            let back = any_value_from_json(&to_json(&value)).expect("decodes");
            prop_assert!(same(&value, &back), "{value:?} came back as {back:?}");
        }
    }
}
