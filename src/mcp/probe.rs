//! The MCP-aware health probe (`[health] mcp = true`): a JSON-RPC `ping` with an id of
//! paiosd's own, sent over the server's real transport, and the reply picked out.
//!
//! Any JSON-RPC reply to the ping counts as alive, an error included: a server of the
//! 2026-07-28 revision has no `ping` and answers -32601 (method not found), which shows
//! as well as a result that it reads requests and answers them. Nothing else is sent
//! (no `server/discover`): the error already answers the question, and a second request
//! would only be a second way to time out.
//!
//! The ids are `paios-probe-<nonce>-<n>`, the nonce random per connection or prober, so
//! no client can send an id that paiosd would take for its own. Over stdio the pings go
//! on paiosd's own pipe to each client's run (see `serve`), and the replies to them are
//! taken out of what the client reads.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::jsonrpc::{self, Shape};
use super::sse::{SseEvent, SseParser};
use crate::config::probe::HttpTarget;
use crate::health::probe::{connect, http_error};

/// What the ids of paiosd's pings start with.
pub const ID_PREFIX: &str = "paios-probe-";

/// Body bytes read from an HTTP answer to a ping before it is given up on: a ping's
/// answer is tiny, and a server that streams forever must not keep the probe busy.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The ids of one prober's pings.
#[derive(Debug, Clone)]
pub struct PingIds {
    /// `paios-probe-<nonce>-`.
    prefix: String,
}

impl PingIds {
    /// Ids with a fresh random nonce.
    pub fn new() -> PingIds {
        PingIds::with_nonce(fastrand::u64(..))
    }

    pub fn with_nonce(nonce: u64) -> PingIds {
        PingIds {
            prefix: format!("{ID_PREFIX}{nonce:016x}-"),
        }
    }

    /// The id of ping `n`.
    pub fn id(&self, n: u64) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Ping `n` as one JSON-RPC line, newline included.
    pub fn line(&self, n: u64) -> Vec<u8> {
        let mut line = serde_json::json!({"jsonrpc": "2.0", "id": self.id(n), "method": "ping"})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        line
    }

    /// When `line` is a reply (a result or an error) to one of these pings, its `n`.
    ///
    /// A line without the prefix is not parsed at all, so a server's ordinary output
    /// costs one substring search. Requests and notifications never match, whatever
    /// their id: only an answer is taken.
    pub fn reply_to(&self, line: &[u8]) -> Option<u64> {
        memchr::memmem::find(line, self.prefix.as_bytes())?;
        let Ok(Shape::One(message)) = jsonrpc::peek(line) else {
            return None;
        };
        match message.answered_id()? {
            Value::String(id) => id.strip_prefix(&self.prefix)?.parse().ok(),
            _ => None,
        }
    }

    /// Whether one JSON-RPC message received in the HTTP answer to ping `n` shows the
    /// server alive: a reply with its id, or an error with id `null` (a server that
    /// keeps sessions refuses a request without one before it reads the id, and the
    /// HTTP exchange already pairs that error with the ping).
    fn answers(&self, data: &[u8], n: u64) -> bool {
        let Ok(shape) = jsonrpc::peek(data) else {
            return false;
        };
        shape.messages().iter().any(|m| match m.answered_id() {
            Some(Value::String(id)) => id.strip_prefix(&self.prefix) == Some(&n.to_string()),
            Some(Value::Null) => true,
            _ => false,
        })
    }
}

impl Default for PingIds {
    fn default() -> Self {
        PingIds::new()
    }
}

/// One ping by HTTP POST to a Streamable HTTP server's endpoint; `Ok` when a JSON-RPC
/// reply to it comes back, in a JSON body or an event stream, whatever the HTTP status.
///
/// The POST carries no `Mcp-Session-Id`: a server that keeps sessions answers it with
/// HTTP 400 and a JSON-RPC error (id `null` or the ping's), which counts as alive, and
/// opens no session for the probe; a stateless server answers the ping itself. An HTTP
/// answer without any JSON-RPC reply in it (an HTML 404, an empty 202) is a failure.
pub async fn http_ping(target: &HttpTarget, ids: &PingIds, n: u64) -> Result<(), String> {
    let (stream, addr) = connect(&target.host, target.port).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
    let request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.host_header())
        .header(hyper::header::USER_AGENT, "paiosd-health")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json, text/event-stream")
        .header(hyper::header::CONNECTION, "close")
        .body(Full::new(Bytes::from(ids.line(n))))
        .map_err(|e| {
            format!(
                "MCP probe URL {:?} makes no valid request: {e}",
                target.as_str()
            )
        })?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_error(&e, addr))?;
        read_answer(response, ids, n, addr).await
    };
    // Driven here beside the request, so that a probe dropped at its timeout closes
    // the connection with it.
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            ended = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = ended {
                    return Err(http_error(&e, addr));
                }
            }
        }
    }
}

async fn read_answer(
    response: hyper::Response<Incoming>,
    ids: &PingIds,
    n: u64,
    addr: SocketAddr,
) -> Result<(), String> {
    let status = response.status();
    let kind = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut body = response.into_body();
    let mut read = 0usize;
    let answered = if kind.starts_with("text/event-stream") {
        let mut parser = SseParser::new(MAX_ANSWER);
        let mut found = false;
        while !found && read < MAX_ANSWER {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.map_err(|e| http_error(&e, addr))?;
            if let Some(chunk) = frame.data_ref() {
                read += chunk.len();
                parser.feed(chunk, &mut |event| {
                    if let SseEvent::Message(data) = event {
                        found |= ids.answers(&data, n);
                    }
                });
            }
        }
        found
    } else {
        let mut data = Vec::new();
        while read < MAX_ANSWER {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.map_err(|e| http_error(&e, addr))?;
            if let Some(chunk) = frame.data_ref() {
                read += chunk.len();
                data.extend_from_slice(chunk);
            }
        }
        ids.answers(&data, n)
    };
    if answered {
        return Ok(());
    }
    let kind = if kind.is_empty() {
        "no content type"
    } else {
        kind.as_str()
    };
    Err(format!(
        "HTTP {} ({kind}) without a JSON-RPC reply to the ping",
        status.as_u16()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PingIds {
        PingIds::with_nonce(0xabc)
    }

    #[test]
    fn the_ping_line_is_one_request_with_a_reserved_id() {
        let line = ids().line(7);
        assert_eq!(
            std::str::from_utf8(&line).expect("utf-8"),
            "{\"id\":\"paios-probe-0000000000000abc-7\",\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\n"
        );
        assert_ne!(PingIds::new().id(1), PingIds::new().id(1));
    }

    #[test]
    fn any_reply_to_a_ping_matches_its_number() {
        let ids = ids();
        let id = ids.id(3);
        let result = format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":{{}}}}"#);
        assert_eq!(ids.reply_to(result.as_bytes()), Some(3));
        let with_crlf = format!("{result}\r\n");
        assert_eq!(ids.reply_to(with_crlf.as_bytes()), Some(3));
        let not_found = format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32601,"message":"Method not found"}},"id":"{id}"}}"#
        );
        assert_eq!(ids.reply_to(not_found.as_bytes()), Some(3));
        let spaced = format!("  {{ \"result\" : null , \"id\" : \"{id}\" }}\n");
        assert_eq!(ids.reply_to(spaced.as_bytes()), Some(3));
    }

    #[test]
    fn other_lines_are_not_replies_to_a_ping() {
        let ids = ids();
        let id = ids.id(3);
        let other = PingIds::with_nonce(0xdef).id(3);
        let lines = [
            // The client's own traffic.
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":"3","result":{}}"#.to_string(),
            // Another prober's nonce, or the prefix alone.
            format!(r#"{{"jsonrpc":"2.0","id":"{other}","result":{{}}}}"#),
            r#"{"jsonrpc":"2.0","id":"paios-probe-","result":{}}"#.to_string(),
            // Not an answer: a request or notification with the id or text in it.
            format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"ping"}}"#),
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{id}"}}}}"#
            ),
            format!(r#"{{"jsonrpc":"2.0","id":"{id}"}}"#),
            // The id inside a result, not as the id.
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"id":"{id}"}}}}"#),
            // A suffix that is not a number; a batch; broken JSON.
            format!(r#"{{"jsonrpc":"2.0","id":"{id}x","result":{{}}}}"#),
            format!(r#"[{{"jsonrpc":"2.0","id":"{id}","result":{{}}}}]"#),
            format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":"#),
        ];
        for line in lines {
            assert_eq!(ids.reply_to(line.as_bytes()), None, "{line}");
        }
        assert_eq!(ids.reply_to(b"\xff\xfe paios-probe-"), None);
    }

    #[test]
    fn an_http_answer_counts_with_its_id_or_a_null_id_error() {
        let ids = ids();
        let id = ids.id(5);
        let yes = [
            format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":{{}}}}"#),
            format!(r#"{{"jsonrpc":"2.0","error":{{"code":-32000,"message":"Bad Request: No valid session ID provided"}},"id":"{id}"}}"#),
            r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"},"id":null}"#.to_string(),
            format!(r#"[{{"jsonrpc":"2.0","id":"{id}","result":{{}}}}]"#),
        ];
        for data in yes {
            assert!(ids.answers(data.as_bytes(), 5), "{data}");
        }
        let no = [
            format!(r#"{{"jsonrpc":"2.0","id":"{}","result":{{}}}}"#, ids.id(4)),
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_string(),
            r#"{"jsonrpc":"2.0","method":"notifications/message"}"#.to_string(),
            "Bad Request".to_string(),
            String::new(),
        ];
        for data in no {
            assert!(!ids.answers(data.as_bytes(), 5), "{data}");
        }
    }
}
