//! Memory growth: tells a leak from a service that simply uses memory (promise 7).
//!
//! RSS samples of a run's whole group are kept for `window`; the growth rate is the
//! least-squares slope of RSS over time, in bytes per second. An alert needs all of:
//!
//! - enough data: at least `MIN_SAMPLES` samples spanning at least `MIN_COVERAGE`
//!   (three quarters) of the window, so a run's first minutes or a sparse, jittery
//!   sampler do not decide anything;
//! - a slope over the whole window above `rate`;
//! - sustained growth: the earlier and the later half of the samples (split at the
//!   middle of their time span) each grow by more than `rate / 2` on their own. One
//!   jump followed by a plateau (a cache filled, a big request served) makes a steep
//!   overall slope, but one of the halves is flat, so it is not a leak. Half the rate
//!   per half leaves room for the sawtooth of a garbage collector.
//!
//! After an alert the watch stays quiet for a full window: at most one alert per
//! window while the leak goes on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::MemoryConfig;

/// Fewer samples than this never alert.
pub const MIN_SAMPLES: usize = 6;

/// The fraction of the window the samples must span before they can alert.
pub const MIN_COVERAGE: f64 = 0.75;

/// Samples kept at most; the oldest go first. At the default 10 s interval a 1 h
/// window needs 360, so this only bounds memory under a hostile config.
pub const MAX_SAMPLES: usize = 4096;

/// Sliding window of RSS samples for one run, with an alert rate.
#[derive(Debug, Clone)]
pub struct GrowthWatch {
    window: Duration,
    /// Bytes per second of sustained growth that alerts.
    rate: f64,
    /// `(when, rss bytes)`, oldest first, none older than `window` before the last.
    samples: VecDeque<(Instant, u64)>,
    /// When the last alert was given, to hold the next one back for a window.
    alerted: Option<Instant>,
}

impl GrowthWatch {
    pub fn new(window: Duration, rate_bytes_per_s: f64) -> Self {
        GrowthWatch {
            window,
            rate: rate_bytes_per_s,
            samples: VecDeque::new(),
            alerted: None,
        }
    }

    /// The watch a `[memory]` section asks for; `None` without `growth_alert`.
    pub fn from_config(cfg: &MemoryConfig) -> Option<Self> {
        cfg.growth_alert
            .map(|rate| GrowthWatch::new(cfg.window, rate))
    }

    /// Records the group's RSS at `now`.
    ///
    /// A `now` earlier than the last sample (the clock went backwards) starts the
    /// window over rather than fitting a line through time running both ways.
    pub fn sample(&mut self, now: Instant, rss: u64) {
        if self.samples.back().is_some_and(|&(last, _)| now < last) {
            self.samples.clear();
        }
        self.samples.push_back((now, rss));
        self.prune(now);
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// `Some(slope)` in bytes per second when the samples show sustained growth above
    /// the rate, at most once per window.
    pub fn check(&mut self, now: Instant) -> Option<f64> {
        self.prune(now);
        if let Some(alerted) = self.alerted {
            if now.saturating_duration_since(alerted) < self.window {
                return None;
            }
        }
        let slope = self.sustained_slope()?;
        if slope > self.rate {
            self.alerted = Some(now);
            Some(slope)
        } else {
            None
        }
    }

    /// The least-squares slope over the samples in the window, in bytes per second,
    /// whether or not it would alert; `None` with fewer than two distinct instants.
    pub fn slope(&self) -> Option<f64> {
        slope(self.samples.iter().copied())
    }

    /// Forgets the samples and the last alert: a new run starts from scratch.
    pub fn reset(&mut self) {
        self.samples.clear();
        self.alerted = None;
    }

    fn prune(&mut self, now: Instant) {
        let window = self.window;
        while self
            .samples
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > window)
        {
            self.samples.pop_front();
        }
    }

    /// The overall slope when the data cover the window and both halves grow too.
    fn sustained_slope(&self) -> Option<f64> {
        let (&(first, _), &(last, _)) = (self.samples.front()?, self.samples.back()?);
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        let span = last.saturating_duration_since(first);
        if span.as_secs_f64() < self.window.as_secs_f64() * MIN_COVERAGE || span.is_zero() {
            return None;
        }
        let overall = self.slope()?;
        let mid = first + span / 2;
        let early = slope(self.samples.iter().copied().filter(|&(at, _)| at <= mid))?;
        let late = slope(self.samples.iter().copied().filter(|&(at, _)| at >= mid))?;
        let half_rate = self.rate / 2.0;
        if early > half_rate && late > half_rate {
            Some(overall)
        } else {
            None
        }
    }
}

/// Least-squares slope of `rss` over time in bytes per second; `None` for fewer than
/// two distinct instants. Values are centred first so that large RSS values keep
/// their precision.
fn slope(points: impl Iterator<Item = (Instant, u64)> + Clone) -> Option<f64> {
    let origin = points.clone().next()?.0;
    let xy = points.map(|(at, rss)| {
        (
            at.saturating_duration_since(origin).as_secs_f64(),
            rss as f64,
        )
    });
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (x, y) in xy.clone() {
        n += 1.0;
        sx += x;
        sy += y;
    }
    if n < 2.0 {
        return None;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx > 0.0 {
        Some(sxy / sxx)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const HOUR: u64 = 3600;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// 10 MiB/h, the documented default, in bytes per second.
    fn rate() -> f64 {
        10.0 * MIB / 3600.0
    }

    fn watch() -> GrowthWatch {
        GrowthWatch::new(secs(HOUR), rate())
    }

    /// Feeds one sample every 10 s over `[from, to)` seconds and returns every alert
    /// with the second it came at, checking after each sample.
    fn feed(
        w: &mut GrowthWatch,
        t0: Instant,
        from: u64,
        to: u64,
        rss: impl Fn(u64) -> u64,
    ) -> Vec<(u64, f64)> {
        let mut alerts = Vec::new();
        for s in (from..to).step_by(10) {
            let now = t0 + secs(s);
            w.sample(now, rss(s));
            if let Some(slope) = w.check(now) {
                alerts.push((s, slope));
            }
        }
        alerts
    }

    fn linear(base_mib: f64, mib_per_hour: f64) -> impl Fn(u64) -> u64 {
        move |s| ((base_mib + mib_per_hour * s as f64 / 3600.0) * MIB) as u64
    }

    #[test]
    fn flat_memory_never_alerts() {
        let t0 = Instant::now();
        let mut w = watch();
        assert!(feed(&mut w, t0, 0, 4 * HOUR, |_| 500 << 20).is_empty());
        assert_eq!(w.slope(), Some(0.0));
    }

    #[test]
    fn slow_leak_under_the_rate_does_not_alert() {
        let t0 = Instant::now();
        let mut w = watch();
        assert!(feed(&mut w, t0, 0, 4 * HOUR, linear(200.0, 8.0)).is_empty());
        let slope = w.slope().unwrap_or_default();
        assert!((slope - 8.0 * MIB / 3600.0).abs() < 1.0, "slope {slope}");
    }

    #[test]
    fn leak_over_the_rate_alerts_once_per_window() {
        let t0 = Instant::now();
        let mut w = watch();
        let alerts = feed(&mut w, t0, 0, 4 * HOUR, linear(200.0, 20.0));
        let at: Vec<u64> = alerts.iter().map(|&(s, _)| s).collect();
        // Coverage is reached at 45 min (2700 s); then one alert per hour.
        assert_eq!(
            at,
            vec![2700, 2700 + HOUR, 2700 + 2 * HOUR, 2700 + 3 * HOUR]
        );
        for (_, slope) in alerts {
            assert!((slope - 20.0 * MIB / 3600.0).abs() < 1.0, "slope {slope}");
        }
    }

    #[test]
    fn noisy_leak_over_the_rate_alerts() {
        let t0 = Instant::now();
        let mut w = watch();
        // A sawtooth of up to 30 MiB on top of a 40 MiB/h leak, like a collector would.
        let leak = linear(300.0, 40.0);
        let alerts = feed(&mut w, t0, 0, 2 * HOUR, |s| {
            leak(s) + ((s / 10) % 13) * 30 * (1 << 20) / 12
        });
        assert!(!alerts.is_empty());
    }

    #[test]
    fn one_jump_then_flat_does_not_alert() {
        let t0 = Instant::now();
        for jump_at in [600, 1200, 1800, 2400, 3000, 3590] {
            let mut w = watch();
            let alerts = feed(&mut w, t0, 0, 3 * HOUR, |s| {
                if s < jump_at {
                    200 << 20
                } else {
                    800 << 20
                }
            });
            assert!(alerts.is_empty(), "jump at {jump_at}: {alerts:?}");
        }
    }

    #[test]
    fn one_spike_sample_does_not_alert() {
        let t0 = Instant::now();
        for spike_at in [1800, 3590] {
            let mut w = watch();
            let alerts = feed(&mut w, t0, 0, HOUR, |s| {
                if s == spike_at {
                    1 << 30
                } else {
                    200 << 20
                }
            });
            assert!(alerts.is_empty(), "spike at {spike_at}: {alerts:?}");
        }
    }

    #[test]
    fn not_enough_coverage_never_alerts() {
        let t0 = Instant::now();
        let mut w = watch();
        // A steep leak, but only 40 minutes of data.
        assert!(feed(&mut w, t0, 0, 2400, linear(100.0, 500.0)).is_empty());
        assert!(w.slope().unwrap_or_default() > rate());
    }

    #[test]
    fn too_few_samples_never_alert() {
        let t0 = Instant::now();
        let mut w = watch();
        for s in [0, 1000, 2000, 3000, 3500] {
            w.sample(t0 + secs(s), s * 1_000_000);
        }
        assert_eq!(w.check(t0 + secs(3500)), None);
        w.sample(t0 + secs(3590), 3590 * 1_000_000);
        let slope = w.check(t0 + secs(3590)).unwrap_or_default();
        assert!((slope - 1_000_000.0).abs() < 1e-3, "slope {slope}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let t0 = Instant::now();
        let mut w = watch();
        feed(&mut w, t0, 0, 2 * HOUR, |_| 1 << 20);
        // Samples at exactly one window old are kept, older ones dropped.
        assert_eq!(w.samples.len(), 361);
        assert_eq!(w.samples.front().map(|&(at, _)| at), Some(t0 + secs(3590)));
        // A check long after the last sample sees nothing left.
        assert_eq!(w.check(t0 + secs(10 * HOUR)), None);
        assert!(w.samples.is_empty());
    }

    #[test]
    fn reset_forgets_samples_and_alert() {
        let t0 = Instant::now();
        let mut w = watch();
        assert_eq!(feed(&mut w, t0, 0, 2800, linear(0.0, 100.0)).len(), 1);
        w.reset();
        assert_eq!(w.slope(), None);
        let alerts = feed(&mut w, t0, 2800, 2800 + 2710, linear(0.0, 100.0));
        assert_eq!(alerts.len(), 1);
    }

    #[test]
    fn memory_stays_bounded_under_a_tiny_interval() {
        let t0 = Instant::now();
        let mut w = watch();
        for i in 0..20_000u64 {
            w.sample(t0 + Duration::from_millis(i), i);
        }
        assert_eq!(w.samples.len(), MAX_SAMPLES);
    }

    #[test]
    fn clock_going_backwards_starts_over() {
        let t0 = Instant::now() + secs(HOUR);
        let mut w = watch();
        w.sample(t0, 1);
        w.sample(t0 + secs(10), 2);
        w.sample(t0 - secs(10), 3);
        assert_eq!(w.samples.len(), 1);
        assert_eq!(w.slope(), None);
    }

    #[test]
    fn nan_rate_never_alerts() {
        let t0 = Instant::now();
        let mut w = GrowthWatch::new(secs(HOUR), f64::NAN);
        assert!(feed(&mut w, t0, 0, 2 * HOUR, linear(0.0, 1000.0)).is_empty());
    }

    #[test]
    fn from_config_needs_growth_alert() {
        let mut cfg = MemoryConfig {
            limit: None,
            growth_alert: None,
            interval: secs(10),
            window: secs(HOUR),
        };
        assert!(GrowthWatch::from_config(&cfg).is_none());
        cfg.growth_alert = Some(rate());
        let w = GrowthWatch::from_config(&cfg);
        assert_eq!(w.map(|w| (w.window, w.rate)), Some((secs(HOUR), rate())));
    }

    #[test]
    fn extreme_rss_values_keep_their_precision() {
        let t0 = Instant::now();
        let mut w = GrowthWatch::new(secs(100), 0.5);
        for s in 0..100u64 {
            w.sample(t0 + secs(s), u64::MAX - 1_000_000 + s);
        }
        // Near u64::MAX an f64 cannot see single bytes; the slope must still be finite.
        assert!(w.slope().is_some_and(f64::is_finite));
    }
}
