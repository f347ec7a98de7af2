//! The connecting side used by `paiosctl`: one request, one answer.
//!
//! Blocking std sockets on purpose: `paiosctl status` is a whole process per call and
//! should take a few milliseconds, so no async runtime is started. A missing socket or
//! a refused connection means paiosd is not running ([`ClientError::NotRunning`], exit
//! code 3); everything else is a failure to talk to a paiosd that is there.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::protocol::{decode_response, encode_request, Request, Response};

/// How long connecting, and answering a request that does not wait, may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer line longer than this is not from paiosd.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket, or nothing listening on it.
    #[error("{}", not_running_message(socket, source))]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to paiosd at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("paiosd did not answer within {}", crate::units::format_duration(*.0))]
    Timeout(Duration),
    #[error("lost the connection to paiosd: {0}")]
    Io(#[from] io::Error),
    /// paiosd closed the connection without answering.
    #[error("paiosd closed the connection without answering")]
    Closed,
    /// The answer could not be read, e.g. another protocol version.
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// paiosctl's exit code: 3 when paiosd is not running, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotRunning { .. } => 3,
            _ => 1,
        }
    }

    /// The stable code for `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::NotRunning { .. } => "not_running",
            ClientError::Connect { .. } => "connect_failed",
            ClientError::Timeout(_) => "timeout",
            ClientError::Io(_) | ClientError::Closed => "connection_lost",
            ClientError::Protocol(_) => "protocol",
        }
    }
}

fn not_running_message(socket: &Path, source: &io::Error) -> String {
    let why = if source.kind() == io::ErrorKind::NotFound {
        format!("no socket at {}", socket.display())
    } else {
        format!("nothing answers at {}", socket.display())
    };
    let how = if cfg!(target_os = "macos") {
        "`launchctl kickstart gui/$UID/paios`"
    } else {
        "`systemctl --user start paiosd`"
    };
    format!("paiosd is not running ({why}). Start it with `paiosd` or {how}")
}

/// One connection to paiosd; requests go one after another.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    timeout: Duration,
}

impl Client {
    /// Connects with [`DEFAULT_TIMEOUT`].
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        Client::connect_timeout(socket, DEFAULT_TIMEOUT)
    }

    /// Connects, giving up after `timeout` (a paiosd whose accept backlog is full makes
    /// a blocking connect wait forever).
    pub fn connect_timeout(socket: &Path, timeout: Duration) -> Result<Client, ClientError> {
        // The send timeout set for connecting stays on the stream.
        let stream =
            connect_unix(socket, timeout).map_err(|source| classify(socket, timeout, source))?;
        Ok(Client {
            reader: BufReader::new(stream),
            timeout,
        })
    }

    /// Sends `request` and reads the answer. A request that waits for its operation
    /// (`restart`, `run`, ...) waits as long as paiosd takes; others time out.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let read_timeout = if request.waits() {
            None
        } else {
            Some(self.timeout)
        };
        let stream = self.reader.get_mut();
        stream.set_read_timeout(read_timeout)?;
        if let Err(e) = stream.write_all(&encode_request(request)) {
            // paiosd may refuse (a foreign UID, a flood) and close before reading; its
            // answer is still waiting to be read and says why.
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(self.timed_out(e));
            }
        }
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_RESPONSE_BYTES)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.timed_out(e))?;
        if read == 0 {
            return Err(ClientError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(
                if read as u64 >= MAX_RESPONSE_BYTES {
                    "paiosd's answer is too large".into()
                } else {
                    "paiosd's answer ended in the middle of a line".into()
                },
            ));
        }
        line.pop();
        decode_response(&line).map_err(ClientError::Protocol)
    }

    fn timed_out(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout(self.timeout)
            }
            _ => ClientError::Io(e),
        }
    }
}

/// A bare connection to one of paiosd's sockets (the MCP bridge's), failing the way
/// [`Client::connect_timeout`] does.
pub fn connect_stream(socket: &Path, timeout: Duration) -> Result<UnixStream, ClientError> {
    connect_unix(socket, timeout).map_err(|source| classify(socket, timeout, source))
}

fn classify(socket: &Path, timeout: Duration, source: io::Error) -> ClientError {
    let not_running = matches!(
        source.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    ) || source.raw_os_error() == Some(libc::ENOTDIR);
    if not_running {
        ClientError::NotRunning {
            socket: socket.to_path_buf(),
            source,
        }
    } else if source.kind() == io::ErrorKind::TimedOut {
        ClientError::Timeout(timeout)
    } else {
        ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        }
    }
}

/// A connect bounded by `timeout`. A Unix socket connects at once or not at all, except
/// when paiosd's listen backlog is full: then Linux waits for room for as long as the
/// socket's send timeout, and answers EAGAIN when that runs out (macOS refuses at once).
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let addr = SockAddr::unix(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is unusable: {e}", path.display()),
        )
    })?;
    // Close-on-exec from the start: nothing paiosctl runs inherits the connection.
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_write_timeout(Some(timeout))?;
    loop {
        match socket.connect(&addr) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "paiosd's socket backlog stayed full",
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

// Linux only: macOS refuses a connect to a full backlog at once.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A paiosd that stopped accepting: once its backlog is full, connecting gives up
    /// after the timeout instead of waiting for ever.
    #[test]
    fn a_full_backlog_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).expect("socket");
        listener
            .bind(&SockAddr::unix(&path).expect("address"))
            .expect("bind");
        listener.listen(0).expect("listen");
        let mut held = Vec::new();
        loop {
            match connect_unix(&path, Duration::from_millis(50)) {
                Ok(stream) => held.push(stream),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                    break;
                }
            }
            assert!(held.len() < 100, "the backlog never filled");
        }
        let started = Instant::now();
        let err = Client::connect_timeout(&path, Duration::from_millis(300))
            .expect_err("the backlog is full");
        let took = started.elapsed();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}
