//! How the server's parts learn that it is stopping. Shutdown happens in steps, each a signal
//! of its own (after tokio-rs/mini-redis `src/shutdown.rs`): [`Shutdown::begin`] starts it, the
//! server then tells gRPC to stop ([`Shutdown::stop_grpc`]), and gRPC, as it stops, closes the
//! response streams still open ([`Shutdown::close_streams`]). A part waits for the step it
//! acts on.

use std::{future::Future, pin::Pin};

use tokio::sync::watch;

/// The shutdown signals, cheap to clone: every part holds the same three.
#[derive(Clone)]
pub struct Shutdown {
    /// Shutdown has begun. Readiness (`/readyz`, gRPC health) turns not ready; the OTLP/HTTP
    /// listener stops accepting and finishes the requests it has; the health watcher reports
    /// NOT_SERVING.
    begun: watch::Sender<bool>,
    /// The gRPC server is to stop: it stops accepting and finishes its in-flight requests.
    grpc_stopping: watch::Sender<bool>,
    /// gRPC is stopping: response streams still open (health Watch) end with UNAVAILABLE, so
    /// their connections, and the server's graceful stop, need not wait out the grace period.
    streams_closing: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            begun: watch::Sender::new(false),
            grpc_stopping: watch::Sender::new(false),
            streams_closing: watch::Sender::new(false),
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown.
    pub fn begin(&self) {
        self.begun.send_replace(true);
    }

    pub fn has_begun(&self) -> bool {
        *self.begun.borrow()
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub fn begun(&self) -> impl Future<Output = ()> + Send + 'static {
        wait(self.begun.subscribe())
    }

    /// Tells the gRPC server to stop.
    pub fn stop_grpc(&self) {
        self.grpc_stopping.send_replace(true);
    }

    /// Resolves once the gRPC server is to stop.
    pub fn grpc_stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        wait(self.grpc_stopping.subscribe())
    }

    /// Ends the response streams still open.
    pub fn close_streams(&self) {
        self.streams_closing.send_replace(true);
    }

    fn streams_closing(&self) -> watch::Receiver<bool> {
        self.streams_closing.subscribe()
    }

    /// A gRPC service whose response streams end when [`Shutdown::close_streams`] is called.
    pub fn ending_streams<S>(&self, service: S) -> EndsStreams<S> {
        EndsStreams { service, closed: self.streams_closing() }
    }
}

async fn wait(mut signal: watch::Receiver<bool>) {
    // An error means every sender is gone, which only happens once the server itself is.
    let _ = signal.wait_for(|set| *set).await;
}

type Closing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Ends a service's open response streams once the server stops: each gets its remaining data
/// and then the status UNAVAILABLE, so clients reconnect elsewhere and the connection can close.
#[derive(Clone)]
pub struct EndsStreams<S> {
    service: S,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for EndsStreams<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for EndsStreams<S>
where
    S: tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
    >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let response = self.service.call(request);
        let mut closed = self.closed.clone();
        Box::pin(async move {
            let response = response.await?;
            let closing = Box::pin(async move {
                let _ = closed.wait_for(|closed| *closed).await;
            });
            Ok(response.map(|body| tonic::body::Body::new(UntilClosed { body, closing: Some(closing) })))
        })
    }
}

/// A response body that ends with UNAVAILABLE once `closing` resolves.
struct UntilClosed {
    body: tonic::body::Body,
    closing: Option<Closing>,
}

impl http_body::Body for UntilClosed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        use std::task::Poll;
        let this = &mut *self;
        let Some(closing) = this.closing.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if closing.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.closing = None;
        let mut trailers = http::HeaderMap::new();
        let status = tonic::Status::unavailable("otelephant is shutting down");
        Poll::Ready(Some(status.add_header(&mut trailers).map(|()| http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.closing.is_none() || self.body.is_end_stream()
    }
}
