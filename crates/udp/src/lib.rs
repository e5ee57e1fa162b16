//! Several UDP datagrams per system call (`recvmmsg`, `sendmmsg`), for the TURN relay and
//! the SFU's media workers.
//!
//! On a relay path the system calls are most of the cost: one read and one write per
//! datagram, plus, with one datagram per read, a last read that finds the socket empty.
//! [`Incoming`] reads up to [`SLOTS`] datagrams at once and tells when it got fewer, so its
//! caller knows the socket is empty without paying a read for `EWOULDBLOCK`. [`Outgoing`]
//! gathers datagrams leaving one socket, to any destinations, and sends them together.
//!
//! The buffers are allocated once; nothing here allocates per datagram. Outside Linux the
//! same types fall back to one datagram per call.

use std::io;
use std::net::SocketAddr;

/// A non-blocking UDP socket the batches read from and write to.
pub trait BatchSocket {
    /// One datagram without waiting (`WouldBlock` when none is queued).
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// One datagram without waiting.
    fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
    #[cfg(target_os = "linux")]
    fn raw_fd(&self) -> std::os::fd::RawFd;
}

/// Must be in non-blocking mode.
impl BatchSocket for std::net::UdpSocket {
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from(buf)
    }

    fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(data, to)
    }

    #[cfg(target_os = "linux")]
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// Bypasses the socket's readiness tracking: callers clear it themselves (see
/// [`Incoming::recv`]).
impl BatchSocket for tokio::net::UdpSocket {
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.try_recv_from(buf)
    }

    fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.try_send_to(data, to)
    }

    #[cfg(target_os = "linux")]
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// Datagrams per system call.
pub const SLOTS: usize = 32;

/// Receive buffers: [`SLOTS`] datagrams of up to a slot's length each (65,536 bytes lets
/// nothing arrive truncated). The memory is reserved once; pages are touched only as
/// far as datagrams fill them.
pub struct Incoming {
    buf: Vec<u8>,
    slot_len: usize,
    lens: [usize; SLOTS],
    from: [SocketAddr; SLOTS],
    /// `recvmmsg`'s headers, pointing at `buf` once and for all.
    #[cfg(target_os = "linux")]
    headers: sys::Headers,
}

impl Incoming {
    /// Buffers for datagrams of up to `slot_len` bytes; longer ones are truncated.
    pub fn new(slot_len: usize) -> Self {
        let mut buf = vec![0; SLOTS * slot_len];
        #[cfg(target_os = "linux")]
        let headers = {
            let mut headers = sys::Headers::new();
            for (i, chunk) in buf.chunks_exact_mut(slot_len).enumerate() {
                headers.set_buffer(i, chunk);
            }
            headers
        };
        Self {
            buf,
            slot_len,
            lens: [0; SLOTS],
            from: [SocketAddr::from(([0, 0, 0, 0], 0)); SLOTS],
            #[cfg(target_os = "linux")]
            headers,
        }
    }

    /// The `i`th datagram of the last [`Incoming::recv`] and its sender.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let start = i * self.slot_len;
        (&self.buf[start..start + self.lens[i]], self.from[i])
    }

    /// Reads up to [`SLOTS`] datagrams into slots `0..n` without waiting; returns `n` and
    /// whether the socket's queue ran dry (then a reader that tracks readiness may clear
    /// it without paying a read for `EWOULDBLOCK`).
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &impl BatchSocket) -> io::Result<(usize, bool)> {
        // SAFETY: every header points at a name, an iovec and a buffer of the sizes
        // given, all owned by `self` (see `sys::Headers`); the kernel writes at most that
        // much.
        let count = unsafe {
            libc::recvmmsg(
                socket.raw_fd(),
                self.headers.as_mut_ptr(),
                SLOTS as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut kept = 0;
        for i in 0..count as usize {
            let (from, len) = self.headers.received(i);
            let Some(from) = from else {
                continue;
            };
            // Compact in place so that slots 0..kept are the valid datagrams.
            if kept != i {
                let (src, dst) = (i * self.slot_len, kept * self.slot_len);
                self.buf.copy_within(src..src + len, dst);
            }
            self.lens[kept] = len;
            self.from[kept] = from;
            kept += 1;
        }
        // Fewer than asked means the queue ran dry: `recvmmsg` stops early only at
        // `EAGAIN` or at an error, and an error (an ICMP report) raised its own readiness
        // event when it arrived.
        Ok((kept, (count as usize) < SLOTS))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &impl BatchSocket) -> io::Result<(usize, bool)> {
        let mut count = 0;
        for chunk in self.buf.chunks_exact_mut(slot_len) {
            match socket.recv_one(chunk) {
                Ok((len, from)) => {
                    self.lens[count] = len;
                    self.from[count] = from;
                    count += 1;
                }
                Err(error) if count == 0 => return Err(error),
                Err(error) => return Ok((count, error.kind() == io::ErrorKind::WouldBlock)),
            }
        }
        Ok((count, false))
    }
}

/// Most datagrams in one segmented send (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one segmented send: what fits one IP datagram.
#[cfg(target_os = "linux")]
const GSO_MAX_BYTES: usize = 65_000;

/// Datagrams waiting to leave one socket, their bytes end to end in one buffer that keeps
/// its capacity.
///
/// On Linux, consecutive datagrams to one destination that have the same size (the last of
/// them may be shorter) leave as one segmented send (`UDP_SEGMENT`, "GSO"): the kernel
/// walks its UDP and IP layers once for the run and cuts it into datagrams at the end. An
/// SFU sends exactly such runs, a video frame's packets to one subscriber. If the socket's
/// path cannot segment (`EIO`, `EINVAL`: a device without checksum offload), the batch
/// turns segmentation off for good and sends datagram by datagram.
pub struct Outgoing {
    data: Vec<u8>,
    /// End offset in `data` and destination of each datagram.
    datagrams: Vec<(usize, SocketAddr)>,
    /// `sendmmsg`'s headers, made on the first send.
    #[cfg(target_os = "linux")]
    headers: Option<sys::Headers>,
    #[cfg(target_os = "linux")]
    segmentation: bool,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            data: Vec::new(),
            datagrams: Vec::new(),
            #[cfg(target_os = "linux")]
            headers: None,
            #[cfg(target_os = "linux")]
            segmentation: true,
        }
    }
}

/// One header's worth of a send: datagrams `first..first + count`, bytes `start..end`, each
/// `segment` bytes long but the last.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Default)]
struct Run {
    first: usize,
    count: usize,
    start: usize,
    end: usize,
    segment: usize,
}

impl Outgoing {
    /// Whether a call's worth is gathered (more may be pushed; they go in further calls).
    pub fn is_full(&self) -> bool {
        self.datagrams.len() >= SLOTS
    }

    pub fn push(&mut self, bytes: &[u8], to: SocketAddr) {
        self.data.extend_from_slice(bytes);
        self.datagrams.push((self.data.len(), to));
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Sends everything gathered, without waiting, and empties the batch: a datagram the
    /// socket cannot take is dropped, as a router would drop it. Returns how many were.
    pub fn send(&mut self, socket: &impl BatchSocket) -> usize {
        if self.datagrams.is_empty() {
            return 0;
        }
        let failed = self.send_now(socket);
        self.data.clear();
        self.datagrams.clear();
        failed
    }

    /// Turns segmented sends off, as if the path could not take them.
    #[cfg(target_os = "linux")]
    pub fn without_segmentation(mut self) -> Self {
        self.segmentation = false;
        self
    }

    /// Returns how many datagrams could not be sent. Goes [`SLOTS`] runs per call.
    #[cfg(target_os = "linux")]
    fn send_now(&mut self, socket: &impl BatchSocket) -> usize {
        let mut failed = 0;
        let mut next_datagram = 0;
        let mut start = 0;
        let mut runs = [Run::default(); SLOTS];
        while next_datagram < self.datagrams.len() {
            // Cut the next SLOTS runs.
            let mut slots = 0;
            while slots < SLOTS && next_datagram < self.datagrams.len() {
                let run = self.cut_run(next_datagram, start);
                next_datagram += run.count;
                start = run.end;
                runs[slots] = run;
                slots += 1;
            }
            let headers = self.headers.get_or_insert_with(sys::Headers::new);
            for (i, run) in runs[..slots].iter().enumerate() {
                headers.set_buffer(i, &mut self.data[run.start..run.end]);
                headers.set_destination(i, &self.datagrams[run.first].1);
                headers.set_segment(i, (run.count > 1).then_some(run.segment as u16));
            }
            let mut next = 0;
            while next < slots {
                // SAFETY: headers `next..slots` point at names, iovecs, control buffers and
                // bytes that outlive the call (the bytes are not touched until it returns);
                // the kernel only reads them.
                let sent = unsafe {
                    libc::sendmmsg(
                        socket.raw_fd(),
                        headers.as_mut_ptr().add(next),
                        (slots - next) as _,
                        libc::MSG_DONTWAIT,
                    )
                };
                if sent > 0 {
                    next += sent as usize;
                    continue;
                }
                let error = io::Error::last_os_error();
                let run = runs[next];
                next += 1;
                let unsupported = matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL));
                if run.count > 1 && unsupported {
                    // This path cannot segment: never again, and this run one by one.
                    self.segmentation = false;
                    let to = self.datagrams[run.first].1;
                    let mut from = run.start;
                    for (end, _) in &self.datagrams[run.first..run.first + run.count] {
                        if socket.send_one(&self.data[from..*end], to).is_err() {
                            failed += 1;
                        }
                        from = *end;
                    }
                } else {
                    // The run at `next` failed (or nothing could be sent at all): drop it
                    // and go on with the rest.
                    failed += run.count;
                }
            }
        }
        failed
    }

    /// The longest run that may leave in one segmented send, from datagram `first`, whose
    /// bytes begin at `start`.
    #[cfg(target_os = "linux")]
    fn cut_run(&self, first: usize, start: usize) -> Run {
        let (end, to) = self.datagrams[first];
        let segment = end - start;
        let mut run = Run {
            first,
            count: 1,
            start,
            end,
            segment,
        };
        if !self.segmentation || segment > usize::from(u16::MAX) {
            return run;
        }
        for &(next_end, next_to) in &self.datagrams[first + 1..] {
            let len = next_end - run.end;
            if next_to != to
                || len > segment
                || len == 0
                || run.count == GSO_MAX_SEGMENTS
                || next_end - run.start > GSO_MAX_BYTES
            {
                break;
            }
            run.count += 1;
            run.end = next_end;
            if len < segment {
                // A shorter datagram can only end a run.
                break;
            }
        }
        run
    }

    #[cfg(not(target_os = "linux"))]
    fn send_now(&mut self, socket: &impl BatchSocket) -> usize {
        let mut failed = 0;
        let mut start = 0;
        for (end, to) in &self.datagrams {
            if socket.send_one(&self.data[start..*end], *to).is_err() {
                failed += 1;
            }
            start = *end;
        }
        failed
    }
}

/// Socket addresses to and from their C form, and the headers of `recvmmsg` and
/// `sendmmsg`.
#[cfg(target_os = "linux")]
mod sys {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    use super::SLOTS;

    const NAME_LEN: libc::socklen_t =
        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

    /// [`SLOTS`] message headers, each pointing at its own address buffer and iovec,
    /// made once so that a call does not have to clear and link 6 KiB of them. The
    /// three arrays are separate heap allocations that never grow, so the pointers
    /// between them stay valid wherever the `Headers` value moves.
    pub struct Headers {
        headers: Vec<libc::mmsghdr>,
        names: Vec<libc::sockaddr_storage>,
        iovecs: Vec<libc::iovec>,
        /// Ancillary data of each header: the segment size of a segmented send.
        controls: Vec<Control>,
    }

    /// Room for one `cmsghdr` with a `u16`, aligned as the kernel reads it.
    #[repr(C, align(8))]
    pub struct Control([u8; 32]);

    // SAFETY: the raw pointers point only into allocations owned by this value or by the
    // `Incoming`/`Outgoing` that owns it, and are dereferenced (by the kernel) only during a
    // call made through `&mut` of that owner; moving the whole to another thread is sound.
    unsafe impl Send for Headers {}

    impl Headers {
        pub fn new() -> Self {
            /// # Safety
            /// All-zero must be a valid `T`.
            unsafe fn zeroed<T>() -> Vec<T> {
                // SAFETY: as the caller promises.
                (0..SLOTS).map(|_| unsafe { std::mem::zeroed() }).collect()
            }
            // SAFETY: all-zero is a valid value of these plain C structs (null pointers,
            // zero lengths).
            let mut this = unsafe {
                Self {
                    headers: zeroed(),
                    names: zeroed(),
                    iovecs: zeroed(),
                    controls: zeroed(),
                }
            };
            let (names, iovecs) = (this.names.as_mut_ptr(), this.iovecs.as_mut_ptr());
            for (i, header) in this.headers.iter_mut().enumerate() {
                // In bounds: all three have SLOTS elements.
                header.msg_hdr.msg_name = names.wrapping_add(i).cast();
                header.msg_hdr.msg_namelen = NAME_LEN;
                header.msg_hdr.msg_iov = iovecs.wrapping_add(i);
                header.msg_hdr.msg_iovlen = 1;
            }
            this
        }

        pub fn as_mut_ptr(&mut self) -> *mut libc::mmsghdr {
            self.headers.as_mut_ptr()
        }

        /// Points header `i` at `buf`, which must stay put until the next call that uses
        /// it.
        pub fn set_buffer(&mut self, i: usize, buf: &mut [u8]) {
            self.iovecs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
        }

        pub fn set_destination(&mut self, i: usize, to: &SocketAddr) {
            self.headers[i].msg_hdr.msg_namelen = to_sockaddr(to, &mut self.names[i]);
        }

        /// Makes header `i` a segmented send of `segment`-byte datagrams, or a plain one.
        pub fn set_segment(&mut self, i: usize, segment: Option<u16>) {
            let header = &mut self.headers[i].msg_hdr;
            let Some(segment) = segment else {
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
                return;
            };
            let control = &mut self.controls[i];
            // SAFETY: CMSG_SPACE(2) (24) fits the 32-byte, 8-aligned buffer; the header is
            // written at its start and the value at CMSG_DATA, both inside it.
            unsafe {
                let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                debug_assert!(space <= control.0.len());
                header.msg_control = control.0.as_mut_ptr().cast();
                header.msg_controllen = space as _;
                let cmsg = libc::CMSG_FIRSTHDR(header);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
            }
        }

        /// The sender and length of datagram `i` of the last `recvmmsg`; readies header
        /// `i` for the next.
        pub fn received(&mut self, i: usize) -> (Option<SocketAddr>, usize) {
            let header = &mut self.headers[i];
            header.msg_hdr.msg_namelen = NAME_LEN;
            (from_sockaddr(&self.names[i]), header.msg_len as usize)
        }
    }

    pub fn from_sockaddr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(name.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in, which it is
                // large enough and aligned for.
                let v4 = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let v6 = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Writes `addr` into `name`; returns its length.
    pub fn to_sockaddr(addr: &SocketAddr, name: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(addr) => {
                // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
                let v4 = unsafe {
                    &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                v4.sin_family = libc::AF_INET as libc::sa_family_t;
                v4.sin_port = addr.port().to_be();
                v4.sin_addr = libc::in_addr {
                    s_addr: u32::from(*addr.ip()).to_be(),
                };
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(addr) => {
                // SAFETY: as above, for sockaddr_in6.
                let v6 = unsafe {
                    &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                v6.sin6_port = addr.port().to_be();
                v6.sin6_flowinfo = addr.flowinfo();
                v6.sin6_addr = libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                };
                v6.sin6_scope_id = addr.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn socket_addresses_round_trip() {
            for addr in ["192.0.2.1:3478", "[2001:db8::1]:49152", "[fe80::1%3]:5"] {
                let addr: SocketAddr = addr.parse().unwrap();
                // SAFETY: all-zero is a valid sockaddr_storage.
                let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                to_sockaddr(&addr, &mut name);
                assert_eq!(from_sockaddr(&name), Some(addr));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    /// Reads until `want` datagrams arrived or a second passed.
    fn read_all(
        incoming: &mut Incoming,
        socket: &UdpSocket,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.len() < want && std::time::Instant::now() < deadline {
            match incoming.recv(socket) {
                Ok((count, _)) => {
                    for i in 0..count {
                        let (data, from) = incoming.get(i);
                        got.push((data.to_vec(), from));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn batches_may_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Incoming>();
        send::<Outgoing>();
    }

    #[test]
    fn a_batch_reaches_several_destinations_in_order() {
        let (sender, a, b) = (bound(), bound(), bound());
        let mut outgoing = Outgoing::default();
        for i in 0..40u8 {
            let to = if i % 2 == 0 { &a } else { &b };
            outgoing.push(&vec![i; 10 + usize::from(i)], to.local_addr().unwrap());
        }
        assert_eq!(outgoing.len(), 40);
        assert_eq!(outgoing.send(&sender), 0);
        assert!(outgoing.is_empty());

        let mut incoming = Incoming::new(2048);
        let from = sender.local_addr().unwrap();
        for (socket, first) in [(&a, 0u8), (&b, 1u8)] {
            let got = read_all(&mut incoming, socket, 20);
            let expected: Vec<_> = (0..20u8)
                .map(|k| first + 2 * k)
                .map(|i| (vec![i; 10 + usize::from(i)], from))
                .collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_short_read_says_the_socket_ran_dry() {
        let (sender, receiver) = (bound(), bound());
        let to = receiver.local_addr().unwrap();
        for i in 0..(SLOTS as u8 + 3) {
            sender.send_to(&[i], to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut incoming = Incoming::new(64);
        assert_eq!(incoming.recv(&receiver).unwrap(), (SLOTS, false));
        assert_eq!(incoming.get(SLOTS - 1).0, &[SLOTS as u8 - 1]);
        assert_eq!(incoming.recv(&receiver).unwrap(), (3, true));
        assert_eq!(incoming.get(2).0, &[SLOTS as u8 + 2]);
        let empty = incoming.recv(&receiver);
        assert!(
            matches!(&empty, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{empty:?}"
        );
    }

    #[test]
    fn an_unsendable_datagram_is_dropped_and_the_rest_go() {
        let (sender, receiver) = (bound(), bound());
        let mut outgoing = Outgoing::default();
        outgoing.push(b"first", receiver.local_addr().unwrap());
        // Too long for UDP over IPv4: EMSGSIZE for this one only.
        outgoing.push(&vec![0; 70_000], receiver.local_addr().unwrap());
        outgoing.push(b"last", receiver.local_addr().unwrap());
        assert_eq!(outgoing.send(&sender), 1);
        let mut incoming = Incoming::new(64);
        let got: Vec<_> = read_all(&mut incoming, &receiver, 2)
            .into_iter()
            .map(|(data, _)| data)
            .collect();
        assert_eq!(got, [b"first".to_vec(), b"last".to_vec()]);
    }

    /// A video frame's packets to one receiver, then another receiver's, as an SFU sends.
    fn frames(outgoing: &mut Outgoing, a: SocketAddr, b: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut expected = Vec::new();
        let mut n = 0u8;
        for (to, sizes) in [
            (a, &[1100, 1100, 1100, 1100, 1100, 700][..]),
            (b, &[1100, 1100, 300][..]),
            (a, &[80][..]),
            (a, &[1100, 1200, 1200][..]),
        ] {
            for &size in sizes {
                n += 1;
                let datagram = vec![n; size];
                outgoing.push(&datagram, to);
                expected.push((to, datagram));
            }
        }
        expected.into_iter().map(|(to, d)| (d, to)).collect()
    }

    #[test]
    fn runs_to_one_destination_arrive_as_the_datagrams_they_were() {
        for outgoing in [
            Outgoing::default(),
            Outgoing::default().without_segmentation(),
        ] {
            let mut outgoing = outgoing;
            let (sender, a, b) = (bound(), bound(), bound());
            let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            let expected = frames(&mut outgoing, a_addr, b_addr);
            assert_eq!(outgoing.send(&sender), 0);
            let mut incoming = Incoming::new(2048);
            let from = sender.local_addr().unwrap();
            for (socket, addr) in [(&a, a_addr), (&b, b_addr)] {
                let want: Vec<_> = expected
                    .iter()
                    .filter(|(_, to)| *to == addr)
                    .map(|(d, _)| (d.clone(), from))
                    .collect();
                assert_eq!(read_all(&mut incoming, socket, want.len()), want);
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn runs_are_cut_where_segmentation_allows() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mut outgoing = Outgoing::default();
        frames(&mut outgoing, a, b);
        let mut cuts = Vec::new();
        let (mut first, mut start) = (0, 0);
        while first < outgoing.datagrams.len() {
            let run = outgoing.cut_run(first, start);
            cuts.push((run.count, run.segment));
            first += run.count;
            start = run.end;
        }
        // Equal sizes and a shorter last; a new destination; one alone; a larger one
        // starts a new run.
        assert_eq!(cuts, [(6, 1100), (3, 1100), (1, 80), (1, 1100), (2, 1200)]);

        let mut long = Outgoing::default();
        for _ in 0..100 {
            long.push(&[0; 100], a);
        }
        assert_eq!(long.cut_run(0, 0).count, GSO_MAX_SEGMENTS);
        let mut big = Outgoing::default();
        for _ in 0..60 {
            big.push(&[0; 1400], a);
        }
        assert_eq!(big.cut_run(0, 0).count, GSO_MAX_BYTES / 1400);
        let plain = Outgoing::default().without_segmentation();
        let mut plain = plain;
        plain.push(&[0; 10], a);
        plain.push(&[0; 10], a);
        assert_eq!(plain.cut_run(0, 0).count, 1);
    }
}
