//! Receiving datagrams with the kernel's metadata (Linux): the receive timestamp
//! (`SO_TIMESTAMPNS`) and the socket's drop counter (`SO_RXQ_OVFL`), both from one `recvmsg`.
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

    /// One non-blocking `recvmsg` (`WouldBlock` when nothing is queued).
    pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<RecvMeta> {
        // SAFETY: all-zero is a valid sockaddr_storage / msghdr / iovec.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for a timespec and a u32 control message, 8-byte aligned.
        let mut control = [0u64; 16];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` points at a live local buffer of the stated size.
        let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let after = Instant::now();
        let mut stamp: Option<libc::timespec> = None;
        let mut dropped_total = None;
        // SAFETY: `msg` was filled in by the kernel; the CMSG macros walk its control buffer
        // within `msg_controllen`, and each payload is read unaligned at its stated type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
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
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        let from = sockaddr(&addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
        let (arrival, kernel_stamped) = match stamp.and_then(age) {
            Some(age) => (after.checked_sub(age).unwrap_or(after), true),
            None => (after, false),
        };
        Ok(RecvMeta {
            len: n as usize,
            from,
            arrival,
            kernel_stamped,
            dropped_total,
        })
    }

    /// How long ago the (CLOCK_REALTIME) kernel stamp was; `None` if the wall clock stepped
    /// so that it looks negative or over 10 s old (a datagram can wait seconds in a large
    /// receive buffer when the thread is starved: that age is real and must show).
    fn age(ts: libc::timespec) -> Option<Duration> {
        // SAFETY: all-zero is a valid timespec; clock_gettime fills it.
        let mut now: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and a pointer to a live timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut now) } != 0 {
            return None;
        }
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

/// Enables kernel receive timestamps and drop counts; `false` when unsupported (then
/// [`recv`] stamps datagrams after the read).
pub(crate) fn enable(socket: &tokio::net::UdpSocket) -> bool {
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
pub(crate) fn set_receive_buffer(socket: &tokio::net::UdpSocket, bytes: usize) -> Option<usize> {
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

/// One non-blocking read with metadata (`WouldBlock` when nothing is queued).
pub(crate) fn recv(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        socket.try_io(tokio::io::Interest::READABLE, || imp::recv(fd, buf))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (len, from) = socket.try_recv_from(buf)?;
        Ok(RecvMeta {
            len,
            from,
            arrival: Instant::now(),
            kernel_stamped: false,
            dropped_total: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn kernel_stamps_and_sources_on_loopback() {
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stamped = enable(&b);
        let before = Instant::now();
        a.send_to(b"hello", b.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 64];
        let meta = loop {
            b.readable().await.unwrap();
            match recv(&b, &mut buf) {
                Ok(m) => break m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..meta.len], b"hello");
        assert_eq!(meta.from, a.local_addr().unwrap());
        assert_eq!(meta.kernel_stamped, stamped);
        assert!(cfg!(not(target_os = "linux")) || stamped);
        // The stamp lies between the send and now (a few µs of clock mapping error allowed).
        assert!(meta.arrival + std::time::Duration::from_millis(1) >= before);
        assert!(meta.arrival <= Instant::now());
        assert_eq!(meta.dropped_total.unwrap_or(0), 0);
        let e = recv(&b, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
