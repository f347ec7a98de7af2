//! Names: what a service may be called, and the closest known name to a typo.
//!
//! A service is named by its file stem, and that name becomes a log path, a ledger
//! key and a command-line argument, so every place that takes one (the config loader,
//! `after`, `paiosctl logs`, `paiosctl ledger`) checks it with [`is_service_name`].
//! Every "did you mean" (config keys, enum values, `after` entries, time zones,
//! service names on the command line) comes from [`closest`], so one typo gets the
//! same suggestion wherever it is made.

/// The longest name accepted: a file stem, which no file system lets exceed 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A service name: 1 to 255 ASCII letters, digits, `-` and `_`. Nothing else can be a
/// file stem on every platform, nor be joined to a directory without leaving it.
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The known name most like `name`, if any is close enough to be a typo of it.
///
/// Closeness is the Damerau–Levenshtein distance (one insertion, deletion,
/// substitution or swap of neighbours each counts 1), ignoring case, and a name is
/// close enough within a third of the longer one's length (at least 1): `polcy` →
/// `policy`, `kd` → `kb`, `Europe/Berln` → `Europe/Berlin`, but nothing for `zzz`.
/// Of equally close names the first is returned.
pub fn closest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &'k str)> = None;
    for candidate in known {
        let distance = strsim::damerau_levenshtein(&lower, &candidate.to_lowercase());
        let longer = lower.chars().count().max(candidate.chars().count());
        if distance > (longer / 3).max(1) {
            continue;
        }
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_file_stems() {
        for good in [
            "kb",
            "embedding-server",
            "daily_tasks",
            "A1",
            &"x".repeat(255),
        ] {
            assert!(is_service_name(good), "{good}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "a.b",
            "a b",
            "kb\n",
            "käse",
            ".hidden",
            &"x".repeat(256),
        ] {
            assert!(!is_service_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn suggestions_are_close_names_only() {
        let keys = ["policy", "backoff", "reset_after"];
        assert_eq!(closest("polcy", keys), Some("policy"));
        assert_eq!(closest("Policy", keys), Some("policy"));
        assert_eq!(closest("bakcoff", keys), Some("backoff"));
        assert_eq!(closest("zzz", keys), None);
        assert_eq!(closest("", keys), None);
        let services = ["gateway", "kb", "embedding-server"];
        assert_eq!(closest("gatway", services), Some("gateway"));
        assert_eq!(closest("kd", services), Some("kb"));
        assert_eq!(closest("KB", services), Some("kb"));
        assert_eq!(closest("x", services), None);
        assert_eq!(closest("zzzzzzzz", services), None);
        assert_eq!(
            closest("embeding-srver", services),
            Some("embedding-server")
        );
        assert_eq!(closest("crash", ["crashes", "window"]), Some("crashes"));
        assert_eq!(closest("gooood", ["good", "bad"]), Some("good"));
        assert_eq!(closest("x", std::iter::empty()), None);
    }

    #[test]
    fn the_closest_of_several_wins_and_ties_go_to_the_first() {
        assert_eq!(
            closest("intervall", ["internal", "interval"]),
            Some("interval")
        );
        assert_eq!(closest("ab", ["ac", "ad"]), Some("ac"));
    }
}
