//! Streams (the reserved `stream` namespace): ordered chunks of binary data
//! tied to a request, with end, abort and credit-based flow control. A file
//! is a stream with a name and a size.
//!
//! Either side of a request may stream: the caller sends its request, then
//! `stream:open` naming the request's id, then chunks; the callee takes the
//! stream while it handles the request, and may open streams of its own
//! tied to the same request (the answer's data). Every frame is a
//! notification, so streams need nothing new from the envelope:
//!
//! | topic | sent by | data |
//! |---|---|---|
//! | `stream:open` | sender | `{streamId, requestId, name?, size?}` |
//! | `stream:chunk` | sender | `{streamId, seq, data}` — `data` in base64 |
//! | `stream:end` | sender | `{streamId}` |
//! | `stream:abort` | sender | `{streamId, reason}` |
//! | `stream:credit` | receiver | `{streamId, chunks}` |
//! | `stream:stop` | receiver | `{streamId, reason}` |
//!
//! Flow control: a sender may have [`STREAM_WINDOW`] chunks not yet
//! credited; the receiver grants more as its application reads them. A
//! chunk past the window, out of order, or for a stream the receiver does
//! not know is answered with `stream:stop`.
//!
//! This module is the wire format and the per-connection stream table;
//! the server and the client give it a [`StreamLink`] that sends frames.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::message::RequestId;

/// Topic of the frame that opens a stream.
pub const STREAM_OPEN: &str = "stream:open";
/// Topic of a chunk of data.
pub const STREAM_CHUNK: &str = "stream:chunk";
/// Topic of the end of a stream (all data sent).
pub const STREAM_END: &str = "stream:end";
/// Topic of a sender giving up on a stream.
pub const STREAM_ABORT: &str = "stream:abort";
/// Topic of a receiver granting more chunks.
pub const STREAM_CREDIT: &str = "stream:credit";
/// Topic of a receiver refusing (more of) a stream.
pub const STREAM_STOP: &str = "stream:stop";

/// Chunks a sender may have in flight before the receiver credits them.
pub const STREAM_WINDOW: u32 = 16;
/// Streams opened and not yet taken by the application, per connection;
/// past it the oldest is dropped (a client may ignore streams a server
/// opens for its plain requests).
const MAX_UNCLAIMED: usize = 32;

/// Largest chunk, in bytes of data (before base64): writes are cut to it.
pub const MAX_CHUNK_BYTES: usize = 48 * 1024;

/// What a stream carries, told when it opens: a file has a name and a size.
///
/// ```
/// let info = helios_protocol::StreamInfo::file("report.csv", 1024);
/// assert_eq!(info.name.as_deref(), Some("report.csv"));
/// assert_eq!(info.size, Some(1024));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// A file name, or any label.
    pub name: Option<String>,
    /// The total size in bytes, when known.
    pub size: Option<u64>,
}

impl StreamInfo {
    /// A stream of unknown length with no name.
    pub fn new() -> Self {
        Self::default()
    }

    /// A file: name and size.
    pub fn file(name: impl Into<String>, size: u64) -> Self {
        Self {
            name: Some(name.into()),
            size: Some(size),
        }
    }
}

/// Why a stream did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The sender aborted it (`stream:abort`).
    #[error("stream aborted by the sender: {0}")]
    Aborted(String),
    /// The receiver refused it (`stream:stop`).
    #[error("stream stopped by the receiver: {0}")]
    Stopped(String),
    /// The connection closed before the stream ended.
    #[error("the connection closed before the stream ended")]
    Closed,
    /// No stream was opened for the request (before it finished).
    #[error("no stream was opened for this request")]
    NoStream,
    /// A stream needs a request to belong to.
    #[error("streams are tied to requests; this call is not one")]
    NotARequest,
}

/// One stream frame, parsed from (or made into) a notification's topic and
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    /// Opens `stream_id` for the request `request_id`.
    Open {
        /// Chosen by the sender, unique among its open streams.
        stream_id: String,
        /// The request the stream belongs to.
        request_id: String,
        /// Name and size.
        info: StreamInfo,
    },
    /// The `seq`th chunk (from 0).
    Chunk {
        /// The stream.
        stream_id: String,
        /// Position of the chunk, from 0.
        seq: u64,
        /// The data.
        data: Bytes,
    },
    /// All data sent.
    End {
        /// The stream.
        stream_id: String,
    },
    /// The sender gives up.
    Abort {
        /// The stream.
        stream_id: String,
        /// Why.
        reason: String,
    },
    /// The receiver read `chunks` more chunks: the sender may send as many.
    Credit {
        /// The stream.
        stream_id: String,
        /// How many.
        chunks: u32,
    },
    /// The receiver refuses the stream.
    Stop {
        /// The stream.
        stream_id: String,
        /// Why.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    stream_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<u32>,
}

impl StreamFrame {
    /// Whether a notification topic is a stream frame's.
    pub fn is_stream_topic(topic: &str) -> bool {
        topic.starts_with("stream:")
    }

    /// Reads a stream frame from a notification's topic and data.
    ///
    /// # Errors
    /// What is wrong with it, for the `helios:error` answer.
    ///
    /// ```
    /// use helios_protocol::StreamFrame;
    /// let f = StreamFrame::parse("stream:chunk", &serde_json::json!({"streamId": "s", "seq": 0, "data": "aGk="})).unwrap();
    /// assert_eq!(f, StreamFrame::Chunk { stream_id: "s".into(), seq: 0, data: "hi".into() });
    /// assert!(StreamFrame::parse("stream:chunk", &serde_json::json!({"streamId": "s"})).is_err());
    /// ```
    pub fn parse(topic: &str, data: &Value) -> Result<Self, String> {
        let w = Wire::deserialize(data).map_err(|e| format!("{topic}: {e}"))?;
        let need = |field: &str| format!("{topic} needs data.{field}");
        let stream_id = w.stream_id;
        if stream_id.is_empty() || stream_id.len() > 128 {
            return Err(format!("{topic}: streamId must be 1 to 128 characters"));
        }
        Ok(match topic {
            STREAM_OPEN => Self::Open {
                stream_id,
                request_id: w.request_id.ok_or_else(|| need("requestId"))?,
                info: StreamInfo {
                    name: w.name,
                    size: w.size,
                },
            },
            STREAM_CHUNK => {
                let text = w.data.ok_or_else(|| need("data"))?;
                let data = BASE64
                    .decode(text.as_bytes())
                    .map_err(|e| format!("{topic}: data is not base64: {e}"))?;
                if data.len() > MAX_CHUNK_BYTES {
                    return Err(format!(
                        "{topic}: a chunk holds at most {MAX_CHUNK_BYTES} bytes, got {}",
                        data.len()
                    ));
                }
                Self::Chunk {
                    stream_id,
                    seq: w.seq.ok_or_else(|| need("seq"))?,
                    data: Bytes::from(data),
                }
            }
            STREAM_END => Self::End { stream_id },
            STREAM_ABORT => Self::Abort {
                stream_id,
                reason: w.reason.unwrap_or_default(),
            },
            STREAM_CREDIT => Self::Credit {
                stream_id,
                chunks: w.chunks.ok_or_else(|| need("chunks"))?,
            },
            STREAM_STOP => Self::Stop {
                stream_id,
                reason: w.reason.unwrap_or_default(),
            },
            other => return Err(format!("unknown stream frame {other:?}")),
        })
    }

    /// The notification topic and data of this frame.
    pub fn to_notification(&self) -> (&'static str, Value) {
        let mut w = Wire {
            stream_id: String::new(),
            request_id: None,
            name: None,
            size: None,
            seq: None,
            data: None,
            reason: None,
            chunks: None,
        };
        let topic = match self {
            Self::Open {
                stream_id,
                request_id,
                info,
            } => {
                w.stream_id.clone_from(stream_id);
                w.request_id = Some(request_id.clone());
                w.name.clone_from(&info.name);
                w.size = info.size;
                STREAM_OPEN
            }
            Self::Chunk {
                stream_id,
                seq,
                data,
            } => {
                w.stream_id.clone_from(stream_id);
                w.seq = Some(*seq);
                w.data = Some(BASE64.encode(data));
                STREAM_CHUNK
            }
            Self::End { stream_id } => {
                w.stream_id.clone_from(stream_id);
                STREAM_END
            }
            Self::Abort { stream_id, reason } => {
                w.stream_id.clone_from(stream_id);
                w.reason = Some(reason.clone());
                STREAM_ABORT
            }
            Self::Credit { stream_id, chunks } => {
                w.stream_id.clone_from(stream_id);
                w.chunks = Some(*chunks);
                STREAM_CREDIT
            }
            Self::Stop { stream_id, reason } => {
                w.stream_id.clone_from(stream_id);
                w.reason = Some(reason.clone());
                STREAM_STOP
            }
        };
        (topic, serde_json::to_value(w).unwrap_or(Value::Null))
    }
}

/// How one side sends stream frames to the other (the server's connection,
/// the client's socket task).
pub trait StreamLink: Send + Sync + 'static {
    /// Sends a frame, waiting for room in the outbound queue.
    fn send(&self, frame: StreamFrame) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Sends a frame without waiting, when there is room (a dropped writer's
    /// abort); `false` when it could not.
    fn send_now(&self, frame: StreamFrame) -> bool;
}

/// What a receiver's channel carries.
enum Incoming {
    Chunk(Bytes),
    End,
    Abort(String),
}

struct InEntry {
    tx: mpsc::Sender<Incoming>,
    next_seq: u64,
}

struct OutEntry {
    credit: Arc<Semaphore>,
    stopped: Arc<Mutex<Option<String>>>,
    request_id: RequestId,
}

#[derive(Default)]
struct Table {
    incoming: HashMap<String, InEntry>,
    outgoing: HashMap<String, OutEntry>,
    /// Streams opened for a request whose handler has not taken them yet.
    /// Each with the order it came in, so the oldest goes first when full.
    unclaimed: HashMap<RequestId, VecDeque<(u64, IncomingStream)>>,
    /// Streams that came so far (the order of `unclaimed`).
    arrived: u64,
    /// Handlers waiting for their request's stream.
    waiting: HashMap<RequestId, oneshot::Sender<IncomingStream>>,
    closed: bool,
}

impl Table {
    /// The request is over: its writers stop waiting for credit that may
    /// never come.
    fn stop_writers_of(&mut self, request_id: &RequestId) {
        self.outgoing.retain(|_, entry| {
            if &entry.request_id != request_id {
                return true;
            }
            *entry.stopped.lock().unwrap_or_else(PoisonError::into_inner) =
                Some("the request was answered before the stream ended".to_owned());
            entry.credit.close();
            false
        });
    }

    fn take_unclaimed(&mut self, request_id: &RequestId) -> Option<IncomingStream> {
        let queue = self.unclaimed.get_mut(request_id)?;
        let (_, stream) = queue.pop_front()?;
        if queue.is_empty() {
            self.unclaimed.remove(request_id);
        }
        Some(stream)
    }

    /// The stream waiting longest to be taken (to be dropped outside the
    /// lock).
    fn take_oldest_unclaimed(&mut self) -> Option<IncomingStream> {
        let oldest = self
            .unclaimed
            .iter()
            .filter_map(|(id, q)| q.front().map(|(order, _)| (*order, id.clone())))
            .min()?
            .1;
        self.take_unclaimed(&oldest)
    }
}

/// One connection's streams, both ways.
///
/// ```
/// let streams = helios_protocol::Streams::new();
/// assert_eq!(streams.open_count(), 0);
/// ```
#[derive(Clone, Default)]
pub struct Streams {
    table: Arc<Mutex<Table>>,
}

impl Streams {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Streams open now, both ways (for tests and metrics).
    pub fn open_count(&self) -> usize {
        let t = self.lock();
        t.incoming.len() + t.outgoing.len()
    }

    /// Handles a frame from the peer. `request_open` says whether a
    /// request id may have streams (one in flight here). Returns the frame
    /// to answer with, if any (`stream:stop` for what cannot be taken).
    pub fn on_frame(
        &self,
        frame: StreamFrame,
        link: &Arc<dyn StreamLink>,
        request_open: impl FnOnce(&str) -> bool,
    ) -> Option<StreamFrame> {
        let stop = |stream_id: String, reason: &str| {
            Some(StreamFrame::Stop {
                stream_id,
                reason: reason.to_owned(),
            })
        };
        let mut t = self.lock();
        match frame {
            StreamFrame::Open {
                stream_id,
                request_id,
                info,
            } => {
                if t.closed {
                    return None;
                }
                if t.incoming.contains_key(&stream_id) {
                    return stop(stream_id, "a stream with this streamId is already open");
                }
                if !request_open(&request_id) {
                    return stop(stream_id, "no request with this requestId is in flight");
                }
                let full = t.unclaimed.values().map(VecDeque::len).sum::<usize>() >= MAX_UNCLAIMED;
                let evicted = if full {
                    t.take_oldest_unclaimed()
                } else {
                    None
                };
                let (tx, rx) = mpsc::channel(STREAM_WINDOW as usize + 1);
                t.incoming
                    .insert(stream_id.clone(), InEntry { tx, next_seq: 0 });
                let request_id = RequestId::from(request_id);
                let stream = IncomingStream {
                    id: stream_id,
                    info,
                    rx,
                    link: link.clone(),
                    streams: self.clone(),
                    unread_credit: 0,
                    done: false,
                };
                let unwanted = match t.waiting.remove(&request_id) {
                    Some(waiter) => waiter.send(stream).err(),
                    None => Some(stream),
                };
                if let Some(stream) = unwanted {
                    t.arrived += 1;
                    let order = t.arrived;
                    t.unclaimed
                        .entry(request_id)
                        .or_default()
                        .push_back((order, stream));
                }
                // An `IncomingStream`'s drop takes the lock: after it.
                drop(t);
                drop(evicted);
                None
            }
            StreamFrame::Chunk {
                stream_id,
                seq,
                data,
            } => {
                let Some(entry) = t.incoming.get_mut(&stream_id) else {
                    return stop(
                        stream_id,
                        "no such stream (never opened, or closed by the receiver)",
                    );
                };
                let violation = if seq != entry.next_seq {
                    Some(format!(
                        "chunk {seq} out of order (expected {})",
                        entry.next_seq
                    ))
                } else if entry.tx.capacity() <= 1 {
                    Some(format!(
                        "flow control: more than {STREAM_WINDOW} chunks sent without credit"
                    ))
                } else {
                    entry.next_seq += 1;
                    // The window leaves room: this cannot fail but for a
                    // receiver already gone, which the next chunk learns.
                    let _ = entry.tx.try_send(Incoming::Chunk(data));
                    None
                };
                let reason = violation?;
                if let Some(entry) = t.incoming.remove(&stream_id) {
                    let _ = entry.tx.try_send(Incoming::Abort(reason.clone()));
                }
                stop(stream_id, &reason)
            }
            StreamFrame::End { stream_id } => {
                if let Some(entry) = t.incoming.remove(&stream_id) {
                    let _ = entry.tx.try_send(Incoming::End);
                }
                None
            }
            StreamFrame::Abort { stream_id, reason } => {
                if let Some(entry) = t.incoming.remove(&stream_id) {
                    let _ = entry.tx.try_send(Incoming::Abort(reason));
                }
                None
            }
            StreamFrame::Credit { stream_id, chunks } => {
                if let Some(entry) = t.outgoing.get(&stream_id) {
                    let room = Semaphore::MAX_PERMITS - entry.credit.available_permits();
                    entry.credit.add_permits((chunks as usize).min(room));
                }
                None
            }
            StreamFrame::Stop { stream_id, reason } => {
                if let Some(entry) = t.outgoing.remove(&stream_id) {
                    *entry.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
                    entry.credit.close();
                }
                None
            }
        }
    }

    /// The stream the peer opened for `request_id`, waiting for it if it
    /// has not arrived yet (a caller sends the request first, then opens).
    /// `may_still_come` says whether the request is still open (checked
    /// under the table's lock, so [`answered`](Self::answered) cannot slip
    /// in between).
    ///
    /// # Errors
    /// [`StreamError::NoStream`] when the request finished without one,
    /// [`StreamError::Closed`] when the connection closed.
    pub async fn take_incoming(
        &self,
        request_id: &RequestId,
        may_still_come: impl FnOnce() -> bool,
    ) -> Result<IncomingStream, StreamError> {
        let rx = {
            let mut t = self.lock();
            if let Some(stream) = t.take_unclaimed(request_id) {
                return Ok(stream);
            }
            if t.closed {
                return Err(StreamError::Closed);
            }
            if !may_still_come() {
                return Err(StreamError::NoStream);
            }
            let (tx, rx) = oneshot::channel();
            t.waiting.insert(request_id.clone(), tx);
            rx
        };
        // A taker that gives up (a handler timed out or cancelled) leaves
        // no waiter behind.
        let _unwait = Unwait {
            streams: self,
            request_id,
        };
        rx.await.map_err(|_| {
            if self.lock().closed {
                StreamError::Closed
            } else {
                StreamError::NoStream
            }
        })
    }

    /// Opens a stream to the peer for `request_id`.
    ///
    /// # Errors
    /// [`StreamError::Closed`] when the connection is closed.
    pub async fn open(
        &self,
        link: Arc<dyn StreamLink>,
        request_id: &RequestId,
        info: StreamInfo,
    ) -> Result<StreamWriter, StreamError> {
        let stream_id = uuid::Uuid::new_v4().simple().to_string();
        let credit = Arc::new(Semaphore::new(STREAM_WINDOW as usize));
        let stopped = Arc::new(Mutex::new(None));
        {
            let mut t = self.lock();
            if t.closed {
                return Err(StreamError::Closed);
            }
            t.outgoing.insert(
                stream_id.clone(),
                OutEntry {
                    credit: credit.clone(),
                    stopped: stopped.clone(),
                    request_id: request_id.clone(),
                },
            );
        }
        let mut writer = StreamWriter {
            id: stream_id.clone(),
            link,
            streams: self.clone(),
            credit,
            stopped,
            seq: 0,
            finished: false,
        };
        let open = StreamFrame::Open {
            stream_id,
            request_id: request_id.to_string(),
            info,
        };
        if !writer.link.send(open).await {
            writer.finished = true;
            writer.forget();
            return Err(StreamError::Closed);
        }
        Ok(writer)
    }

    /// The request finished: streams opened for it that nobody took are
    /// dropped (their sender is stopped), and a waiting taker learns there
    /// is none.
    pub fn request_done(&self, request_id: &RequestId) {
        let mut t = self.lock();
        let unclaimed = t.unclaimed.remove(request_id);
        t.waiting.remove(request_id);
        t.stop_writers_of(request_id);
        drop(t);
        drop(unclaimed);
    }

    /// An incoming stream that cannot go on (its frame was malformed): the
    /// reader gets [`StreamError::Aborted`]; returns the `stream:stop` to
    /// send, when the stream was open.
    pub fn fail_incoming(&self, stream_id: &str, reason: &str) -> Option<StreamFrame> {
        let entry = self.lock().incoming.remove(stream_id)?;
        let _ = entry.tx.try_send(Incoming::Abort(reason.to_owned()));
        Some(StreamFrame::Stop {
            stream_id: stream_id.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// The answer to `request_id` arrived (the client's side): a stream
    /// opened for it came before, so one still waited for will not come.
    /// Streams that came and were not taken yet stay for the taker.
    pub fn answered(&self, request_id: &RequestId) {
        let mut t = self.lock();
        let waiter = t.waiting.remove(request_id);
        t.stop_writers_of(request_id);
        drop(t);
        drop(waiter);
    }

    /// The connection closed for good: every stream fails with
    /// [`StreamError::Closed`], and no new one opens.
    pub fn close(&self) {
        self.lock().closed = true;
        self.fail_all();
    }

    /// The socket was lost: every stream fails with
    /// [`StreamError::Closed`]; new ones may open on the next socket.
    pub fn fail_all(&self) {
        let mut t = self.lock();
        t.incoming.clear();
        for (_, entry) in t.outgoing.drain() {
            entry.credit.close();
        }
        t.waiting.clear();
        let unclaimed = std::mem::take(&mut t.unclaimed);
        drop(t);
        drop(unclaimed);
    }
}

/// Removes a taker's waiter when its wait ends, however it ends.
struct Unwait<'a> {
    streams: &'a Streams,
    request_id: &'a RequestId,
}

impl Drop for Unwait<'_> {
    fn drop(&mut self) {
        let waiter = self.streams.lock().waiting.remove(self.request_id);
        drop(waiter);
    }
}

/// A stream the peer sends: read it chunk by chunk. Dropping it before the
/// end stops the sender (`stream:stop` at its next chunk).
pub struct IncomingStream {
    id: String,
    info: StreamInfo,
    rx: mpsc::Receiver<Incoming>,
    link: Arc<dyn StreamLink>,
    streams: Streams,
    /// Chunks read since the last credit was sent.
    unread_credit: u32,
    done: bool,
}

impl std::fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStream")
            .field("id", &self.id)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl IncomingStream {
    /// The stream's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name the sender gave (a file name).
    pub fn name(&self) -> Option<&str> {
        self.info.name.as_deref()
    }

    /// The size the sender announced, in bytes.
    pub fn size(&self) -> Option<u64> {
        self.info.size
    }

    /// The next chunk; `Ok(None)` at the end.
    ///
    /// # Errors
    /// [`StreamError::Aborted`] when the sender gave up (or broke the flow
    /// control), [`StreamError::Closed`] when the connection closed.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StreamError> {
        // Cancel-safe: a chunk leaves the channel only where it is returned
        // at once, and owed credit is forgotten only once it was sent.
        if self.done {
            return Ok(None);
        }
        let item = match self.rx.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                // About to wait: the sender may be waiting for this credit.
                if self.unread_credit > 0 && self.link.send(self.credit()).await {
                    self.unread_credit = 0;
                }
                self.rx.recv().await
            }
        };
        match item {
            Some(Incoming::Chunk(data)) => {
                self.unread_credit += 1;
                // Without waiting; should the queue be full, the credit is
                // sent before the next wait.
                if self.unread_credit >= STREAM_WINDOW / 2 && self.link.send_now(self.credit()) {
                    self.unread_credit = 0;
                }
                Ok(Some(data))
            }
            Some(Incoming::End) => {
                self.done = true;
                Ok(None)
            }
            Some(Incoming::Abort(reason)) => {
                self.done = true;
                Err(StreamError::Aborted(reason))
            }
            None => {
                self.done = true;
                Err(StreamError::Closed)
            }
        }
    }

    fn credit(&self) -> StreamFrame {
        StreamFrame::Credit {
            stream_id: self.id.clone(),
            chunks: self.unread_credit,
        }
    }

    /// Reads the whole stream, refusing more than `limit` bytes.
    ///
    /// # Errors
    /// As [`next`](Self::next), and [`StreamError::Stopped`] (sent to the
    /// sender too) past the limit.
    pub async fn read_to_end(mut self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await? {
            if out.len() + chunk.len() > limit {
                let reason = format!("more than {limit} bytes");
                self.stop(&reason).await;
                return Err(StreamError::Stopped(reason));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Refuses the rest of the stream (`stream:stop`).
    pub async fn stop(&mut self, reason: &str) {
        if self.done {
            return;
        }
        self.done = true;
        self.streams.lock().incoming.remove(&self.id);
        let stop = StreamFrame::Stop {
            stream_id: self.id.clone(),
            reason: reason.to_owned(),
        };
        self.link.send(stop).await;
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.done {
            // The sender may be waiting for credit: tell it now. Should the
            // queue be full, its next chunk is answered `stream:stop`.
            self.streams.lock().incoming.remove(&self.id);
            self.link.send_now(StreamFrame::Stop {
                stream_id: self.id.clone(),
                reason: "the receiver dropped the stream".to_owned(),
            });
        }
    }
}

/// A stream to the peer: write, then [`end`](Self::end). Writes wait for
/// the receiver's credit; dropping it without `end` aborts the stream.
pub struct StreamWriter {
    id: String,
    link: Arc<dyn StreamLink>,
    streams: Streams,
    credit: Arc<Semaphore>,
    stopped: Arc<Mutex<Option<String>>>,
    seq: u64,
    finished: bool,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// The stream's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn refused(&self) -> StreamError {
        match self
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            Some(reason) => StreamError::Stopped(reason),
            None => StreamError::Closed,
        }
    }

    /// Sends `data`, cut into chunks of at most [`MAX_CHUNK_BYTES`], each
    /// once the receiver has room for it.
    ///
    /// # Errors
    /// [`StreamError::Stopped`] when the receiver refused the stream,
    /// [`StreamError::Closed`] when the connection closed.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamError> {
        for piece in data.chunks(MAX_CHUNK_BYTES) {
            let permit = self.credit.acquire().await.map_err(|_| self.refused())?;
            permit.forget();
            let chunk = StreamFrame::Chunk {
                stream_id: self.id.clone(),
                seq: self.seq,
                data: Bytes::copy_from_slice(piece),
            };
            if !self.link.send(chunk).await {
                return Err(StreamError::Closed);
            }
            self.seq += 1;
        }
        Ok(())
    }

    /// Ends the stream: everything was sent.
    ///
    /// # Errors
    /// As [`write`](Self::write), when the stream was already refused.
    pub async fn end(mut self) -> Result<(), StreamError> {
        self.finished = true;
        self.forget();
        if self.credit.is_closed() {
            return Err(self.refused());
        }
        let end = StreamFrame::End {
            stream_id: self.id.clone(),
        };
        if self.link.send(end).await {
            Ok(())
        } else {
            Err(StreamError::Closed)
        }
    }

    /// Gives up on the stream; the receiver reads [`StreamError::Aborted`].
    pub async fn abort(mut self, reason: &str) {
        self.finished = true;
        self.forget();
        let abort = StreamFrame::Abort {
            stream_id: self.id.clone(),
            reason: reason.to_owned(),
        };
        self.link.send(abort).await;
    }

    fn forget(&self) {
        self.streams.lock().outgoing.remove(&self.id);
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.forget();
            let abort = StreamFrame::Abort {
                stream_id: self.id.clone(),
                reason: "the sender dropped the stream before its end".to_owned(),
            };
            self.link.send_now(abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_reads_back_as_written() {
        let frames = [
            StreamFrame::Open {
                stream_id: "s".into(),
                request_id: "r".into(),
                info: StreamInfo::file("a.txt", 3),
            },
            StreamFrame::Open {
                stream_id: "s".into(),
                request_id: "r".into(),
                info: StreamInfo::new(),
            },
            StreamFrame::Chunk {
                stream_id: "s".into(),
                seq: 7,
                data: Bytes::from_static(&[0, 255, 10, 13]),
            },
            StreamFrame::End {
                stream_id: "s".into(),
            },
            StreamFrame::Abort {
                stream_id: "s".into(),
                reason: "why".into(),
            },
            StreamFrame::Credit {
                stream_id: "s".into(),
                chunks: 8,
            },
            StreamFrame::Stop {
                stream_id: "s".into(),
                reason: "no".into(),
            },
        ];
        for frame in frames {
            let (topic, data) = frame.to_notification();
            assert_eq!(
                StreamFrame::parse(topic, &data),
                Ok(frame),
                "{topic} {data}"
            );
        }
    }

    /// Records what the table sends.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<StreamFrame>>);

    impl StreamLink for Recorder {
        fn send(&self, frame: StreamFrame) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(frame);
            Box::pin(async { true })
        }

        fn send_now(&self, frame: StreamFrame) -> bool {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(frame);
            true
        }
    }

    #[test]
    fn streams_nobody_takes_are_bounded_and_the_oldest_is_stopped() {
        let recorder = Arc::new(Recorder::default());
        let link: Arc<dyn StreamLink> = recorder.clone();
        let streams = Streams::new();
        for i in 0..=MAX_UNCLAIMED {
            let open = StreamFrame::Open {
                stream_id: format!("s{i}"),
                request_id: format!("r{i}"),
                info: StreamInfo::new(),
            };
            assert_eq!(streams.on_frame(open, &link, |_| true), None);
        }
        assert_eq!(streams.open_count(), MAX_UNCLAIMED, "the oldest went");
        let sent = recorder
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(
            matches!(sent.as_slice(), [StreamFrame::Stop { stream_id, .. }] if stream_id == "s0"),
            "{sent:?}"
        );
        // A chunk for the dropped stream is refused; one for a kept stream is not.
        let chunk = |id: &str| StreamFrame::Chunk {
            stream_id: id.into(),
            seq: 0,
            data: Bytes::from_static(b"x"),
        };
        assert!(matches!(
            streams.on_frame(chunk("s0"), &link, |_| true),
            Some(StreamFrame::Stop { .. })
        ));
        assert_eq!(streams.on_frame(chunk("s1"), &link, |_| true), None);
        streams.request_done(&RequestId::from("r1"));
        assert_eq!(streams.open_count(), MAX_UNCLAIMED - 1);
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let cases = [
            (
                "stream:open",
                serde_json::json!({"streamId": "s"}),
                "requestId",
            ),
            (
                "stream:chunk",
                serde_json::json!({"streamId": "", "seq": 0, "data": ""}),
                "streamId",
            ),
            (
                "stream:credit",
                serde_json::json!({"streamId": "s"}),
                "chunks",
            ),
            (
                "stream:end",
                serde_json::json!({"streamId": "s", "extra": 1}),
                "unknown field",
            ),
            ("stream:end", serde_json::json!("s"), "stream:end"),
        ];
        for (topic, data, says) in cases {
            let err = StreamFrame::parse(topic, &data).expect_err(topic);
            assert!(err.contains(says), "{topic}: {err}");
        }
        let big = BASE64.encode(vec![0u8; MAX_CHUNK_BYTES + 1]);
        let err = StreamFrame::parse(
            "stream:chunk",
            &serde_json::json!({"streamId": "s", "seq": 0, "data": big}),
        )
        .expect_err("too big");
        assert!(err.contains("at most"), "{err}");
    }
}
