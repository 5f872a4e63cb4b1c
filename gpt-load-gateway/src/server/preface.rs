//! Which HTTP version a connection speaks, told from its first bytes without losing them.
//!
//! A client that speaks HTTP/2 without TLS (h2c with prior knowledge) opens with a fixed
//! preface; any other first bytes are HTTP/1.1. The bytes read to tell are handed back to hyper
//! by [`Preface`]'s first read *together with* whatever the socket already holds. hyper-util's
//! automatic builder hands them back as a read of their own: hyper's first read then returns
//! those few bytes, its second must make room for a full read after them, and the connection's
//! read buffer doubles from 8 to 16 KiB for its whole life (5 KB of resident memory a held
//! stream, measured in `bench/results/2026-12-07-stream-memory.md`).

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The version a connection's first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// A connection whose first bytes were read to tell its version; its first read returns them.
#[derive(Debug)]
pub(super) struct Preface<T> {
    io: T,
    held: [u8; H2_PREFACE.len()],
    /// `held[start..end]` is still to be returned.
    start: usize,
    end: usize,
}

impl<T: AsyncRead + Unpin> Preface<T> {
    /// Reads until the version is known: at the first byte that differs from HTTP/2's preface,
    /// at the whole preface, or at the end of the stream (HTTP/1.1, which then sees the end).
    pub(super) async fn read(io: T) -> io::Result<(Protocol, Self)> {
        let mut this = Self {
            io,
            held: [0; H2_PREFACE.len()],
            start: 0,
            end: 0,
        };
        let protocol = poll_fn(|cx| this.poll_protocol(cx)).await?;
        Ok((protocol, this))
    }

    fn poll_protocol(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Protocol>> {
        while self.end < H2_PREFACE.len() {
            let mut buf = ReadBuf::new(&mut self.held[self.end..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let read = buf.filled().len();
            let (from, to) = (self.end, self.end + read);
            self.end = to;
            if read == 0 || self.held[from..to] != H2_PREFACE[from..to] {
                return Poll::Ready(Ok(Protocol::Http1));
            }
        }
        Poll::Ready(Ok(Protocol::Http2))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Preface<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let held = &this.held[this.start..this.end];
        let taken = held.len().min(buf.remaining());
        buf.put_slice(&held[..taken]);
        this.start += taken;
        if this.start == this.end && buf.remaining() > 0 {
            // The rest of what has arrived comes with them. Nothing more is waited for here: a
            // pending read registered this task for the next bytes, and an error reached now
            // is reached again by the next read.
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Preface<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn a_request_that_has_arrived_is_returned_whole_by_the_first_read() {
        let (mut client, server) = duplex(64 * 1024);
        client.write_all(REQUEST).await.unwrap();
        let (protocol, mut io) = Preface::read(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut buf = vec![0; 8192];
        let read = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..read], REQUEST);
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_and_returned_with_what_follows() {
        let (mut client, server) = duplex(64 * 1024);
        let mut sent = H2_PREFACE.to_vec();
        sent.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        client.write_all(&sent).await.unwrap();
        let (protocol, mut io) = Preface::read(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut buf = vec![0; 8192];
        let read = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..read], &sent[..]);
    }

    /// Bytes that trickle in one at a time: the version is told when the bytes first differ
    /// from the preface (or when it is whole), and every byte reaches the reader in order.
    #[tokio::test]
    async fn bytes_that_arrive_one_at_a_time_are_told_and_kept_in_order() {
        let mut preface_then_frame = H2_PREFACE.to_vec();
        preface_then_frame.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        let cases: [(&[u8], Protocol); 4] = [
            (REQUEST, Protocol::Http1),
            (b"PRIVATE / HTTP/1.1\r\n\r\n", Protocol::Http1),
            (b"PRI * HTTP/1.1\r\n\r\n", Protocol::Http1),
            (&preface_then_frame, Protocol::Http2),
        ];
        for (sent, expected) in cases {
            let (mut client, server) = duplex(64 * 1024);
            let bytes = sent.to_vec();
            let writer = tokio::spawn(async move {
                for byte in bytes {
                    client.write_all(&[byte]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let (protocol, mut io) = Preface::read(server).await.unwrap();
            assert_eq!(protocol, expected, "{}", String::from_utf8_lossy(sent));
            writer.await.unwrap();
            let mut received = Vec::new();
            io.read_to_end(&mut received).await.unwrap();
            assert_eq!(received, sent);
        }
    }

    #[tokio::test]
    async fn a_connection_closed_at_once_is_http1_at_its_end() {
        let (client, server) = duplex(1024);
        drop(client);
        let (protocol, mut io) = Preface::read(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut buf = [0; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_short_reader_gets_the_held_bytes_over_several_reads() {
        let (mut client, server) = duplex(1024);
        client.write_all(&H2_PREFACE[..]).await.unwrap();
        let (_, mut io) = Preface::read(server).await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0; 5];
        while received.len() < H2_PREFACE.len() {
            let read = io.read(&mut buf).await.unwrap();
            received.extend_from_slice(&buf[..read]);
        }
        assert_eq!(received, H2_PREFACE);
        client.write_all(b"next").await.unwrap();
        let read = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..read], b"next");
    }
}
