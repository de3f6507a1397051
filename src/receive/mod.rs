//! Front doors: the OTLP/gRPC export services. Each handler encodes its request into rows,
//! submits them to the pipeline, and answers once they are committed.

pub mod grpc;

use tonic::Status;

use crate::pipeline::WriteError;

/// The gRPC status for a request whose rows were not stored. Every case is retryable:
/// `UNAVAILABLE` tells OTLP exporters to send again.
pub fn status(err: &WriteError) -> Status {
    match err {
        WriteError::Database(_) | WriteError::ShuttingDown => Status::unavailable(err.to_string()),
    }
}
