//! The socket side inside paiosd: accept, check the peer UID, read size-limited request
//! lines with timeouts, and hand each request to the supervisor actor.
//!
//! Every connection runs on its own task, so a slow, stuck or hostile client only ever
//! holds its own task (promise 10): a request line must arrive complete within
//! [`Limits::request_timeout`], is never buffered beyond [`MAX_REQUEST_BYTES`] (the rest
//! of an oversized line is read and thrown away in chunks), and a full supervisor queue
//! answers `overloaded` after [`Limits::queue_timeout`] instead of piling up. The
//! actor's channel is bounded and each connection has at most one request in it.
//!
//! A connection may send several requests one after another. After a malformed request,
//! an unknown op or a wrong version (the line was read whole, so framing is intact) the
//! connection stays open; after an oversized, half-sent or timed-out line, or a foreign
//! UID, it gets one error line and is closed.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::protocol::{
    decode_request, encode_response, ErrorCode, Request, Response, MAX_REQUEST_BYTES,
};
use super::ControlMsg;

/// The bounds that keep one client from costing paiosd more than one small task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the start of waiting for a request line to its newline. Also bounds
    /// writing an answer to a client that does not read.
    pub request_timeout: Duration,
    /// How long a request may wait for room in the supervisor's queue.
    pub queue_timeout: Duration,
    /// Open connections beyond this are answered `overloaded` and closed, so a flood
    /// cannot exhaust paiosd's file descriptors.
    pub max_connections: usize,
    /// After shutdown, how long answers already being worked on may take to go out.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_timeout: Duration::from_secs(5),
            queue_timeout: Duration::from_secs(2),
            max_connections: 256,
            drain: Duration::from_secs(2),
        }
    }
}

/// Binds the control socket at `socket_path`, mode 0600.
///
/// Called only while paiosd holds the instance lock, so whatever socket is already at
/// the path belongs to a dead paiosd and is removed. Anything that is not a socket is
/// left alone and refused. The socket is bound under a temporary name in the same
/// directory, set to 0600, then renamed into place, so it never answers at its real
/// path with looser permissions and the process-wide umask is never touched (other
/// threads may be creating files). Must be called inside a tokio runtime.
pub fn bind(socket_path: &Path) -> io::Result<UnixListener> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "control::server::bind must be called inside a tokio runtime",
        ));
    }
    remove_stale_socket(socket_path)?;
    let temporary = temporary_path(socket_path);
    remove_stale_socket(&temporary)?;
    let listener = std::os::unix::net::UnixListener::bind(&temporary).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind control socket {}: {e}", temporary.display()),
        )
    })?;
    let placed = fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600))
        .and_then(|()| fs::rename(&temporary, socket_path))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = placed {
        let _ = fs::remove_file(&temporary);
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot place control socket at {}: {e}",
                socket_path.display()
            ),
        ));
    }
    UnixListener::from_std(listener)
}

/// Short, so that it fits the socket address limit whenever `paiosd.sock` does.
fn temporary_path(socket_path: &Path) -> PathBuf {
    socket_path.with_file_name(".sock.new")
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot inspect {}: {e}", path.display()),
        )),
        Ok(meta) if meta.file_type().is_socket() => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!("cannot remove stale socket {}: {e}", path.display()),
            )),
            _ => Ok(()),
        },
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it. Move it away and start paiosd again",
                path.display()
            ),
        )),
    }
}

/// Serves the control socket with the default [`Limits`] until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    to_supervisor: mpsc::Sender<ControlMsg>,
    shutdown: CancellationToken,
) {
    serve_with(listener, to_supervisor, shutdown, Limits::default()).await;
}

/// The accept loop. On `shutdown` it stops accepting (the listener is dropped, so new
/// clients are refused), lets answers in flight go out for up to [`Limits::drain`],
/// then aborts what is left and returns.
pub async fn serve_with(
    listener: UnixListener,
    to_supervisor: mpsc::Sender<ControlMsg>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("a control connection task panicked: {e}");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let tx = to_supervisor.clone();
                        let token = shutdown.clone();
                        connections.spawn(async move {
                            connection(stream, tx, token, limits).await;
                            drop(slot);
                        });
                    }
                    Err(_) => refuse_at_once(&stream, ErrorCode::Overloaded, format!(
                        "paiosd already has {} control connections open; try again",
                        limits.max_connections
                    )),
                },
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning on accept.
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            "aborting {} control connections at shutdown",
            connections.len()
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Answers without waiting: the accept loop must never block on one client.
fn refuse_at_once(stream: &UnixStream, code: ErrorCode, message: String) {
    let _ = stream.try_write(&encode_response(&Response::error(code, message)));
}

async fn connection(
    stream: UnixStream,
    to_supervisor: mpsc::Sender<ControlMsg>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            tracing::warn!("control connection without peer credentials, closing: {e}");
            return;
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me {
        tracing::warn!(
            uid = cred.uid(),
            pid = ?cred.pid(),
            "refused a control connection from UID {} (PID {}): only UID {me} may control paiosd",
            cred.uid(),
            cred.pid().map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        );
        let (_, mut writer) = stream.into_split();
        let answer = Response::error(
            ErrorCode::PermissionDenied,
            format!(
                "paiosd belongs to UID {me}; UID {} may not control it",
                cred.uid()
            ),
        );
        let _ = answer_with(&mut writer, &answer, &limits).await;
        return;
    }

    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let read = tokio::select! {
            () = shutdown.cancelled() => return,
            read = tokio::time::timeout(
                limits.request_timeout,
                read_line_bounded(&mut reader, MAX_REQUEST_BYTES),
            ) => read,
        };
        let line = match read {
            Ok(Ok(LineRead::Line(line))) => line,
            Ok(Ok(LineRead::Eof)) => return,
            Ok(Err(e)) => {
                tracing::debug!("control connection read failed: {e}");
                return;
            }
            Ok(Ok(LineRead::Truncated)) => {
                let answer = Response::error(
                    ErrorCode::BadRequest,
                    "the request ended without a newline; nothing was done",
                );
                let _ = answer_with(&mut writer, &answer, &limits).await;
                return;
            }
            Ok(Ok(LineRead::TooLarge)) => {
                let answer = Response::error(
                    ErrorCode::TooLarge,
                    format!("a request line is at most {MAX_REQUEST_BYTES} bytes"),
                );
                let _ = answer_with(&mut writer, &answer, &limits).await;
                return;
            }
            Err(_elapsed) => {
                let answer = Response::error(
                    ErrorCode::Timeout,
                    format!(
                        "no complete request line within {}; closing",
                        crate::units::format_duration(limits.request_timeout)
                    ),
                );
                let _ = answer_with(&mut writer, &answer, &limits).await;
                return;
            }
        };
        let answer = match decode_request(&line) {
            Err(body) => Response::Error(body),
            Ok(request) => match ask(request, &to_supervisor, &mut reader, &limits).await {
                Some(answer) => answer,
                None => return,
            },
        };
        if answer_with(&mut writer, &answer, &limits).await.is_err() {
            return;
        }
    }
}

/// Hands `request` to the supervisor and waits for its answer as long as it takes (a
/// restart may take a service's whole grace), unless the client hangs up first: then
/// the reply receiver is dropped and `None` returned.
async fn ask<R: AsyncBufRead + Unpin>(
    request: Request,
    to_supervisor: &mpsc::Sender<ControlMsg>,
    reader: &mut R,
    limits: &Limits,
) -> Option<Response> {
    let (reply, mut answer) = oneshot::channel();
    let msg = ControlMsg { request, reply };
    match to_supervisor.send_timeout(msg, limits.queue_timeout).await {
        Ok(()) => {}
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            return Some(Response::error(
                ErrorCode::Overloaded,
                "paiosd's supervisor has too many requests queued; try again",
            ))
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => {
            return Some(Response::error(
                ErrorCode::ShuttingDown,
                "paiosd is shutting down",
            ))
        }
    }
    let mut watch_hangup = true;
    loop {
        tokio::select! {
            answered = &mut answer => {
                return Some(answered.unwrap_or_else(|_| {
                    Response::error(ErrorCode::ShuttingDown, "paiosd is shutting down; the request was dropped")
                }));
            }
            // A client that sends its next request early is still there; stop watching
            // and leave those bytes buffered for the next read.
            at_eof = async { reader.fill_buf().await.map(|b| b.is_empty()) }, if watch_hangup => {
                match at_eof {
                    Ok(false) => watch_hangup = false,
                    Ok(true) | Err(_) => return None,
                }
            }
        }
    }
}

async fn answer_with(
    writer: &mut OwnedWriteHalf,
    answer: &Response,
    limits: &Limits,
) -> io::Result<()> {
    let line = encode_response(answer);
    match tokio::time::timeout(limits.request_timeout, writer.write_all(&line)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not read its answer",
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    Line(Vec<u8>),
    /// The peer closed before sending anything.
    Eof,
    /// The peer closed in the middle of a line.
    Truncated,
    /// The line was longer than the limit; it has been read to its end and discarded.
    TooLarge,
}

/// Reads one line without its newline, holding at most `max` bytes of it (plus the
/// reader's own buffer): past the limit the rest of the line is consumed and dropped
/// chunk by chunk, so a 100 MB line costs no more memory than a 64 KiB one.
///
/// Not `tokio_util`'s `LinesCodec`, whose rules differ where this socket's are
/// promised: it fails the whole stream on a line that is not UTF-8 (here that is one
/// `bad_request` and the connection goes on), strips a `\r`, hands on a line cut short
/// by EOF as if complete (here it is refused and nothing is done), and reports an
/// oversized line when the limit is crossed, then skips the rest where the caller cannot
/// see it end (here the answer waits for the line's newline, so the client's write never
/// fails).
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<LineRead> {
    let mut line = Vec::new();
    let mut too_large = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if too_large {
                LineRead::TooLarge
            } else if line.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Truncated
            });
        }
        let (end, used, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None => (chunk.len(), chunk.len(), false),
        };
        if !too_large {
            if line.len() + end > max {
                too_large = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(&chunk[..end]);
            }
        }
        reader.consume(used);
        if complete {
            return Ok(if too_large {
                LineRead::TooLarge
            } else {
                LineRead::Line(line)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], max: usize) -> Vec<LineRead> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // A tiny buffer makes every line cross chunk boundaries.
            let mut reader = BufReader::with_capacity(3, input);
            let mut out = Vec::new();
            loop {
                let r = read_line_bounded(&mut reader, max).await.expect("read");
                let end = matches!(r, LineRead::Eof | LineRead::Truncated);
                out.push(r);
                if end {
                    return out;
                }
            }
        })
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(
            read(b"abcdefg\n\nxy\n", 10),
            vec![
                LineRead::Line(b"abcdefg".to_vec()),
                LineRead::Line(Vec::new()),
                LineRead::Line(b"xy".to_vec()),
                LineRead::Eof
            ]
        );
    }

    #[test]
    fn the_limit_is_exact_and_oversized_lines_are_skipped() {
        assert_eq!(
            read(b"12345\n123456\nok\n", 5),
            vec![
                LineRead::Line(b"12345".to_vec()),
                LineRead::TooLarge,
                LineRead::Line(b"ok".to_vec()),
                LineRead::Eof
            ]
        );
    }

    #[test]
    fn a_half_line_is_truncated() {
        assert_eq!(
            read(b"ok\nhal", 10),
            vec![LineRead::Line(b"ok".to_vec()), LineRead::Truncated]
        );
        assert_eq!(
            read(b"0123456789abc", 5),
            vec![LineRead::TooLarge, LineRead::Eof]
        );
    }

    #[test]
    fn bind_outside_a_runtime_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = bind(&dir.path().join("s.sock")).expect_err("no runtime");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
