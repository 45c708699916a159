//! CronJob schedules: the standard 5-field cron syntax and `@hourly`-style descriptors,
//! with the same error wording as the parser Kubernetes uses, and next-run computation.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Bit sets of the allowed values of each field.
    Fields {
        minutes: u64,
        hours: u64,
        days_of_month: u64,
        months: u64,
        days_of_week: u64,
        /// Whether day-of-month or day-of-week was `*`/`?` (cron ORs the two day fields
        /// only when both are restricted).
        dom_star: bool,
        dow_star: bool,
    },
    /// `@every <duration>`.
    Every(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(pub String);

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses a standard cron spec (`*/5 * * * *`, `0 3 * * mon-fri`, `@daily`).
    pub fn parse(spec: &str) -> Result<Schedule, CronError> {
        let mut spec = spec.trim();
        if spec.is_empty() {
            return Err(CronError("empty spec string".into()));
        }
        // A leading time zone (`TZ=UTC 0 * * * *`) is accepted by the parser; the CronJob
        // validation rejects it separately in favour of spec.timeZone.
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            spec = spec
                .split_once(' ')
                .map(|(_, rest)| rest.trim())
                .unwrap_or("");
        }
        if spec.starts_with('@') {
            return descriptor(spec);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
        let dom_star = fields[2] == "*" || fields[2] == "?";
        let dow_star = fields[4] == "*" || fields[4] == "?";
        Ok(Schedule::Fields {
            minutes: field(fields[0], &MINUTES)?,
            hours: field(fields[1], &HOURS)?,
            days_of_month: field(fields[2], &DOM)?,
            months: field(fields[3], &MONTHS)?,
            days_of_week: field(fields[4], &DOW)?,
            dom_star,
            dow_star,
        })
    }

    /// The first activation strictly after `t` (within five years), in UTC.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => {
                let d = (*d).max(Duration::seconds(1));
                let rounded = t.with_nanosecond(0)?;
                Some(rounded + d)
            }
            Schedule::Fields {
                minutes,
                hours,
                days_of_month,
                months,
                days_of_week,
                dom_star,
                dow_star,
            } => {
                let mut cur = t.with_nanosecond(0)?.with_second(0)? + Duration::minutes(1);
                let limit = t + Duration::days(366 * 5);
                while cur <= limit {
                    if months & (1 << cur.month()) == 0 {
                        let (y, m) = if cur.month() == 12 {
                            (cur.year() + 1, 1)
                        } else {
                            (cur.year(), cur.month() + 1)
                        };
                        cur = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
                        continue;
                    }
                    let dom_ok = days_of_month & (1 << cur.day()) != 0;
                    let dow_ok = days_of_week & (1 << cur.weekday().num_days_from_sunday()) != 0;
                    let day_ok = if *dom_star || *dow_star {
                        dom_ok && dow_ok
                    } else {
                        dom_ok || dow_ok
                    };
                    if !day_ok {
                        cur = Utc
                            .with_ymd_and_hms(cur.year(), cur.month(), cur.day(), 0, 0, 0)
                            .single()?
                            + Duration::days(1);
                        continue;
                    }
                    if hours & (1 << cur.hour()) == 0 {
                        cur = cur.with_minute(0)? + Duration::hours(1);
                        continue;
                    }
                    if minutes & (1 << cur.minute()) == 0 {
                        cur += Duration::minutes(1);
                        continue;
                    }
                    return Some(cur);
                }
                None
            }
        }
    }
}

fn all(b: &Bounds) -> u64 {
    (b.min..=b.max).fold(0, |acc, i| acc | (1 << i))
}

fn descriptor(spec: &str) -> Result<Schedule, CronError> {
    let fixed =
        |min: u64, hour: u64, dom: u64, month: u64, dow: u64, dom_star: bool, dow_star: bool| {
            Schedule::Fields {
                minutes: min,
                hours: hour,
                days_of_month: dom,
                months: month,
                days_of_week: dow,
                dom_star,
                dow_star,
            }
        };
    Ok(match spec {
        "@yearly" | "@annually" => fixed(1, 1, 1 << 1, 1 << 1, all(&DOW), false, true),
        "@monthly" => fixed(1, 1, 1 << 1, all(&MONTHS), all(&DOW), false, true),
        "@weekly" => fixed(1, 1, all(&DOM), all(&MONTHS), 1, true, false),
        "@daily" | "@midnight" => fixed(1, 1, all(&DOM), all(&MONTHS), all(&DOW), true, true),
        "@hourly" => fixed(
            1,
            all(&HOURS),
            all(&DOM),
            all(&MONTHS),
            all(&DOW),
            true,
            true,
        ),
        other => match other.strip_prefix("@every ") {
            Some(d) => Schedule::Every(parse_duration(d.trim()).ok_or_else(|| {
                CronError(format!(
                    "failed to parse duration {other}: time: invalid duration {:?}",
                    d.trim()
                ))
            })?),
            None => return Err(CronError(format!("unrecognized descriptor: {other}"))),
        },
    })
}

/// Go duration syntax (`1h30m`, `90s`, `1.5h`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * secs;
        rest = tail;
    }
    Some(Duration::milliseconds((total * 1000.0) as i64))
}

fn field(f: &str, b: &Bounds) -> Result<u64, CronError> {
    let mut bits = 0;
    for part in f.split(',') {
        bits |= range(part, b)?;
    }
    Ok(bits)
}

fn range(expr: &str, b: &Bounds) -> Result<u64, CronError> {
    let (range_part, step_part) = match expr.split_once('/') {
        Some((r, s)) => {
            if s.contains('/') {
                return Err(CronError(format!("too many slashes: {expr}")));
            }
            (r, Some(s))
        }
        None => (expr, None),
    };
    let (mut start, mut end);
    let single;
    if range_part == "*" || range_part == "?" {
        start = b.min;
        end = b.max;
        single = false;
    } else {
        let mut bounds = range_part.split('-');
        let lo = bounds.next().unwrap_or("");
        start = int_or_name(lo, b)?;
        match (bounds.next(), bounds.next()) {
            (None, _) => {
                end = start;
                single = true;
            }
            (Some(hi), None) => {
                end = int_or_name(hi, b)?;
                single = false;
            }
            _ => return Err(CronError(format!("too many hyphens: {expr}"))),
        }
    }
    let mut step = 1;
    if let Some(st) = step_part {
        step = must_parse_int(st)?;
        // `N/step` means from N to the end.
        if single {
            end = b.max;
        }
    }
    if start < b.min {
        return Err(CronError(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max {
        return Err(CronError(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(CronError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(CronError(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    while start <= end {
        bits |= 1 << start;
        start += step;
    }
    Ok(bits)
}

fn int_or_name(s: &str, b: &Bounds) -> Result<u32, CronError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + if b.min == 1 { 1 } else { 0 });
    }
    must_parse_int(s)
}

fn must_parse_int(s: &str) -> Result<u32, CronError> {
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Err(CronError(format!("negative number ({n}) not allowed: {s}"))),
        Ok(n) if n > 1000 => Err(CronError(format!(
            "failed to parse int from {s}: value out of range"
        ))),
        Ok(n) => Ok(n as u32),
        Err(_) => Err(CronError(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn parses_common_schedules() {
        for ok in [
            "*/5 * * * *",
            "0 3 * * mon-fri",
            "0 0 1 jan *",
            "15,45 */2 1-15 * 0",
            "@hourly",
            "@daily",
            "@every 1h30m",
            "5/15 * * * ?",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn error_wording() {
        let e = |s: &str| Schedule::parse(s).unwrap_err().0;
        assert_eq!(e("* * *"), "expected exactly 5 fields, found 3: [* * *]");
        assert_eq!(e("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert_eq!(
            e("0-70 * * * *"),
            "end of range (70) above maximum (59): 0-70"
        );
        assert_eq!(
            e("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            e("5-2 * * * *"),
            "beginning of range (5) beyond end of range (2): 5-2"
        );
        assert_eq!(
            e("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(e("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert!(e("x * * * *").starts_with("failed to parse int from x"));
    }

    #[test]
    fn next_runs() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 1, 10, 7)),
            Some(at(2026, 1, 1, 10, 15))
        );
        assert_eq!(
            s.next_after(at(2026, 1, 1, 10, 45)),
            Some(at(2026, 1, 1, 11, 0))
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            daily.next_after(at(2026, 12, 31, 0, 0)),
            Some(at(2027, 1, 1, 0, 0))
        );
        let weekday = Schedule::parse("30 9 * * mon").unwrap();
        // 2026-01-01 is a Thursday; the next Monday is the 5th.
        assert_eq!(
            weekday.next_after(at(2026, 1, 1, 12, 0)),
            Some(at(2026, 1, 5, 9, 30))
        );
        let every = Schedule::parse("@every 90s").unwrap();
        assert_eq!(
            every.next_after(at(2026, 1, 1, 0, 0)),
            Some(at(2026, 1, 1, 0, 0) + Duration::seconds(90))
        );
        let feb30 = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(feb30.next_after(at(2026, 1, 1, 0, 0)), None);
    }
}
