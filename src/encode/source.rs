//! What the row writers read: an OTLP value as a few traits that both forms of a request
//! implement, so that each table's columns and each rule are written once. A request decoded
//! by prost (OTLP/JSON, and the rare protobuf the wire reader leaves to prost) implements
//! them in `decoded`; a protobuf request read in place from its bytes in `wire::values`.

/// An encoding the wire reader leaves to prost (see `wire`): the caller decodes the request
/// with prost and writes it again from the decoded form, which never gives this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unusual;

/// An AnyValue.
pub trait ValueSource<'a>: Copy {
    type Map: MapSource<'a, Value = Self>;
    type Array: Iterator<Item = Result<Self, Unusual>>;

    /// Nesting read before a value is [`Unusual`]: the wire reader's bound on recursion.
    const MAX_DEPTH: usize;

    /// Which member of the value's oneof it holds.
    ///
    /// # Errors
    /// [`Unusual`] for an encoding left to prost.
    fn read(self) -> Result<Read<'a, Self>, Unusual>;
}

/// An AnyValue's member.
pub enum Read<'a, V: ValueSource<'a>> {
    /// No member set.
    Empty,
    /// A string's bytes, UTF-8 unless the source says otherwise (see [`Unusual`]).
    Text(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(V::Array),
    Map(V::Map),
    Strindex(i32),
}

/// A list of KeyValues: an attribute map, or a kvlist value.
pub trait MapSource<'a>: Copy {
    type Value: ValueSource<'a, Map = Self>;
    type Entries: Iterator<Item = Result<(&'a [u8], Option<Self::Value>), Unusual>>;

    /// The entries in the order sent: each key's bytes (UTF-8 unless [`Unusual`]) and its value.
    fn entries(self) -> Self::Entries;
}

/// A list of items (events, links, exemplars) that a row writes as a jsonb array, or NULL
/// when it has none.
pub trait ListSource<'a, T>: Copy {
    type Items: Iterator<Item = Result<T, Unusual>>;

    fn is_empty(self) -> bool;
    fn items(self) -> Self::Items;
}
