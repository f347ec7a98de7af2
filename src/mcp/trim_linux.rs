//! The bridge lives as long as an editor session, next to every other bridge, so it
//! gives back the pages that only its start-up touched (argument parsing, the connect,
//! the greeting): the code and constants of `paiosctl` and its libraries are dropped
//! from the process's page tables once, and read back as the copy loop needs them.
//! Only mappings that cannot be written and hold no copied-on-write page are touched
//! (code and constants; never relocated data), so the kernel reads the same bytes back
//! from the file, or from the page cache where they stay for every other process.

use std::io;

/// Drops the resident pages of the never-written file mappings, asking the kernel not
/// to read ahead on later faults (`MADV_RANDOM`).
pub fn shed_startup_code() -> io::Result<()> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    for (start, end) in code_ranges(&smaps) {
        let len = end - start;
        let addr = start as *mut libc::c_void;
        // SAFETY: the range is one whole private file mapping that is never written
        // (see `code_ranges`), as the kernel lists it; MADV_RANDOM changes only
        // read-ahead, and MADV_DONTNEED on such a mapping only drops pages that the next
        // access reads again, unchanged, from the same file.
        let failed = unsafe {
            libc::madvise(addr, len, libc::MADV_RANDOM) != 0
                || libc::madvise(addr, len, libc::MADV_DONTNEED) != 0
        };
        if failed {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In a `/proc/self/smaps` text: every private file mapping that cannot be written
/// (`r--p`, `r-xp`) and holds no page of its own (`Anonymous: 0 kB`: nothing was copied
/// on write, such as relocated data before it was made read-only), so dropping its
/// pages loses nothing.
fn code_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            if let Some(range) = current.take() {
                if anonymous.trim() == "0 kB" {
                    ranges.push(range);
                }
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-').and_then(|(start, end)| {
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        }) else {
            continue; // a field line such as `Rss:`, not a mapping's first line
        };
        let path = fields.nth(3).unwrap_or("");
        let never_written = matches!(perms, "r--p" | "r-xp") && path.starts_with('/');
        current = (never_written && end > start).then_some((start, end));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unwritable_file_mappings_without_copied_pages_are_chosen() {
        let smaps = "\
55c988560000-55c988646000 r--p 00000000 fe:00 5383151 /opt/paiosctl
Rss:                 448 kB
Anonymous:             0 kB
55c988646000-55c988a3b000 r-xp 000e5000 fe:00 5383151 /opt/paiosctl
Anonymous:             0 kB
55c988a3b000-55c988a59000 r--p 004d9000 fe:00 5383151 /opt/paiosctl
Anonymous:           116 kB
55c988a59000-55c988a5b000 rw-p 004f6000 fe:00 5383151 /opt/paiosctl
Anonymous:             0 kB
55c9c7daf000-55c9c7de1000 rw-p 00000000 00:00 0 [heap]
Anonymous:           136 kB
7f3e085f4000-7f3e0874a000 r-xp 00026000 fe:00 326279 /usr/lib/libc.so.6
Anonymous:             0 kB
7fff93800000-7fff9380d000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            code_ranges(smaps),
            vec![
                (0x55c988560000, 0x55c988646000),
                (0x55c988646000, 0x55c988a3b000),
                (0x7f3e085f4000, 0x7f3e0874a000),
            ]
        );
    }

    #[test]
    fn this_process_runs_on_after_shedding_its_code() {
        shed_startup_code().expect("madvise");
        // The code and constants dropped a moment ago are read back as they are used.
        assert!(code_ranges("").is_empty());
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
