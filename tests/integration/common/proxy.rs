//! A TCP proxy to the test database that a test can cut, refuse, or pause, to play a database
//! that fails, goes away or hangs, without touching the shared server.

use std::sync::{atomic::Ordering, Arc, Mutex};

use tokio::{net::TcpListener, task::JoinHandle};

use super::harness::database_url;

/// A TCP proxy to the test database that a test can cut, or pause (bytes stop flowing, the
/// connections stay open, like a database that hangs).
pub struct Proxy {
    port: u16,
    /// The forwarding tasks of open connections.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Mutex<Option<JoinHandle<()>>>,
    flowing: tokio::sync::watch::Sender<bool>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    /// Connections turned away while refusing.
    refused: tokio::sync::watch::Sender<usize>,
    /// Set by [`Self::cut_mid_copy`]: the next large CopyData message is cut in its middle.
    copy_cut: Arc<CopyCut>,
}

/// A one-shot cut in the middle of a COPY, armed with the size of CopyData message to cut.
#[derive(Default)]
struct CopyCut {
    armed_at: std::sync::atomic::AtomicUsize,
    happened: std::sync::atomic::AtomicBool,
}

/// Follows the messages a client sends to PostgreSQL (a length-prefixed startup message, then
/// a type byte and a length per message), to find CopyData ('d') messages in the byte stream.
#[derive(Default)]
struct FrontendMessages {
    started: bool,
    header: Vec<u8>,
    /// Bytes of the current message's body still to come.
    left: usize,
    /// Whether the current message is CopyData, and how long its body is.
    copy_data: Option<usize>,
}

impl FrontendMessages {
    /// Where in `chunk` to cut, if it carries the middle of a CopyData message of at least
    /// `min_len` bytes.
    fn cut_point(&mut self, chunk: &[u8], min_len: usize) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.left == 0 {
                let need = if self.started { 5 } else { 4 };
                let take = (need - self.header.len()).min(chunk.len() - i);
                self.header.extend_from_slice(&chunk[i..i + take]);
                i += take;
                if self.header.len() < need {
                    break;
                }
                let (kind, len) = match self.started {
                    true => (self.header[0], &self.header[1..5]),
                    false => (0, &self.header[0..4]),
                };
                let body = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize - 4;
                self.left = body;
                self.copy_data = (kind == b'd').then_some(body);
                self.started = true;
                self.header.clear();
                continue;
            }
            let take = self.left.min(chunk.len() - i);
            if self.copy_data.is_some_and(|len| len >= min_len) && take >= 2 {
                return Some(i + take / 2);
            }
            self.left -= take;
            i += take;
        }
        None
    }
}

/// Copies `from` to `to`, holding each chunk while the gate is closed. Given `copy_cut` (the
/// client's direction), it ends the connection in the middle of a CopyData message when armed.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: tokio::sync::watch::Receiver<bool>,
    copy_cut: Option<Arc<CopyCut>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let mut messages = copy_cut.as_ref().map(|_| FrontendMessages::default());
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        if let Some(cut) = &copy_cut {
            let min_len = cut.armed_at.load(Ordering::SeqCst);
            let threshold = if min_len == 0 { usize::MAX } else { min_len };
            let cut_at = messages.as_mut().and_then(|m| m.cut_point(&buf[..n], threshold));
            if let Some(at) = cut_at {
                if cut.armed_at.compare_exchange(min_len, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    let _ = to.write_all(&buf[..at]).await;
                    cut.happened.store(true, Ordering::SeqCst);
                    return;
                }
            }
            if cut_at.is_some() {
                // Another connection took the cut; this one's messages are no longer followed.
                messages = None;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (flowing, gate) = tokio::sync::watch::channel(true);
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (refused, _) = tokio::sync::watch::channel(0usize);
        let registry = tasks.clone();
        let (is_refusing, count) = (refusing.clone(), refused.clone());
        let copy_cut = Arc::new(CopyCut::default());
        let cut = copy_cut.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if is_refusing.load(Ordering::SeqCst) {
                    drop(inbound);
                    count.send_modify(|n| *n += 1);
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else { continue };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                let up = tokio::spawn(forward(in_read, out_write, gate.clone(), Some(cut.clone())));
                let down = tokio::spawn(forward(out_read, in_write, gate.clone(), None));
                registry.lock().expect("registry").extend([up, down]);
            }
        });
        Self { port, tasks, accept: Mutex::new(Some(accept)), flowing, refusing, refused, copy_cut }
    }

    /// The database URL through this proxy, with TLS off: the proxy reads the protocol in
    /// the clear to find COPY messages.
    pub fn url(&self) -> String {
        let url = database_url().replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port));
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}sslmode=disable")
    }

    /// Drops every connection and stops listening: the database is gone for good.
    pub fn cut(&self) {
        if let Some(accept) = self.accept.lock().expect("accept").take() {
            accept.abort();
        }
        self.drop_connections();
    }

    fn drop_connections(&self) {
        for task in self.tasks.lock().expect("registry").drain(..) {
            task.abort();
        }
    }

    /// An outage: drops every connection and turns new ones away until [`Self::heal`].
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    pub fn heal(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Resolves once `n` connections in all have been turned away.
    pub async fn refused_at_least(&self, n: usize) {
        let mut refused = self.refused.subscribe();
        refused.wait_for(|count| *count >= n).await.expect("the proxy is alive");
    }

    /// Arms a one-shot cut: the next CopyData message of at least `min_len` bytes is forwarded
    /// only half-way, and its connection is closed there.
    pub fn cut_mid_copy(&self, min_len: usize) {
        self.copy_cut.armed_at.store(min_len.max(1), Ordering::SeqCst);
    }

    /// Whether the armed cut has happened.
    pub fn copy_was_cut(&self) -> bool {
        self.copy_cut.happened.load(Ordering::SeqCst)
    }

    /// Holds all traffic until [`Self::resume`].
    pub fn pause(&self) {
        self.flowing.send_replace(false);
    }

    pub fn resume(&self) {
        self.flowing.send_replace(true);
    }
}
