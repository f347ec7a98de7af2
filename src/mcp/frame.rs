//! Newline-delimited framing with a cap, for the bridge's stdin and the server's side.
//!
//! A line is what comes before `\n`, with one trailing `\r` dropped. A line longer
//! than the cap is never held whole: its first [`HEAD_KEEP`] and last [`TAIL_KEEP`]
//! bytes are kept (enough to find a request's `id` at either end) and the rest is read
//! past, so a client that sends a gigabyte without a newline costs a few KiB.

use std::io::{self, BufRead};

/// How much of an over-long line's start is kept to look for its `id`.
pub const HEAD_KEEP: usize = 4096;
/// How much of an over-long line's end is kept, for an `id` written last.
pub const TAIL_KEEP: usize = 256;

/// One unit read from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole line, without its `\n` (or `\r\n`), in the reader's buffer.
    Line,
    /// A line over the cap, read past: its start, its end and its length in bytes.
    TooLong {
        head: Vec<u8>,
        tail: Vec<u8>,
        len: u64,
    },
    /// The stream ended (a last line without `\n` came as a [`Frame::Line`] before).
    Eof,
}

/// Reads lines of at most `cap` bytes from one stream.
pub struct Framer<R> {
    reader: R,
    cap: usize,
    /// The current line, valid after [`Frame::Line`].
    line: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Framer<R> {
    pub fn new(reader: R, cap: usize) -> Framer<R> {
        Framer {
            reader,
            cap,
            line: Vec::new(),
            done: false,
        }
    }

    /// The line the last [`Frame::Line`] read.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The line the last [`Frame::Line`] read, for the caller to append to and write.
    pub fn line_mut(&mut self) -> &mut Vec<u8> {
        &mut self.line
    }

    /// The next line, an over-long line skipped, or the end.
    pub fn next_frame(&mut self) -> io::Result<Frame> {
        // A buffer grown by one large line is not kept for the small ones after it.
        if self.line.capacity() > 1 << 20 {
            self.line = Vec::new();
        }
        self.line.clear();
        if self.done {
            return Ok(Frame::Eof);
        }
        let mut skipped: Option<Skipped> = None;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                self.done = true;
                return Ok(match skipped {
                    Some(s) => s.finish(),
                    None if self.line.is_empty() => Frame::Eof,
                    None => {
                        strip_cr(&mut self.line);
                        Frame::Line
                    }
                });
            }
            let (chunk, complete) = match memchr::memchr(b'\n', available) {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            let used = chunk.len() + usize::from(complete);
            match skipped.as_mut() {
                Some(s) => s.push(chunk),
                // One byte of slack for a `\r` that is dropped below.
                None if self.line.len() + chunk.len() > self.cap.saturating_add(1) => {
                    let mut s = Skipped::default();
                    s.push(&self.line);
                    s.push(chunk);
                    self.line = Vec::new();
                    skipped = Some(s);
                }
                None => self.line.extend_from_slice(chunk),
            }
            self.reader.consume(used);
            if complete {
                if let Some(s) = skipped {
                    return Ok(s.finish());
                }
                strip_cr(&mut self.line);
                if self.line.len() > self.cap {
                    let len = self.line.len() as u64;
                    let mut s = Skipped::default();
                    s.push(&std::mem::take(&mut self.line));
                    s.len = len;
                    return Ok(s.finish());
                }
                return Ok(Frame::Line);
            }
        }
    }
}

fn strip_cr(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

/// What is kept of a line being read past.
#[derive(Default)]
struct Skipped {
    head: Vec<u8>,
    tail: Vec<u8>,
    len: u64,
}

impl Skipped {
    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let room = HEAD_KEEP.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        if bytes.len() >= TAIL_KEEP {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - TAIL_KEEP..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let excess = self.tail.len().saturating_sub(TAIL_KEEP);
            self.tail.drain(..excess);
        }
    }

    fn finish(mut self) -> Frame {
        if self.tail.last() == Some(&b'\r') {
            self.tail.pop();
            self.len -= 1;
        }
        Frame::TooLong {
            head: self.head,
            tail: self.tail,
            len: self.len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    /// A line, or an over-long line's length and kept end.
    type Read = Result<Vec<u8>, (u64, Vec<u8>)>;

    fn frames(input: &[u8], cap: usize, buffer: usize) -> Vec<Read> {
        let reader = BufReader::with_capacity(buffer, Cursor::new(input.to_vec()));
        let mut framer = Framer::new(reader, cap);
        let mut out = Vec::new();
        loop {
            match framer.next_frame().expect("read") {
                Frame::Line => out.push(Ok(framer.line().to_vec())),
                Frame::TooLong { tail, len, .. } => out.push(Err((len, tail))),
                Frame::Eof => return out,
            }
        }
    }

    #[test]
    fn lines_split_on_newline_and_drop_one_cr() {
        let got = frames(b"a\nbb\r\n\r\nc\r\r\nlast", 100, 3);
        let want: Vec<Read> = vec![
            Ok(b"a".to_vec()),
            Ok(b"bb".to_vec()),
            Ok(b"".to_vec()),
            Ok(b"c\r".to_vec()),
            Ok(b"last".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_at_the_cap_passes_and_one_over_is_skipped() {
        let mut input = vec![b'x'; 10];
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&[b'y'; 11]);
        input.extend_from_slice(b"\nok\n");
        for buffer in [1, 4, 64] {
            let got = frames(&input, 10, buffer);
            assert_eq!(got.len(), 3, "buffer {buffer}: {got:?}");
            assert_eq!(got[0], Ok(vec![b'x'; 10]));
            assert_eq!(got[1], Err((11, vec![b'y'; 11])));
            assert_eq!(got[2], Ok(b"ok".to_vec()));
        }
    }

    #[test]
    fn an_over_long_line_keeps_only_its_ends() {
        let mut input = br#"{"id":7,"x":""#.to_vec();
        input.extend(std::iter::repeat_n(b'z', 1 << 20));
        input.extend_from_slice(b"\",\"id\":8}\r\n");
        let reader = BufReader::with_capacity(8192, Cursor::new(input.clone()));
        let mut framer = Framer::new(reader, 1000);
        let Frame::TooLong { head, tail, len } = framer.next_frame().expect("read") else {
            panic!("not skipped");
        };
        assert_eq!(len as usize, input.len() - 2);
        assert_eq!(head.len(), HEAD_KEEP);
        assert!(head.starts_with(br#"{"id":7"#));
        assert!(tail.len() <= TAIL_KEEP && tail.len() >= TAIL_KEEP - 1);
        assert!(tail.ends_with(br#""id":8}"#));
        assert_eq!(framer.line_mut().capacity(), 0, "the line was never held");
        assert_eq!(framer.next_frame().expect("read"), Frame::Eof);
    }

    #[test]
    fn an_over_long_last_line_without_newline_is_skipped() {
        let got = frames(&[b'q'; 50], 10, 8);
        assert_eq!(got, vec![Err((50, vec![b'q'; 50]))]);
    }
}
