//! Receiving datagrams with the kernel's metadata (Linux): the receive timestamp
//! (`SO_TIMESTAMPNS`) and the socket's drop counter (`SO_RXQ_OVFL`), for up to [`BATCH`]
//! datagrams per `recvmmsg` call.
//!
//! The kernel stamps a datagram when it is queued on the socket, so a media thread busy with
//! other work still sees when each packet really arrived: queueing in the socket buffer counts
//! in the end-to-end latency instead of hiding before the `recv`. The drop counter tells how
//! many datagrams the kernel discarded because the receive buffer was full.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMeta {
    /// Bytes in the buffer.
    pub len: usize,
    /// Source address.
    pub from: SocketAddr,
    /// When the kernel queued it (mapped onto the monotonic clock), else the instant after
    /// the read.
    pub arrival: Instant,
    /// Whether `arrival` came from the kernel timestamp.
    pub kernel_stamped: bool,
    /// The socket's cumulative count of datagrams dropped for a full receive buffer, when the
    /// kernel reported it.
    pub dropped_total: Option<u32>,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::RecvMeta;
    use std::io;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;
    use std::time::{Duration, Instant};

    /// Asks the kernel for receive timestamps and drop counts on `fd`.
    pub(crate) fn enable(fd: RawFd) -> io::Result<()> {
        let on: libc::c_int = 1;
        for opt in [libc::SO_TIMESTAMPNS, libc::SO_RXQ_OVFL] {
            // SAFETY: `fd` is an open socket owned by the caller; the option value is a
            // c_int that lives for the call, and its size is passed.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const on).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Asks for a receive buffer of `bytes` (forced past `rmem_max` when the process may,
    /// else as much as the limit allows); returns what the kernel granted.
    pub(crate) fn set_receive_buffer(fd: RawFd, bytes: usize) -> io::Result<usize> {
        let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: `fd` is an open socket; the value is a live c_int of the stated size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const want).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
        let mut got: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `got` and `len` are live and sized for SO_RCVBUF's c_int.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw mut got).cast(),
                &raw mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(got).unwrap_or(0))
    }

    /// Reads up to [`super::BATCH`] queued datagrams with one non-blocking `recvmmsg` into
    /// `batch` (`WouldBlock` when nothing is queued); returns how many.
    pub(crate) fn recv_many(fd: RawFd, batch: &mut super::RecvBatch) -> io::Result<usize> {
        use super::{BATCH, DATAGRAM_BUF};
        // SAFETY: all-zero is a valid iovec / mmsghdr (null pointers, zero lengths).
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
            v.iov_base = batch.bufs[i].as_mut_ptr().cast();
            v.iov_len = DATAGRAM_BUF;
            let h = &mut m.msg_hdr;
            h.msg_name = (&raw mut batch.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = v;
            h.msg_iovlen = 1;
            h.msg_control = batch.control[i].as_mut_ptr().cast();
            h.msg_controllen = size_of_val(&batch.control[i]) as _;
        }
        // SAFETY: every header points at live buffers of `batch` (and `iov`) of the stated
        // sizes, which outlive the call; `BATCH` headers exist.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(BATCH);
        let after = Instant::now();
        let now_wall = realtime_now();
        batch.metas.clear();
        for (i, m) in msgs.iter().enumerate().take(n) {
            let h = &m.msg_hdr;
            let (stamp, dropped_total) = control_messages(h);
            let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
            let len = m.msg_len as usize;
            let from = sockaddr(&batch.addrs[i]);
            let (arrival, kernel_stamped) = match stamp.zip(now_wall).and_then(|(s, w)| age(s, w)) {
                Some(age) => (after.checked_sub(age).unwrap_or(after), true),
                None => (after, false),
            };
            batch.metas.push(super::BatchEntry {
                meta: from.map(|from| RecvMeta {
                    // A truncated datagram reports the buffer's length: flagged as too big.
                    len: if truncated { DATAGRAM_BUF } else { len },
                    from,
                    arrival,
                    kernel_stamped,
                    dropped_total,
                }),
            });
        }
        Ok(n)
    }

    /// The receive timestamp and drop counter among a received message's control messages.
    fn control_messages(msg: &libc::msghdr) -> (Option<libc::timespec>, Option<u32>) {
        let mut stamp = None;
        let mut dropped_total = None;
        // SAFETY: `msg` was filled in by the kernel; the CMSG macros walk its control buffer
        // within `msg_controllen`, and each payload is read unaligned at its stated type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(msg);
            while !c.is_null() {
                let h = &*c;
                if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
                    stamp = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::timespec>(),
                    ));
                } else if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SO_RXQ_OVFL {
                    dropped_total =
                        Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
                }
                c = libc::CMSG_NXTHDR(msg, c);
            }
        }
        (stamp, dropped_total)
    }

    /// `CLOCK_REALTIME` now (the clock of the kernel's receive stamps).
    fn realtime_now() -> Option<libc::timespec> {
        // SAFETY: all-zero is a valid timespec; clock_gettime fills it.
        let mut now: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and a pointer to a live timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut now) } != 0 {
            return None;
        }
        Some(now)
    }

    /// How long before `now` (both `CLOCK_REALTIME`) the kernel stamp was; `None` if the wall
    /// clock stepped so that it looks negative or over 10 s old (a datagram can wait seconds in
    /// a large receive buffer when the thread is starved: that age is real and must show).
    fn age(ts: libc::timespec, now: libc::timespec) -> Option<Duration> {
        let ns = |t: libc::timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
        let d = ns(now) - ns(ts);
        (0..10_000_000_000)
            .contains(&d)
            .then(|| Duration::from_nanos(d as u64))
    }

    fn sockaddr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(a.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a sockaddr_in.
                let v4 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a sockaddr_in6.
                let v6 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(v6.sin6_addr.s6_addr),
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Datagrams read per `recvmmsg`.
pub(crate) const BATCH: usize = 32;
/// Receive buffer per datagram: larger than any datagram the server accepts, so a datagram that
/// fills it was too big (and possibly truncated).
pub(crate) const DATAGRAM_BUF: usize = 2048;

/// One slot of a [`RecvBatch`]: the datagram's metadata, `None` for an unknown address family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchEntry {
    pub meta: Option<RecvMeta>,
}

/// Buffers for reading [`BATCH`] datagrams with one system call; allocated once per socket.
pub(crate) struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM_BUF]; BATCH]>,
    #[cfg(target_os = "linux")]
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    /// Room for a timespec and a u32 control message per datagram, 8-byte aligned.
    #[cfg(target_os = "linux")]
    control: Box<[[u64; 16]; BATCH]>,
    metas: Vec<BatchEntry>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("filled", &self.metas.len())
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Empty buffers.
    pub(crate) fn new() -> Self {
        Self {
            bufs: Box::new([[0; DATAGRAM_BUF]; BATCH]),
            // SAFETY: all-zero is a valid sockaddr_storage.
            #[cfg(target_os = "linux")]
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            #[cfg(target_os = "linux")]
            control: Box::new([[0; 16]; BATCH]),
            metas: Vec::with_capacity(BATCH),
        }
    }

    /// Datagrams of the last read.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.metas.len()
    }

    /// Datagram `i` of the last read and its metadata (`None` metadata: unknown address
    /// family). The bytes are cut to the reported length.
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], Option<RecvMeta>)> {
        let e = self.metas.get(i)?;
        let len = e.meta.map_or(0, |m| m.len.min(DATAGRAM_BUF));
        Some((&self.bufs[i][..len], e.meta))
    }
}

/// Enables kernel receive timestamps and drop counts; `false` when unsupported (then
/// [`recv_many`] stamps datagrams after the read).
pub(crate) fn enable(socket: &std::net::UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        imp::enable(socket.as_raw_fd()).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// Enlarges the socket's receive buffer to about `bytes` (a burst of many streams, or a few
/// milliseconds of the thread being descheduled, must not overflow it); returns the size
/// granted, `None` where unsupported.
pub(crate) fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        imp::set_receive_buffer(socket.as_raw_fd(), bytes).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, bytes);
        None
    }
}

/// Reads what is queued on the non-blocking `socket`, up to [`BATCH`] datagrams, with their
/// metadata, into `batch` (one `recvmmsg` on Linux); `WouldBlock` when nothing is queued.
pub(crate) fn recv_many(socket: &std::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        imp::recv_many(socket.as_raw_fd(), batch)
    }
    #[cfg(not(target_os = "linux"))]
    {
        batch.metas.clear();
        while batch.metas.len() < BATCH {
            let i = batch.metas.len();
            match socket.recv_from(&mut batch.bufs[i]) {
                Ok((len, from)) => batch.metas.push(BatchEntry {
                    meta: Some(RecvMeta {
                        len,
                        from,
                        arrival: Instant::now(),
                        kernel_stamped: false,
                        dropped_total: None,
                    }),
                }),
                Err(e) if batch.metas.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(batch.metas.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Reads until `want` datagrams came or 5 s passed (loopback delivery is not instant).
    fn read_all(
        b: &std::net::UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> Vec<(Vec<u8>, RecvMeta)> {
        let mut got = Vec::new();
        let t0 = Instant::now();
        while got.len() < want && t0.elapsed() < std::time::Duration::from_secs(5) {
            match recv_many(b, batch) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    assert_eq!(n, batch.len());
                    for i in 0..n {
                        let (bytes, meta) = batch.get(i).unwrap();
                        got.push((bytes.to_vec(), meta.unwrap()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn kernel_stamps_and_sources_on_loopback() {
        let (a, b) = pair();
        let stamped = enable(&b);
        let mut batch = RecvBatch::new();
        assert_eq!(
            recv_many(&b, &mut batch).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let before = Instant::now();
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        let got = read_all(&b, &mut batch, 1);
        assert_eq!(got.len(), 1);
        let (bytes, meta) = &got[0];
        assert_eq!(bytes, b"hello");
        assert_eq!(meta.len, 5);
        assert_eq!(meta.from, a.local_addr().unwrap());
        assert_eq!(meta.kernel_stamped, stamped);
        assert!(cfg!(not(target_os = "linux")) || stamped);
        // The stamp lies between the send and now (a few µs of clock mapping error allowed).
        assert!(meta.arrival + std::time::Duration::from_millis(1) >= before);
        assert!(meta.arrival <= Instant::now());
        assert_eq!(meta.dropped_total.unwrap_or(0), 0);
        assert_eq!(
            recv_many(&b, &mut batch).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_backlog_is_read_in_order_in_batches_of_at_most_batch() {
        let (a, b) = pair();
        enable(&b);
        let to = b.local_addr().unwrap();
        let n = BATCH * 2 + 5;
        for i in 0..n {
            // Lengths vary so a slot keeping an older, longer datagram's tail would show.
            let len = 1 + (i * 37) % 300;
            let msg: Vec<u8> = (0..len).map(|k| (i + k) as u8).collect();
            a.send_to(&msg, to).unwrap();
        }
        let mut batch = RecvBatch::new();
        let got = read_all(&b, &mut batch, n);
        assert_eq!(got.len(), n);
        for (i, (bytes, meta)) in got.iter().enumerate() {
            let len = 1 + (i * 37) % 300;
            let want: Vec<u8> = (0..len).map(|k| (i + k) as u8).collect();
            assert_eq!(bytes, &want, "datagram {i}");
            assert_eq!(meta.len, len);
            assert_eq!(meta.from, a.local_addr().unwrap());
        }
    }

    #[test]
    fn an_oversize_datagram_reports_the_full_buffer() {
        let (a, b) = pair();
        let big = vec![7u8; DATAGRAM_BUF + 100];
        a.send_to(&big, b.local_addr().unwrap()).unwrap();
        a.send_to(b"after", b.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new();
        let got = read_all(&b, &mut batch, 2);
        assert_eq!(got[0].1.len, DATAGRAM_BUF);
        assert_eq!(got[1].0, b"after");
    }
}
