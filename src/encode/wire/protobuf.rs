//! Protobuf's wire format, read in place: fields, varints, lengths. Anything protobuf encoders
//! do not produce is [`Unusual`], and the caller decodes that request with prost instead.

pub use crate::encode::source::Unusual;

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
    use super::{super::values::WireValue, *};

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
        let mut buf = bytes::BytesMut::new();
        let mut value = |bytes| crate::encode::attributes::write_any_value(&mut buf, WireValue(bytes));
        assert_eq!(value(&[0x10, 1, 0x18, 2]), Err(Unusual));
        // Text that is not UTF-8.
        assert_eq!(value(&[0x0a, 2, 0xff, 0xfe]), Err(Unusual));
    }
}
