//! paiosd's side of the MCP sockets: one listener per MCP server at
//! `<state>/mcp/NAME.sock`, and one task per connection that checks the peer, reads
//! the hello and asks the supervisor for a welcome. After a stdio welcome it copies
//! lines between the socket and the run's stdin and stdout; after an http welcome it
//! holds the connection open as the client's presence. None of it runs in the actor,
//! so a slow or silent client only ever stalls its own run.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::probe::PingIds;
use super::{Hello, Welcome, MAX_HELLO_BYTES, PROTOCOL_VERSION};
use crate::health::ProbeEvent;

/// How long a connection may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a run's last replies may take to reach its client once the run has ended
/// (a client that stops reading does not hold its connection open forever).
const LAST_REPLIES: Duration = Duration::from_secs(5);

/// How often a write to a run's full stdin looks whether its client has gone.
const HANGUP_POLL: Duration = Duration::from_millis(200);

/// What the connections tell the supervisor.
#[derive(Debug)]
pub enum McpMsg {
    /// A bridge said hello to server `service`; the answer goes to `reply`.
    Hello {
        service: String,
        hello: Hello,
        reply: oneshot::Sender<Admit>,
    },
    /// Client `client`'s connection has ended (or its stdin side has: it sent EOF).
    Gone { client: u64 },
    /// The run of client `client` closed its stdout: it has ended, or can serve no more.
    ServerDone { client: u64 },
}

/// The supervisor's answer to a hello.
#[derive(Debug)]
pub enum Admit {
    Refused {
        reason: String,
        fix: String,
    },
    /// The server speaks HTTP at `url`: the connection is the client's presence.
    Http {
        client: u64,
        url: String,
        max_line: u64,
        /// Cancelled when the supervisor ends the client (the server stopped, shutdown).
        end: CancellationToken,
    },
    /// A run was started for this client: `stdin` and `stdout` are its pipes.
    Stdio {
        client: u64,
        max_line: u64,
        stdin: OwnedFd,
        stdout: OwnedFd,
        /// Cancelled when the run has ended: the connection is closed.
        end: CancellationToken,
        /// Cancelled when the run is being stopped: its stdin is closed first.
        close_stdin: CancellationToken,
        /// The run's pings, when its server has `[health] mcp = true`.
        probe: Option<StdioProbe>,
    },
}

/// The pings of one client's run, sent on the connection's own pipe to it: where the
/// results go and when they stop.
#[derive(Debug)]
pub struct StdioProbe {
    /// The run's service entry and run, for its [`ProbeEvent`]s.
    pub service: String,
    pub run_id: u64,
    pub cfg: crate::config::HealthConfig,
    pub tx: mpsc::UnboundedSender<ProbeEvent>,
    /// Cancelled when the run stops being probed (its stop has begun).
    pub cancel: CancellationToken,
}

/// Creates `<state>/mcp` (0700) and binds `NAME.sock` in it (0600); the listener serves
/// until `cancel`, and the socket file is removed when it stops.
pub fn listen(
    state: &Path,
    name: &str,
    to_supervisor: mpsc::Sender<McpMsg>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let dir = super::socket_dir(state);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = super::socket_path(state, name);
    let listener = crate::control::server::bind(&path)?;
    tokio::spawn(accept_loop(
        listener,
        path,
        name.to_string(),
        to_supervisor,
        cancel,
    ));
    Ok(())
}

async fn accept_loop(
    listener: UnixListener,
    path: PathBuf,
    name: String,
    to_supervisor: mpsc::Sender<McpMsg>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, name.clone(), to_supervisor.clone()));
            }
            Err(e) => {
                tracing::warn!(service = %name, "MCP socket accept failed: {e}");
                // Out of descriptors, most likely: give the others a moment to close.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

/// Writes one welcome line; a client that does not take it in time is dropped.
async fn send_welcome(stream: &mut UnixStream, welcome: &Welcome) -> bool {
    let Ok(mut line) = serde_json::to_vec(welcome) else {
        return false;
    };
    line.push(b'\n');
    matches!(
        tokio::time::timeout(HELLO_TIMEOUT, stream.write_all(&line)).await,
        Ok(Ok(()))
    )
}

async fn refuse(mut stream: UnixStream, reason: String, fix: String) {
    let _ = send_welcome(&mut stream, &Welcome::Refused { reason, fix }).await;
    let _ = stream.shutdown().await;
}

async fn connection(mut stream: UnixStream, name: String, to_supervisor: mpsc::Sender<McpMsg>) {
    if let Err(refusal) = check_peer(&stream, &name) {
        if let Some(reason) = refusal {
            refuse(stream, reason, "run the MCP client as paiosd's user".into()).await;
        }
        return;
    }
    let (hello, leftover) = match greeting(&mut stream).await {
        Ok(read) => read,
        Err(why) => {
            refuse(stream, why, format!("connect with `paiosctl mcp {name}`")).await;
            return;
        }
    };
    let (reply, answer) = oneshot::channel();
    let asked = McpMsg::Hello {
        service: name.clone(),
        hello,
        reply,
    };
    if to_supervisor.send(asked).await.is_err() {
        return;
    }
    let Ok(admit) = answer.await else {
        return;
    };
    let (client, ended) = match admit {
        Admit::Refused { reason, fix } => return refuse(stream, reason, fix).await,
        Admit::Http {
            client,
            url,
            max_line,
            end,
        } => {
            if send_welcome(&mut stream, &Welcome::Http { url, max_line }).await {
                presence(stream, &end).await;
            }
            (client, Copied::ClientGone)
        }
        Admit::Stdio {
            client,
            max_line,
            stdin,
            stdout,
            end,
            close_stdin,
            probe,
        } => {
            let mut ended = Copied::ClientGone;
            if send_welcome(&mut stream, &Welcome::Stdio { max_line }).await {
                let pipes = Pipes {
                    stdin,
                    stdout,
                    max_line,
                    leftover,
                    probe,
                };
                ended = copy(stream, pipes, &end, &close_stdin, client, &to_supervisor).await;
            }
            (client, ended)
        }
    };
    let said = match ended {
        Copied::ClientGone => McpMsg::Gone { client },
        Copied::ServerDone => McpMsg::ServerDone { client },
    };
    let _ = to_supervisor.send(said).await;
}

/// Only paiosd's own user may connect: `Err(Some(reason))` for another UID (told why),
/// `Err(None)` when the peer cannot be known (closed without a word).
fn check_peer(stream: &UnixStream, name: &str) -> Result<(), Option<String>> {
    let me = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me => Ok(()),
        Ok(cred) => {
            tracing::warn!(
                service = %name,
                uid = cred.uid(),
                "refused an MCP connection from UID {}: only UID {me} may use paiosd's servers",
                cred.uid()
            );
            Err(Some(format!(
                "paiosd belongs to UID {me}; UID {} may not use its MCP servers",
                cred.uid()
            )))
        }
        Err(e) => {
            tracing::warn!(service = %name, "MCP connection without peer credentials: {e}");
            Err(None)
        }
    }
}

/// The hello, within [`HELLO_TIMEOUT`], and whatever the client sent after it in the
/// same read (its first JSON-RPC lines, when it did not wait for the welcome).
async fn greeting(stream: &mut UnixStream) -> Result<(Hello, Vec<u8>), String> {
    let mut reader = BufReader::new(stream);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut reader)).await;
    let leftover = reader.buffer().to_vec();
    match hello {
        Ok(Ok(hello)) => Ok((hello, leftover)),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!(
            "no hello within {}",
            crate::units::format_duration(HELLO_TIMEOUT)
        )),
    }
}

/// Reads the hello line: at most [`MAX_HELLO_BYTES`], then one [`Hello`] of this version.
async fn read_hello<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Hello, String> {
    let mut line = Vec::new();
    loop {
        let buf = reader
            .fill_buf()
            .await
            .map_err(|e| format!("cannot read the hello: {e}"))?;
        if buf.is_empty() {
            return Err("the connection closed before its hello line".into());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_HELLO_BYTES + 1 {
            return Err(format!(
                "the hello line is longer than {MAX_HELLO_BYTES} bytes"
            ));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            break;
        }
    }
    let hello: Hello = serde_json::from_slice(&line)
        .map_err(|e| format!("the hello line is not a paiosd MCP hello: {e}"))?;
    if hello.paios_mcp != PROTOCOL_VERSION {
        return Err(format!(
            "hello version {} is not {PROTOCOL_VERSION}, the version this paiosd speaks",
            hello.paios_mcp
        ));
    }
    Ok(hello)
}

/// An http client's connection: open until the client closes it or `end`. Whatever it
/// sends is read and dropped.
async fn presence(stream: UnixStream, end: &CancellationToken) {
    let mut stream = stream;
    let mut sink = [0u8; 512];
    loop {
        tokio::select! {
            () = end.cancelled() => return,
            read = stream.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

struct Pipes {
    stdin: OwnedFd,
    stdout: OwnedFd,
    max_line: u64,
    /// What the socket sent after the hello in the same read.
    leftover: Vec<u8>,
    probe: Option<StdioProbe>,
}

/// A line of the run's stdout is held back (to see whether it answers a ping) up to
/// this many bytes; a longer line is passed on as it comes and is never taken for a
/// reply to a ping, which is a few dozen bytes.
pub const HOLD_LINE: usize = 64 * 1024;

/// Copies client lines to the run's stdin and the run's stdout to the client, until the
/// run's stdout ends, the client goes, or the supervisor ends the client. Client EOF
/// closes the run's stdin at once (and the supervisor hears of it) while the server's
/// last replies still reach the client.
async fn copy(
    stream: UnixStream,
    pipes: Pipes,
    end: &CancellationToken,
    close_stdin: &CancellationToken,
    client: u64,
    to_supervisor: &mpsc::Sender<McpMsg>,
) -> Copied {
    let Some((stdin, stdout, hangup)) = handles(&stream, pipes.stdin, pipes.stdout) else {
        return Copied::ClientGone;
    };
    let (read_half, mut write_half) = stream.into_split();
    let mut from_client = BufReader::new(std::io::Cursor::new(pipes.leftover).chain(read_half));
    let max_line = usize::try_from(pipes.max_line).unwrap_or(usize::MAX);
    let ids = PingIds::new();
    // The prober says which ping to send next; the stdout side, which pings were answered.
    let (ping_tx, ping_rx) = watch::channel(0u64);
    let (seen_tx, seen_rx) = watch::channel(0u64);
    let probe = pipes.probe;
    let probed = probe.is_some();
    // Set while the client is not taking what the run wrote: a ping's reply may then
    // be stuck behind it, which says nothing about the run.
    let backed_up = AtomicBool::new(false);
    let to_server = async {
        let mut stdin = stdin;
        let pings = probed.then_some((ping_rx, &ids));
        let ended = tokio::select! {
            ended = lines_to(&mut from_client, &mut stdin, max_line, pings, &hangup) => ended,
            () = close_stdin.cancelled() => ToServer::Closed,
        };
        drop(stdin);
        ended
    };
    let to_client = async {
        let mut stdout = stdout;
        if probed {
            replies_to(&mut stdout, &mut write_half, &ids, &seen_tx, &backed_up).await
        } else {
            tokio::io::copy(&mut stdout, &mut write_half)
                .await
                .map(drop)
        }
    };
    let pinger = async {
        if let Some(p) = probe {
            ping_loop(p, &ping_tx, &seen_rx, &backed_up).await;
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(pinger, to_server, to_client);
    let ends = Ends {
        end,
        client,
        max_line,
        to_supervisor,
    };
    ends.wait(pinger, to_client, to_server).await
}

/// The run's pipes as async handles, and a second handle on the socket, to see the
/// client hang up while a write to a run that reads nothing is waiting (the copy then
/// reads nothing from the socket). None, said in the log, when one cannot be made.
fn handles(
    stream: &UnixStream,
    stdin: OwnedFd,
    stdout: OwnedFd,
) -> Option<(pipe::Sender, pipe::Receiver, OwnedFd)> {
    let pipes = pipe::Sender::from_owned_fd(stdin)
        .and_then(|i| Ok((i, pipe::Receiver::from_owned_fd(stdout)?)));
    let hangup = std::os::fd::AsFd::as_fd(stream).try_clone_to_owned();
    match (pipes, hangup) {
        (Ok((i, o)), Ok(h)) => Some((i, o, h)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot use the pipes or socket of an MCP run: {e}");
            None
        }
    }
}

/// How one copy ends, and what it must tell.
struct Ends<'a> {
    end: &'a CancellationToken,
    client: u64,
    max_line: usize,
    to_supervisor: &'a mpsc::Sender<McpMsg>,
}

impl Ends<'_> {
    /// Waits for the first side to end, then lets the run's last replies out.
    async fn wait(
        &self,
        mut pinger: Pin<&mut impl Future<Output = ()>>,
        mut to_client: Pin<&mut impl Future<Output = io::Result<()>>>,
        mut to_server: Pin<&mut impl Future<Output = ToServer>>,
    ) -> Copied {
        tokio::select! {
            () = self.end.cancelled() => {
                // The run has ended (or is ended): what it wrote last still goes out.
                let _ = tokio::time::timeout(LAST_REPLIES, &mut to_client).await;
                Copied::ServerDone
            }
            () = &mut pinger => Copied::ServerDone,
            copied = &mut to_client => match copied {
                Ok(()) => Copied::ServerDone,
                Err(_) => Copied::ClientGone,
            },
            ended = &mut to_server => {
                if matches!(ended, ToServer::TooLong) {
                    let (client, max_line) = (self.client, self.max_line);
                    tracing::warn!(client, "an MCP line over {max_line} bytes: connection closed");
                    return Copied::ClientGone;
                }
                // The client is done sending: its run is to end, but its last replies
                // still go out until the run has ended.
                let _ = self.to_supervisor.send(McpMsg::Gone { client: self.client }).await;
                tokio::select! {
                    () = self.end.cancelled() => {
                        let _ = tokio::time::timeout(LAST_REPLIES, &mut to_client).await;
                    }
                    _ = &mut to_client => {}
                }
                Copied::ClientGone
            }
        }
    }
}

/// Which side ended a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copied {
    /// The client went (or broke the protocol): its run is to be stopped.
    ClientGone,
    /// The run closed its stdout, or has ended.
    ServerDone,
}

enum ToServer {
    /// The client sent EOF, or the connection failed.
    Eof,
    /// A line over the cap.
    TooLong,
    /// The run's stdin could not be written (it has gone) or was closed.
    Closed,
}

/// Copies whole lines: a line is held until its newline (never beyond `max`) and
/// written in one piece, so no part of an oversized line reaches the server. A client
/// that hangs up while a write waits on the run's full stdin ends the copy as EOF does.
///
/// With `pings`, each ping the prober asks for is written between two lines: lines are
/// only ever written whole, so the run's stdin is always at a line's start then (a
/// client line still coming is held here, not half-written).
async fn lines_to<R: AsyncBufRead + Unpin>(
    from: &mut R,
    to: &mut pipe::Sender,
    max: usize,
    mut pings: Option<(watch::Receiver<u64>, &PingIds)>,
    hangup: &OwnedFd,
) -> ToServer {
    let mut line: Vec<u8> = Vec::new();
    loop {
        if let Some((asked, ids)) = pings.as_mut() {
            let ping = tokio::select! {
                biased;
                changed = asked.changed() => changed.ok().map(|()| *asked.borrow_and_update()),
                // Cancel-safe: nothing is consumed until the data is used below.
                _ = from.fill_buf() => None,
            };
            if let Some(n) = ping {
                match write_unless_gone(to, &ids.line(n), hangup).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return ToServer::Closed,
                    None => return ToServer::Eof,
                }
                continue;
            }
        }
        let buf = match from.fill_buf().await {
            Ok([]) | Err(_) => return ToServer::Eof,
            Ok(buf) => buf,
        };
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let body = line.len() + take - usize::from(done);
        if body > max {
            return ToServer::TooLong;
        }
        if done && line.is_empty() {
            // The common case: the whole line is in the buffer; no copy.
            let result = write_unless_gone(to, &buf[..take], hangup).await;
            from.consume(take);
            match result {
                Some(Ok(())) => continue,
                Some(Err(_)) => return ToServer::Closed,
                None => return ToServer::Eof,
            }
        }
        line.extend_from_slice(&buf[..take]);
        from.consume(take);
        if done {
            match write_unless_gone(to, &line, hangup).await {
                Some(Ok(())) => {}
                Some(Err(_)) => return ToServer::Closed,
                None => return ToServer::Eof,
            }
            line.clear();
            if line.capacity() > 1 << 20 {
                line.shrink_to(64 << 10);
            }
        }
    }
}

/// Writes `bytes` to the run's stdin; None when the client hung up (closed its socket
/// entirely, not just its sending side) while the write waited.
async fn write_unless_gone(
    to: &mut pipe::Sender,
    bytes: &[u8],
    hangup: &OwnedFd,
) -> Option<io::Result<()>> {
    tokio::select! {
        written = to.write_all(bytes) => Some(written),
        () = hung_up(hangup) => None,
    }
}

/// Resolves once the socket's peer has closed it: `POLLHUP`, which a half-close (the
/// bridge's EOF, after which its replies are still read) does not raise.
async fn hung_up(socket: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut tick = tokio::time::interval(HANGUP_POLL);
    loop {
        tick.tick().await;
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(socket),
            PollFlags::POLLIN,
        )];
        let gone = match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            Err(_) => true,
        };
        if gone {
            return;
        }
    }
}

/// Copies the run's stdout to the client, taking out the replies to paiosd's pings
/// (each is told to `seen`); every other byte goes through unchanged and in order.
async fn replies_to(
    from: &mut pipe::Receiver,
    to: &mut tokio::net::unix::OwnedWriteHalf,
    ids: &PingIds,
    seen: &watch::Sender<u64>,
    backed_up: &AtomicBool,
) -> io::Result<()> {
    let mut filter = ReplyFilter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            out.clear();
            filter.finish(&mut out);
            to.write_all(&out).await?;
            return Ok(());
        }
        out.clear();
        filter.feed(&buf[..n], ids, &mut out, &mut |answered| {
            seen.send_modify(|v| *v = (*v).max(answered));
        });
        if !out.is_empty() {
            backed_up.store(true, Ordering::Relaxed);
            to.write_all(&out).await?;
            backed_up.store(false, Ordering::Relaxed);
        }
    }
}

/// The line-by-line sieve of [`replies_to`], without I/O.
#[derive(Debug, Default)]
struct ReplyFilter {
    /// The start of a line whose end has not come yet (at most [`HOLD_LINE`] bytes).
    held: Vec<u8>,
    /// The current line outgrew [`HOLD_LINE`]: it goes through until its end.
    passing: bool,
}

impl ReplyFilter {
    /// Appends to `out` what of `chunk` goes to the client; a reply to a ping is given
    /// to `answered` instead.
    fn feed(
        &mut self,
        mut chunk: &[u8],
        ids: &PingIds,
        out: &mut Vec<u8>,
        answered: &mut impl FnMut(u64),
    ) {
        while !chunk.is_empty() {
            let (part, complete) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            chunk = &chunk[part.len()..];
            if self.passing {
                out.extend_from_slice(part);
                self.passing = !complete;
                continue;
            }
            if complete && self.held.is_empty() {
                match ids.reply_to(part) {
                    Some(n) => answered(n),
                    None => out.extend_from_slice(part),
                }
                continue;
            }
            self.held.extend_from_slice(part);
            if complete {
                match ids.reply_to(&self.held) {
                    Some(n) => answered(n),
                    None => out.extend_from_slice(&self.held),
                }
                self.held.clear();
            } else if self.held.len() > HOLD_LINE {
                out.append(&mut self.held);
                self.passing = true;
            }
        }
    }

    /// The stream has ended: a last line without its newline goes out as it is.
    fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.passing = false;
    }
}

/// Pings the run on the prober's cadence and reports each result: a reply to ping `n`
/// within the timeout is alive; none is a failure, unless the client was not taking
/// the run's output then (the run may be blocked writing to it, its reply stuck behind
/// what the client does not read): that ping is not counted either way.
async fn ping_loop(
    probe: StdioProbe,
    asked: &watch::Sender<u64>,
    seen: &watch::Receiver<u64>,
    backed_up: &AtomicBool,
) {
    let StdioProbe {
        service,
        run_id,
        cfg,
        tx,
        cancel,
    } = probe;
    let timeout = cfg.timeout;
    let mut n = 0u64;
    crate::health::probe_loop(service, run_id, &cfg, tx, cancel, || {
        n += 1;
        let this = n;
        asked.send_replace(this);
        let mut seen = seen.clone();
        async move {
            match tokio::time::timeout(timeout, seen.wait_for(|v| *v >= this)).await {
                Ok(Ok(_)) => Some(Ok(())),
                Ok(Err(_)) => Some(Err("the run's stdout has closed".to_string())),
                Err(_) if backed_up.load(Ordering::Relaxed) => None,
                Err(_) => Some(Err(format!(
                    "no reply to a JSON-RPC ping within {}",
                    crate::units::format_duration(timeout)
                ))),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sieve(chunks: &[&[u8]], ids: &PingIds) -> (Vec<u8>, Vec<u64>) {
        let mut filter = ReplyFilter::default();
        let (mut out, mut seen) = (Vec::new(), Vec::new());
        for chunk in chunks {
            filter.feed(chunk, ids, &mut out, &mut |n| seen.push(n));
        }
        filter.finish(&mut out);
        (out, seen)
    }

    fn reply(ids: &PingIds, n: u64) -> String {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":\"{}\",\"result\":{{}}}}\n",
            ids.id(n)
        )
    }

    #[test]
    fn replies_to_pings_are_taken_out_and_the_rest_goes_through() {
        let ids = PingIds::with_nonce(1);
        let a = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"text\":\"x\"}}\n";
        let b = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n";
        let stream = format!("{a}{}{b}{}", reply(&ids, 1), reply(&ids, 2));
        let bytes = stream.as_bytes();
        let (out, seen) = sieve(&[bytes], &ids);
        assert_eq!(out, format!("{a}{b}").as_bytes());
        assert_eq!(seen, vec![1, 2]);
        // The same stream cut at every byte, and byte by byte.
        for cut in 0..bytes.len() {
            let (out, seen) = sieve(&[&bytes[..cut], &bytes[cut..]], &ids);
            assert_eq!(out, format!("{a}{b}").as_bytes(), "cut at {cut}");
            assert_eq!(seen, vec![1, 2], "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(sieve(&singles, &ids).0, format!("{a}{b}").as_bytes());
    }

    #[test]
    fn another_nonce_and_a_last_line_without_newline_go_through() {
        let ids = PingIds::with_nonce(1);
        let other = reply(&PingIds::with_nonce(2), 1);
        let tail = "{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}";
        let stream = format!("{other}{tail}");
        let (out, seen) = sieve(&[stream.as_bytes()], &ids);
        assert_eq!(out, stream.as_bytes());
        assert!(seen.is_empty());
    }

    #[test]
    fn a_line_over_the_hold_passes_through_whole() {
        let ids = PingIds::with_nonce(1);
        // A huge line that even contains the ping's id: passed on, never held whole.
        let mut long = format!("{{\"id\":\"{}\",\"result\":\"", ids.id(1)).into_bytes();
        long.extend(std::iter::repeat_n(b'x', HOLD_LINE * 2));
        long.extend_from_slice(b"\"}\n");
        let mut stream = long.clone();
        stream.extend_from_slice(reply(&ids, 2).as_bytes());
        let chunks: Vec<&[u8]> = stream.chunks(4096).collect();
        let mut filter = ReplyFilter::default();
        let (mut out, mut seen) = (Vec::new(), Vec::new());
        for chunk in chunks {
            filter.feed(chunk, &ids, &mut out, &mut |n| seen.push(n));
            assert!(filter.held.len() <= HOLD_LINE + 4096);
        }
        assert_eq!(out, long);
        assert_eq!(seen, vec![2]);
    }

    #[tokio::test]
    async fn a_ping_never_lands_inside_a_client_line() {
        use tokio::io::AsyncWriteExt as _;
        let ids = PingIds::with_nonce(1);
        let (read_fd, write_fd) = nix::unistd::pipe().expect("pipe");
        let mut to_run = pipe::Sender::from_owned_fd(write_fd).expect("sender");
        let mut run_reads = pipe::Receiver::from_owned_fd(read_fd).expect("receiver");
        let (mut client, socket) = tokio::io::duplex(1024);
        let mut from_client = BufReader::new(socket);
        let (asked, pings) = watch::channel(0u64);
        // A socket whose peer stays: the client never hangs up here.
        let (watched, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let hangup = OwnedFd::from(watched);
        let copying = lines_to(
            &mut from_client,
            &mut to_run,
            1 << 20,
            Some((pings, &ids)),
            &hangup,
        );
        let driving = async {
            client
                .write_all(b"{\"id\":1,\"method\":\"a\"}\n{\"id\":2,")
                .await
                .expect("write");
            tokio::task::yield_now().await;
            // A ping asked for while the second line is half sent goes before it.
            asked.send_replace(1);
            tokio::task::yield_now().await;
            client
                .write_all(b"\"method\":\"b\"}\n")
                .await
                .expect("write");
            tokio::task::yield_now().await;
            asked.send_replace(2);
            tokio::task::yield_now().await;
            drop(client);
        };
        let (ended, ()) = tokio::join!(copying, driving);
        assert!(matches!(ended, ToServer::Eof));
        drop(to_run);
        let mut got = Vec::new();
        run_reads.read_to_end(&mut got).await.expect("read");
        // Whole lines only, the client's in their order, each ping once.
        let text = String::from_utf8_lossy(&got).into_owned();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let (pinged, theirs): (Vec<&str>, Vec<&str>) =
            lines.iter().partition(|l| l.contains("paios-probe-"));
        assert_eq!(
            theirs,
            [
                "{\"id\":1,\"method\":\"a\"}\n",
                "{\"id\":2,\"method\":\"b\"}\n"
            ],
            "{text}"
        );
        let want: Vec<String> = [1, 2]
            .iter()
            .map(|&n| String::from_utf8_lossy(&ids.line(n)).into_owned())
            .collect();
        assert_eq!(pinged, want, "{text}");
    }
}
