//! Signal names: the one parser and the one printer, for the ledger (`SIGKILL`), stop
//! summaries, `stop.signal` in service files and anything else that names a signal.
//!
//! Names come from nix, so they are this platform's: `SIGUSR1` is 10 on Linux and 30
//! on macOS, which is why service files take only names and the ledger stores names.

use nix::sys::signal::Signal;

/// `"SIGKILL"` for 9; `"signal N"` for a number that is no signal here.
pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

/// The number of a signal named `SIGTERM`, `TERM` or `term`, or given as its number
/// (`15`). `None` for anything else, including 0.
pub fn parse_signal(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok().map(|s| s as i32);
    }
    if name.is_empty() || !name.is_ascii() {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(signal_name(-3), "signal -3");
        assert_eq!(signal_name(9999), "signal 9999");
        for sig in Signal::iterator() {
            assert_eq!(parse_signal(&signal_name(sig as i32)), Some(sig as i32));
        }
    }

    #[test]
    fn parse_signal_accepts_short_lowercase_and_numbers() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigint"), Some(libc::SIGINT));
        assert_eq!(parse_signal(" hup "), Some(libc::SIGHUP));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
    }

    #[test]
    fn parse_signal_rejects_junk() {
        for bad in [
            "", "SIG", "SIGFOO", "0", "-9", "99999", "SIGKILLX", "KİLL", "SIG TERM", "\0",
        ] {
            assert_eq!(parse_signal(bad), None, "{bad:?}");
        }
        assert_eq!(parse_signal(&"A".repeat(100_000)), None);
    }
}
