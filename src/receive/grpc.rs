//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService` Export, accepting
//! gzip and zstd, with the request size limit answered as RESOURCE_EXHAUSTED.

use std::convert::Infallible;

use http::{Request, Response};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use tonic::{body::Body, codec::CompressionEncoding, server::NamedService, service::Routes, Code, Status};
use tower::Service;

use crate::{
    encode::{logs, metrics, traces},
    pipeline::Pipeline,
};

/// The three export services; cheap to clone, all sharing one pipeline.
#[derive(Clone)]
pub struct OtlpGrpc {
    pipeline: Pipeline,
}

impl OtlpGrpc {
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }

    /// The routes of the three services, each accepting compressed requests up to
    /// `max_request_bytes` decoded, with tonic's rejections given OTLP's status codes.
    pub fn routes(self, max_request_bytes: usize) -> Routes {
        let gzip = CompressionEncoding::Gzip;
        let zstd = CompressionEncoding::Zstd;
        let traces = TraceServiceServer::new(self.clone())
            .accept_compressed(gzip)
            .accept_compressed(zstd)
            .max_decoding_message_size(max_request_bytes);
        let metrics = MetricsServiceServer::new(self.clone())
            .accept_compressed(gzip)
            .accept_compressed(zstd)
            .max_decoding_message_size(max_request_bytes);
        let logs = LogsServiceServer::new(self)
            .accept_compressed(gzip)
            .accept_compressed(zstd)
            .max_decoding_message_size(max_request_bytes);
        Routes::new(RejectionStatus(traces))
            .add_service(RejectionStatus(metrics))
            .add_service(RejectionStatus(logs))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        let refused = super::ingest(&self.pipeline, request.into_inner(), traces::encode)
            .await
            .map_err(|e| super::grpc_status(&e))?;
        Ok(tonic::Response::new(super::traces_response(refused)))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        let refused = super::ingest(&self.pipeline, request.into_inner(), metrics::encode)
            .await
            .map_err(|e| super::grpc_status(&e))?;
        Ok(tonic::Response::new(super::metrics_response(refused)))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        let refused = super::ingest(&self.pipeline, request.into_inner(), logs::encode)
            .await
            .map_err(|e| super::grpc_status(&e))?;
        Ok(tonic::Response::new(super::logs_response(refused)))
    }
}

/// Tonic rejects some requests before any handler runs, with codes OTLP clients do not
/// expect: a message over the size limit gets OUT_OF_RANGE when it arrives uncompressed, and a
/// message that does not decode gets INTERNAL. This rewrites those answers (trailers-only
/// responses, so the status is in the headers) to RESOURCE_EXHAUSTED and INVALID_ARGUMENT,
/// keeping tonic's message.
#[derive(Clone)]
struct RejectionStatus<S>(S);

impl<S: NamedService> NamedService for RejectionStatus<S> {
    const NAME: &'static str = S::NAME;
}

/// The status a pre-handler rejection should have had, if it needs another.
fn corrected(status: &Status) -> Option<Code> {
    match status.code() {
        Code::OutOfRange if status.message().contains("message length too large") => {
            Some(Code::ResourceExhausted)
        }
        Code::Internal if status.message().starts_with("failed to decode Protobuf message") => {
            Some(Code::InvalidArgument)
        }
        _ => None,
    }
}

impl<S> Service<Request<Body>> for RejectionStatus<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            let Some(status) = Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            Ok(match corrected(&status) {
                Some(code) => Status::new(code, status.message()).into_http(),
                None => response,
            })
        })
    }
}
