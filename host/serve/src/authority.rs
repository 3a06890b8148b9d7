//! The Unix socket's `:authority` fix: gRPC Python (C-core) and Java send the socket path as the
//! HTTP/2 `:authority` (`tmp%2Fx.sock`, `/tmp/x.sock`), which h2 refuses as no valid authority
//! and resets the stream (PROTOCOL_ERROR) before tonic sees it; no h2 option relaxes that.
//!
//! [`UnixAuthority`] wraps an accepted Unix stream and, in each HEADERS frame the client sends,
//! rewrites a literal (not Huffman-coded) `:authority` value in place, byte for byte, into a
//! valid host name: `tmp%2Fx.sock` becomes `tmp-2Fx.sock`. The length stays the same, so both
//! sides' HPACK tables stay in step and no frame length changes. Later requests that name the
//! entry by its index get the rewritten value from h2's own table. A header block split into
//! CONTINUATION frames, or an `:authority` whose name comes from the dynamic table or whose value
//! is Huffman-coded, passes unchanged (neither client was seen to send those).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client's connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HEADERS frames up to this are held whole to be rewritten: HTTP/2's default frame size limit,
/// which h2 keeps. A longer one passes unchanged, for h2 to refuse.
const MAX_HELD: usize = 16 * 1024;
/// `:authority` in HPACK's static table.
const AUTHORITY_INDEX: usize = 1;

pub struct UnixAuthority<T> {
    io: T,
    /// Bytes ready for the reader.
    ready: Vec<u8>,
    preface_left: usize,
    /// A frame header being read.
    header: Vec<u8>,
    /// Payload bytes of the current frame that pass as they come.
    pass_left: usize,
    /// A HEADERS frame (header and payload) being held, with how many bytes it still needs.
    held: Option<(Vec<u8>, usize)>,
}

impl<T> UnixAuthority<T> {
    pub fn new(io: T) -> UnixAuthority<T> {
        UnixAuthority {
            io,
            ready: Vec::new(),
            preface_left: PREFACE_LEN,
            header: Vec::with_capacity(FRAME_HEADER_LEN),
            pass_left: 0,
            held: None,
        }
    }

    /// Takes bytes read from the client; what can go on is appended to `ready`.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            let take = |n: usize, input: &mut &[u8]| {
                let (head, rest) = input.split_at(n.min(input.len()));
                *input = rest;
                head.to_vec()
            };
            if self.preface_left > 0 {
                let bytes = take(self.preface_left, &mut input);
                self.preface_left -= bytes.len();
                self.ready.extend(bytes);
            } else if self.pass_left > 0 {
                let bytes = take(self.pass_left, &mut input);
                self.pass_left -= bytes.len();
                self.ready.extend(bytes);
            } else if let Some((frame, need)) = &mut self.held {
                let bytes = take(*need, &mut input);
                *need -= bytes.len();
                frame.extend(bytes);
                self.release_held();
            } else {
                let bytes = take(FRAME_HEADER_LEN - self.header.len(), &mut input);
                self.header.extend(bytes);
                if self.header.len() == FRAME_HEADER_LEN {
                    let header = std::mem::take(&mut self.header);
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    if header[3] == HEADERS && len <= MAX_HELD {
                        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + len);
                        frame.extend(header);
                        self.held = Some((frame, len));
                        self.release_held();
                    } else {
                        self.ready.extend(header);
                        self.pass_left = len;
                    }
                }
            }
        }
    }

    /// A held HEADERS frame that is complete is rewritten and goes on.
    fn release_held(&mut self) {
        if let Some((mut frame, 0)) = self.held.take_if(|(_, need)| *need == 0) {
            let flags = frame[4];
            rewrite(&mut frame[FRAME_HEADER_LEN..], flags);
            self.ready.extend(frame);
        }
    }

    /// At the client's end of stream, whatever is held goes on as it is.
    fn flush_held(&mut self) {
        if let Some((frame, _)) = self.held.take() {
            self.ready.extend(frame);
        }
        self.ready.append(&mut self.header);
    }
}

/// An HPACK integer with an `prefix`-bit prefix: its value and how many bytes it took.
fn integer(bytes: &[u8], prefix: u32) -> Option<(usize, usize)> {
    let mask = (1u8 << prefix) - 1;
    let first = bytes.first()? & mask;
    if first < mask {
        return Some((usize::from(first), 1));
    }
    let mut value = usize::from(mask);
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        let shift = 7 * (i - 1);
        if shift > 28 {
            return None;
        }
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// An HPACK string at `pos`: its bytes' range and whether it is Huffman-coded.
fn string(block: &[u8], pos: usize) -> Option<(std::ops::Range<usize>, bool)> {
    let huffman = block.get(pos)? & 0x80 != 0;
    let (len, n) = integer(&block[pos..], 7)?;
    let start = pos + n;
    let end = start.checked_add(len).filter(|&e| e <= block.len())?;
    Some((start..end, huffman))
}

/// Rewrites the literal `:authority` values of a HEADERS frame's payload in place.
fn rewrite(payload: &mut [u8], flags: u8) {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let Some(&pad) = payload.first() else { return };
        start = 1;
        match end.checked_sub(usize::from(pad)) {
            Some(e) if e >= start => end = e,
            _ => return,
        }
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    if start > end {
        return;
    }
    let block = &mut payload[start..end];
    let mut pos = 0;
    while pos < block.len() {
        let b = block[pos];
        // Indexed field (1xxxxxxx) or dynamic table size update (001xxxxx): an integer only.
        if b & 0x80 != 0 || b & 0xe0 == 0x20 {
            let prefix = if b & 0x80 != 0 { 7 } else { 5 };
            let Some((_, n)) = integer(&block[pos..], prefix) else {
                return;
            };
            pos += n;
            continue;
        }
        // A literal: with incremental indexing (01xxxxxx), or without / never indexed (000xxxxx).
        let prefix = if b & 0xc0 == 0x40 { 6 } else { 4 };
        let Some((index, n)) = integer(&block[pos..], prefix) else {
            return;
        };
        pos += n;
        let is_authority = if index == 0 {
            let Some((name, huffman)) = string(block, pos) else {
                return;
            };
            pos = name.end;
            !huffman && &block[name] == b":authority"
        } else {
            index == AUTHORITY_INDEX
        };
        let Some((value, huffman)) = string(block, pos) else {
            return;
        };
        pos = value.end;
        if is_authority && !huffman {
            for byte in &mut block[value] {
                if !(byte.is_ascii_alphanumeric() || b"-._~".contains(byte)) {
                    *byte = b'-';
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for UnixAuthority<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.flush_held();
                    if this.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => this.feed(read.filled()),
                other => return other,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for UnixAuthority<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend(payload);
        f
    }

    fn through(bytes: &[u8], chunk: usize) -> Vec<u8> {
        let mut wrapper = UnixAuthority::new(());
        for piece in bytes.chunks(chunk) {
            wrapper.feed(piece);
        }
        wrapper.flush_held();
        wrapper.ready
    }

    #[test]
    fn grpcio_and_java_authorities_become_host_names() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let settings = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
        // :method POST (indexed 3), then :authority as grpcio sends it: literal with incremental
        // indexing, name index 1, raw value; then as grpc-java does, without indexing.
        let mut block = vec![0x83, 0x41, 12];
        block.extend(b"tmp%2Fx.sock");
        block.extend([0x01, 11]);
        block.extend(b"/tmp/x.sock");
        // A literal name, and a padded frame with priority.
        let mut padded = vec![2, 0, 0, 0, 0, 16, 0x00, 10];
        padded.extend(b":authority");
        padded.extend([5]);
        padded.extend(b"a b:c");
        padded.extend([0, 0]);
        let mut input = preface.clone();
        input.extend(&settings);
        input.extend(frame(HEADERS, 0x4, &block));
        input.extend(frame(HEADERS, 0x4 | PADDED | PRIORITY, &padded));

        let mut expected_block = vec![0x83, 0x41, 12];
        expected_block.extend(b"tmp-2Fx.sock");
        expected_block.extend([0x01, 11]);
        expected_block.extend(b"-tmp-x.sock");
        let mut expected_padded = padded.clone();
        let at = expected_padded.len() - 2 - 5;
        expected_padded[at..at + 5].copy_from_slice(b"a-b-c");
        let mut expected = preface;
        expected.extend(&settings);
        expected.extend(frame(HEADERS, 0x4, &expected_block));
        expected.extend(frame(HEADERS, 0x4 | PADDED | PRIORITY, &expected_padded));

        for chunk in [1, 7, 4096] {
            assert_eq!(through(&input, chunk), expected, "in chunks of {chunk}");
        }
    }

    #[test]
    fn other_fields_and_bad_blocks_pass_unchanged() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // :path as a literal (name index 4), a Huffman-coded :authority, then a truncated field.
        let mut block = vec![0x44, 3];
        block.extend(b"/a%");
        block.extend([0x41, 0x82, 0xff, 0xff, 0x41, 9]);
        block.extend(b"cut");
        input.extend(frame(HEADERS, 0x4, &block));
        input.extend(frame(0x0, 0x1, b"data with %/ bytes"));
        assert_eq!(through(&input, 3), input);
        // The client leaves mid-frame: what came is passed on as it is.
        let cut = &input[..input.len() - 30];
        assert_eq!(through(cut, 5), cut);
    }

    #[test]
    fn integers() {
        assert_eq!(integer(&[0x0a], 5), Some((10, 1)));
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5), Some((1337, 3)));
        assert_eq!(integer(&[0x1f, 0x9a], 5), None);
        assert_eq!(
            integer(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 7),
            None
        );
    }
}
