//! A request decoded by prost (OTLP/JSON, and protobuf the wire reader leaves to prost) as the
//! row writers read it (see `source`). Nothing here is ever [`Unusual`].

use std::slice::Iter;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

use super::source::{ListSource, MapSource, Read, Unusual, ValueSource};

impl<'a> ValueSource<'a> for &'a AnyValue {
    type Map = &'a [KeyValue];
    type Array = Items<'a, AnyValue, &'a AnyValue>;

    /// prost bounds the nesting it decodes.
    const MAX_DEPTH: usize = usize::MAX;

    #[inline]
    fn read(self) -> Result<Read<'a, Self>, Unusual> {
        Ok(match &self.value {
            None => Read::Empty,
            Some(Value::StringValue(s)) => Read::Text(s.as_bytes()),
            Some(Value::BoolValue(b)) => Read::Bool(*b),
            Some(Value::IntValue(i)) => Read::Int(*i),
            Some(Value::DoubleValue(d)) => Read::Double(*d),
            Some(Value::BytesValue(b)) => Read::Bytes(b),
            Some(Value::ArrayValue(array)) => Read::Array(Items::new(&array.values)),
            Some(Value::KvlistValue(list)) => Read::Map(&list.values[..]),
            Some(Value::StringValueStrindex(i)) => Read::Strindex(*i),
        })
    }
}

impl<'a> MapSource<'a> for &'a [KeyValue] {
    type Value = &'a AnyValue;
    type Entries = Entries<'a>;

    #[inline]
    fn entries(self) -> Self::Entries {
        Entries(self.iter())
    }
}

/// The entries of a decoded map.
pub struct Entries<'a>(Iter<'a, KeyValue>);

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], Option<&'a AnyValue>), Unusual>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|kv| Ok((kv.key.as_bytes(), kv.value.as_ref())))
    }
}

impl<'a, T: 'a, U> ListSource<'a, U> for &'a [T]
where
    U: From<&'a T>,
{
    type Items = Items<'a, T, U>;

    fn is_empty(self) -> bool {
        <[T]>::is_empty(self)
    }

    fn items(self) -> Self::Items {
        Items::new(self)
    }
}

/// The items of a decoded list, each seen as a `U`.
pub struct Items<'a, T, U> {
    items: Iter<'a, T>,
    seen: std::marker::PhantomData<U>,
}

impl<'a, T, U> Items<'a, T, U> {
    fn new(items: &'a [T]) -> Self {
        Self { items: items.iter(), seen: std::marker::PhantomData }
    }
}

impl<'a, T, U: From<&'a T>> Iterator for Items<'a, T, U> {
    type Item = Result<U, Unusual>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.items.next().map(|item| Ok(U::from(item)))
    }
}
