//! A WebSocket that gives its read buffer back while the connection is idle.
//!
//! tokio-websockets reads through a `FramedRead` that allocates an 8 KiB
//! buffer up front and keeps it for the socket's life: at 50,000 idle
//! connections that alone is 400 MB. A [`HibernatingSocket`] keeps the
//! WebSocket stream only while the connection is in use. Asleep, it keeps
//! only the bare I/O; a read of a few bytes into a small inline buffer waits
//! for the peer, and the stream is rebuilt when they arrive (they are handed
//! to it first) or when there is something to send.
//!
//! It falls asleep only when nothing would be lost: the last read found
//! nothing more, no frame is half read, no fragmented message is open, no
//! close was seen and everything written is flushed. Knowing that no frame
//! is half read needs the frame boundaries of the bytes handed to the
//! stream: [`FrameTracker`] follows the frame headers (2–14 bytes each) and
//! skips payloads; it never interprets or changes data.
//!
//! And it falls asleep only when the connection is idle, so that a busy one
//! does not rebuild its stream for every message: a text or binary message
//! read or written makes it *busy*; a busy socket sleeps only after
//! [`SocketWriter::tick`] found it idle for a whole period (the connection's
//! health-check interval); [`SocketWriter::settle`] (after the opening
//! messages) and pings and pongs do not make it busy.
//!
//! ```no_run
//! use futures_util::{SinkExt, StreamExt};
//! use helios::HibernatingSocket;
//!
//! # async fn echo(io: tokio::net::TcpStream) {
//! // `io` has already been upgraded (the HTTP handshake is done).
//! let socket = HibernatingSocket::new(io, 64 * 1024);
//! let (mut reader, mut writer) = (socket.reader(), socket.writer());
//! while let Some(Ok(msg)) = reader.next().await {
//!     if (msg.is_text() || msg.is_binary()) && writer.send(msg).await.is_err() {
//!         break;
//!     }
//! }
//! # }
//! ```

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_websockets::{Error, Message, WebSocketStream};

use crate::server::websocket_builder;

/// How many bytes a sleeping socket reads to notice the peer woke it.
const PEEK_BYTES: usize = 16;

/// A server-side WebSocket over an upgraded stream `S` that holds no read
/// buffer while idle. Read with [`reader`](Self::reader), write with
/// [`writer`](Self::writer); both borrow the socket, so both halves live in
/// the same task (they share it through an uncontended lock).
pub struct HibernatingSocket<S> {
    state: Mutex<State<S>>,
    max_message_bytes: usize,
    /// Read interest was registered by a sleep, with whichever waker the
    /// caller had (see [`reader_hint`](Self::reader_hint)).
    slept: AtomicBool,
}

enum State<S> {
    /// The WebSocket stream, with its buffers; `drained` once a read found
    /// nothing more, i.e. its read buffer holds at most part of a frame;
    /// `busy` once a data message went through since the last settle or tick.
    /// Boxed, so that a sleeping socket's state is only the tap's size.
    Awake {
        ws: Box<WebSocketStream<Tap<S>>>,
        drained: bool,
        busy: bool,
    },
    /// Only the I/O: no buffers but a few inline bytes.
    Asleep(Tap<S>),
    /// Between the two (never seen outside a state change).
    Moving,
}

impl<S> HibernatingSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps an upgraded stream; it starts asleep. Messages above
    /// `max_message_bytes` end the stream with close code 1009.
    pub fn new(io: S, max_message_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::Asleep(Tap::new(io))),
            max_message_bytes,
            slept: AtomicBool::new(false),
        }
    }

    /// Whether a reader that polls with a waker of its own should be
    /// polled although that waker did not fire: the socket went to sleep
    /// since the last call (its read interest may hold the writer's waker),
    /// or a write waits for the peer (the reader may wait on that flush,
    /// e.g. to send a close reply). Reading and writing from one task with
    /// the task's waker never needs it.
    pub fn reader_hint(&self) -> bool {
        let slept = self.slept.swap(false, Ordering::Relaxed);
        slept
            || match &*self.state.lock() {
                State::Awake { ws, .. } => ws.get_ref().write_pending,
                State::Asleep(tap) => tap.write_pending,
                State::Moving => true,
            }
    }

    /// The read half: a `Stream` of messages. Pings are answered by the
    /// socket itself.
    pub fn reader(&self) -> SocketReader<'_, S> {
        SocketReader { socket: self }
    }

    /// The write half: a `Sink` of messages.
    pub fn writer(&self) -> SocketWriter<'_, S> {
        SocketWriter { socket: self }
    }

    /// Whether the socket is asleep (holds no WebSocket buffers) right now.
    pub fn is_asleep(&self) -> bool {
        matches!(*self.state.lock(), State::Asleep(_))
    }

    /// Ready once the peer sent something (or the stream ended) while the
    /// socket sleeps; at once if it is awake. Reading is left to the reader.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut *self.state.lock() {
            State::Asleep(tap) => tap.poll_peek(cx).map(|_| ()),
            State::Awake { .. } | State::Moving => Poll::Ready(()),
        }
    }

    /// Runs `f` on the awake WebSocket stream, waking it first.
    fn with_ws<R>(&self, f: impl FnOnce(Pin<&mut WebSocketStream<Tap<S>>>) -> R) -> R {
        let mut state = self.state.lock();
        if let State::Asleep(_) = &*state {
            let State::Asleep(tap) = std::mem::replace(&mut *state, State::Moving) else {
                unreachable!("checked above")
            };
            *state = self.wake(tap);
        }
        match &mut *state {
            State::Awake { ws, .. } => f(Pin::new(&mut **ws)),
            State::Asleep(_) | State::Moving => unreachable!("woken above"),
        }
    }

    /// A fresh stream has read nothing yet, so it is drained (bytes a
    /// sleeping socket peeked stay in the tap, and go back to sleep with it).
    fn wake(&self, tap: Tap<S>) -> State<S> {
        State::Awake {
            ws: Box::new(websocket_builder(self.max_message_bytes).serve(tap)),
            drained: true,
            busy: false,
        }
    }

    /// Marks the socket busy (a data message went through).
    fn mark_busy(&self) {
        if let State::Awake { busy, .. } = &mut *self.state.lock() {
            *busy = true;
        }
    }

    /// Clears the busy mark, returning it.
    fn take_busy(&self) -> bool {
        match &mut *self.state.lock() {
            State::Awake { busy, .. } => std::mem::take(busy),
            State::Asleep(_) | State::Moving => false,
        }
    }

    /// Puts an awake socket that is not busy to sleep if nothing would be
    /// lost: its read buffer is empty and it is flushed. True if asleep.
    fn try_sleep(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.state.lock();
        let State::Awake { ws, drained, busy } = &mut *state else {
            return matches!(*state, State::Asleep(_));
        };
        if *busy || !*drained || !ws.get_ref().tracker.at_rest() {
            return false;
        }
        if !matches!(Pin::new(&mut **ws).poll_flush(cx), Poll::Ready(Ok(()))) {
            return false;
        }
        let State::Awake { ws, .. } = std::mem::replace(&mut *state, State::Moving) else {
            unreachable!("checked above")
        };
        let mut tap = ws.into_inner();
        // Registers this task for readability (and catches bytes that
        // arrived meanwhile: they are kept in the tap).
        let _ = tap.poll_peek(cx);
        *state = State::Asleep(tap);
        self.slept.store(true, Ordering::Relaxed);
        true
    }
}

/// The read half of a [`HibernatingSocket`].
pub struct SocketReader<'a, S> {
    socket: &'a HibernatingSocket<S>,
}

impl<S> Stream for SocketReader<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let socket = self.socket;
        {
            let mut state = socket.state.lock();
            if let State::Asleep(tap) = &mut *state {
                match ready!(tap.poll_peek(cx)) {
                    Ok(0) => return Poll::Ready(None),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(Error::Io(e)))),
                }
                let State::Asleep(tap) = std::mem::replace(&mut *state, State::Moving) else {
                    unreachable!("checked above")
                };
                *state = socket.wake(tap);
            }
            let State::Awake { ws, drained, busy } = &mut *state else {
                unreachable!("woken above")
            };
            match Pin::new(&mut **ws).poll_next(cx) {
                Poll::Ready(item) => {
                    *drained = false;
                    if let Some(Ok(msg)) = &item {
                        *busy |= msg.is_text() || msg.is_binary();
                    }
                    return Poll::Ready(item);
                }
                Poll::Pending => *drained = true,
            }
        }
        let _ = socket.try_sleep(cx);
        Poll::Pending
    }
}

/// The write half of a [`HibernatingSocket`].
pub struct SocketWriter<'a, S> {
    socket: &'a HibernatingSocket<S>,
}

impl<S> SocketWriter<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Puts the socket to sleep if it is not busy, is flushed and its reader
    /// found nothing more to read. True if it is asleep.
    pub fn sleep_if_idle(&self, cx: &mut Context<'_>) -> bool {
        self.socket.try_sleep(cx)
    }

    /// The opening messages (e.g. a welcome) are written: they do not count
    /// as use, so an idle connection sleeps from here on. True if asleep.
    pub fn settle(&self, cx: &mut Context<'_>) -> bool {
        self.socket.take_busy();
        self.socket.try_sleep(cx)
    }

    /// A period passed: sleeps if the socket was not busy during it, and
    /// starts the next period. True if asleep.
    pub fn tick(&self, cx: &mut Context<'_>) -> bool {
        if self.socket.take_busy() {
            return false;
        }
        self.socket.try_sleep(cx)
    }

    /// Writes each payload in `frames` as one data message (text if `text`,
    /// else binary), taking them off the front as the socket takes them;
    /// `taken` sees each. Flush afterwards.
    ///
    /// The frames are built here and written straight to the I/O, several
    /// in one write, past the WebSocket stream: no queue of frame parts and
    /// no copy of each frame into a buffer of its own. This is safe whenever the stream is
    /// not in the middle of writing a frame of its own (its last write was
    /// whole) and the peer has not sent a close; otherwise the frames go
    /// through the stream as [`Sink::start_send`] would.
    pub fn poll_write_frames(
        &self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
        text: bool,
        mut taken: impl FnMut(&Bytes),
    ) -> Poll<Result<(), Error>> {
        let opcode = if text { OPCODE_TEXT } else { OPCODE_BINARY };
        if frames.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Awake (and busy) as for any message: a connection that gets
        // messages keeps its stream rather than rebuilding it for each.
        let direct = self.socket.with_ws(|ws| {
            let tap = Pin::get_mut(ws).get_mut();
            tap.may_write_past_stream()
                .then(|| tap.poll_write_frames(cx, frames, opcode, &mut taken))
        });
        if let Some(written) = direct {
            self.socket.mark_busy();
            return written.map_err(Error::Io);
        }
        while !frames.is_empty() {
            let mut sink = SocketWriter {
                socket: self.socket,
            };
            ready!(Pin::new(&mut sink).poll_ready(cx))?;
            let Some(frame) = frames.pop_front() else {
                break;
            };
            let msg = if text {
                Message::text(frame.clone())
            } else {
                Message::binary(frame.clone())
            };
            Pin::new(&mut sink).start_send(msg)?;
            // Only once the stream holds it (and nothing may go past the
            // stream until it flushed): see `DirectSink`.
            taken(&frame);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> Sink<Message> for SocketWriter<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.socket.with_ws(|ws| ws.poll_ready(cx))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let data = item.is_text() || item.is_binary();
        self.socket.with_ws(|ws| {
            let ws = Pin::get_mut(ws);
            // Handed to the stream: nothing goes past it until it flushed.
            ws.get_mut().stream_idle = false;
            Pin::new(ws).start_send(item)
        })?;
        if data {
            self.socket.mark_busy();
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.socket.is_asleep() {
            // It fell asleep flushed, frames written past the stream too.
            return Poll::Ready(Ok(()));
        }
        self.socket.with_ws(|ws| ws.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.socket.with_ws(|ws| ws.poll_close(cx))
    }
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;

/// What became of frames written with [`DirectSink::write_frames_now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectWrite {
    /// All of them went out.
    Written,
    /// Some went out; the I/O did not take the rest (or has not flushed
    /// it): the socket's writer must write and flush what is left.
    Kept,
    /// Nothing was written: the socket's writer must write them.
    Refused,
}

/// A socket that a task other than its connection's may write queued data
/// frames to: the room fan-out's flusher (`cork.rs`) does, for every
/// socket a publication reached, so that a delivery costs no wake-up and
/// no poll of the subscriber's task.
pub(crate) trait DirectSink: Send + Sync {
    /// Writes `frames` (as [`SocketWriter::poll_write_frames`] would, each
    /// one taken off the front as the socket takes it) if the socket is
    /// awake, no one else is using it, nothing of its own is waiting to go
    /// out, and `allowed()` (checked with the socket held) says so.
    /// Never waits: what the I/O does not take stays for the writer.
    fn write_frames_now(
        &self,
        frames: &mut VecDeque<Bytes>,
        text: bool,
        allowed: &dyn Fn() -> bool,
        taken: &mut dyn FnMut(&Bytes),
    ) -> DirectWrite;
}

impl<S> DirectSink for HibernatingSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn write_frames_now(
        &self,
        frames: &mut VecDeque<Bytes>,
        text: bool,
        allowed: &dyn Fn() -> bool,
        taken: &mut dyn FnMut(&Bytes),
    ) -> DirectWrite {
        // In use by the connection's task (or another thread): the writer
        // is on it.
        let Some(mut state) = self.state.try_lock() else {
            return DirectWrite::Refused;
        };
        // Asleep, the connection's task is dozing: the writer wakes it.
        let State::Awake { ws, busy, .. } = &mut *state else {
            return DirectWrite::Refused;
        };
        let tap = ws.get_mut();
        if !tap.may_write_past_stream() || tap.unsent.is_some() || tap.write_pending || !allowed() {
            return DirectWrite::Refused;
        }
        let before = frames.len();
        let opcode = if text { OPCODE_TEXT } else { OPCODE_BINARY };
        // No waker of this task is left anywhere: a write that would wait
        // returns Pending and the connection's writer (woken by the caller)
        // takes over with its own. Outside tokio's cooperative budget: a
        // flusher writing hundreds of sockets in one poll would run out of
        // it, and every write after that would wait for nothing.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut write = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
            let written = ready!(tap.poll_write_frames(cx, frames, opcode, taken));
            // A plain socket flushes at once; an encrypting one may hold
            // the bytes until its writer flushes.
            written?;
            Pin::new(&mut tap.io).poll_flush(cx)
        }));
        let result = Pin::new(&mut write).poll(&mut cx);
        if frames.len() < before {
            *busy = true;
        }
        match result {
            Poll::Ready(Ok(())) => DirectWrite::Written,
            _ if frames.len() < before || tap.unsent.is_some() => DirectWrite::Kept,
            _ => DirectWrite::Refused,
        }
    }
}

/// The header of a final, unmasked frame, as a server sends it (RFC 6455
/// §5.2): 2, 4 or 10 bytes.
struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0; 10];
        bytes[0] = 0x80 | opcode;
        let len = match payload_len {
            // Each arm's value fits the field it goes in.
            n if n < 126 => {
                bytes[1] = n as u8;
                2
            }
            n if n <= 0xffff => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(n as u64).to_be_bytes());
                10
            }
        };
        Self { bytes, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }
}

/// Most bytes copied into one buffer for a single write.
const COALESCE_BYTES: usize = 16 * 1024;

thread_local! {
    /// Shared by every socket of the thread: a write is over before the next
    /// starts, and no connection keeps a buffer of its own.
    static COALESCED: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(COALESCE_BYTES));
}

/// The I/O under the WebSocket stream: hands the stream the bytes a
/// sleeping socket read first, and follows the frame boundaries of
/// everything handed over.
struct Tap<S> {
    io: S,
    peeked: [u8; PEEK_BYTES],
    peeked_start: u8,
    peeked_end: u8,
    tracker: FrameTracker,
    /// The last write or flush found the peer's window full.
    write_pending: bool,
    /// tokio-websockets holds nothing we handed it that is not fully
    /// written: its last act on the I/O was a flush, which it does only
    /// once its frame queue is empty, and no frame was handed to it since.
    /// Only then may frames go past it without landing inside or ahead of
    /// its own. (A whole write is not enough: it writes at most 64 slices
    /// at a time, so a queue of more than 32 frames takes several.)
    stream_idle: bool,
    /// What the I/O did not take yet of frames written past the stream; it
    /// goes out before anything else. Allocated only while there is some.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes in every sleeping connection's state, not 32"
    )]
    unsent: Option<Box<VecDeque<Bytes>>>,
}

impl<S: AsyncRead + Unpin> Tap<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            peeked: [0; PEEK_BYTES],
            peeked_start: 0,
            peeked_end: 0,
            tracker: FrameTracker::default(),
            write_pending: false,
            stream_idle: true,
            unsent: None,
        }
    }

    /// Waits for the peer: `Ok(n)` once `n` bytes are kept (0 at end of
    /// stream).
    fn poll_peek(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.peeked_end > self.peeked_start {
            return Poll::Ready(Ok(usize::from(self.peeked_end - self.peeked_start)));
        }
        let mut buf = ReadBuf::new(&mut self.peeked);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.peeked_start = 0;
        // At most PEEK_BYTES (16), so it fits.
        self.peeked_end = n as u8;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.peeked_end > this.peeked_start {
            let kept = &this.peeked[usize::from(this.peeked_start)..usize::from(this.peeked_end)];
            let n = kept.len().min(buf.remaining());
            buf.put_slice(&kept[..n]);
            this.peeked_start += n as u8; // n <= PEEK_BYTES
        } else {
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        }
        this.tracker.follow(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_stream_write(&written);
        written
    }

    /// tokio-websockets hands over two slices per frame (header, payload).
    /// Small ones are copied into one buffer and written in one piece: the
    /// kernel's per-slice cost is far above a copy of a few hundred bytes
    /// (docs/benchmarks.md). Large payloads still go as slices.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        let io = &mut this.io;
        let written = if bufs.len() < 2 || bufs[0].len() + bufs[1].len() > COALESCE_BYTES {
            Pin::new(io).poll_write_vectored(cx, bufs)
        } else {
            Self::write_coalesced(io, cx, bufs)
        };
        this.after_stream_write(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The stream flushes its I/O only once its frame queue is empty.
        this.stream_idle = true;
        ready!(this.poll_unsent(cx))?;
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        this.write_pending = flushed.is_pending();
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<S: AsyncWrite + Unpin> Tap<S> {
    /// The stream wrote (or tried to): it has frames in hand until its
    /// next flush.
    fn after_stream_write(&mut self, written: &Poll<io::Result<usize>>) {
        self.write_pending = written.is_pending();
        self.stream_idle = false;
    }

    /// Whether frames may be written past the WebSocket stream now.
    fn may_write_past_stream(&self) -> bool {
        self.stream_idle && !self.tracker.closing
    }

    /// Writes what is left of frames written past the stream.
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(unsent) = self.unsent.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while let Some(front) = unsent.front_mut() {
            match Pin::new(&mut self.io).poll_write(cx, front) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    let _ = front.split_to(n);
                    if front.is_empty() {
                        unsent.pop_front();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.write_pending = true;
                    return Poll::Pending;
                }
            }
        }
        self.unsent = None;
        self.write_pending = false;
        Poll::Ready(Ok(()))
    }

    /// Writes `frames` as data frames, as many as fit into one buffer per
    /// write (a large one as its header and payload); see
    /// [`SocketWriter::poll_write_frames`]. A frame leaves `frames` once
    /// the I/O took part of it; what it did not take is kept in `unsent`.
    fn poll_write_frames(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
        opcode: u8,
        taken: &mut (impl FnMut(&Bytes) + ?Sized),
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        while let Some(first) = frames.front() {
            let header = FrameHeader::new(opcode, first.len());
            if header.len() + first.len() > COALESCE_BYTES {
                let bufs = [io::IoSlice::new(header.bytes()), io::IoSlice::new(first)];
                let n = match Pin::new(&mut self.io).poll_write_vectored(cx, &bufs) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.write_pending = true;
                        return Poll::Pending;
                    }
                };
                let Some(mut frame) = frames.pop_front() else {
                    break;
                };
                taken(&frame);
                let total = header.len() + frame.len();
                if n < total {
                    let mut rest = VecDeque::with_capacity(2);
                    if n < header.len() {
                        rest.push_back(Bytes::copy_from_slice(&header.bytes()[n..]));
                    } else {
                        let _ = frame.split_to(n - header.len());
                    }
                    rest.push_back(frame);
                    self.unsent = Some(Box::new(rest));
                    ready!(self.poll_unsent(cx))?;
                }
                continue;
            }
            let (count, written) = COALESCED.with_borrow_mut(|one| {
                one.clear();
                let mut count = 0;
                for frame in frames.iter() {
                    let header = FrameHeader::new(opcode, frame.len());
                    if count > 0 && one.len() + header.len() + frame.len() > COALESCE_BYTES {
                        break;
                    }
                    one.extend_from_slice(header.bytes());
                    one.extend_from_slice(frame);
                    count += 1;
                }
                let written = match Pin::new(&mut self.io).poll_write(cx, one) {
                    Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) if n < one.len() => {
                        Poll::Ready(Ok(Some(Bytes::copy_from_slice(&one[n..]))))
                    }
                    other => other.map_ok(|_| None),
                };
                (count, written)
            });
            match written {
                Poll::Ready(Ok(rest)) => {
                    for frame in frames.drain(..count) {
                        taken(&frame);
                    }
                    if let Some(rest) = rest {
                        self.unsent = Some(Box::new(VecDeque::from([rest])));
                        ready!(self.poll_unsent(cx))?;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.write_pending = true;
                    return Poll::Pending;
                }
            }
        }
        self.write_pending = false;
        Poll::Ready(Ok(()))
    }

    /// Writes the slices (as many as fit in [`COALESCE_BYTES`]) as one
    /// piece, through a buffer shared by the thread's sockets.
    fn write_coalesced(
        io: &mut S,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        COALESCED.with_borrow_mut(|one| {
            one.clear();
            for buf in bufs {
                if one.len() + buf.len() > COALESCE_BYTES {
                    break;
                }
                one.extend_from_slice(buf);
            }
            Pin::new(io).poll_write(cx, one)
        })
    }
}

/// Follows the frame structure (RFC 6455 §5.2) of a byte stream: where
/// each frame's header and payload end, whether a fragmented message is
/// open, and whether a close frame was seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameTracker {
    header: [u8; 14],
    header_len: u8,
    payload_left: u64,
    fragmented: bool,
    closing: bool,
}

impl FrameTracker {
    /// True between frames, outside a fragmented message, before any close:
    /// a fresh WebSocket stream would read on exactly as this one.
    pub(crate) fn at_rest(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0 && !self.fragmented && !self.closing
    }

    pub(crate) fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            // As much of the header as is known to belong to it: its first
            // two bytes, then the rest, whose size they give.
            let have = usize::from(self.header_len);
            let n = (self.header_size() - have).min(bytes.len());
            self.header[have..have + n].copy_from_slice(&bytes[..n]);
            self.header_len += n as u8; // at most 14
            bytes = &bytes[n..];
            if usize::from(self.header_len) == self.header_size() {
                self.end_header();
            }
        }
    }

    /// The full header's size, known from its second byte on.
    fn header_size(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + mask
    }

    fn end_header(&mut self) {
        let (b0, b1) = (self.header[0], self.header[1]);
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        self.payload_left = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
            n => u64::from(n),
        };
        match opcode {
            0x1 | 0x2 => self.fragmented = !fin,
            0x0 if fin => self.fragmented = false,
            0x8 => self.closing = true,
            _ => {}
        }
        self.header_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn small_frames_are_written_in_one_piece_large_ones_as_slices() {
        let mut tap = Tap::new(Pipe::new(usize::MAX, usize::MAX));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut write = |tap: &mut Tap<Pipe>, bufs: &[&[u8]]| {
            let slices: Vec<_> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
            match Pin::new(tap).poll_write_vectored(&mut cx, &slices) {
                Poll::Ready(Ok(n)) => n,
                other => panic!("write: {other:?}"),
            }
        };
        // Two small frames (header, payload each): one write of all of it.
        assert_eq!(
            write(&mut tap, &[b"\x81\x02", b"hi", b"\x81\x03", b"you"]),
            9
        );
        assert_eq!(tap.io.plain, vec![b"\x81\x02hi\x81\x03you".to_vec()]);
        // A large payload goes as it is, in slices.
        let big = vec![7u8; COALESCE_BYTES];
        assert_eq!(write(&mut tap, &[b"\x82\x7f", &big]), COALESCE_BYTES + 2);
        assert_eq!(tap.io.vectored.len(), 1);
        // Copied up to the limit: a small frame and the large one's header;
        // the caller writes the rest next.
        assert_eq!(write(&mut tap, &[b"\x81\x01", b"a", b"\x82\x7f", &big]), 5);
        // A write the socket takes in part reports what it took.
        tap.io.take = 4;
        assert_eq!(write(&mut tap, &[b"\x81\x03", b"abc"]), 4);
        assert_eq!(tap.io.plain.last(), Some(&b"\x81\x03ab".to_vec()));
    }

    /// Keeps every byte written, in order, and each write as it came
    /// (`plain`, or `vectored` slice by slice); takes at most `take` bytes
    /// a call and `budget` bytes in all before it reports a full window.
    struct Pipe {
        out: Vec<u8>,
        writes: usize,
        plain: Vec<Vec<u8>>,
        vectored: Vec<Vec<Vec<u8>>>,
        take: usize,
        budget: usize,
    }

    impl Pipe {
        fn new(take: usize, budget: usize) -> Self {
            Self {
                out: Vec::new(),
                writes: 0,
                plain: Vec::new(),
                vectored: Vec::new(),
                take,
                budget,
            }
        }

        fn accept(&mut self, bufs: &[&[u8]], vectored: bool) -> Poll<io::Result<usize>> {
            let room = self.take.min(self.budget);
            if room == 0 {
                return Poll::Pending;
            }
            self.writes += 1;
            let mut n = 0;
            let mut taken = Vec::new();
            for buf in bufs {
                let k = buf.len().min(room - n);
                self.out.extend_from_slice(&buf[..k]);
                taken.push(buf[..k].to_vec());
                n += k;
            }
            if vectored {
                self.vectored.push(taken);
            } else {
                self.plain.push(taken.concat());
            }
            self.budget -= n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncRead for Pipe {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().accept(&[buf], false)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let bufs: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
            self.get_mut().accept(&bufs, true)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn pipe_of(socket: &HibernatingSocket<Pipe>) -> parking_lot::MappedMutexGuard<'_, Pipe> {
        parking_lot::MutexGuard::map(socket.state.lock(), |state| match state {
            State::Awake { ws, .. } => &mut ws.get_mut().io,
            State::Asleep(tap) => &mut tap.io,
            State::Moving => unreachable!("between states"),
        })
    }

    fn payloads() -> Vec<Vec<u8>> {
        vec![
            b"a".to_vec(),
            vec![b'm'; 200],
            vec![b'L'; 70_000],
            vec![b'n'; 126],
            b"z".to_vec(),
        ]
    }

    fn write_frames(socket: &HibernatingSocket<Pipe>, payloads: &[Vec<u8>]) -> Poll<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut frames: VecDeque<Bytes> = payloads.iter().cloned().map(Bytes::from).collect();
        let mut taken = 0;
        let written = socket
            .writer()
            .poll_write_frames(&mut cx, &mut frames, true, |f| taken += f.len());
        match written {
            Poll::Ready(r) => {
                r.expect("written");
                assert!(frames.is_empty());
                assert_eq!(taken, payloads.iter().map(Vec::len).sum::<usize>());
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn flush(socket: &HibernatingSocket<Pipe>) -> Poll<Result<(), Error>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(&mut socket.writer()).poll_flush(&mut cx)
    }

    #[test]
    fn frames_written_past_the_stream_are_whole_and_in_order() {
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, usize::MAX), 1 << 20);
        assert!(write_frames(&socket, &payloads()).is_ready());
        let expected: Vec<u8> = payloads()
            .iter()
            .flat_map(|p| frame(true, 1, p, false))
            .collect();
        assert_eq!(pipe_of(&socket).out, expected);
        // The two small ones in one write, the large one (header and
        // payload), then the last two in one write.
        assert_eq!(pipe_of(&socket).writes, 3);
        assert!(!socket.is_asleep(), "awake and busy, as after any message");
    }

    fn write_now(
        socket: &HibernatingSocket<Pipe>,
        payloads: &[&[u8]],
        allowed: bool,
    ) -> DirectWrite {
        let mut frames: VecDeque<Bytes> =
            payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        let written = socket.write_frames_now(&mut frames, true, &|| allowed, &mut |_| {});
        match written {
            DirectWrite::Written => assert!(frames.is_empty()),
            DirectWrite::Refused => assert_eq!(frames.len(), payloads.len()),
            DirectWrite::Kept => {}
        }
        written
    }

    fn frames_of(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| frame(true, 1, p, false))
            .collect()
    }

    #[test]
    fn another_task_writes_queued_frames_to_an_awake_idle_socket() {
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, usize::MAX), 1 << 20);
        assert_eq!(
            write_now(&socket, &[b"a"], true),
            DirectWrite::Refused,
            "asleep: its own task writes"
        );
        assert!(pipe_of(&socket).out.is_empty());
        assert!(write_frames(&socket, &[b"first".to_vec()]).is_ready());
        assert_eq!(
            write_now(&socket, &[b"b"], false),
            DirectWrite::Refused,
            "not allowed by the connection"
        );
        let big = [b'L'; 70_000];
        assert_eq!(
            write_now(&socket, &[b"c", &big, b"d"], true),
            DirectWrite::Written
        );
        assert_eq!(
            pipe_of(&socket).out,
            frames_of(&[b"first", b"c", &big, b"d"])
        );
    }

    #[test]
    fn another_task_never_cuts_into_the_sockets_own_writes() {
        // The stream is mid-frame: refused until it has flushed.
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, 5), 1 << 20);
        Pin::new(&mut socket.writer())
            .start_send(Message::text("hello world"))
            .expect("queued");
        assert!(flush(&socket).is_pending(), "cut after five bytes");
        assert_eq!(write_now(&socket, &[b"x"], true), DirectWrite::Refused);
        pipe_of(&socket).budget = usize::MAX;
        assert!(matches!(flush(&socket), Poll::Ready(Ok(()))));
        assert_eq!(write_now(&socket, &[b"y"], true), DirectWrite::Written);
        assert_eq!(pipe_of(&socket).out, frames_of(&[b"hello world", b"y"]));

        // Taken in part: the rest is kept, nothing goes before it, and the
        // socket's own writer sends it first.
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, usize::MAX), 1 << 20);
        assert!(write_frames(&socket, &[b"first".to_vec()]).is_ready());
        pipe_of(&socket).budget = 3;
        assert_eq!(
            write_now(&socket, &[b"hello", b"world"], true),
            DirectWrite::Kept
        );
        assert_eq!(
            write_now(&socket, &[b"next"], true),
            DirectWrite::Refused,
            "behind the rest"
        );
        assert!(flush(&socket).is_pending(), "the window is full");
        pipe_of(&socket).budget = usize::MAX;
        // Both frames went into one write: the rest of it is kept whole.
        assert!(write_frames(&socket, &[b"after".to_vec()]).is_ready());
        let expected = frames_of(&[b"first", b"hello", b"world", b"after"]);
        assert_eq!(pipe_of(&socket).out, expected);

        // A full window: nothing is written.
        pipe_of(&socket).budget = 0;
        assert_eq!(write_now(&socket, &[b"z"], true), DirectWrite::Refused);
        assert_eq!(pipe_of(&socket).out, expected);
    }

    #[test]
    fn what_the_socket_did_not_take_goes_out_first() {
        // Seven bytes a write: every frame is cut.
        let socket = HibernatingSocket::new(Pipe::new(7, usize::MAX), 1 << 20);
        assert!(write_frames(&socket, &payloads()).is_ready());
        let expected: Vec<u8> = payloads()
            .iter()
            .flat_map(|p| frame(true, 1, p, false))
            .collect();
        assert_eq!(pipe_of(&socket).out, expected);

        // A full window: the rest is kept, the frames are taken, and the
        // socket does not count as asleep until it is flushed.
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, 100), 1 << 20);
        assert!(
            write_frames(&socket, &[vec![b'x'; 300]]).is_pending(),
            "the rest waits for room"
        );
        assert!(flush(&socket).is_pending(), "the rest is still unsent");
        pipe_of(&socket).budget = usize::MAX;
        assert!(matches!(flush(&socket), Poll::Ready(Ok(()))));
        assert_eq!(pipe_of(&socket).out, frame(true, 1, &[b'x'; 300], false));
    }

    #[test]
    fn a_stream_cut_mid_frame_finishes_its_frame_first() {
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, 5), 1 << 20);
        let mut writer = socket.writer();
        Pin::new(&mut writer)
            .start_send(Message::text("hello world"))
            .expect("queued");
        assert!(flush(&socket).is_pending(), "cut after five bytes");
        // Through the stream, behind the rest of "hello world".
        assert!(write_frames(&socket, &[b"x".to_vec()]).is_ready());
        assert_eq!(pipe_of(&socket).out.len(), 5);
        pipe_of(&socket).budget = usize::MAX;
        assert!(matches!(flush(&socket), Poll::Ready(Ok(()))));
        let mut expected = frame(true, 1, b"hello world", false);
        expected.extend(frame(true, 1, b"x", false));
        assert_eq!(pipe_of(&socket).out, expected);
        // Whole again: the next frames go past the stream.
        let before = pipe_of(&socket).writes;
        assert!(write_frames(&socket, &[b"y".to_vec()]).is_ready());
        assert_eq!(pipe_of(&socket).writes, before + 1);
    }

    /// tokio-websockets writes at most 64 slices at a time: with more than
    /// 32 frames queued, a whole write leaves frames behind (here one cut
    /// after its header). Frames handed over later still go behind them.
    #[test]
    fn frames_wait_for_a_stream_queue_longer_than_one_write() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let socket = HibernatingSocket::new(Pipe::new(usize::MAX, 2), 1 << 20);
        let mut writer = socket.writer();
        // A ping cut after its header: the stream is mid-frame.
        Pin::new(&mut writer)
            .start_send(Message::ping(vec![7u8]))
            .expect("queued");
        assert!(flush(&socket).is_pending());
        let payloads: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 200]).collect();
        let mut frames: VecDeque<Bytes> = payloads.iter().cloned().map(Bytes::from).collect();
        let mut write = |frames: &mut VecDeque<Bytes>| {
            socket
                .writer()
                .poll_write_frames(&mut cx, frames, false, |_| {})
        };
        // Through the stream, until its queue is full enough to flush.
        assert!(write(&mut frames).is_pending());
        assert!(!frames.is_empty());
        // One whole write of 64 slices: the ping's rest, 31 frames and the
        // 32nd frame's header; then the window is full again.
        pipe_of(&socket).budget = 1 + 31 * 204 + 4;
        assert!(write(&mut frames).is_pending());
        pipe_of(&socket).budget = usize::MAX;
        assert!(matches!(write(&mut frames), Poll::Ready(Ok(()))));
        assert!(matches!(flush(&socket), Poll::Ready(Ok(()))));
        let mut expected = vec![0x89, 0x01, 7];
        for p in &payloads {
            expected.extend(frame(true, 0x2, p, false));
        }
        let out = &pipe_of(&socket).out;
        let first_difference = out.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "{} bytes out", out.len());
        assert_eq!(out.len(), expected.len());
    }

    #[test]
    fn rests_only_between_whole_frames() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let bytes = frame(true, 0x1, &vec![b'a'; len], true);
            let mut t = FrameTracker::default();
            for (i, b) in bytes.iter().enumerate() {
                assert!(
                    t.at_rest() == (i == 0),
                    "len {len}: at byte {i} of {}",
                    bytes.len()
                );
                t.follow(std::slice::from_ref(b));
            }
            assert!(t.at_rest(), "len {len}: after the frame");
        }
    }

    #[test]
    fn follows_several_frames_in_one_read_and_split_headers() {
        let mut bytes = frame(true, 0x2, &[7; 200], true);
        bytes.extend(frame(true, 0x1, b"hi", true));
        let mut t = FrameTracker::default();
        t.follow(&bytes);
        assert!(t.at_rest());
        let third = frame(true, 0x1, &[b'x'; 1000], true);
        t.follow(&third[..3]); // inside the extended length
        assert!(!t.at_rest());
        t.follow(&third[3..]);
        assert!(t.at_rest());
    }

    /// Frames of every header size, masked and not, read in three pieces
    /// cut at every pair of places: the tracker rests exactly at the frame
    /// ends that fall on a cut, and at the end.
    #[test]
    fn follows_frames_cut_anywhere() {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for (len, masked) in [
            (0, true),
            (3, false),
            (126, true),
            (300, false),
            (70_000, true),
        ] {
            bytes.extend(frame(true, 0x2, &vec![1; len], masked));
            ends.push(bytes.len());
        }
        let cuts: Vec<usize> = (0..=bytes.len())
            .filter(|i| ends.iter().any(|e| e.abs_diff(*i) <= 12) || *i < 12)
            .collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|b| **b >= a) {
                let mut t = FrameTracker::default();
                for (from, to) in [(0, a), (a, b), (b, bytes.len())] {
                    t.follow(&bytes[from..to]);
                    let rest = to == 0 || ends.contains(&to);
                    assert_eq!(t.at_rest(), rest, "cut at {a} and {b}: after {to}");
                }
            }
        }
    }

    #[test]
    fn a_fragmented_message_is_not_at_rest_until_its_last_fragment() {
        let mut t = FrameTracker::default();
        t.follow(&frame(false, 0x1, b"hel", true));
        assert!(!t.at_rest());
        t.follow(&frame(true, 0x9, b"ping", true)); // control frame in between
        assert!(!t.at_rest());
        t.follow(&frame(false, 0x0, b"l", true));
        assert!(!t.at_rest());
        t.follow(&frame(true, 0x0, b"o", true));
        assert!(t.at_rest());
    }

    #[test]
    fn never_rests_after_a_close() {
        let mut t = FrameTracker::default();
        t.follow(&frame(true, 0x8, &[3, 232], true));
        assert!(!t.at_rest());
    }

    #[tokio::test]
    async fn sleeps_when_idle_and_wakes_for_reads_and_writes() {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (server_io, mut client) = tokio::io::duplex(64 * 1024);
        let socket = HibernatingSocket::new(server_io, 1 << 20);
        let (mut reader, mut writer) = (socket.reader(), socket.writer());
        assert!(socket.is_asleep(), "starts asleep");

        // A message split in three writes, with a pause inside its header.
        let msg = frame(true, 0x1, &[b'z'; 300], true);
        let masked: Vec<u8> = {
            let mut m = msg.clone();
            for (i, b) in m[8..].iter_mut().enumerate() {
                *b ^= [1, 2, 3, 4][i % 4];
            }
            m
        };
        client.write_all(&masked[..1]).await.expect("test step");
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(got.is_err(), "half a header is not a message");
        assert!(!socket.is_asleep(), "awake while a frame is half read");
        client.write_all(&masked[1..200]).await.expect("test step");
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(got.is_err());
        assert!(!socket.is_asleep(), "awake while a payload is half read");
        client.write_all(&masked[200..]).await.expect("test step");
        let got = reader.next().await.expect("a message").expect("no error");
        assert_eq!(got.as_text(), Some("z".repeat(300).as_str()));

        // It carried a message: busy, so it stays awake until a whole
        // period passes without one.
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(got.is_err());
        assert!(!socket.is_asleep(), "a busy socket stays awake");
        let tick = || std::future::poll_fn(|cx| Poll::Ready(writer.tick(cx)));
        tick().await;
        assert!(!socket.is_asleep(), "busy during the first period");
        tick().await;
        assert!(socket.is_asleep(), "asleep after an idle period");

        // A ping wakes it; it answers and falls asleep again (control
        // frames are not use).
        let mut ping = frame(true, 0x9, b"p", true);
        ping[6] ^= 1;
        client.write_all(&ping).await.expect("test step");
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(got.is_ok_and(|m| m.is_some_and(|m| m.is_ok_and(|m| m.is_ping()))));
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(got.is_err());
        assert!(socket.is_asleep(), "asleep again after a ping");
        let mut pong = [0u8; 3];
        client.read_exact(&mut pong).await.expect("test step");
        assert_eq!(pong, [0x8a, 1, b'p']);

        // A write wakes it; the peer gets the frame; settling (the opening
        // is done) lets it sleep at once.
        writer.send(Message::text("back")).await.expect("test step");
        assert!(!socket.is_asleep());
        let mut head = [0u8; 6];
        client.read_exact(&mut head).await.expect("test step");
        assert_eq!(&head, &[0x81, 4, b'b', b'a', b'c', b'k']);
        let asleep = std::future::poll_fn(|cx| Poll::Ready(writer.settle(cx))).await;
        assert!(asleep);
        assert!(socket.is_asleep(), "asleep once settled");
    }
}
