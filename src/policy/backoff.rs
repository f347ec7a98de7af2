//! Exponential backoff with jitter: how long to wait before restart attempt `k`.
//!
//! The base delay is `min(max, initial * factor^(k-1))`; jitter then spreads it
//! uniformly over `base * (1 - jitter) ..= base * (1 + jitter)` so that services that
//! crashed together do not restart together. Because the base never exceeds `max`,
//! the jittered delay never exceeds `max * (1 + jitter)`: jitter may overshoot `max`
//! by at most the jitter fraction, never more. Arithmetic is done in `f64`
//! nanoseconds and saturates, so a huge attempt number or factor gives `max`, never
//! an overflow or a panic.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The delay before restart attempt `attempt` (1-based; 0 is treated as 1), before jitter.
///
/// A `factor` below 1.0 or not a number is treated as 1.0 (a constant delay): a
/// backoff must never shrink. An `initial` above `max` gives `max`.
pub fn base_delay(cfg: &BackoffConfig, attempt: u32) -> Duration {
    nanos_to_duration(base_nanos(cfg, attempt))
}

/// The delay before restart attempt `attempt` (1-based), jittered by `sample` (uniform
/// in `0.0..1.0`).
///
/// The result lies in `base * (1 - jitter) ..= base * (1 + jitter)` and never above
/// `max * (1 + jitter)`. `jitter` is clamped to `0.0..=1.0`; a `sample` outside
/// `0.0..=1.0` is clamped, and a NaN sample means no jitter.
pub fn delay(cfg: &BackoffConfig, attempt: u32, sample: f64) -> Duration {
    let base = base_nanos(cfg, attempt);
    let jitter = if cfg.jitter.is_nan() {
        0.0
    } else {
        cfg.jitter.clamp(0.0, 1.0)
    };
    let sample = if sample.is_nan() {
        0.5
    } else {
        sample.clamp(0.0, 1.0)
    };
    let jittered = base * (1.0 - jitter + 2.0 * jitter * sample);
    // Rounding in the multiplication must not push the delay past the documented bound.
    let ceiling = cfg.max.as_nanos() as f64 * (1.0 + jitter);
    nanos_to_duration(jittered.min(ceiling))
}

fn base_nanos(cfg: &BackoffConfig, attempt: u32) -> f64 {
    let initial = cfg.initial.as_nanos() as f64;
    let max = cfg.max.as_nanos() as f64;
    if initial == 0.0 {
        return 0.0;
    }
    let factor = if cfg.factor >= 1.0 { cfg.factor } else { 1.0 };
    let exponent = f64::from(attempt.max(1) - 1);
    let grown = initial * factor.powf(exponent);
    if grown.is_finite() {
        grown.min(max)
    } else {
        max
    }
}

/// Converts a non-negative count of nanoseconds to a `Duration`, rounding to the
/// nearest nanosecond and saturating at `Duration::MAX`.
fn nanos_to_duration(nanos: f64) -> Duration {
    if nanos.is_nan() || nanos <= 0.0 {
        return Duration::ZERO;
    }
    if nanos >= Duration::MAX.as_nanos() as f64 {
        return Duration::MAX;
    }
    let nanos = nanos.round() as u128;
    let secs = nanos / 1_000_000_000;
    let sub = (nanos % 1_000_000_000) as u32;
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, sub),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(initial_ms: u64, max_ms: u64, factor: f64, jitter: f64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            factor,
            jitter,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn base_sequence_doubles_until_max() {
        let c = cfg(100, 60_000, 2.0, 0.0);
        let got: Vec<Duration> = (1..=12).map(|k| base_delay(&c, k)).collect();
        let want: Vec<Duration> = [
            100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 51_200, 60_000, 60_000,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn attempt_zero_is_treated_as_first() {
        let c = cfg(100, 60_000, 2.0, 0.0);
        assert_eq!(base_delay(&c, 0), ms(100));
    }

    #[test]
    fn zero_jitter_ignores_the_sample() {
        let c = cfg(100, 60_000, 2.0, 0.0);
        for s in [0.0, 0.5, 0.999] {
            assert_eq!(delay(&c, 3, s), ms(400));
        }
    }

    #[test]
    fn jitter_spreads_over_the_documented_range() {
        let c = cfg(100, 60_000, 2.0, 0.2);
        assert_eq!(delay(&c, 4, 0.0), ms(640));
        assert_eq!(delay(&c, 4, 0.5), ms(800));
        // 800ms * (0.8 + 0.4 * 0.999) = 959.68ms
        assert_eq!(delay(&c, 4, 0.999), Duration::from_micros(959_680));
        assert!(delay(&c, 4, 0.999) < ms(960));
    }

    #[test]
    fn jitter_never_exceeds_max_by_more_than_the_fraction() {
        let c = cfg(100, 60_000, 2.0, 0.2);
        for k in [11, 20, 1000, u32::MAX] {
            assert_eq!(delay(&c, k, 0.0), ms(48_000));
            assert_eq!(delay(&c, k, 0.5), ms(60_000));
            assert!(delay(&c, k, 0.999) <= ms(72_000));
            assert_eq!(delay(&c, k, 1.0), ms(72_000));
        }
        // Out-of-range samples are clamped rather than trusted.
        assert_eq!(delay(&c, 50, 7.0), ms(72_000));
        assert_eq!(delay(&c, 50, -3.0), ms(48_000));
        assert_eq!(delay(&c, 50, f64::NAN), ms(60_000));
        assert_eq!(delay(&c, 50, f64::INFINITY), ms(72_000));
    }

    #[test]
    fn full_jitter_reaches_zero_and_twice_base() {
        let c = cfg(1000, 60_000, 2.0, 1.0);
        assert_eq!(delay(&c, 1, 0.0), Duration::ZERO);
        assert_eq!(delay(&c, 1, 0.5), ms(1000));
        assert_eq!(delay(&c, 1, 1.0), ms(2000));
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(delay(&cfg(1000, 60_000, 2.0, 5.0), 1, 0.0), Duration::ZERO);
        assert_eq!(delay(&cfg(1000, 60_000, 2.0, 5.0), 1, 1.0), ms(2000));
        assert_eq!(delay(&cfg(1000, 60_000, 2.0, -1.0), 1, 0.0), ms(1000));
        assert_eq!(delay(&cfg(1000, 60_000, 2.0, f64::NAN), 1, 0.9), ms(1000));
    }

    #[test]
    fn huge_factor_and_attempt_saturate_at_max() {
        let c = cfg(100, 60_000, 1e300, 0.0);
        assert_eq!(base_delay(&c, 1), ms(100));
        assert_eq!(base_delay(&c, 2), ms(60_000));
        assert_eq!(base_delay(&c, u32::MAX), ms(60_000));
        let inf = cfg(100, 60_000, f64::INFINITY, 0.0);
        assert_eq!(base_delay(&inf, 1), ms(100));
        assert_eq!(base_delay(&inf, 3), ms(60_000));
    }

    #[test]
    fn shrinking_or_nan_factor_is_constant() {
        for f in [0.5, 0.0, -2.0, f64::NAN, f64::NEG_INFINITY] {
            let c = cfg(100, 60_000, f, 0.0);
            assert_eq!(base_delay(&c, 1), ms(100));
            assert_eq!(base_delay(&c, 9), ms(100));
        }
    }

    #[test]
    fn initial_above_max_gives_max() {
        let c = cfg(5000, 1000, 2.0, 0.0);
        assert_eq!(base_delay(&c, 1), ms(1000));
    }

    #[test]
    fn zero_initial_is_zero_even_with_infinite_factor() {
        let c = cfg(0, 60_000, f64::INFINITY, 0.5);
        assert_eq!(delay(&c, 40, 0.9), Duration::ZERO);
    }

    #[test]
    fn duration_max_does_not_overflow() {
        let c = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::MAX,
            factor: 10.0,
            jitter: 1.0,
        };
        assert_eq!(delay(&c, u32::MAX, 1.0), Duration::MAX);
        assert_eq!(base_delay(&c, u32::MAX), Duration::MAX);
        assert_eq!(delay(&c, 3, 0.5), Duration::from_secs(100));
    }

    #[test]
    fn fractional_factor_rounds_to_nearest_nanosecond() {
        let c = cfg(100, 60_000, 1.5, 0.0);
        assert_eq!(base_delay(&c, 2), ms(150));
        assert_eq!(base_delay(&c, 3), ms(225));
        assert_eq!(base_delay(&c, 4), Duration::from_micros(337_500));
    }
}
