//! ICE over TCP (RFC 6544) for clients whose networks block UDP: the worker's passive TCP
//! listener, on the same IP and port number as its UDP socket, and its connections.
//!
//! Each connection carries what a datagram would, framed as RFC 4571 says: a 2-byte
//! big-endian length, then the packet (STUN, DTLS, RTP or RTCP). A connection starts
//! *pending*: its first frame must be an ICE check that a session accepts (found by the
//! username fragment, as for UDP); the connection then belongs to that session for good, and
//! ends with it at the latest. Anything else closes it, as do a frame longer than a datagram
//! may be, silence past the pending deadline, and a send buffer that overflows.
//!
//! Everything here belongs to the worker task and is driven by it: nothing is shared but the
//! readiness bits below, which the connections' wakers set. Buffers are per connection and
//! reused, so a packet costs no allocation in either direction.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::ids::ParticipantId;

/// Largest frame accepted from a client: what the UDP path reads of a datagram. WebRTC
/// packets stay around 1,200 bytes whatever the transport.
pub(crate) const MAX_FRAME: usize = 2048;
/// Read buffer of a connection: several frames per system call.
const READ_BUF: usize = 8 * 1024;
/// Reads of one connection per wake-up before the others get a turn.
const READ_BATCH: usize = 16;
/// Connections one session may hold (a browser opens one per local address it tries).
pub(crate) const MAX_PER_SESSION: usize = 4;

// ---- RFC 4571 framing -----------------------------------------------------------------------

/// A frame announced a length over the limit: the stream cannot be trusted any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameTooLong(pub(crate) usize);

/// Splits a byte stream into RFC 4571 frames, in a fixed buffer read into directly.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Box<[u8]>,
    /// Start of the first byte not yet returned as (part of) a frame.
    start: usize,
    /// End of the bytes read.
    end: usize,
    max_frame: usize,
}

impl FrameReader {
    /// A reader of frames up to `max_frame` bytes in a buffer of `capacity`, which must hold
    /// a whole frame with its header and one byte more (so there is always room to read).
    pub(crate) fn new(capacity: usize, max_frame: usize) -> Self {
        assert!(
            capacity > 2 + max_frame,
            "the buffer must hold a whole frame"
        );
        FrameReader {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// Where to read more bytes; never empty once every complete frame has been taken.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < 2 + self.max_frame {
            // Moves the partial frame (shorter than a frame) to the front, so the rest of
            // it fits.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`FrameReader::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame, `None` if more bytes are needed. A zero-length frame is
    /// returned as an empty slice.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameTooLong> {
        let available = &self.buf[self.start..self.end];
        let Some(&[hi, lo]) = available.first_chunk::<2>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > self.max_frame {
            return Err(FrameTooLong(len));
        }
        if available.len() < 2 + len {
            return Ok(None);
        }
        let from = self.start + 2;
        self.start = from + len;
        Ok(Some(&self.buf[from..from + len]))
    }
}

/// Frames waiting to be written to a connection, bounded: what does not fit means the
/// connection cannot keep up.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
    /// Bytes before this were written.
    start: usize,
    /// Most bytes (headers included) waiting at once.
    limit: usize,
}

impl FrameWriter {
    pub(crate) fn new(limit: usize) -> Self {
        FrameWriter {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends one frame; `false` (nothing appended) if it is longer than a frame can be or
    /// would take the waiting bytes past the limit.
    pub(crate) fn push(&mut self, frame: &[u8]) -> bool {
        let Ok(len) = u16::try_from(frame.len()) else {
            return false;
        };
        if self.pending().len() + 2 + frame.len() > self.limit {
            return false;
        }
        if self.start > 0 && self.buf.len() + 2 + frame.len() > self.buf.capacity() {
            // Reuses the written part rather than growing.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(frame);
        true
    }

    /// What is still to be written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// `n` bytes of [`FrameWriter::pending`] were written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }
}

// ---- readiness ------------------------------------------------------------------------------

/// Which connection slots may be readable or writable: one bit per slot, set by the slot's
/// waker, so the worker reads only connections that have something rather than polling all.
struct ReadySet {
    bits: Box<[AtomicU64]>,
    /// Set with any bit, so an idle check is one load.
    any: AtomicBool,
    /// The worker task's waker. A tokio task's waker stays the same for the task's life, so
    /// it is taken once, when the worker first waits for readiness.
    task: OnceLock<Waker>,
}

impl ReadySet {
    fn new(slots: usize) -> Self {
        ReadySet {
            bits: (0..slots.div_ceil(64).max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            any: AtomicBool::new(false),
            task: OnceLock::new(),
        }
    }

    fn mark(&self, slot: usize) {
        self.bits[slot / 64].fetch_or(1 << (slot % 64), Ordering::Release);
        self.any.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }

    /// Takes every mark set so far, calling `visit` with each slot.
    fn drain(&self, mut visit: impl FnMut(usize)) {
        // Cleared before the scan: a mark set during it sets it again.
        self.any.store(false, Ordering::Release);
        for (word, bits) in self.bits.iter().enumerate() {
            let mut bits = bits.swap(0, Ordering::AcqRel);
            while bits != 0 {
                visit(word * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }
}

/// The waker of one connection slot: marks it ready and wakes the worker.
struct SlotWaker {
    slot: usize,
    ready: Arc<ReadySet>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.ready.mark(self.slot);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.mark(self.slot);
    }
}

// ---- connections ----------------------------------------------------------------------------

/// Limits of the TCP side of a worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_pending: usize,
    pub(crate) pending_timeout: Duration,
    pub(crate) send_buffer: usize,
    pub(crate) socket_buffer: usize,
}

/// Why a connection was closed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed it, or it failed.
    Gone,
    /// Its first frame was no ICE check a session accepted, a frame was too long, or its
    /// session holds enough connections already.
    Invalid,
    /// No ICE check in time.
    Timeout,
    /// More waited to be sent than the send buffer holds.
    Overflow,
}

pub(crate) struct Conn {
    stream: TcpStream,
    pub(crate) remote: SocketAddr,
    pub(crate) reader: FrameReader,
    writer: FrameWriter,
    /// The session its first ICE check was for; `None` while pending.
    pub(crate) owner: Option<ParticipantId>,
    accepted: Instant,
    /// In the list of connections to flush.
    queued: bool,
    /// Tells a connection from a later one in the same slot.
    serial: u64,
}

impl Conn {
    /// When the connection is closed unless an ICE check arrives. A bound connection has
    /// none: it ends with its session, which times out on its own. A browser may check a
    /// backup pair only every 25 s or so, and closing it for that would make it reconnect.
    fn deadline(&self, limits: &TcpLimits) -> Option<Instant> {
        match self.owner {
            Some(_) => None,
            None => Some(self.accepted + limits.pending_timeout),
        }
    }
}

/// What became of an outgoing packet.
pub(crate) enum Sent {
    /// Queued, to be written at the next flush.
    Queued,
    /// No connection from that address belongs to the session.
    NoConnection,
    /// The connection's send buffer was full: it was closed.
    Overflow,
}

/// The listener and every connection of one worker.
pub(crate) struct Tcp {
    listener: TcpListener,
    slots: Vec<Option<Conn>>,
    /// One per slot ever used, kept for the next connection in the slot.
    wakers: Vec<Waker>,
    free: Vec<usize>,
    by_addr: HashMap<SocketAddr, usize>,
    open: usize,
    pending: usize,
    ready: Arc<ReadySet>,
    /// Slots with frames queued since the last flush.
    to_flush: Vec<usize>,
    next_serial: u64,
    limits: TcpLimits,
}

impl Tcp {
    pub(crate) fn new(listener: TcpListener, limits: TcpLimits) -> Self {
        Tcp {
            listener,
            slots: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            by_addr: HashMap::new(),
            open: 0,
            pending: 0,
            ready: Arc::new(ReadySet::new(limits.max_connections)),
            to_flush: Vec::new(),
            next_serial: 0,
            limits,
        }
    }

    /// Open connections.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.listener.accept().await
    }

    /// Resolves when some connection's waker has fired since the last [`Tcp::take_ready`].
    pub(crate) fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let task = self.ready.task.get_or_init(|| cx.waker().clone());
            debug_assert!(task.will_wake(cx.waker()), "polled from another task");
            if self.ready.any.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Moves the slots marked ready into `slots`.
    pub(crate) fn take_ready(&self, slots: &mut Vec<usize>) {
        self.ready.drain(|slot| slots.push(slot));
    }

    /// Takes a new connection, unless too many are open or pending (then it is dropped, which
    /// closes it). Returns its deadline.
    pub(crate) fn add(
        &mut self,
        stream: TcpStream,
        remote: SocketAddr,
        now: Instant,
    ) -> Option<Instant> {
        if self.open >= self.limits.max_connections || self.pending >= self.limits.max_pending {
            return None;
        }
        // Media is latency-bound: a packet must not wait for the next one.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%remote, "TCP_NODELAY: {e}");
        }
        // A fixed kernel buffer rather than one that grows to megabytes: media queued that
        // long is too late to be of use, and the send buffer above should notice.
        if let Err(e) =
            socket2::SockRef::from(&stream).set_send_buffer_size(self.limits.socket_buffer)
        {
            debug!(%remote, "TCP send buffer size: {e}");
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.slots.len();
                self.slots.push(None);
                self.wakers.push(Waker::from(Arc::new(SlotWaker {
                    slot,
                    ready: self.ready.clone(),
                })));
                slot
            }
        };
        let conn = Conn {
            stream,
            remote,
            reader: FrameReader::new(READ_BUF, MAX_FRAME),
            writer: FrameWriter::new(self.limits.send_buffer),
            owner: None,
            accepted: now,
            queued: false,
            serial: self.next_serial,
        };
        self.next_serial += 1;
        let deadline = now + self.limits.pending_timeout;
        self.slots[slot] = Some(conn);
        self.by_addr.insert(remote, slot);
        self.open += 1;
        self.pending += 1;
        // The first read registers the slot's waker (and takes what already arrived).
        self.ready.mark(slot);
        Some(deadline)
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Conn> {
        self.slots.get(slot)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// The serial of the connection in `slot`, to tell it from a later one.
    pub(crate) fn serial(&self, slot: usize) -> Option<u64> {
        self.get(slot).map(|c| c.serial)
    }

    /// Gives a pending connection to `owner`.
    pub(crate) fn bind(&mut self, slot: usize, owner: ParticipantId) {
        if let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut)
            && conn.owner.is_none()
        {
            conn.owner = Some(owner);
            self.pending -= 1;
        }
    }

    /// Connections `owner` holds.
    pub(crate) fn held_by(&self, owner: ParticipantId) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.owner == Some(owner))
            .count()
    }

    /// Reads what the connection in `slot` has into its frame reader, at most one buffer.
    /// `Ok(false)` when there is nothing (its waker is registered again), `Err` when the
    /// connection is gone (closed by the client, or failed).
    pub(crate) fn read(&mut self, slot: usize, reads: &mut usize) -> Result<bool, ()> {
        let (Some(Some(conn)), Some(waker)) = (self.slots.get_mut(slot), self.wakers.get(slot))
        else {
            return Ok(false);
        };
        let mut cx = Context::from_waker(waker);
        loop {
            match conn.stream.poll_read_ready(&mut cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(())) => {}
            }
            if *reads >= READ_BATCH {
                // Its turn again after the others'.
                self.ready.mark(slot);
                return Ok(false);
            }
            match conn.stream.try_read(conn.reader.spare()) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    *reads += 1;
                    conn.reader.filled(n);
                    return Ok(true);
                }
                // Readiness is cleared; the next poll registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// Queues `packet` for `owner`'s connection from `remote`. The frame is written at the
    /// next [`Tcp::flush`].
    pub(crate) fn send(&mut self, owner: ParticipantId, remote: SocketAddr, packet: &[u8]) -> Sent {
        let Some(&slot) = self.by_addr.get(&remote) else {
            return Sent::NoConnection;
        };
        let Some(conn) = self.slots[slot].as_mut().filter(|c| c.owner == Some(owner)) else {
            return Sent::NoConnection;
        };
        if !conn.writer.push(packet) {
            debug!(%remote, participant = %owner, "TCP send buffer full: closed");
            self.close(slot);
            return Sent::Overflow;
        }
        if !conn.queued {
            conn.queued = true;
            self.to_flush.push(slot);
        }
        Sent::Queued
    }

    /// Writes what was queued since the last flush: one system call per connection for
    /// everything the sessions sent meanwhile. A connection that fails is closed.
    pub(crate) fn flush(&mut self) {
        while let Some(slot) = self.to_flush.pop() {
            if let Some(conn) = self.slots[slot].as_mut() {
                conn.queued = false;
            }
            if self.write(slot).is_err() {
                self.close(slot);
            }
        }
    }

    /// Writes what waits for the connection in `slot` until done or the socket is full (then
    /// its waker fires when it can take more). `Err` when the connection failed.
    pub(crate) fn write(&mut self, slot: usize) -> Result<(), ()> {
        let (Some(Some(conn)), Some(waker)) = (self.slots.get_mut(slot), self.wakers.get(slot))
        else {
            return Ok(());
        };
        while !conn.writer.is_empty() {
            match conn.stream.try_write(conn.writer.pending()) {
                Ok(0) => return Err(()),
                Ok(n) => conn.writer.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut cx = Context::from_waker(waker);
                    match conn.stream.poll_write_ready(&mut cx) {
                        Poll::Pending => return Ok(()),
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return Err(()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// Whether frames wait to be written to the connection in `slot`.
    pub(crate) fn has_output(&self, slot: usize) -> bool {
        self.get(slot).is_some_and(|c| !c.writer.is_empty())
    }

    /// Closes the connection in `slot` (dropping the stream closes the socket).
    pub(crate) fn close(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(slot)?.take()?;
        if self.by_addr.get(&conn.remote) == Some(&slot) {
            self.by_addr.remove(&conn.remote);
        }
        self.open -= 1;
        if conn.owner.is_none() {
            self.pending -= 1;
        }
        self.free.push(slot);
        Some(conn)
    }

    /// Closes every connection of `owner`; returns how many.
    pub(crate) fn close_owned_by(&mut self, owner: ParticipantId) -> usize {
        let mut closed = 0;
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(|c| c.owner == Some(owner))
            {
                self.close(slot);
                closed += 1;
            }
        }
        closed
    }

    /// Closes the pending connections past their deadline (calling `expired` with each) and
    /// returns the earliest deadline of the others.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        mut expired: impl FnMut(&Conn),
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        if self.pending == 0 {
            return None;
        }
        for slot in 0..self.slots.len() {
            let Some(deadline) = self.slots[slot]
                .as_ref()
                .and_then(|c| c.deadline(&self.limits))
            else {
                continue;
            };
            if now >= deadline {
                if let Some(conn) = self.close(slot) {
                    expired(&conn);
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = (len as u16).to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(fill, len));
        f
    }

    /// Feeds `bytes` to `reader` in chunks of `chunk`, collecting every frame.
    fn feed(
        reader: &mut FrameReader,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<Vec<Vec<u8>>, FrameTooLong> {
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let spare = reader.spare();
                assert!(!spare.is_empty(), "no room to read");
                let n = spare.len().min(piece.len());
                spare[..n].copy_from_slice(&piece[..n]);
                reader.filled(n);
                piece = &piece[n..];
                while let Some(f) = reader.next_frame()? {
                    frames.push(f.to_vec());
                }
            }
        }
        Ok(frames)
    }

    #[test]
    fn a_frame_split_anywhere_comes_out_whole() {
        let bytes = [frame(5, 1), frame(300, 2), frame(1, 3)].concat();
        for chunk in 1..=bytes.len() {
            let mut r = FrameReader::new(READ_BUF, MAX_FRAME);
            let frames = feed(&mut r, &bytes, chunk).unwrap();
            assert_eq!(
                frames,
                [vec![1; 5], vec![2; 300], vec![3; 1]],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut r = FrameReader::new(READ_BUF, MAX_FRAME);
        let bytes: Vec<u8> = (0..20u8).flat_map(|i| frame(100, i)).collect();
        let frames = feed(&mut r, &bytes, bytes.len()).unwrap();
        assert_eq!(frames.len(), 20);
        assert!(
            frames
                .iter()
                .enumerate()
                .all(|(i, f)| *f == vec![i as u8; 100])
        );
    }

    #[test]
    fn zero_length_frames_are_returned_empty() {
        let mut r = FrameReader::new(READ_BUF, MAX_FRAME);
        let bytes = [frame(0, 0), frame(3, 7), frame(0, 0)].concat();
        let frames = feed(&mut r, &bytes, 1).unwrap();
        assert_eq!(frames, [vec![], vec![7; 3], vec![]]);
    }

    #[test]
    fn the_longest_frame_passes_and_one_byte_more_does_not() {
        let mut r = FrameReader::new(READ_BUF, MAX_FRAME);
        let frames = feed(&mut r, &frame(MAX_FRAME, 9), 1000).unwrap();
        assert_eq!(frames, [vec![9; MAX_FRAME]]);

        let mut r = FrameReader::new(READ_BUF, MAX_FRAME);
        assert_eq!(
            feed(&mut r, &frame(MAX_FRAME + 1, 9), 1000),
            Err(FrameTooLong(MAX_FRAME + 1))
        );
        // Refused from the header alone, before the body arrives.
        let mut r = FrameReader::new(READ_BUF, MAX_FRAME);
        assert_eq!(feed(&mut r, &[0xff, 0xff], 2), Err(FrameTooLong(65_535)));
    }

    #[test]
    fn long_streams_reuse_the_buffer() {
        // Frames that straddle the buffer's end many times over, in the smallest buffer that
        // works.
        let bytes: Vec<u8> = (0..500usize)
            .flat_map(|i| frame((i * 37) % MAX_FRAME, i as u8))
            .collect();
        for chunk in [1, 7, 1000, 4096] {
            let mut reader = FrameReader::new(2 + MAX_FRAME + 1, MAX_FRAME);
            let frames = feed(&mut reader, &bytes, chunk).unwrap();
            assert_eq!(frames.len(), 500, "chunk {chunk}");
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(*f, vec![i as u8; (i * 37) % MAX_FRAME], "chunk {chunk}");
            }
            assert!(matches!(reader.next_frame(), Ok(None)));
            assert!(!reader.spare().is_empty());
        }
    }

    #[test]
    fn writer_frames_and_keeps_what_was_not_written() {
        let mut w = FrameWriter::new(1000);
        assert!(w.is_empty());
        assert!(w.push(&[1, 2, 3]));
        assert!(w.push(&[]));
        assert!(w.push(&[4; 10]));
        let mut expected = vec![0, 3, 1, 2, 3, 0, 0, 0, 10];
        expected.extend([4; 10]);
        assert_eq!(w.pending(), &expected[..]);
        // A partial write keeps the rest, frames intact.
        w.consume(4);
        assert_eq!(w.pending(), &expected[4..]);
        w.consume(expected.len() - 4);
        assert!(w.is_empty());
    }

    #[test]
    fn writer_refuses_past_its_limit_and_reuses_its_space() {
        let mut w = FrameWriter::new(2 * 102);
        assert!(w.push(&[1; 100]));
        assert!(w.push(&[2; 100]));
        assert!(!w.push(&[3; 1]), "over the limit");
        assert!(
            !FrameWriter::new(usize::MAX).push(&vec![0; 65_536]),
            "too long for a frame"
        );
        w.consume(102);
        assert!(w.push(&[3; 100]));
        let capacity = w.buf.capacity();
        for round in 0..1000u32 {
            w.consume(102);
            assert!(w.push(&[round as u8; 100]));
            assert_eq!(w.pending().len(), 204);
        }
        assert_eq!(w.buf.capacity(), capacity, "no growth");
    }

    #[test]
    fn ready_set_visits_each_marked_slot_once() {
        let ready = ReadySet::new(300);
        for slot in [0, 5, 63, 64, 299, 5] {
            ready.mark(slot);
        }
        let mut seen = Vec::new();
        ready.drain(|slot| seen.push(slot));
        assert_eq!(seen, [0, 5, 63, 64, 299]);
        ready.drain(|slot| panic!("{slot} visited twice"));
    }
}
