//! An upstream connection as the pool keeps it.
//!
//! The connector's stream type nests TLS twice (to an `https://` proxy, then to the upstream),
//! and holds rustls's state inline: 2,184 bytes in every connection's task, where a plain TCP
//! stream needs a few dozen. A plain connection (an `http://` upstream such as a local model
//! server, directly or through an `http://` or SOCKS proxy) keeps only its stream; anything
//! with TLS in it keeps its stream behind a box of that size, as before.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use tokio::net::TcpStream;

use super::outbound::Transport;

/// What the connector hands the pool (see the [module docs](self)).
#[derive(Debug)]
pub(crate) enum UpstreamIo {
    /// Plain TCP all the way.
    Plain(TokioIo<TcpStream>),
    /// TLS to the upstream, to the proxy, or both.
    Tls(Box<MaybeHttpsStream<Transport>>),
}

impl From<MaybeHttpsStream<Transport>> for UpstreamIo {
    fn from(stream: MaybeHttpsStream<Transport>) -> Self {
        match stream {
            MaybeHttpsStream::Http(MaybeHttpsStream::Http(tcp)) => Self::Plain(tcp),
            tls => Self::Tls(Box::new(tls)),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(tcp) => tcp.connected(),
            Self::Tls(tls) => tls.connected(),
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    #[test]
    fn a_plain_connection_keeps_no_room_for_tls() {
        assert!(size_of::<UpstreamIo>() <= 4 * size_of::<TokioIo<TcpStream>>());
        assert!(size_of::<MaybeHttpsStream<Transport>>() > 16 * size_of::<UpstreamIo>());
    }
}
