//! `paiosctl mcp NAME`: the stdio bridge an MCP client starts as its server command.
//!
//! It connects to `<state>/mcp/NAME.sock`, says [`Hello`], and after paiosd's
//! [`Welcome`] copies newline-delimited JSON-RPC between its stdin/stdout and the
//! server, line by line and verbatim (an HTTP server is spoken to by [`super::http`]).
//! It never outlives its client and never retries: stdin EOF ends it after a drain of
//! at most [`DRAIN`]; the parent's death, or stdout closing, ends it at once; paiosd
//! missing or refusing, or going away mid-session, is answered with JSON-RPC errors
//! (the first request, or every request in flight) and exit 1.
//!
//! Plain threads and blocking I/O, no async runtime: one thread per direction, a
//! watcher on stdout, and the calling thread deciding when it is over. Each line is
//! written with one `write` and flushed before the next.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::frame::{Frame, Framer};
use super::jsonrpc::{self, error_line, id_key, lenient_id, peek, INVALID_REQUEST, UNAVAILABLE};
use super::{Hello, Welcome, DEFAULT_MAX_LINE, PROTOCOL_VERSION};
use crate::control::client::{connect_stream, ClientError, DEFAULT_TIMEOUT};
use crate::control::protocol::VERSION_HINT;

/// How long replies are still copied after the client closed stdin.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Exit codes: 0 after stdin EOF, 1 for everything else.
pub(crate) const EXIT_OK: i32 = 0;
pub(crate) const EXIT_FAILED: i32 = 1;
pub(crate) const EXIT_PARENT_GONE: i32 = 1;

/// How long writing the last error replies may take before the bridge exits anyway
/// (a client that does not read its stdout must not keep it alive).
pub(crate) const LAST_WORDS: Duration = Duration::from_secs(1);

/// How often the bridge checks `getppid()` itself, behind the kernel's notice.
const PARENT_POLL: Duration = Duration::from_millis(250);

/// The cap on paiosd's welcome line.
const MAX_WELCOME_BYTES: u64 = 64 * 1024;

/// Runs the bridge to MCP server `name`; returns the exit code.
pub fn run(state: &Path, control_socket: &Path, name: &str) -> i32 {
    let parent = nix::unistd::getppid().as_raw();
    if let Err(e) = watch_parent(parent) {
        if e.raw_os_error() == Some(libc::ESRCH) {
            return EXIT_PARENT_GONE;
        }
        eprintln!("paiosctl mcp: cannot watch the parent process {parent}: {e}");
    }
    watch_stdout();
    if !crate::names::is_service_name(name) {
        return refuse(&format!(
            "`{name}` is not a service name (letters, digits, `-` and `_`): \
             run `paiosctl status` for the names"
        ));
    }
    let socket = super::socket_path(state, name);
    let hello = Hello {
        paios_mcp: PROTOCOL_VERSION,
        client_pid: parent,
        client_command: client_command(parent),
    };
    match connect(&socket, control_socket, name, &hello) {
        Ok((reader, Welcome::Stdio { max_line })) => {
            match Stdio::new(reader, cap(max_line), parent) {
                Ok(stdio) => {
                    give_back_startup_pages();
                    stdio.run()
                }
                Err(e) => refuse(&lost(&socket, &e)),
            }
        }
        Ok((reader, Welcome::Http { url, max_line })) => {
            give_back_startup_pages();
            super::http::run(reader, &url, cap(max_line), parent)
        }
        Ok((_, Welcome::Refused { reason, fix })) => refuse(&if fix.is_empty() {
            reason
        } else {
            format!("{reason}: run `{fix}`")
        }),
        Err(message) => refuse(&message),
    }
}

/// Connected: what start-up alone needed is given back before the long copy loop.
#[cfg(target_os = "linux")]
fn give_back_startup_pages() {
    if let Err(e) = super::trim_linux::shed_startup_code() {
        eprintln!("paiosctl mcp: cannot give back start-up pages (harmless): {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn give_back_startup_pages() {}

#[cfg(target_os = "linux")]
fn watch_parent(parent: i32) -> io::Result<()> {
    super::parent_linux::watch(parent)
}

#[cfg(target_os = "macos")]
fn watch_parent(parent: i32) -> io::Result<()> {
    super::parent_macos::watch(parent)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn watch_parent(_parent: i32) -> io::Result<()> {
    Ok(())
}

/// Whether the client that started the bridge is gone (it was reparented).
pub(crate) fn parent_gone(parent: i32) -> bool {
    nix::unistd::getppid().as_raw() != parent
}

/// The client's command name, where the OS shows it.
fn client_command(parent: i32) -> Option<String> {
    crate::process::proc_info(parent)
        .map(|p| p.comm)
        .filter(|c| !c.is_empty())
}

fn cap(max_line: u64) -> usize {
    usize::try_from(max_line).unwrap_or(usize::MAX)
}

fn lost(socket: &Path, e: &io::Error) -> String {
    format!("lost the connection to paiosd at {}: {e}", socket.display())
}

/// Says hello on the server's socket and reads paiosd's welcome; `Err` is the
/// sentence the client is told.
fn connect(
    socket: &Path,
    control_socket: &Path,
    name: &str,
    hello: &Hello,
) -> Result<(BufReader<UnixStream>, Welcome), String> {
    let mut stream = match connect_stream(socket, DEFAULT_TIMEOUT) {
        Ok(stream) => stream,
        Err(ClientError::NotRunning { .. }) => {
            return Err(match connect_stream(control_socket, DEFAULT_TIMEOUT) {
                Err(e @ ClientError::NotRunning { .. }) => e.to_string(),
                _ => format!(
                    "paiosd has no MCP server `{name}` (no socket at {}): give \
                     services.d/{name}.toml an `[mcp]` table and run `paiosctl reload`",
                    socket.display()
                ),
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut line = serde_json::to_vec(hello).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let timeouts = |s: &UnixStream, t| {
        s.set_read_timeout(t)
            .and_then(|()| s.set_write_timeout(t))
            .map_err(|e| lost(socket, &e))
    };
    timeouts(&stream, Some(DEFAULT_TIMEOUT))?;
    // paiosd may refuse (a foreign UID) and close before reading: its welcome still says why.
    let _ = stream.write_all(&line);
    let mut reader = BufReader::new(stream);
    let welcome = read_welcome(&mut reader, socket, name)?;
    timeouts(reader.get_ref(), None)?;
    Ok((reader, welcome))
}

/// paiosd's one welcome line.
fn read_welcome(
    reader: &mut BufReader<UnixStream>,
    socket: &Path,
    name: &str,
) -> Result<Welcome, String> {
    let mut welcome = Vec::new();
    let read = reader
        .take(MAX_WELCOME_BYTES)
        .read_until(b'\n', &mut welcome);
    match read {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(format!(
                "paiosd did not answer on {} within {}: check it with `paiosctl doctor`",
                socket.display(),
                crate::units::format_duration(DEFAULT_TIMEOUT)
            ))
        }
        Err(e) => return Err(lost(socket, &e)),
        Ok(_) if welcome.last() != Some(&b'\n') => {
            return Err(format!(
                "paiosd closed {} without a welcome: see `paiosctl status {name}`",
                socket.display()
            ))
        }
        Ok(_) => {}
    }
    serde_json::from_slice(&welcome).map_err(|e| {
        format!(
            "paiosd's welcome on {} is unreadable ({e}); {VERSION_HINT}",
            socket.display()
        )
    })
}

/// No server for this client: says why on stderr, answers the client's first request
/// with the reason, and exits 1 (at once on stdin EOF).
pub(crate) fn refuse(message: &str) -> i32 {
    eprintln!("paiosctl mcp: {message}");
    let mut framer = Framer::new(io::stdin().lock(), cap(DEFAULT_MAX_LINE));
    loop {
        let id = match framer.next_frame() {
            Err(_) | Ok(Frame::Eof) => return EXIT_FAILED,
            Ok(Frame::TooLong { head, tail, .. }) => lenient_id(&head, &tail),
            Ok(Frame::Line) => match peek(framer.line()) {
                Ok(shape) => shape
                    .messages()
                    .iter()
                    .find_map(|m| m.request_id().cloned()),
                Err(_) => None,
            },
        };
        if let Some(id) = id {
            write_line(&error_line(&id, UNAVAILABLE, message));
            return EXIT_FAILED;
        }
    }
}

/// Writes one whole line to stdout and flushes it; a stdout that cannot take it
/// (the client closed it) ends the bridge.
pub(crate) fn write_line(line: &[u8]) {
    let mut out = io::stdout().lock();
    if out.write_all(line).and_then(|()| out.flush()).is_err() {
        std::process::exit(EXIT_FAILED);
    }
}

/// Ends the bridge as soon as the client closes the reading end of its stdout, even
/// while nothing is being written (a pipe's writer sees `POLLERR`, a socket `POLLHUP`).
fn watch_stdout() {
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let stdout = io::stdout();
            loop {
                let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                    Ok(_) => {
                        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                            std::process::exit(EXIT_FAILED);
                        }
                        // Anything else (POLLNVAL: no stdout at all) would only spin.
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("paiosctl mcp: cannot watch stdout: {e}");
    }
}

/// The requests sent to the server and not answered yet, by [`id_key`].
#[derive(Default)]
pub(crate) struct InFlight {
    ids: Mutex<HashMap<String, Value>>,
}

impl InFlight {
    pub(crate) fn insert(&self, id: &Value) {
        self.lock().insert(id_key(id), id.clone());
    }

    /// Forgets `id`; true when it was in flight.
    pub(crate) fn remove(&self, id: &Value) -> bool {
        self.lock().remove(&id_key(id)).is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub(crate) fn take(&self) -> Vec<Value> {
        self.lock().drain().map(|(_, id)| id).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks what the client's `shape` starts and cancels.
    pub(crate) fn track_client(&self, shape: &jsonrpc::Shape, line: &[u8]) {
        for m in shape.messages() {
            if let Some(id) = m.request_id() {
                self.insert(id);
            }
            if m.method.as_deref() == Some("notifications/cancelled") {
                // A cancelled request may never be answered; only this rare line is
                // parsed a second time.
                if let Some(id) = cancelled_id(line) {
                    self.remove(&id);
                }
            }
        }
    }
}

/// `params.requestId` of a `notifications/cancelled` line (not in a batch).
fn cancelled_id(line: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(line).ok()?;
    value.get("params")?.get("requestId").cloned()
}

/// Writes an error reply for every id, giving up after [`LAST_WORDS`] when stdout
/// does not take them.
pub(crate) fn answer_all(ids: Vec<Value>, message: &str) {
    if ids.is_empty() {
        return;
    }
    let lines: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| error_line(id, UNAVAILABLE, message))
        .collect();
    let (done, wait) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            for line in &lines {
                write_line(line);
            }
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = wait.recv_timeout(LAST_WORDS);
    }
}

/// The message for a line of the client's over the cap.
pub(crate) fn too_long(len: u64, cap: usize) -> String {
    format!(
        "Invalid Request: the message is {len} bytes, over the line cap of {cap} bytes \
         (`[mcp] max_line`); it was not sent to the server"
    )
}

/// What a thread of the bridge tells the deciding one.
enum Event {
    StdinEof,
    /// The server's side closed (or failed) while reading from or writing to it.
    ServerGone(Option<io::Error>),
    /// The last request in flight was answered.
    Settled,
}

/// The bridge to a stdio server: the socket carries the server's JSON-RPC.
struct Stdio {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    control: UnixStream,
    cap: usize,
    parent: i32,
    in_flight: Arc<InFlight>,
}

impl Stdio {
    fn new(reader: BufReader<UnixStream>, cap: usize, parent: i32) -> io::Result<Stdio> {
        let writer = reader.get_ref().try_clone()?;
        let control = reader.get_ref().try_clone()?;
        Ok(Stdio {
            reader,
            writer,
            control,
            cap,
            parent,
            in_flight: Arc::default(),
        })
    }

    fn run(self) -> i32 {
        let (tx, rx) = mpsc::channel();
        let (cap, in_flight) = (self.cap, Arc::clone(&self.in_flight));
        let (writer, events) = (self.writer, tx.clone());
        let up = std::thread::Builder::new()
            .name("client-to-server".into())
            .spawn(move || client_to_server(writer, cap, &in_flight, &events));
        let (reader, in_flight, events) = (self.reader, Arc::clone(&self.in_flight), tx);
        let down = std::thread::Builder::new()
            .name("server-to-client".into())
            .spawn(move || server_to_client(reader, cap, &in_flight, &events));
        if let Err(e) = up.and(down) {
            eprintln!("paiosctl mcp: cannot start the bridge's threads: {e}");
            return EXIT_FAILED;
        }
        decide(&rx, &self.control, &self.in_flight, self.parent)
    }
}

/// The deciding loop: waits for the end of stdin, the server or the parent.
fn decide(
    events: &mpsc::Receiver<Event>,
    control: &UnixStream,
    in_flight: &InFlight,
    parent: i32,
) -> i32 {
    let mut drain_until: Option<Instant> = None;
    loop {
        let wait = drain_until.map_or(PARENT_POLL, |until| {
            until
                .saturating_duration_since(Instant::now())
                .min(PARENT_POLL)
        });
        match events.recv_timeout(wait) {
            Ok(Event::StdinEof) => {
                let _ = control.shutdown(std::net::Shutdown::Write);
                if in_flight.is_empty() {
                    return EXIT_OK;
                }
                drain_until = Some(Instant::now() + DRAIN);
            }
            Ok(Event::Settled) if drain_until.is_some() => return EXIT_OK,
            Ok(Event::Settled) => {}
            Ok(Event::ServerGone(why)) => {
                let why = why.map(|e| format!(" ({e})")).unwrap_or_default();
                answer_all(
                    in_flight.take(),
                    &format!(
                        "paiosd or the MCP server went away before answering{why}; \
                         the client may start `paiosctl mcp` again"
                    ),
                );
                return if drain_until.is_some() {
                    EXIT_OK
                } else {
                    EXIT_FAILED
                };
            }
            Err(RecvTimeoutError::Timeout) => {
                if parent_gone(parent) {
                    return EXIT_PARENT_GONE;
                }
                if drain_until.is_some_and(|until| Instant::now() >= until) {
                    answer_all(
                        in_flight.take(),
                        "the MCP server did not answer within 5s after the client closed stdin",
                    );
                    return EXIT_OK;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return EXIT_FAILED,
        }
    }
}

/// Copies the client's lines to the server, answering the ones that cannot go.
fn client_to_server(
    mut socket: UnixStream,
    cap: usize,
    in_flight: &InFlight,
    events: &mpsc::Sender<Event>,
) {
    let mut lost = None;
    client_messages(cap, |shape, line| {
        in_flight.track_client(shape, line);
        line.push(b'\n');
        match socket.write_all(line) {
            Ok(()) => true,
            Err(e) => {
                lost = Some(e);
                false
            }
        }
    });
    let _ = events.send(match lost {
        Some(e) => Event::ServerGone(Some(e)),
        None => Event::StdinEof,
    });
}

/// Reads the client's messages from stdin until it ends or `send` returns false. A
/// line over the cap, or one that is not JSON-RPC, is answered here and goes no
/// further; every other line goes to `send` whole, without its newline.
pub(crate) fn client_messages(
    cap: usize,
    mut send: impl FnMut(&jsonrpc::Shape, &mut Vec<u8>) -> bool,
) {
    let stdin = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    let mut framer = Framer::new(stdin, cap);
    loop {
        match framer.next_frame() {
            Err(_) | Ok(Frame::Eof) => return,
            Ok(Frame::TooLong { head, tail, len }) => {
                let id = lenient_id(&head, &tail).unwrap_or(Value::Null);
                write_line(&error_line(&id, INVALID_REQUEST, &too_long(len, cap)));
            }
            Ok(Frame::Line) if framer.line().trim_ascii().is_empty() => {}
            Ok(Frame::Line) => match peek(framer.line()) {
                Err(bad) => write_line(&bad.reply()),
                Ok(shape) => {
                    if !send(&shape, framer.line_mut()) {
                        return;
                    }
                }
            },
        }
    }
}

/// Copies the server's lines to stdout and crosses off the requests they answer.
fn server_to_client(
    socket: BufReader<UnixStream>,
    cap: usize,
    in_flight: &InFlight,
    events: &mpsc::Sender<Event>,
) {
    let mut framer = Framer::new(socket, cap);
    loop {
        match framer.next_frame() {
            Err(e) => {
                let _ = events.send(Event::ServerGone(Some(e)));
                return;
            }
            Ok(Frame::Eof) => {
                let _ = events.send(Event::ServerGone(None));
                return;
            }
            Ok(Frame::TooLong { head, tail, len }) => {
                eprintln!("paiosctl mcp: dropped a line of {len} bytes from the server, over the cap of {cap}");
                if let Some(id) = lenient_id(&head, &tail).filter(|id| in_flight.remove(id)) {
                    let message = format!(
                        "the server's answer is {len} bytes, over the line cap of {cap} bytes \
                         (`[mcp] max_line`)"
                    );
                    write_line(&error_line(&id, UNAVAILABLE, &message));
                    settle(in_flight, events);
                }
            }
            Ok(Frame::Line) if framer.line().trim_ascii().is_empty() => {}
            Ok(Frame::Line) => match peek(framer.line()) {
                Err(bad) => {
                    eprintln!("paiosctl mcp: dropped a line from the server that is not JSON-RPC: {bad:?}");
                }
                Ok(shape) => {
                    let answers: Vec<Value> = shape
                        .messages()
                        .iter()
                        .filter_map(|m| m.answered_id().cloned())
                        .collect();
                    let line = framer.line_mut();
                    line.push(b'\n');
                    // Written before it is crossed off: the bridge may end as soon as
                    // nothing is in flight, and must not end in the middle of this line.
                    write_line(line);
                    let mut answered = false;
                    for id in &answers {
                        answered |= in_flight.remove(id);
                    }
                    if answered {
                        settle(in_flight, events);
                    }
                }
            },
        }
    }
}

fn settle(in_flight: &InFlight, events: &mpsc::Sender<Event>) {
    if in_flight.is_empty() {
        let _ = events.send(Event::Settled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn in_flight_follows_requests_answers_and_cancels() {
        let in_flight = InFlight::default();
        let track = |line: &str| {
            let shape = peek(line.as_bytes()).expect("peek");
            in_flight.track_client(&shape, line.as_bytes());
        };
        track(r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#);
        track(r#"{"jsonrpc":"2.0","id":"1","method":"b"}"#);
        track(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        track(r#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
        let mut ids = in_flight.take();
        ids.sort_by_key(|v| v.to_string());
        assert_eq!(ids, vec![json!("1"), json!(1)]);
        track(r#"{"jsonrpc":"2.0","id":2,"method":"a"}"#);
        track(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#);
        assert!(in_flight.is_empty());
        track(r#"{"jsonrpc":"2.0","id":3,"method":"a"}"#);
        assert!(!in_flight.remove(&json!("3")));
        assert!(in_flight.remove(&json!(3)));
    }
}
