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
//!
//! In three layers: [`protobuf`] reads fields, varints and lengths; [`walk`] walks an export
//! request's resource and scope groups; [`json`] writes attribute maps and values as the jsonb
//! mapping writes them.

pub mod json;
pub mod protobuf;
pub mod walk;

pub use json::{write_any_value, write_attributes, write_key, write_sorted_flat_attributes, write_text};
pub use protobuf::{count, push_fixed64s, push_varints, Fields, Stretch, Unusual, Value, MAX_DEPTH};
pub use walk::{encode_request, walk_request};
