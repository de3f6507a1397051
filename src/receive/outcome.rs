//! How an export request was answered: one vocabulary for the `outcome` label of
//! `otelephant_requests_total` (and the `reason` of `otelephant_rejected_items_total`), the
//! gRPC code and the HTTP status a request gets.

use http::StatusCode;
use tonic::Code;

use super::IngestError;
use crate::pipeline::WriteError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every record stored.
    Ok,
    /// Stored, with some records refused by rule (OTLP partial success).
    Partial,
    /// The request could not be read: undecodable, too large a body, the wrong content type.
    Invalid,
    /// Past `pipeline.max_request_memory`.
    TooLarge,
    /// Cut off by `otlp.read_timeout_ms` / `otlp.min_read_bytes_per_sec`.
    TooSlow,
    /// Without a valid bearer token.
    Unauthenticated,
    /// No room in the intake or the queue in time.
    Overloaded,
    /// The database stayed unreachable past the retry deadline.
    Unavailable,
    /// The database refused the request's own data.
    Refused,
    /// The server was stopping.
    ShuttingDown,
    /// A fault of otelephant's own.
    Error,
}

impl Outcome {
    /// Every outcome, in the order the metric's help text lists them.
    pub const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::Partial,
        Outcome::Invalid,
        Outcome::TooLarge,
        Outcome::TooSlow,
        Outcome::Unauthenticated,
        Outcome::Overloaded,
        Outcome::Unavailable,
        Outcome::Refused,
        Outcome::ShuttingDown,
        Outcome::Error,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::TooSlow => "too_slow",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::Refused => "refused",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a request that was not stored.
    pub fn of(err: &IngestError) -> Self {
        match err {
            IngestError::Decode(_) => Outcome::Invalid,
            IngestError::Encode(_) => Outcome::Error,
            IngestError::Write(WriteError::Refused(_)) => Outcome::Refused,
            IngestError::Write(WriteError::Overloaded(_)) => Outcome::Overloaded,
            IngestError::Write(WriteError::TooLarge(_)) => Outcome::TooLarge,
            IngestError::Write(WriteError::Database(_)) => Outcome::Unavailable,
            IngestError::Write(WriteError::ShuttingDown) => Outcome::ShuttingDown,
        }
    }

    /// Whether an exporter should send the request again: OTLP's retryable answers.
    pub fn retryable(self) -> bool {
        matches!(self, Outcome::Overloaded | Outcome::Unavailable | Outcome::ShuttingDown)
    }

    /// The gRPC code it is answered with: `UNAVAILABLE` (with RetryInfo) tells an OTLP exporter
    /// to back off and send again, `INVALID_ARGUMENT` that the data itself was refused.
    pub fn grpc_code(self) -> Code {
        match self {
            Outcome::Ok | Outcome::Partial => Code::Ok,
            Outcome::Invalid | Outcome::Refused => Code::InvalidArgument,
            Outcome::TooLarge => Code::ResourceExhausted,
            Outcome::TooSlow => Code::DeadlineExceeded,
            Outcome::Unauthenticated => Code::Unauthenticated,
            Outcome::Overloaded | Outcome::Unavailable | Outcome::ShuttingDown => Code::Unavailable,
            Outcome::Error => Code::Internal,
        }
    }

    /// The HTTP status it is answered with: 429 when otelephant is overloaded and 503 when the
    /// database is (both with Retry-After, which OTLP exporters honour), 400 for data refused.
    pub fn http_status(self) -> StatusCode {
        match self {
            Outcome::Ok | Outcome::Partial => StatusCode::OK,
            Outcome::Invalid | Outcome::Refused => StatusCode::BAD_REQUEST,
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Outcome::Unauthenticated => StatusCode::UNAUTHORIZED,
            Outcome::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Outcome::Unavailable | Outcome::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_help_text_lists_every_outcome_in_order() {
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
        let help = crate::telemetry::REQUESTS_HELP;
        assert!(help.ends_with(&format!("{}.", labels.join(", "))), "{help}");
    }

    #[test]
    fn retryable_outcomes_are_answered_retryably_on_both_transports() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.retryable(), outcome.grpc_code() == Code::Unavailable, "{outcome:?}");
            let status = outcome.http_status();
            assert_eq!(
                outcome.retryable(),
                status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE,
                "{outcome:?}"
            );
        }
    }
}
