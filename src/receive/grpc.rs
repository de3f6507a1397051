//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService` Export, accepting
//! gzip and zstd, with the request size limit answered as RESOURCE_EXHAUSTED and each request's
//! intake room reserved before its body is read.

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Poll},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Request, Response};
use http_body::Frame;
use prost::Message;
use tonic::{
    body::Body,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::{NamedService, UnaryService},
    service::Routes,
    Code, Status,
};
use tower::Service;

use tokio::{task::JoinHandle, time::Sleep};

use super::outcome::Outcome;
use super::{
    conn::{Pace, Paced},
    inflate::{self, InflateError},
    IngestError, Logs, Metrics, Signal, Traces,
};
use crate::{
    config::OtlpConfig,
    encode::dims::KnownIds,
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
    pub fn routes(self, config: &OtlpConfig) -> Routes {
        let (pipeline, pace, max) = (&self.pipeline, Pace::new(config), config.max_request_bytes);
        Routes::new(Gate::new(self.service::<Traces>(max), pipeline, pace, max))
            .add_service(Gate::new(self.service::<Metrics>(max), pipeline, pace, max))
            .add_service(Gate::new(self.service::<Logs>(max), pipeline, pace, max))
    }

    fn service<S: Signal>(&self, max_request_bytes: usize) -> ExportService<S> {
        ExportService { pipeline: self.pipeline.clone(), max_request_bytes, signal: PhantomData }
    }
}

/// One signal's export service, as tonic would generate it but with a codec that hands the
/// message over as bytes: it is decoded from one contiguous slice (much faster than through
/// tonic's buffer) and off the async threads, together with its encoding into rows.
struct ExportService<S> {
    pipeline: Pipeline,
    max_request_bytes: usize,
    signal: PhantomData<S>,
}

impl<S> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        Self {
            pipeline: self.pipeline.clone(),
            max_request_bytes: self.max_request_bytes,
            signal: PhantomData,
        }
    }
}

impl<S: Signal> NamedService for ExportService<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S: Signal> Service<Request<Body>> for ExportService<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(S::SERVICE)) != Some("/Export")
        {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let reached = Arc::new(AtomicBool::new(false));
        let export =
            Export::<S> { pipeline: self.pipeline.clone(), reached: reached.clone(), signal: PhantomData };
        let telemetry = self.pipeline.telemetry.clone();
        // Compressed messages reach tonic already inflated (see Metered).
        let mut grpc = tonic::server::Grpc::new(ExportCodec::<S>(PhantomData))
            .max_decoding_message_size(self.max_request_bytes);
        Box::pin(async move {
            let response = grpc.unary(export, request).await;
            if !reached.load(Ordering::Relaxed) {
                // Answered before the message was whole: too large, not decompressible, too
                // slow, or no intake room came free.
                let status = Status::from_header_map(response.headers());
                let outcome = match status.as_ref().map(Status::code) {
                    Some(Code::Unavailable) => Outcome::Overloaded,
                    Some(Code::DeadlineExceeded) => Outcome::TooSlow,
                    Some(Code::ResourceExhausted)
                        if status.as_ref().is_some_and(|s| s.message().contains("max_request_memory")) =>
                    {
                        Outcome::TooLarge
                    }
                    _ => Outcome::Invalid,
                };
                super::count_request::<S>(&telemetry, "grpc", outcome);
            }
            Ok(response)
        })
    }
}

/// The Export method: decodes, encodes and stores one request with the intake room its body
/// reserved.
struct Export<S> {
    pipeline: Pipeline,
    /// Set once the message has arrived whole; `ingest` counts the request from there.
    reached: Arc<AtomicBool>,
    signal: PhantomData<S>,
}

impl<S: Signal> UnaryService<Bytes> for Export<S> {
    type Response = S::Response;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<S::Response>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let pipeline = self.pipeline.clone();
        self.reached.store(true, Ordering::Relaxed);
        Box::pin(async move {
            let slot = request.extensions().get::<RoomSlot>().cloned().unwrap_or_default();
            let room = slot.take().unwrap_or_default();
            let built = slot.take_built().unwrap_or_else(|| room.counting());
            let message = request.into_inner();
            let encode = move |known: &KnownIds| S::encode_message(&message, known);
            let refused = super::ingest::<S>(&pipeline, "grpc", encode, Some(room), built)
                .await
                .map_err(|e| super::grpc_status(&e))?;
            Ok(tonic::Response::new(S::respond(refused)))
        })
    }
}

/// Takes a request message as its bytes and answers with the signal's response message.
struct ExportCodec<S>(PhantomData<S>);

impl<S: Signal> Codec for ExportCodec<S> {
    type Encode = S::Response;
    type Decode = Bytes;
    type Encoder = ExportCodec<S>;
    type Decoder = ExportCodec<S>;

    fn encoder(&mut self) -> Self::Encoder {
        ExportCodec(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportCodec(PhantomData)
    }
}

impl<S: Signal> Encoder for ExportCodec<S> {
    type Item = S::Response;
    type Error = Status;

    fn encode(&mut self, item: S::Response, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl<S: Signal> Decoder for ExportCodec<S> {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What stands in front of each export service: it takes the request's intake room as the body
/// arrives (see [`Metered`]), and gives tonic's own size rejection the code OTLP
/// clients expect: tonic answers a message over the limit with OUT_OF_RANGE when it arrives
/// uncompressed; that answer (trailers-only, so the status is in the headers) becomes
/// RESOURCE_EXHAUSTED, keeping tonic's message.
#[derive(Clone)]
struct Gate<S> {
    service: S,
    intake: Intake,
    /// The queue's budget, for what a compressed message inflates to.
    build: Intake,
    pace: Pace,
    max_request_bytes: usize,
}

impl<S> Gate<S> {
    fn new(service: S, pipeline: &Pipeline, pace: Pace, max_request_bytes: usize) -> Self {
        let (intake, build) = (pipeline.intake.clone(), pipeline.build.clone());
        Self { service, intake, build, pace, max_request_bytes }
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
        // Metered inflates compressed messages itself; tonic sees them uncompressed.
        let encoding = parts.headers.remove("grpc-encoding").and_then(|v| v.to_str().ok().map(str::to_owned));
        let paced = self.pace.start();
        let body = Metered {
            body,
            intake: self.intake.clone(),
            build: self.build.clone(),
            slot,
            timer: Box::pin(tokio::time::sleep_until(paced.deadline())),
            paced,
            encoding,
            max_request_bytes: self.max_request_bytes,
            prefix: BytesMut::new(),
            remaining: 0,
            messages: 0,
            declared: None,
            received: 0,
            compressed: false,
            gathered: Some(BytesMut::new()),
            reserving: None,
            inflating: None,
            next: None,
        };
        let response = self.service.call(Request::from_parts(parts, Body::new(body)));
        Box::pin(async move {
            let mut response = response.await?;
            response
                .headers_mut()
                .insert("grpc-accept-encoding", http::HeaderValue::from_static("gzip,zstd"));
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

/// A request body that takes intake room for each piece of the message before handing it on,
/// so the message is counted as it arrives and a client that sends slowly holds only what it
/// has sent. A compressed message is gathered whole and inflated here, in steps each paid for
/// from the queue's budget before it is made (tonic would inflate it at once, uncounted), and
/// handed on uncompressed. The rooms are left in the request's [`RoomSlot`] for the handler. Until room is granted the
/// body is not read on, and HTTP/2 flow control holds the client back. The body is cut off when
/// it falls behind its [`Pace`], and when it carries a second message (an Export call takes one).
struct Metered {
    body: Body,
    intake: Intake,
    build: Intake,
    slot: RoomSlot,
    paced: Paced,
    /// Fires at `paced`'s deadline while the body waits for its client.
    timer: Pin<Box<Sleep>>,
    /// The request's `grpc-encoding`.
    encoding: Option<String>,
    max_request_bytes: usize,
    /// The part of a message prefix (5 bytes: a compressed flag and the length) read so far.
    prefix: BytesMut,
    /// Bytes of the current message still to come.
    remaining: usize,
    messages: u32,
    /// What the body declares: its prefix and message, once the prefix is read.
    declared: Option<usize>,
    /// Bytes of the body received so far.
    received: usize,
    compressed: bool,
    /// What has arrived while it is not yet known that the message is uncompressed (then it is
    /// handed on, and so is everything after it), or of a compressed message.
    gathered: Option<BytesMut>,
    /// A piece waiting for its room.
    reserving: Option<(Reserving, Bytes)>,
    /// A compressed message being inflated.
    inflating: Option<JoinHandle<Result<(Bytes, Room), Status>>>,
    /// The inflated message, after its prefix went on.
    next: Option<Bytes>,
}

/// Room being waited for.
type Reserving = Pin<Box<dyn Future<Output = Result<Room, WriteError>> + Send>>;

const PREFIX_BYTES: usize = 5;

impl Metered {
    /// Follows the message framing over `data`.
    ///
    /// # Errors
    /// INVALID_ARGUMENT when a second message begins.
    fn frame(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let taken = self.remaining.min(data.len());
                self.remaining -= taken;
                data = &data[taken..];
                continue;
            }
            let taken = (PREFIX_BYTES - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(&data[..taken]);
            data = &data[taken..];
            if self.prefix.len() == PREFIX_BYTES {
                if self.messages > 0 {
                    return Err(Status::invalid_argument("an Export call carries exactly one message"));
                }
                self.messages += 1;
                self.declared =
                    Some(
                        u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]])
                            as usize,
                    );
                self.compressed = self.prefix[0] == 1;
                self.remaining =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]])
                        as usize;
                self.prefix.clear();
            }
        }
        Ok(())
    }

    /// Whether the one message has arrived whole.
    fn whole(&self) -> bool {
        self.messages == 1 && self.remaining == 0 && self.prefix.is_empty()
    }

    /// Inflates the gathered compressed message on a blocking thread, with the request's room.
    fn inflate(&mut self, mut gathered: BytesMut) -> Result<(), Status> {
        let encoding = match self.encoding.as_deref() {
            Some(encoding @ ("gzip" | "zstd")) => encoding.to_owned(),
            other => {
                return Err(Status::unimplemented(format!(
                    "grpc-encoding {other:?} is not supported; use gzip or zstd"
                )))
            }
        };
        let body = gathered.split_off(PREFIX_BYTES).freeze();
        let (build, limit) = (self.build.clone(), self.max_request_bytes);
        // What it inflates to is built from it: the queue's budget.
        let mut room = self.slot.with(Room::counting);
        let runtime = tokio::runtime::Handle::current();
        self.inflating = Some(tokio::task::spawn_blocking(move || {
            let mut charge = |bytes| build.grow_blocking(&runtime, &mut room, bytes);
            let inflated =
                inflate::decompress(Some(&encoding), body, limit, &mut charge).map_err(|err| match err {
                    InflateError::TooLarge(limit) => {
                        Status::resource_exhausted(format!("the message inflates to more than {limit} bytes"))
                    }
                    InflateError::Unsupported(encoding) => {
                        Status::unimplemented(format!("grpc-encoding {encoding:?} is not supported"))
                    }
                    InflateError::Corrupt(why) => Status::invalid_argument(why),
                    InflateError::NoRoom(err) => super::grpc_status(&IngestError::Write(err)),
                })?;
            Ok((inflated, room))
        }));
        Ok(())
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(next) = this.next.take() {
                return Poll::Ready(Some(Ok(Frame::data(next))));
            }
            if let Some(inflating) = &mut this.inflating {
                let inflated = ready!(Pin::new(inflating).poll(cx));
                this.inflating = None;
                return Poll::Ready(Some(match inflated {
                    Ok(Ok((inflated, room))) => {
                        this.slot.put_built(room);
                        let mut prefix = BytesMut::with_capacity(PREFIX_BYTES);
                        prefix.put_u8(0);
                        prefix.put_u32(u32::try_from(inflated.len()).unwrap_or(u32::MAX));
                        this.next = Some(inflated);
                        Ok(Frame::data(prefix.freeze()))
                    }
                    Ok(Err(status)) => Err(status),
                    Err(err) => Err(Status::internal(format!("inflating the message failed: {err}"))),
                }));
            }
            if let Some((reserve, _)) = &mut this.reserving {
                let room = ready!(reserve.as_mut().poll(cx));
                let (_, data) = this.reserving.take().expect("reserving");
                if let Err(err) = room.map(|room| this.slot.merge(room)) {
                    return Poll::Ready(Some(Err(super::grpc_status(&IngestError::Write(err)))));
                }
                let Some(gathered) = &mut this.gathered else {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                };
                gathered.extend_from_slice(&data);
                if this.messages == 1 && !this.compressed {
                    let gathered = this.gathered.take().expect("gathering").freeze();
                    return Poll::Ready(Some(Ok(Frame::data(gathered))));
                }
                if this.whole() {
                    let gathered = this.gathered.take().expect("gathering");
                    if let Err(status) = this.inflate(gathered) {
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                continue;
            }
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    let deadline = this.paced.deadline();
                    if this.timer.deadline() != deadline {
                        this.timer.as_mut().reset(deadline);
                    }
                    ready!(this.timer.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(this.paced.too_slow()))));
                }
            };
            let data = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(trailers) => {
                        let gathering = this.gathered.as_ref().is_some_and(|g| !g.is_empty());
                        let answer = if this.prefix.is_empty() && this.remaining == 0 && !gathering {
                            Ok(trailers)
                        } else {
                            Err(Status::invalid_argument("the request ended inside a message"))
                        };
                        return Poll::Ready(Some(answer));
                    }
                },
                None if this.gathered.as_ref().is_some_and(|g| !g.is_empty()) => {
                    return Poll::Ready(Some(Err(Status::invalid_argument(
                        "the request ended inside a message",
                    ))));
                }
                other => return Poll::Ready(other),
            };
            this.paced.arrived(data.len());
            if let Err(status) = this.frame(&data) {
                return Poll::Ready(Some(Err(status)));
            }
            this.received += data.len();
            let (received, declared) = (this.received, this.declared);
            let reserve = this.slot.with(|room| {
                let more = this.intake.step(room.asked(), received, declared);
                this.intake.reserve_more(room, more)
            });
            this.reserving = Some((Box::pin(reserve), data));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reserving.is_none()
            && self.inflating.is_none()
            && self.next.is_none()
            && self.gathered.is_none()
            && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}
