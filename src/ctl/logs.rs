//! `paiosctl logs NAME|--all [-n N] [-f] [--since WHEN] [--stderr]`: the last lines of
//! service logs, or follow them across rotation. Reads the log files directly, so it
//! works while paiosd is down. Lines are printed as the service wrote them (a log need
//! not be UTF-8); with `--json`, one `{"service":...,"line":...}` object per line.

use std::io::{self, Write};
use std::path::Path;

use crate::dirs::Dirs;
use crate::logs::read::Filter;
use crate::names::is_service_name;

use super::{failure, print_bytes, Failure, Outcome};

/// The arguments of `paiosctl logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The service whose log to show.
    #[arg(required_unless_present = "all")]
    pub name: Option<String>,
    /// Every service's log, each line prefixed with its service.
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// How many lines to show.
    #[arg(short = 'n', long = "lines", default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines written since then: `10m`, `2h`, `1d`, `1w` ago, or an RFC 3339 time.
    /// Needs `timestamps = true` in the service's `[logs]`; unstamped lines always show.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only what the service wrote to stderr. Needs `streams = true` in its `[logs]`.
    #[arg(long)]
    pub stderr: bool,
}

pub fn logs(dirs: &Dirs, args: &LogsArgs, json: bool) -> Outcome {
    let dir = &dirs.logs;
    let names = names(dir, &dirs.config, args)?;
    let since = match &args.since {
        Some(text) => Some(
            crate::logs::read::parse_since(text, chrono::Utc::now())
                .map_err(|e| failure("bad_request", e.to_string()))?,
        ),
        None => None,
    };
    let filter = Filter {
        since,
        stderr_only: args.stderr,
    };
    if args.follow {
        follow(dir, &names, args, &filter, json)
    } else {
        tail(dir, &names, args, &filter, json)
    }
}

/// The services whose logs to show: the one named, or every one for `--all`.
fn names(dir: &Path, config: &Path, args: &LogsArgs) -> Result<Vec<String>, Failure> {
    Ok(match &args.name {
        Some(name) if !is_service_name(name) => {
            return Err(failure(
                "bad_request",
                format!("`{name}` is not a service name (letters, digits, `-`, `_`)"),
            ))
        }
        Some(name) => vec![name.clone()],
        None if args.follow => {
            // Configured services that have not written yet are followed too, so
            // their first lines show up.
            let mut names = logged_services(dir)?;
            names.extend(crate::config::load(config).services.into_keys());
            names.sort();
            names.dedup();
            names
        }
        None => logged_services(dir)?,
    })
}

fn follow(dir: &Path, names: &[String], args: &LogsArgs, filter: &Filter, json: bool) -> Outcome {
    let prefix = args.all;
    let mut out: Box<dyn Write> = if json {
        let service = if prefix { None } else { names.first().cloned() };
        Box::new(JsonLines::new(service, io::stdout()))
    } else {
        Box::new(io::stdout())
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    match crate::logs::read::follow_with(dir, names, args.lines, prefix, filter, &stop, &mut out) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(failure(
            "logs",
            format!("cannot follow logs in {}: {e}", dir.display()),
        )),
    }
}

fn tail(dir: &Path, names: &[String], args: &LogsArgs, filter: &Filter, json: bool) -> Outcome {
    let mut text: Vec<u8> = Vec::new();
    for name in names {
        let lines =
            crate::logs::read::tail_filtered(dir, name, args.lines, filter).map_err(|e| {
                failure(
                    "logs",
                    format!(
                        "cannot read {}: {e}",
                        crate::logs::log_path(dir, name).display()
                    ),
                )
            })?;
        for line in lines {
            if json {
                let line = String::from_utf8_lossy(&line);
                let value =
                    serde_json::json!({"service": name, "line": line.trim_end_matches('\r')});
                text.extend_from_slice(value.to_string().as_bytes());
            } else {
                if args.all {
                    text.extend_from_slice(format!("{name} | ").as_bytes());
                }
                text.extend_from_slice(&line);
            }
            text.push(b'\n');
        }
    }
    print_bytes(&text)
}

/// The services that have a current log file, for `logs --all`: works without paiosd.
fn logged_services(dir: &Path) -> Result<Vec<String>, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| failure("logs", format!("cannot list {}: {e}", dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_suffix(".log")
                // paiosd's own log is not a service's: `paiosctl logs paiosd` shows it.
                .filter(|stem| is_service_name(stem) && *stem != "paiosd")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Turns followed log output into one JSON object per line.
struct JsonLines<W: Write> {
    service: Option<String>,
    pending: Vec<u8>,
    out: W,
}

impl<W: Write> JsonLines<W> {
    fn new(service: Option<String>, out: W) -> JsonLines<W> {
        JsonLines {
            service,
            pending: Vec::new(),
            out,
        }
    }
}

impl<W: Write> Write for JsonLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            let value =
                serde_json::json!({"service": self.service, "line": text.trim_end_matches('\r')});
            writeln!(self.out, "{value}")?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_splits_across_writes() {
        let mut out = Vec::new();
        {
            let mut w = JsonLines::new(Some("kb".into()), &mut out);
            w.write_all(b"hel").expect("write");
            w.write_all(b"lo\r\nwor").expect("write");
            w.write_all(b"ld\n").expect("write");
        }
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"line\":\"hello\",\"service\":\"kb\"}\n{\"line\":\"world\",\"service\":\"kb\"}\n"
        );
    }
}
