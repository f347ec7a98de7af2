//! The connecting side used by `paiosctl`: one request, one answer.
//!
//! Blocking std sockets on purpose: `paiosctl status` is a whole process per call and
//! should take a few milliseconds, so no async runtime is started. A missing socket or
//! a refused connection means paiosd is not running ([`ClientError::NotRunning`], exit
//! code 3); everything else is a failure to talk to a paiosd that is there.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

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
        let stream = connect_unix(socket, timeout).map_err(|source| classify(socket, source))?;
        stream.set_write_timeout(Some(timeout))?;
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

fn classify(socket: &Path, source: io::Error) -> ClientError {
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
        ClientError::Timeout(Duration::ZERO)
    } else {
        ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        }
    }
}

/// A non-blocking connect bounded by `timeout`, then a blocking stream.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is unusable: {e}", path.display()),
        )
    })?;
    let deadline = Instant::now() + timeout;
    loop {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        set_cloexec_nonblocking(&fd)?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return blocking(fd),
            Err(Errno::EINPROGRESS) => {
                wait_writable(&fd, deadline)?;
                let status = socket::getsockopt(&fd, socket::sockopt::SocketError)?;
                if status != 0 {
                    return Err(io::Error::from_raw_os_error(status));
                }
                return blocking(fd);
            }
            // Linux answers EAGAIN at once when the listen backlog is full.
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "paiosd's socket backlog stayed full",
                ))
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn set_cloexec_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn wait_writable(fd: &OwnedFd, deadline: Instant) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if ms == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting to paiosd timed out",
            ));
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn blocking(fd: OwnedFd) -> io::Result<UnixStream> {
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
