//! Log throughput: a writer at full speed through `Logs` (pipe → drain thread →
//! buffer → writer thread → rotated files) against the same writer straight into a
//! file, plus the CPU the two log threads spent per GB. Prints figures, asserts
//! nothing. `cargo run --release --example logs_bench -- [MB] [LINE_BYTES]`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use paios::config::LogSettings;
use paios::logs::{Logs, BUFFER_BOUND};

/// A block of lines of `line` bytes each (newline included), about 64 KiB.
fn block(line: usize) -> Vec<u8> {
    let line = line.max(2);
    let mut b = Vec::new();
    let mut i = 0u64;
    while b.len() + line <= 64 * 1024 {
        let mut l = format!("{i:09} ").into_bytes();
        l.resize(line - 1, b'x');
        l.push(b'\n');
        b.extend_from_slice(&l);
        i += 1;
    }
    b
}

fn write_all(mut out: impl Write, block: &[u8], total: u64) -> u64 {
    let mut written = 0;
    while written < total {
        if out.write_all(block).is_err() {
            break;
        }
        written += block.len() as u64;
    }
    written
}

/// CPU seconds spent by this process's threads whose name starts with `prefix`.
#[cfg(target_os = "linux")]
fn thread_cpu(prefix: &str) -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        total += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    }
    Some(total as f64 / ticks)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu(_prefix: &str) -> Option<f64> {
    None
}

/// Process CPU seconds (all threads), as a fallback where threads cannot be told apart.
fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn report(what: &str, bytes: u64, lines: u64, t: Duration) {
    let s = t.as_secs_f64();
    println!(
        "{what:<44} {:>8.1} MB/s {:>12.0} lines/s  ({:.2} s)",
        bytes as f64 / 1e6 / s,
        lines as f64 / s,
        s
    );
}

fn through_logs(
    dir: &Path,
    label: &str,
    bound: usize,
    settings: LogSettings,
    block: &[u8],
    total: u64,
    per_line: u64,
) -> f64 {
    let logs = Logs::start_with(dir, bound);
    let (out_r, out_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipe: {e}");
            return 0.0;
        }
    };
    let (err_r, err_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipe: {e}");
            return 0.0;
        }
    };
    logs.attach("bench", 1, settings, out_r, err_r);
    let cpu0 = thread_cpu("paios-log").unwrap_or(0.0);
    let pcpu0 = process_cpu();
    let start = Instant::now();
    let written = write_all(File::from(out_w), block, total);
    let writer_t = start.elapsed();
    drop(err_w);
    // Answered once both pipes reached end of file: everything is buffered.
    let _ = logs
        .stderr_tail(1, 0, Duration::from_secs(600))
        .blocking_recv();
    while logs.stats("bench").bytes > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = start.elapsed();
    let cpu = thread_cpu("paios-log").map(|c| c - cpu0);
    let pcpu = process_cpu() - pcpu0;
    let dropped = logs.dropped("bench");
    let kept = written.saturating_sub(dropped * per_line);
    report(
        &format!("{label}: writer"),
        written,
        written / per_line,
        writer_t,
    );
    report(&format!("{label}: on disk"), kept, kept / per_line, t);
    println!(
        "{:<44} {dropped} lines dropped ({:.1} %)",
        "",
        100.0 * (dropped * per_line) as f64 / written as f64
    );
    let gb = written as f64 / 1e9;
    match cpu {
        Some(c) => println!(
            "{:<44} {:>8.2} s CPU per GB in the two log threads",
            "",
            c / gb
        ),
        None => println!(
            "{:<44} {:>8.2} s CPU per GB (whole process, writer included)",
            "",
            pcpu / gb
        ),
    }
    logs.close();
    kept as f64 / t.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(512);
    let line: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let total = mb * 1_000_000;
    let block = block(line);
    let per_line = line as u64;
    let tmp = match tempfile::Builder::new()
        .prefix("paios-logs-bench")
        .tempdir()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tempdir: {e}");
            return;
        }
    };
    println!(
        "{mb} MB in lines of {line} bytes, into {}",
        tmp.path().display()
    );
    // Once unmeasured, so both measured runs find the page cache in the same state.
    let warm = tmp.path().join("warm.log");
    if let Ok(f) = File::create(&warm) {
        write_all(f, &block, total);
    }
    let _ = std::fs::remove_file(&warm);

    let direct_path = tmp.path().join("direct.log");
    let start = Instant::now();
    let written = match File::create(&direct_path) {
        Ok(f) => write_all(f, &block, total),
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let direct_t = start.elapsed();
    report("direct to a file", written, written / per_line, direct_t);
    let direct_rate = written as f64 / direct_t.as_secs_f64();
    let _ = std::fs::remove_file(&direct_path);

    let plain = LogSettings {
        max_size: 10 * 1024 * 1024,
        keep: 5,
        timestamps: false,
        streams: false,
    };
    let d1 = tmp.path().join("plain");
    let rate = through_logs(
        &d1,
        "through paios (10 MiB rotation)",
        BUFFER_BOUND,
        plain,
        &block,
        total,
        per_line,
    );
    println!(
        "{:<44} {:>8.0} % of direct (on disk)",
        "",
        100.0 * rate / direct_rate
    );

    // The same with a larger buffer: a writer faster than the disk waits on its pipe
    // while the buffer is full, so a larger bound buys little throughput.
    let d3 = tmp.path().join("big");
    let rate = through_logs(
        &d3,
        "through paios (16 MiB buffer)",
        16 << 20,
        plain,
        &block,
        total,
        per_line,
    );
    println!(
        "{:<44} {:>8.0} % of direct (on disk)",
        "",
        100.0 * rate / direct_rate
    );

    let stamped = LogSettings {
        timestamps: true,
        streams: true,
        ..plain
    };
    let d2 = tmp.path().join("stamped");
    let rate = through_logs(
        &d2,
        "through paios (+timestamps, streams)",
        BUFFER_BOUND,
        stamped,
        &block,
        total,
        per_line,
    );
    println!(
        "{:<44} {:>8.0} % of direct (on disk)",
        "",
        100.0 * rate / direct_rate
    );
}
