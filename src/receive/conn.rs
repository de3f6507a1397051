//! What one client may hold of the receivers: how many connections are open at once, how long
//! one may sit idle, and how slowly a request's headers and body may arrive. Both listeners
//! take their connections through [`accept`], and both request body readers keep [`Pace`].

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tower::ServiceExt;

use crate::config::OtlpConfig;

/// How long a connection may sit idle while the listener is short of places (fewer than a
/// tenth of `otlp.max_connections` left): idle connections then give way to new ones quickly.
pub const CROWDED_IDLE: Duration = Duration::from_secs(2);

/// The connection limits of one listener.
#[derive(Clone)]
pub struct Limits {
    open: Arc<Semaphore>,
    max: usize,
    idle: Duration,
}

impl Limits {
    pub fn new(config: &OtlpConfig) -> Self {
        let max = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self { open: Arc::new(Semaphore::new(max)), max, idle: Duration::from_secs(config.idle_timeout_secs) }
    }

    /// How long a connection may be idle now.
    fn idle(&self) -> Duration {
        if self.open.available_permits() * 10 < self.max {
            self.idle.min(CROWDED_IDLE)
        } else {
            self.idle
        }
    }
}

/// Waits until fewer than `otlp.max_connections` connections are open, then takes the next one
/// from `listener`, watched for idleness. Until then new connections wait in the kernel's
/// backlog.
pub async fn next<L: axum::serve::Listener>(
    listener: &mut L,
    limits: &Limits,
) -> Option<(Watched<L::Io>, L::Addr)> {
    let open = limits.open.clone().acquire_owned().await.ok()?;
    let (io, addr) = listener.accept().await;
    Some((Watched::new(io, open, limits.clone()), addr))
}

/// The gRPC listener's connections as tonic takes them, each with TCP_NODELAY (without it,
/// small answers wait for the peer's delayed ACK, about 40 ms).
pub fn incoming(
    listener: tokio::net::TcpListener,
    limits: Limits,
) -> impl futures_util::Stream<Item = io::Result<Watched<tokio::net::TcpStream>>> {
    futures_util::stream::unfold((listener, limits), |(mut listener, limits)| async move {
        let (watched, _) = next(&mut listener, &limits).await?;
        let _ = watched.get_ref().set_nodelay(true);
        Some((Ok(watched), (listener, limits)))
    })
}

/// The path of the web UI's sign-in, whose requests carry their [`ClientAddr`].
pub const SIGN_IN_PATH: &str = "/login";

/// The address a sign-in request's connection came from, in its extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Serves `router` on `listener` until `stop` resolves, then lets the requests it has finish.
/// Connections come through [`next`]; an HTTP/1 request's headers must arrive within
/// `otlp.read_timeout_ms`, and an HTTP/2 connection carries at most `otlp.max_concurrent_streams`
/// requests at once.
///
/// # Errors
/// None today; the signature leaves room for listener failures.
pub async fn serve<L>(
    mut listener: L,
    router: axum::Router,
    config: &OtlpConfig,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let limits = Limits::new(config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.read_timeout_ms));
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(config.max_concurrent_streams);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, addr) = tokio::select! {
            next = next(&mut listener, &limits) => match next {
                Some(connection) => connection,
                None => break,
            },
            () = &mut stop => break,
        };
        // Sign-in knows the address it came from (it limits failures by it); no other request
        // pays for the extension.
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                if request.uri().path() == SIGN_IN_PATH {
                    request.extensions_mut().insert(ClientAddr(addr));
                }
                request
            },
        ));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection that counts against `otlp.max_connections` while open, and fails its reads and
/// writes (which closes it) once nothing has been read or written on it for
/// `otlp.idle_timeout_secs` ([`CROWDED_IDLE`] while the listener is short of places), so that
/// idle connections, and clients that stop reading their answers, give their place back.
pub struct Watched<T> {
    io: T,
    _open: OwnedSemaphorePermit,
    limits: Limits,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> Watched<T> {
    pub fn new(io: T, open: OwnedSemaphorePermit, limits: Limits) -> Self {
        let now = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(now + limits.idle));
        Self { io, _open: open, limits, last: now, timer }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Called when the connection would wait: ready with an error once it has been idle too long,
    /// otherwise pending with the timer set for when it would be.
    fn idle_check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.limits.idle.is_zero() {
            return Poll::Pending;
        }
        loop {
            // While the listener has places, a connection is not looked at again before its
            // full idle time; once crowded, the next look shortens it.
            let due = self.last + self.limits.idle();
            // Set again only once it has fired or must fire sooner: not on every wait.
            if self.timer.is_elapsed() || self.timer.deadline() > due {
                self.timer.as_mut().reset(due.min(Instant::now() + CROWDED_IDLE));
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if due <= Instant::now() {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle too long"));
            }
        }
    }

    fn active(&mut self) {
        self.last = Instant::now();
    }

    /// What a write answered, with the connection marked active when bytes went out, or the
    /// idle check made when it must wait.
    fn wrote(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    self.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.idle_check(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, data);
        self.wrote(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, data);
        self.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Watched<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// How fast a request's body must arrive: never a gap longer than `otlp.read_timeout_ms`
/// between two pieces, and, once that long has passed since it began, on average at least
/// `otlp.min_read_bytes_per_sec`. A client on a slow link sends steadily and meets both; one that
/// trickles its body to hold its room does not.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub read_timeout: Duration,
    pub min_rate: u64,
}

impl Pace {
    pub fn new(config: &OtlpConfig) -> Self {
        Self {
            read_timeout: Duration::from_millis(config.read_timeout_ms),
            min_rate: config.min_read_bytes_per_sec,
        }
    }

    pub fn start(self) -> Paced {
        let now = Instant::now();
        Paced { pace: self, start: now, last: now, received: 0 }
    }
}

/// One body's progress against its [`Pace`].
#[derive(Debug)]
pub struct Paced {
    pace: Pace,
    start: Instant,
    last: Instant,
    received: u64,
}

impl Paced {
    /// When the next piece must have arrived.
    pub fn deadline(&self) -> Instant {
        let gap = self.last + self.pace.read_timeout;
        if self.pace.min_rate == 0 {
            return gap;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.pace.min_rate as f64);
        gap.min(self.start + self.pace.read_timeout + earned)
    }

    pub fn arrived(&mut self, bytes: usize) {
        self.last = Instant::now();
        self.received += bytes as u64;
    }

    /// What a client that fell behind is told.
    pub fn too_slow(&self) -> String {
        format!(
            "the request body arrived too slowly: {} bytes in {:.1} s (otlp.read_timeout_ms = {}, otlp.min_read_bytes_per_sec = {})",
            self.received,
            self.start.elapsed().as_secs_f64(),
            self.pace.read_timeout.as_millis(),
            self.pace.min_rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_must_keep_up_both_its_gaps_and_its_average_rate() {
        let pace = Pace { read_timeout: Duration::from_secs(10), min_rate: 1000 };
        let mut paced = pace.start();
        let start = Instant::now();
        assert_eq!(paced.deadline(), start + Duration::from_secs(10));
        // 5,000 bytes at once earn 5 s more of the average, but a gap still ends after 10 s.
        paced.arrived(5_000);
        assert_eq!(paced.deadline(), start + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(8)).await;
        paced.arrived(100);
        assert_eq!(paced.deadline(), start + Duration::from_millis(15_100));
        // A trickle that keeps the gaps short falls behind the average.
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(1)).await;
            paced.arrived(1);
        }
        assert!(paced.deadline() < Instant::now() + Duration::from_secs(2));
        assert!(paced.too_slow().contains("otlp.min_read_bytes_per_sec = 1000"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_too_long_fails_its_reads() {
        let (client, server) = tokio::io::duplex(64);
        let limits = Limits { open: Arc::new(Semaphore::new(10)), max: 10, idle: Duration::from_secs(5) };
        let open = limits.open.clone();
        let permit = open.clone().try_acquire_owned().expect("a place");
        let mut watched = Watched::new(server, permit, limits.clone());
        let mut client = client;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::advance(Duration::from_secs(4)).await;
        client.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 2];
        watched.read_exact(&mut buf).await.expect("read while active");
        // Activity moved the deadline: 4 s more are fine, then the read fails.
        let started = Instant::now();
        let err = watched.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(open.available_permits(), 9, "still open until dropped");
        drop(watched);
        assert_eq!(open.available_permits(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_give_way_sooner_when_places_run_short() {
        let limits = Limits { open: Arc::new(Semaphore::new(10)), max: 10, idle: Duration::from_secs(120) };
        let (_client, server) = tokio::io::duplex(64);
        let permit = limits.open.clone().try_acquire_owned().expect("a place");
        let mut watched = Watched::new(server, permit, limits.clone());
        use tokio::io::AsyncReadExt;
        // Nine more connections leave none free: the idle one is closed after CROWDED_IDLE.
        let others: Vec<_> =
            (0..9).map(|_| limits.open.clone().try_acquire_owned().expect("a place")).collect();
        let started = Instant::now();
        let mut buf = [0u8; 1];
        let err = watched.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), CROWDED_IDLE);
        drop(others);
    }
}
