//! macOS facts doctor needs. Another process's environment is not read here (it would
//! take `sysctl(KERN_PROCARGS2)` parsing), so on macOS strays are matched by executable
//! and arguments only, and a group whose matching leader died is found by the start-up
//! sweep's records rather than by marker. Listening ports are not checked (no `/proc`;
//! `lsof` is slow and not always allowed), which `doctor` reports as a note.

/// Not read on macOS: see the module doc.
pub(super) fn environ(_pid: i32) -> Option<Vec<(String, String)>> {
    None
}

/// `process::start_time` on macOS is microseconds since the epoch.
pub(super) fn age_secs(start_time: u64) -> Option<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros();
    let now = u64::try_from(now).ok()?;
    now.checked_sub(start_time).map(|us| us / 1_000_000)
}

/// Not checked on macOS: see the module doc.
pub(super) fn port_holders(_port: u16) -> Option<Vec<i32>> {
    None
}
