//! A client connection: plain TCP until STARTTLS (or from the start, on implicit-TLS ports),
//! then TLS. Protocol sessions read and write it without caring which.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take for the TLS handshake (as for HTTPS).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections for as long as the listener lives and run `session` for each; at most
/// `max_connections` run at once, and the ones beyond hear `busy` (if not empty) and are closed. Every
/// write to a connection fails after `write_timeout` without progress.
pub async fn serve<F, S>(listener: TcpListener, max_connections: usize, write_timeout: Duration, busy: &'static str, session: S)
where
    S: Fn(Conn) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _peer)) => tcp,
            // A client that gave up before we accepted it.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => continue,
            // Out of file descriptors or memory: retrying at once would only spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tcp = Conn::new(tcp, write_timeout);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let running = session(tcp);
                tokio::spawn(async move {
                    running.await;
                    drop(slot);
                });
            }
            // On an implicit-TLS port a plaintext answer would only break the handshake: there
            // `busy` is empty, and the connection is just closed.
            Err(_) if busy.is_empty() => drop(tcp),
            Err(_) => {
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let _ = tcp.write_all(busy.as_bytes()).await;
                });
            }
        }
    }
}

/// A TCP connection whose writes have a deadline: a client that stops reading (its receive
/// window full, our send buffer full) loses the connection, and with it the slot, instead of
/// holding a session forever. TLS runs on top of it, so every protocol, the HTTP stack and
/// upgraded connections included, gets the deadline; outbound SMTP uses it too, so that a
/// peer that stops reading our DATA cannot hold a delivery worker.
pub struct Conn {
    tcp: TcpStream,
    write_timeout: Duration,
    /// Started when a write first had to wait; any progress clears it.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    pub fn new(tcp: TcpStream, write_timeout: Duration) -> Conn {
        Conn { tcp, write_timeout, stalled: None }
    }

    /// The client's address: for IP-literal senders and rate limits, never logged or stored.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let conn = self.get_mut();
        let poll = Pin::new(&mut conn.tcp).poll_write(cx, data);
        conn.progress(cx, poll)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let conn = self.get_mut();
        let poll = Pin::new(&mut conn.tcp).poll_write_vectored(cx, bufs);
        conn.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let conn = self.get_mut();
        let poll = Pin::new(&mut conn.tcp).poll_flush(cx);
        conn.progress(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let conn = self.get_mut();
        let poll = Pin::new(&mut conn.tcp).poll_shutdown(cx);
        conn.progress(cx, poll)
    }
}

pub enum Stream {
    Plain(Conn),
    Tls(Box<TlsStream<Conn>>),
    /// Only while an upgrade is under way.
    Closed,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The ALPN protocol the client and the relay agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// Start TLS on a plain connection (STARTTLS, or an implicit-TLS port). A client that
    /// does not finish the handshake in time loses its connection (and its slot).
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        match std::mem::replace(self, Stream::Closed) {
            Stream::Plain(tcp) => {
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                *self = Stream::Tls(Box::new(tls));
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::other("TLS is already active"))
            }
        }
    }
}

impl Stream {
    /// End the connection after a last word to the client: shut our side, then read and drop
    /// what the client still sends (a bounded amount, briefly), so that closing with unread
    /// input does not reset the connection and lose that last word on the way.
    pub async fn close(&mut self) {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shutdown()).await;
        let mut sink = [0u8; 4096];
        let mut left = 1usize << 20;
        let drain = async {
            while left > 0 {
                match self.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Addresses the relay never sends to on someone else's behalf (relayed TURN packets, mail
/// to a host that DNS points there): loopback, private, link-local, shared, multicast,
/// reserved and documentation-free special ranges, and IPv6 forms embedding such an IPv4 address.
/// Connect to `to`, from `source` when given and this machine has that address: a relay on an
/// address literal is recognised by the address it connects from (its peers have no DKIM key
/// to check). Behind NAT the address is not local, and the system picks as usual.
pub async fn connect(to: std::net::SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<tokio::net::TcpStream> {
    if let Some(source) = source.filter(|s| s.is_ipv4() == to.is_ipv4()) {
        let socket = if to.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if socket.bind(std::net::SocketAddr::new(source, 0)).is_ok() {
            return socket.connect(to).await;
        }
    }
    tokio::net::TcpStream::connect(to).await
}

pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || a == 0
                || a >= 240 // reserved
                || (a == 100 && (b & 0xc0) == 64) // shared address space
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b & 0xfe) == 18) // benchmarking
        }
        IpAddr::V6(ip) => {
            let segments = ip.segments();
            let embedded = |high: u16, low: u16| Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8);
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link local
                || (segments[0] & 0xffc0) == 0xfec0 // site local
                || ip.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
                // IPv4-compatible (deprecated) `::a.b.c.d`.
                || (segments[..6] == [0; 6] && is_private(IpAddr::V4(embedded(segments[6], segments[7]))))
                // Local-use NAT64 (RFC 8215): the network's own translator.
                || segments[..3] == [0x64, 0xff9b, 1]
                // NAT64 and 6to4 carry an IPv4 address of their own.
                || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_private(IpAddr::V4(embedded(segments[6], segments[7]))))
                || (segments[0] == 0x2002 && is_private(IpAddr::V4(embedded(segments[1], segments[2]))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_networks_are_private() {
        for ip in [
            "127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.1.1", "100.64.0.1", "224.0.0.251", "0.1.2.3",
            "240.0.0.1", "198.18.0.1", "::1", "fd00::1", "fe80::1", "fec0::1", "ff02::1", "::ffff:10.0.0.1",
            "64:ff9b::a00:1", "2002:c0a8:1::1", "::10.0.0.1", "64:ff9b:1::808:808",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "192.0.2.1", "2001:db8::1", "100.128.0.1", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
