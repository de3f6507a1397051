//! AnyValues, attribute maps and repeated messages read in place from their protobuf bytes, as
//! the row writers read them (see `encode::source`).

use super::protobuf::{Fields, Unusual, MAX_DEPTH};
use crate::encode::source::{ListSource, MapSource, Read, ValueSource};

/// An AnyValue message.
#[derive(Debug, Clone, Copy)]
pub struct WireValue<'a>(pub &'a [u8]);

/// The KeyValues that are field `number` of `message`: an attribute map, or a KeyValueList.
#[derive(Debug, Clone, Copy)]
pub struct WireMap<'a> {
    pub message: &'a [u8],
    pub number: u32,
}

impl<'a> WireMap<'a> {
    pub fn new(message: &'a [u8], number: u32) -> Self {
        Self { message, number }
    }
}

impl<'a> ValueSource<'a> for WireValue<'a> {
    type Map = WireMap<'a>;
    type Array = Repeated<'a, WireValue<'a>>;

    const MAX_DEPTH: usize = MAX_DEPTH;

    #[inline(always)]
    fn read(self) -> Result<Read<'a, Self>, Unusual> {
        // A string under 128 bytes, the commonest value, as encoders write it.
        if let [0x0a, len, text @ ..] = self.0 {
            if *len < 0x80 && text.len() == usize::from(*len) {
                return Ok(Read::Text(text));
            }
        }
        read_value(self.0)
    }
}

/// An AnyValue message in any encoding.
#[inline(always)]
fn read_value(message: &[u8]) -> Result<Read<'_, WireValue<'_>>, Unusual> {
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
    let Some((number, v)) = value else { return Ok(Read::Empty) };
    Ok(match number {
        1 => Read::Text(v.bytes()?),
        2 => Read::Bool(v.varint()? != 0),
        3 => Read::Int(v.varint()? as i64),
        4 => Read::Double(f64::from_bits(v.fixed64()?)),
        5 => Read::Array(Repeated::new(v.bytes()?, 1)),
        6 => Read::Map(WireMap::new(v.bytes()?, 1)),
        7 => Read::Bytes(v.bytes()?),
        _ => Read::Strindex(v.varint()? as i32),
    })
}

impl<'a> MapSource<'a> for WireMap<'a> {
    type Value = WireValue<'a>;
    type Entries = Repeated<'a, Entry<'a>>;

    #[inline]
    fn entries(self) -> Self::Entries {
        Repeated::new(self.message, self.number)
    }
}

/// A KeyValue's key and value.
type Entry<'a> = (&'a [u8], Option<WireValue<'a>>);

impl<'a> Item<'a> for Entry<'a> {
    #[inline(always)]
    fn read(message: &'a [u8]) -> Result<Self, Unusual> {
        key_value(message)
    }
}

/// A KeyValue's key (its bytes, checked as UTF-8 when written) and its value, if it has one.
#[inline]
fn key_value(entry: &[u8]) -> Result<Entry<'_>, Unusual> {
    // As encoders write it: the key (field 1), then the value (field 2), each under 128 bytes.
    if let [0x0a, key_len, rest @ ..] = entry {
        if let Some((key, [0x12, value_len, value @ ..])) = rest.split_at_checked(usize::from(*key_len)) {
            if *key_len < 0x80 && *value_len < 0x80 && value.len() == usize::from(*value_len) {
                return Ok((key, Some(WireValue(value))));
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
                value = Some(WireValue(v.bytes()?));
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

/// What a repeated message field's item is read as.
pub trait Item<'a>: Sized {
    /// Reads one item from its message.
    ///
    /// # Errors
    /// [`Unusual`] for an encoding left to prost.
    fn read(message: &'a [u8]) -> Result<Self, Unusual>;
}

/// The messages that are field `number` of `message`, each read as a `T`.
pub struct Repeated<'a, T> {
    fields: Fields<'a>,
    number: u32,
    item: std::marker::PhantomData<T>,
}

impl<'a, T> Repeated<'a, T> {
    pub fn new(message: &'a [u8], number: u32) -> Self {
        Self { fields: Fields::new(message), number, item: std::marker::PhantomData }
    }
}

impl<'a, T: Item<'a>> Iterator for Repeated<'a, T> {
    type Item = Result<T, Unusual>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        for field in &mut self.fields {
            match field {
                Ok((number, value)) if number == self.number => return Some(value.bytes().and_then(T::read)),
                Ok(_) => {}
                Err(unusual) => return Some(Err(unusual)),
            }
        }
        None
    }
}

impl<'a> Item<'a> for WireValue<'a> {
    #[inline(always)]
    fn read(message: &'a [u8]) -> Result<Self, Unusual> {
        Ok(WireValue(message))
    }
}

/// The messages that are field `number` of `message`, as a list of `T`.
#[derive(Debug, Clone, Copy)]
pub struct WireList<'a> {
    pub message: &'a [u8],
    pub number: u32,
    /// Whether the field occurs at all, known from the read that found the list.
    pub empty: bool,
}

impl<'a, T: Item<'a>> ListSource<'a, T> for WireList<'a> {
    type Items = Repeated<'a, T>;

    fn is_empty(self) -> bool {
        self.empty
    }

    fn items(self) -> Self::Items {
        Repeated::new(self.message, self.number)
    }
}
