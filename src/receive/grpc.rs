//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService` Export, accepting
//! gzip and zstd, with the request size limit answered as RESOURCE_EXHAUSTED and each request's
//! intake room reserved before its body is read.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{ready, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Frame;
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

use super::{IngestError, Refused};
use crate::{
    encode::{dims::KnownIds, logs, metrics, traces, Encoded},
    pipeline::{
        intake::{Intake, Room, RoomSlot},
        Pipeline, WriteError,
    },
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
        let logs = LogsServiceServer::new(self.clone())
            .accept_compressed(gzip)
            .accept_compressed(zstd)
            .max_decoding_message_size(max_request_bytes);
        let intake = &self.pipeline.intake;
        Routes::new(Gate::new(traces, intake, max_request_bytes))
            .add_service(Gate::new(metrics, intake, max_request_bytes))
            .add_service(Gate::new(logs, intake, max_request_bytes))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        export(&self.pipeline, request, traces::encode, super::traces_response).await
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        export(&self.pipeline, request, metrics::encode, super::metrics_response).await
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        export(&self.pipeline, request, logs::encode, super::logs_response).await
    }
}

/// Stores one export request with the intake room its body reserved.
async fn export<Req: Send + 'static, Resp>(
    pipeline: &Pipeline,
    request: tonic::Request<Req>,
    encode: fn(&Req, &KnownIds) -> Encoded,
    respond: fn(Option<Refused>) -> Resp,
) -> Result<tonic::Response<Resp>, Status> {
    let room = request.extensions().get::<RoomSlot>().and_then(RoomSlot::take);
    let refused = super::ingest(pipeline, request.into_inner(), encode, room)
        .await
        .map_err(|e| super::grpc_status(&e))?;
    Ok(tonic::Response::new(respond(refused)))
}

/// What stands in front of each export service: it reserves the request's intake room before
/// the body is read (see [`Metered`]), and gives tonic's own rejections the codes OTLP clients
/// expect. Tonic answers a message over the size limit with OUT_OF_RANGE when it arrives
/// uncompressed, and a message that does not decode with INTERNAL; those answers (trailers-only
/// responses, so the status is in the headers) become RESOURCE_EXHAUSTED and INVALID_ARGUMENT,
/// keeping tonic's message.
#[derive(Clone)]
struct Gate<S> {
    service: S,
    intake: Intake,
    max_request_bytes: usize,
}

impl<S> Gate<S> {
    fn new(service: S, intake: &Intake, max_request_bytes: usize) -> Self {
        Self { service, intake: intake.clone(), max_request_bytes }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
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

impl<S> Service<Request<Body>> for Gate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let slot = RoomSlot::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(slot.clone());
        let body = Metered {
            body,
            intake: self.intake.clone(),
            max_request_bytes: self.max_request_bytes,
            slot,
            state: MeterState::Prefix(BytesMut::new()),
        };
        let response = self.service.call(Request::from_parts(parts, Body::new(body)));
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

/// A request body that reserves the request's intake room before it yields any data. The
/// room comes from the message length in the gRPC frame prefix (5 bytes: a compressed flag and
/// the length), so the message is counted before it is read, decompressed and decoded; the
/// room is left in the request's [`RoomSlot`] for the handler. Until the room is granted the
/// body is not read on, and HTTP/2 flow control holds the client back.
struct Metered {
    body: Body,
    intake: Intake,
    max_request_bytes: usize,
    slot: RoomSlot,
    state: MeterState,
}

enum MeterState {
    /// Gathering the first 5 bytes.
    Prefix(BytesMut),
    /// Waiting for room, holding the data read so far.
    Reserving(Pin<Box<dyn Future<Output = Result<Room, WriteError>> + Send>>, Bytes),
    /// Room granted (or nothing to reserve): the rest passes through.
    Passing,
}

const PREFIX_BYTES: usize = 5;

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                MeterState::Passing => return Pin::new(&mut this.body).poll_frame(cx),
                MeterState::Prefix(read) => match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            read.extend_from_slice(&data);
                            if read.len() >= PREFIX_BYTES {
                                let compressed = read[0] == 1;
                                let declared = u32::from_be_bytes([read[1], read[2], read[3], read[4]]);
                                let need = this.intake.need(
                                    Some(declared as usize),
                                    compressed,
                                    this.max_request_bytes,
                                );
                                let intake = this.intake.clone();
                                let read = read.split().freeze();
                                let reserve = Box::pin(async move { intake.reserve(need).await });
                                this.state = MeterState::Reserving(reserve, read);
                            }
                        }
                        Err(trailers) => {
                            let answer = if read.is_empty() {
                                Ok(trailers)
                            } else {
                                Err(Status::invalid_argument("the request ended inside a message prefix"))
                            };
                            this.state = MeterState::Passing;
                            return Poll::Ready(Some(answer));
                        }
                    },
                    None => {
                        let read = std::mem::take(read).freeze();
                        this.state = MeterState::Passing;
                        return Poll::Ready((!read.is_empty()).then(|| Ok(Frame::data(read))));
                    }
                    Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                },
                MeterState::Reserving(reserve, read) => {
                    let room = ready!(reserve.as_mut().poll(cx));
                    let read = std::mem::take(read);
                    this.state = MeterState::Passing;
                    return Poll::Ready(Some(match room {
                        Ok(room) => {
                            this.slot.put(room);
                            Ok(Frame::data(read))
                        }
                        Err(err) => Err(super::grpc_status(&IngestError::Write(err))),
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, MeterState::Passing) && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
