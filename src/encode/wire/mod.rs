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
//! request's resource and scope groups; [`values`] reads AnyValues, attribute maps and repeated
//! messages for the row writers (see `encode::source`).

pub mod protobuf;
pub mod values;
pub mod walk;

pub use protobuf::{push_fixed64s, push_varints, Fields, Stretch, Unusual, Value, MAX_DEPTH};
pub use values::{WireList, WireMap, WireValue};
pub use walk::{encode_request, walk_request};
