//! Server-sent events, as a Streamable HTTP server sends its JSON-RPC messages: the
//! parser is fed the body chunk by chunk and gives each `message` event's data.
//!
//! Lines end with `\r\n`, `\n` or `\r` (also split across chunks); `data:` fields are
//! joined with `\n`; a comment (`:`) or another field is skipped; an event is given at
//! the blank line that ends it, and one cut off by the end of the stream is dropped, as
//! the HTML standard says. Data over the cap is not held: its start is kept, to find
//! the `id` of the answer that could not be passed on.

use super::frame::HEAD_KEEP;

/// One event's payload.
#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    /// The data of a `message` event (or one without `event:`).
    Message(Vec<u8>),
    /// Data over the cap: its start and its length.
    TooLong { head: Vec<u8>, len: u64 },
}

/// An incremental parser of one event stream.
pub struct SseParser {
    cap: usize,
    line: Vec<u8>,
    /// The current line went over the cap: the rest of it is read past.
    line_over: bool,
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    data_len: u64,
    data_over: bool,
    event: Vec<u8>,
}

impl SseParser {
    pub fn new(cap: usize) -> SseParser {
        SseParser {
            cap,
            line: Vec::new(),
            line_over: false,
            after_cr: false,
            data: Vec::new(),
            has_data: false,
            data_len: 0,
            data_over: false,
            event: Vec::new(),
        }
    }

    /// Parses `chunk`, giving every event it completes to `emit`.
    pub fn feed(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(SseEvent)) {
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while !chunk.is_empty() {
            match memchr::memchr2(b'\n', b'\r', chunk) {
                None => {
                    self.push_line(chunk);
                    return;
                }
                Some(at) => {
                    self.push_line(&chunk[..at]);
                    let cr = chunk[at] == b'\r';
                    chunk = &chunk[at + 1..];
                    if cr {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            None => self.after_cr = true,
                            Some(_) => {}
                        }
                    }
                    self.end_line(emit);
                }
            }
        }
    }

    fn push_line(&mut self, bytes: &[u8]) {
        if self.line_over {
            self.data_len += bytes.len() as u64;
            return;
        }
        // `data: ` and the field name fit in the slack.
        if self.line.len() + bytes.len() > self.cap.saturating_add(16) {
            let room = HEAD_KEEP.saturating_sub(self.line.len()).min(bytes.len());
            self.line.extend_from_slice(&bytes[..room]);
            self.data_len += (bytes.len() - room) as u64;
            self.line_over = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, emit: &mut impl FnMut(SseEvent)) {
        let line = std::mem::take(&mut self.line);
        let over = std::mem::replace(&mut self.line_over, false);
        if line.is_empty() && !over {
            self.dispatch(emit);
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.append(b"\n");
                }
                self.has_data = true;
                self.append(value);
                if over {
                    self.data_over = true;
                }
            }
            b"event" => self.event = value.to_vec(),
            _ => {}
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        self.data_len += bytes.len() as u64;
        if self.data_over {
            return;
        }
        if self.data.len() + bytes.len() > self.cap {
            let room = HEAD_KEEP.saturating_sub(self.data.len()).min(bytes.len());
            self.data.extend_from_slice(&bytes[..room]);
            self.data.truncate(HEAD_KEEP);
            self.data_over = true;
            return;
        }
        self.data.extend_from_slice(bytes);
    }

    fn dispatch(&mut self, emit: &mut impl FnMut(SseEvent)) {
        let data = std::mem::take(&mut self.data);
        let event = std::mem::take(&mut self.event);
        let (has_data, over, len) = (self.has_data, self.data_over, self.data_len);
        self.has_data = false;
        self.data_over = false;
        self.data_len = 0;
        if !has_data || !(event.is_empty() || event == b"message") {
            return;
        }
        emit(if over {
            SseEvent::TooLong { head: data, len }
        } else {
            SseEvent::Message(data)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]], cap: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new(cap);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |e| out.push(e));
        }
        out
    }

    fn message(s: &str) -> SseEvent {
        SseEvent::Message(s.as_bytes().to_vec())
    }

    #[test]
    fn events_end_at_a_blank_line_in_every_line_ending() {
        let got = parse(
            &[
                b"event: message\ndata: {\"a\":1}\n\n",
                b"data:{\"b\":2}\r\n\r\n",
                b"data: {\"c\":3}\r\r",
            ],
            1000,
        );
        assert_eq!(
            got,
            vec![
                message(r#"{"a":1}"#),
                message(r#"{"b":2}"#),
                message(r#"{"c":3}"#)
            ]
        );
    }

    #[test]
    fn data_fields_join_with_newlines_and_other_fields_are_skipped() {
        let got = parse(
            &[b": keep-alive\n\nid: 7\nretry: 10\ndata: {\"a\":\ndata:  1}\n\n"],
            1000,
        );
        assert_eq!(got, vec![message("{\"a\":\n 1}")]);
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let stream = b"data: {\"x\":\"y\"}\r\n\r\nevent: ping\ndata: skipped\n\ndata: last\r\n\r\n";
        let whole = parse(&[stream], 1000);
        assert_eq!(whole, vec![message(r#"{"x":"y"}"#), message("last")]);
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(parse(&[a, b], 1000), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse(&bytes, 1000), whole);
    }

    #[test]
    fn an_event_cut_off_by_the_end_is_dropped() {
        assert_eq!(parse(&[b"data: {}\n"], 1000), vec![]);
        assert_eq!(parse(&[b"\n\n\n"], 1000), vec![]);
    }

    #[test]
    fn data_over_the_cap_keeps_only_its_start() {
        let mut stream = b"data: {\"id\":5,\"s\":\"".to_vec();
        stream.extend(std::iter::repeat_n(b'z', 100_000));
        stream.extend_from_slice(b"\"}\n\ndata: ok\n\n");
        let got = parse(&[&stream], 1000);
        assert_eq!(got.len(), 2);
        let SseEvent::TooLong { head, len } = &got[0] else {
            panic!("not over the cap: {got:?}");
        };
        assert!(head.starts_with(b"{\"id\":5"));
        assert!(head.len() <= HEAD_KEEP);
        assert_eq!(*len, 13 + 100_000 + 2);
        assert_eq!(got[1], message("ok"));
        let parts: Vec<&[u8]> = stream.chunks(777).collect();
        let chunked = parse(&parts, 1000);
        assert!(
            matches!(&chunked[0], SseEvent::TooLong { head, len: 100_015 } if head.starts_with(b"{\"id\":5")),
            "chunked: the first event is not the long one cut short"
        );
        assert_eq!(chunked[1], message("ok"));
    }
}
