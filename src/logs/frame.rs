//! Cutting the raw bytes of one pipe into log lines.
//!
//! A pipe delivers bytes in arbitrary pieces; the log file holds whole lines so that
//! rotation can happen between lines and a follower never prints half of one. A line
//! longer than [`MAX_LINE`] is cut into pieces of that size, each ending in `\n`, so a
//! service printing a 10 MB line loses nothing and paiosd's memory stays bounded.
//! Bytes are copied as they are: output that is not UTF-8 stays byte-exact.

use memchr::{memchr, memrchr};

/// The longest line content kept in one piece; longer lines are split.
pub const MAX_LINE: usize = 64 * 1024;

/// The unfinished last line of one pipe, carried between reads.
#[derive(Debug, Default)]
pub struct Framer {
    partial: Vec<u8>,
}

impl Framer {
    /// Appends every line that `data` completes to `out`, each as `prefix`, the content
    /// and `\n`; keeps the unfinished rest. Returns the number of lines appended.
    pub fn push(&mut self, data: &[u8], prefix: &[u8], out: &mut Vec<u8>) -> usize {
        let mut lines = 0;
        let mut rest = data;
        while !rest.is_empty() {
            // Invariant: partial is shorter than MAX_LINE, so room >= 1.
            let room = MAX_LINE - self.partial.len();
            let window = &rest[..rest.len().min(room + 1)];
            match memchr(b'\n', window) {
                Some(pos) => {
                    self.emit(&rest[..pos], prefix, out);
                    rest = &rest[pos + 1..];
                    lines += 1;
                }
                None if rest.len() > room => {
                    self.emit(&rest[..room], prefix, out);
                    rest = &rest[room..];
                    lines += 1;
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    break;
                }
            }
        }
        lines
    }

    /// At end of file: the unfinished line, if any, becomes a line of its own.
    pub fn finish(&mut self, prefix: &[u8], out: &mut Vec<u8>) -> usize {
        if self.partial.is_empty() {
            return 0;
        }
        self.emit(&[], prefix, out);
        1
    }

    /// The bytes of the line not finished yet.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    fn emit(&mut self, tail: &[u8], prefix: &[u8], out: &mut Vec<u8>) {
        out.reserve(prefix.len() + self.partial.len() + tail.len() + 1);
        out.extend_from_slice(prefix);
        out.extend_from_slice(&self.partial);
        out.extend_from_slice(tail);
        out.push(b'\n');
        self.partial.clear();
    }
}

/// The contents (without `prefix_len` bytes of prefix and without `\n`) of the last
/// `n` lines in `framed`, oldest first. `framed` holds whole lines only.
pub fn last_lines(framed: &[u8], prefix_len: usize, n: usize) -> Vec<&[u8]> {
    let mut found = Vec::new();
    let mut end = framed.len();
    while found.len() < n && end > 0 {
        // framed[end - 1] is the newline closing the line being looked at.
        let start = memrchr(b'\n', &framed[..end - 1]).map_or(0, |p| p + 1);
        let line = &framed[start..end - 1];
        found.push(line.get(prefix_len..).unwrap_or(&[]));
        end = start;
    }
    found.reverse();
    found
}

/// The number of complete lines in `bytes`.
pub fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(pieces: &[&[u8]], prefix: &[u8]) -> (Vec<u8>, usize) {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let mut n = 0;
        for p in pieces {
            n += f.push(p, prefix, &mut out);
        }
        n += f.finish(prefix, &mut out);
        (out, n)
    }

    #[test]
    fn lines_across_pieces_are_joined() {
        let (out, n) = frame_all(&[b"ab", b"c\nde", b"f\n", b"g"], b"");
        assert_eq!(out, b"abc\ndef\ng\n");
        assert_eq!(n, 3);
    }

    #[test]
    fn prefix_goes_before_every_line() {
        let (out, n) = frame_all(&[b"a\nb\n"], b"P ");
        assert_eq!(out, b"P a\nP b\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn empty_lines_are_kept() {
        let (out, _) = frame_all(&[b"\n\nx\n"], b"");
        assert_eq!(out, b"\n\nx\n");
    }

    #[test]
    fn long_line_is_split_without_losing_bytes() {
        let line: Vec<u8> = (0..(MAX_LINE * 3 + 17))
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut data = line.clone();
        data.push(b'\n');
        let pieces: Vec<&[u8]> = data.chunks(5000).collect();
        let (out, n) = frame_all(&pieces, b"");
        assert_eq!(n, 4);
        let parts: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(parts[0].len(), MAX_LINE);
        assert_eq!(parts[3].len(), 17);
        let joined: Vec<u8> = parts.concat();
        assert_eq!(joined, line);
    }

    #[test]
    fn line_of_exactly_max_is_one_line() {
        let mut data = vec![b'x'; MAX_LINE];
        data.push(b'\n');
        let (out, n) = frame_all(&[&data], b"");
        assert_eq!(n, 1);
        assert_eq!(out, data);
    }

    #[test]
    fn binary_bytes_are_kept() {
        let data: Vec<u8> = (0..=255u8).collect();
        let (out, _) = frame_all(&[&data], b"");
        let mut want = data.clone();
        want.push(b'\n');
        assert_eq!(out, want);
    }

    #[test]
    fn last_lines_strips_prefix() {
        let framed = b"P a\nP b\nP c\n";
        assert_eq!(last_lines(framed, 2, 2), vec![&b"b"[..], &b"c"[..]]);
        assert_eq!(last_lines(framed, 2, 9).len(), 3);
        assert_eq!(last_lines(b"\n", 0, 3), vec![&b""[..]]);
        assert!(last_lines(b"", 0, 3).is_empty());
        assert_eq!(count_lines(framed), 3);
    }
}
