//! The bridge to a server that speaks Streamable HTTP itself (`transport = "http"`):
//! each client line is POSTed to the server's URL, and what comes back (a JSON body,
//! or an event stream of progress notifications and the answer) goes to stdout one
//! message a line.
//!
//! The session is the server's: its `Mcp-Session-Id` header is kept and sent on every
//! later request, with `MCP-Protocol-Version` from the `initialize` result. Once the
//! client has sent `notifications/initialized`, the GET stream carries what the server
//! sends unasked, when the server offers one (405: it does not). The Unix socket to
//! paiosd carries nothing; its end means paiosd has gone, which ends the bridge as for
//! a stdio server, and so does the server forgetting the session it gave (404, or a
//! 400 about the session id: it restarted). A current-thread runtime runs the HTTP side; stdin and stdout each have
//! a thread, so a client that stops reading does not hold up the requests (only the
//! last errors, written as the bridge ends, wait up to a second for stdout).

use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};

use super::bridge::{
    answer_all, client_messages, parent_gone, refuse, write_line, InFlight, DRAIN, EXIT_FAILED,
    EXIT_OK, EXIT_PARENT_GONE, LAST_WORDS,
};
use super::jsonrpc::{error_line, lenient_id, peek, Message, UNAVAILABLE};
use super::sse::{SseEvent, SseParser};

const SESSION_ID: &str = "mcp-session-id";
const PROTOCOL_VERSION: &str = "mcp-protocol-version";

/// How long a notification's POST may take before the next message goes anyway.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long ending the session may take once the client is done.
const DELETE_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of an HTTP error's body is quoted to the client.
const ERROR_BODY_QUOTE: usize = 300;

/// One message of the client's, checked and ready to POST.
struct Outgoing {
    body: Vec<u8>,
    messages: Vec<Message>,
}

/// What every request task shares.
struct Session {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    url: String,
    cap: usize,
    session_id: Mutex<Option<HeaderValue>>,
    protocol_version: Mutex<Option<HeaderValue>>,
    in_flight: InFlight,
    settled: Notify,
    /// The server answered 404 to the session it gave: it has restarted or dropped it.
    ended: Notify,
    stdout: mpsc::Sender<Vec<u8>>,
}

/// Runs the bridge to the server at `url`; `presence` is the connection to paiosd.
pub fn run(presence: BufReader<UnixStream>, url: &str, cap: usize, parent: i32) -> i32 {
    let uri = match url.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => uri,
        _ => {
            return refuse(&format!(
                "the MCP server's url `{url}` is not an http:// URL the bridge can reach: \
                 fix `[mcp] url` in its service file"
            ))
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return refuse(&format!("cannot start the HTTP side: {e}")),
    };
    let (stdout_tx, stdout_rx) = mpsc::channel(64);
    let (incoming_tx, incoming_rx) = mpsc::channel(64);
    let written = match spawn_stdout(stdout_rx) {
        Ok(written) => written,
        Err(e) => return refuse(&format!("cannot start the bridge's threads: {e}")),
    };
    if let Err(e) = spawn_stdin(incoming_tx, cap) {
        return refuse(&format!("cannot start the bridge's threads: {e}"));
    }
    let session = Arc::new(Session {
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        uri,
        url: url.to_string(),
        cap,
        session_id: Mutex::new(None),
        protocol_version: Mutex::new(None),
        in_flight: InFlight::default(),
        settled: Notify::new(),
        ended: Notify::new(),
        stdout: stdout_tx,
    });
    let code = runtime.block_on(serve(session, incoming_rx, presence.into_inner(), parent));
    // Every task (and with it the last sender of stdout's lines) ends with the runtime;
    // what was queued is written before the bridge exits, for as long as stdout takes it.
    drop(runtime);
    // (A client that has died takes nothing more: the writes fail at once.)
    let wait = if code == EXIT_OK { DRAIN } else { LAST_WORDS };
    let _ = written.recv_timeout(wait);
    code
}

fn fail(message: &str) -> i32 {
    eprintln!("paiosctl mcp: {message}");
    EXIT_FAILED
}

/// Writes the lines it is sent; the receiver it returns hears when every line sent
/// before the last sender went is written.
fn spawn_stdout(mut lines: mpsc::Receiver<Vec<u8>>) -> io::Result<std::sync::mpsc::Receiver<()>> {
    let (done, written) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("stdout".into())
        .spawn(move || {
            while let Some(line) = lines.blocking_recv() {
                write_line(&line);
            }
            let _ = done.send(());
        })
        .map(|_| written)
}

/// Reads the client's lines; the ones that cannot be sent are answered here.
fn spawn_stdin(outgoing: mpsc::Sender<Outgoing>, cap: usize) -> io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            client_messages(cap, |shape, line| {
                let message = Outgoing {
                    messages: shape.messages().to_vec(),
                    body: std::mem::take(line),
                };
                outgoing.blocking_send(message).is_ok()
            });
        })
        .map(drop)
}

/// The session's life: POSTs until stdin ends, then a drain, then DELETE.
async fn serve(
    session: Arc<Session>,
    mut incoming: mpsc::Receiver<Outgoing>,
    presence: UnixStream,
    parent: i32,
) -> i32 {
    let mut presence = match presence
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(presence))
    {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot watch the connection to paiosd: {e}")),
    };
    let mut parent_tick = tokio::time::interval(Duration::from_millis(250));
    let mut streaming = false;
    let gone = "paiosd went away before the MCP server answered; the client may start \
                `paiosctl mcp` again";
    let ended = "the MCP server no longer knows this session (it restarted); the client may \
                 start `paiosctl mcp` again";
    loop {
        tokio::select! {
            message = incoming.recv() => {
                let Some(message) = message else { break };
                let opens_stream = !streaming && message.messages.iter()
                    .any(|m| m.method.as_deref() == Some("notifications/initialized"));
                if post_message(&session, message).await && opens_stream {
                    streaming = true;
                    tokio::spawn(listen(Arc::clone(&session)));
                }
            }
            _ = paiosd_gone(&mut presence) => {
                answer_all(session.in_flight.take(), gone);
                return EXIT_FAILED;
            }
            () = session.ended.notified() => {
                answer_all(session.in_flight.take(), ended);
                return EXIT_FAILED;
            }
            _ = parent_tick.tick() => {
                if parent_gone(parent) {
                    return EXIT_PARENT_GONE;
                }
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN, async {
        tokio::select! {
            () = settled(&session) => {}
            _ = paiosd_gone(&mut presence) => answer_all(session.in_flight.take(), gone),
            () = session.ended.notified() => answer_all(session.in_flight.take(), ended),
        }
    })
    .await;
    if drained.is_err() {
        answer_all(
            session.in_flight.take(),
            "the MCP server did not answer within 5s after the client closed stdin",
        );
    }
    let _ = tokio::time::timeout(DELETE_TIMEOUT, end_session(&session)).await;
    EXIT_OK
}

/// Resolves when paiosd closes (or breaks) the connection; nothing is expected on it.
async fn paiosd_gone(presence: &mut tokio::net::UnixStream) {
    let mut buf = [0u8; 256];
    loop {
        match presence.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn settled(session: &Session) {
    loop {
        let notified = session.settled.notified();
        if session.in_flight.is_empty() {
            return;
        }
        notified.await;
    }
}

/// Sends one client message: a request in a task of its own (answers may take long and
/// come as a stream), anything else (notifications, answers to the server) in order,
/// waiting for the server to accept it. True when the server took it.
async fn post_message(session: &Arc<Session>, message: Outgoing) -> bool {
    let requests: Vec<Value> = message
        .messages
        .iter()
        .filter_map(|m| m.request_id().cloned())
        .collect();
    for id in &requests {
        session.in_flight.insert(id);
    }
    let initialize = message
        .messages
        .iter()
        .find(|m| m.method.as_deref() == Some("initialize"))
        .and_then(|m| m.request_id().cloned());
    if requests.is_empty() {
        let posted = tokio::time::timeout(
            NOTIFY_TIMEOUT,
            exchange(Arc::clone(session), message.body, requests, None),
        )
        .await;
        return matches!(posted, Ok(true));
    }
    tokio::spawn(exchange(
        Arc::clone(session),
        message.body,
        requests,
        initialize,
    ));
    true
}

/// A header value kept from the server's answers.
fn held(value: &Mutex<Option<HeaderValue>>) -> Option<HeaderValue> {
    value.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A request to the server; `in_session` sends the session id the server gave (an
/// `initialize` starts a new session and is sent without one).
fn request(
    session: &Session,
    method: Method,
    accept: &'static str,
    in_session: bool,
) -> hyper::http::request::Builder {
    let mut builder = Request::builder()
        .method(method)
        .uri(session.uri.clone())
        .header(ACCEPT, accept);
    if let Some(id) = held(&session.session_id).filter(|_| in_session) {
        builder = builder.header(SESSION_ID, id);
    }
    if let Some(version) = held(&session.protocol_version) {
        builder = builder.header(PROTOCOL_VERSION, version);
    }
    builder
}

/// One POST and everything its answer carries. `requests` are the ids it should answer;
/// an error for each is written when it cannot. True when the server accepted it.
async fn exchange(
    session: Arc<Session>,
    body: Vec<u8>,
    requests: Vec<Value>,
    initialize: Option<Value>,
) -> bool {
    let in_session = initialize.is_none() && held(&session.session_id).is_some();
    let response = match post(&session, body, in_session).await {
        Ok(response) => response,
        Err(why) => {
            unanswered(&session, &requests, &why).await;
            return false;
        }
    };
    if let Some(id) = response.headers().get(SESSION_ID) {
        *session.session_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
    }
    let status = response.status();
    if status == StatusCode::ACCEPTED {
        return true;
    }
    if !status.is_success() {
        let why = http_error(&session, status, response).await;
        if requests.is_empty() {
            eprintln!("paiosctl mcp: a notification was not taken: {why}");
        }
        unanswered(&session, &requests, &why).await;
        if in_session && forgot_session(status, &why) {
            // The session is gone with the server's restart; only a new bridge (a new
            // `initialize`) starts another, so the client is told and this one ends.
            session.ended.notify_one();
        }
        return false;
    }
    let initialize = initialize.as_ref();
    let read = if is_event_stream(&response) {
        read_events(&session, response.into_body(), initialize).await
    } else {
        read_json(&session, response.into_body(), initialize).await
    };
    let why = match read {
        Ok(()) => "the MCP server ended its answer without a reply to this request".to_string(),
        Err(e) => format!("the MCP server's answer broke off: {e}"),
    };
    unanswered(&session, &requests, &why).await;
    true
}

/// POSTs one message; the sentence for the client when it cannot.
async fn post(
    session: &Session,
    body: Vec<u8>,
    in_session: bool,
) -> Result<Response<Incoming>, String> {
    let req = request(
        session,
        Method::POST,
        "application/json, text/event-stream",
        in_session,
    )
    .header(CONTENT_TYPE, "application/json")
    .body(Full::new(Bytes::from(body)))
    .map_err(|e| format!("cannot build the request: {e}"))?;
    session
        .client
        .request(req)
        .await
        .map_err(|e| format!("cannot reach the MCP server at {}: {e}", session.url))
}

/// The server no longer knows the session it gave: 404, as the transport says, or the
/// 400 some servers give with a body about the session id.
fn forgot_session(status: StatusCode, why: &str) -> bool {
    status == StatusCode::NOT_FOUND
        || (status == StatusCode::BAD_REQUEST && why.to_ascii_lowercase().contains("session"))
}

fn is_event_stream(response: &Response<Incoming>) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// Writes an error for each of `requests` still unanswered.
async fn unanswered(session: &Session, requests: &[Value], why: &str) {
    for id in requests {
        if session.in_flight.remove(id) {
            send(session, error_line(id, UNAVAILABLE, why)).await;
        }
    }
    if session.in_flight.is_empty() {
        session.settled.notify_waiters();
    }
}

async fn send(session: &Session, line: Vec<u8>) {
    let _ = session.stdout.send(line).await;
}

/// The sentence for an HTTP error status, quoting the start of its body.
async fn http_error(session: &Session, status: StatusCode, response: Response<Incoming>) -> String {
    let mut body = Vec::new();
    let mut incoming = response.into_body();
    while body.len() < ERROR_BODY_QUOTE {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_QUOTE);
    let quoted = String::from_utf8_lossy(&body);
    let quoted = quoted.trim();
    let hint = if status == StatusCode::NOT_FOUND {
        " (the session has ended on the server's side; the client starts a new one)"
    } else {
        ""
    };
    let mut why = format!(
        "the MCP server at {} answered HTTP {status}{hint}",
        session.url
    );
    if !quoted.is_empty() {
        why.push_str(": ");
        why.push_str(quoted);
    }
    why
}

/// A JSON body: one message (or batch), however it is laid out.
async fn read_json(
    session: &Session,
    mut body: Incoming,
    initialize: Option<&Value>,
) -> Result<(), hyper::Error> {
    let mut data = Vec::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame?.into_data() {
            len += chunk.len() as u64;
            if data.len() + chunk.len() <= session.cap {
                data.extend_from_slice(&chunk);
            } else {
                let room = super::frame::HEAD_KEEP
                    .saturating_sub(data.len())
                    .min(chunk.len());
                data.extend_from_slice(&chunk[..room]);
            }
        }
    }
    if len as usize > session.cap {
        over_cap(session, &data, len).await;
    } else if !data.trim_ascii().is_empty() {
        deliver(session, data, initialize).await;
    }
    Ok(())
}

/// An event stream: every `message` event is one line.
async fn read_events(
    session: &Session,
    mut body: Incoming,
    initialize: Option<&Value>,
) -> Result<(), hyper::Error> {
    let mut parser = SseParser::new(session.cap);
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame?.into_data() {
            parser.feed(&chunk, &mut |e| events.push(e));
            for event in events.drain(..) {
                match event {
                    SseEvent::Message(data) => deliver(session, data, initialize).await,
                    SseEvent::TooLong { head, len } => over_cap(session, &head, len).await,
                }
            }
        }
    }
    Ok(())
}

/// The GET stream of messages the server sends unasked, while it lasts.
async fn listen(session: Arc<Session>) {
    let req = match request(&session, Method::GET, "text/event-stream", true)
        .body(Full::new(Bytes::new()))
    {
        Ok(req) => req,
        Err(_) => return,
    };
    let response = match session.client.request(req).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("paiosctl mcp: no stream of server messages: {e}");
            return;
        }
    };
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return;
    }
    if !status.is_success() || !is_event_stream(&response) {
        eprintln!("paiosctl mcp: the server offers no stream of its own messages (HTTP {status})");
        return;
    }
    if let Err(e) = read_events(&session, response.into_body(), None).await {
        eprintln!("paiosctl mcp: the stream of server messages broke off: {e}");
    }
}

/// Ends the server's session, when it gave one.
async fn end_session(session: &Session) {
    if session
        .session_id
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_none()
    {
        return;
    }
    if let Ok(req) =
        request(session, Method::DELETE, "application/json", true).body(Full::new(Bytes::new()))
    {
        let _ = session.client.request(req).await;
    }
}

/// Passes one server message to the client as one line and crosses off what it answers.
async fn deliver(session: &Session, mut data: Vec<u8>, initialize: Option<&Value>) {
    // A raw newline can only be whitespace between tokens in JSON: a line it stays.
    for b in data.iter_mut() {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    let shape = match peek(&data) {
        Ok(shape) => shape,
        Err(bad) => {
            eprintln!(
                "paiosctl mcp: dropped a message from the server that is not JSON-RPC: {bad:?}"
            );
            return;
        }
    };
    let mut answered = false;
    for m in shape.messages() {
        if let Some(id) = m.answered_id() {
            if initialize == Some(id) {
                remember_version(session, &data);
            }
            answered |= session.in_flight.remove(id);
        }
    }
    data.push(b'\n');
    send(session, data).await;
    if answered && session.in_flight.is_empty() {
        session.settled.notify_waiters();
    }
}

/// Keeps `result.protocolVersion` of the `initialize` answer for later requests' header.
fn remember_version(session: &Session, data: &[u8]) {
    let value: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(_) => return,
    };
    let version = value
        .pointer("/result/protocolVersion")
        .and_then(Value::as_str)
        .and_then(|v| HeaderValue::from_str(v).ok());
    if let Some(version) = version {
        *session
            .protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(version);
    }
}

async fn over_cap(session: &Session, head: &[u8], len: u64) {
    eprintln!(
        "paiosctl mcp: dropped a message of {len} bytes from the server, over the cap of {}",
        session.cap
    );
    if let Some(id) = lenient_id(head, b"").filter(|id| session.in_flight.remove(id)) {
        let why = format!(
            "the server's answer is {len} bytes, over the line cap of {} bytes (`[mcp] max_line`)",
            session.cap
        );
        send(session, error_line(&id, UNAVAILABLE, &why)).await;
        if session.in_flight.is_empty() {
            session.settled.notify_waiters();
        }
    }
}
