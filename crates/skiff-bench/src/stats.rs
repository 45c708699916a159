//! Summaries of measurements (median, percentiles, rates) and the results table with each
//! figure's ratio against its target.

use std::time::Duration;

/// The value at quantile `q` (0..=1) of `samples` by the nearest-rank method; None when empty.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median (the lower middle value for an even count).
pub fn median(samples: &[Duration]) -> Option<Duration> {
    percentile(samples, 0.5)
}

/// Operations per second.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    count as f64 / secs
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Which side of the target a figure must fall on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The figure must stay below the target (latency, memory, start-up time).
    Below,
    /// The figure must reach the target (throughput).
    AtLeast,
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// None for figures reported without a target.
    pub target: Option<(Goal, f64)>,
    pub note: String,
}

impl Row {
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Row {
            name: name.into(),
            value,
            unit,
            target: None,
            note: String::new(),
        }
    }

    pub fn below(mut self, target: f64) -> Self {
        self.target = Some((Goal::Below, target));
        self
    }

    pub fn at_least(mut self, target: f64) -> Self {
        self.target = Some((Goal::AtLeast, target));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// value / target: below 1 is good for `Below`, 1 or more is good for `AtLeast`.
    pub fn ratio(&self) -> Option<f64> {
        self.target.map(|(_, t)| {
            if t == 0.0 {
                f64::INFINITY
            } else {
                self.value / t
            }
        })
    }

    pub fn met(&self) -> Option<bool> {
        self.target.map(|(goal, t)| match goal {
            Goal::Below => self.value < t,
            Goal::AtLeast => self.value >= t,
        })
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The rows as a Markdown table (readable in a terminal too).
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | value | target | value/target | met | notes |\n|---|---:|---:|---:|:---:|---|\n",
    );
    for r in rows {
        let target = match r.target {
            Some((Goal::Below, t)) => format!("< {} {}", number(t), r.unit),
            Some((Goal::AtLeast, t)) => format!(">= {} {}", number(t), r.unit),
            None => "-".to_string(),
        };
        let ratio = r.ratio().map_or("-".to_string(), |x| format!("{x:.2}"));
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} {} | {} | {} | {} | {} |\n",
            r.name,
            number(r.value),
            r.unit,
            target,
            ratio,
            met,
            r.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).rev().map(d).collect();
        assert_eq!(percentile(&s, 0.5), Some(d(50)));
        assert_eq!(percentile(&s, 0.99), Some(d(99)));
        assert_eq!(percentile(&s, 1.0), Some(d(100)));
        assert_eq!(percentile(&s, 0.0), Some(d(1)));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(median(&[d(3), d(1), d(2)]), Some(d(2)));
    }

    #[test]
    fn ratio_and_verdict_follow_the_goal() {
        let fast = Row::new("ready", 250.0, "ms").below(1000.0);
        assert_eq!(fast.ratio(), Some(0.25));
        assert_eq!(fast.met(), Some(true));
        let slow = Row::new("creates", 1500.0, "/s").at_least(2000.0);
        assert_eq!(slow.met(), Some(false));
        assert!(markdown(&[slow]).contains("**NO**"));
        assert_eq!(Row::new("lists", 3.0, "/s").met(), None);
    }

    #[test]
    fn rate_of_nothing_is_zero() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_secs(2)), 5.0);
    }
}
