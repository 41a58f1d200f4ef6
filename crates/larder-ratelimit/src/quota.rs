//! Quotas: how many requests per period, with a burst, parsed from the strings users
//! already write for Flask-Limiter (`"100/minute"`, `"100 per minute"`,
//! `"10/second;1000/hour"`, `"5 per 2 minutes"`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a policy or quota was rejected at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A quota string does not parse.
    #[error("invalid rate limit {input:?}: {problem} (expected forms like \"100/minute\", \"100 per minute\" or \"10/second;1000/hour\")")]
    Parse {
        /// The offending string.
        input: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A quota's numbers are out of range.
    #[error("invalid rate limit: {0}")]
    Range(&'static str),
    /// A policy name is not a valid key part.
    #[error("invalid policy name {name:?}: {problem}")]
    Name {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A route pattern or method is invalid.
    #[error("invalid route {route:?}: {problem}")]
    Route {
        /// The offending route.
        route: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A trusted-proxy network does not parse.
    #[error(
        "invalid trusted proxy network {input:?}: expected a CIDR such as 10.0.0.0/8 or an address"
    )]
    Network {
        /// The offending string.
        input: String,
    },
}

/// `count` requests per `period`, admitting at most `burst` at once.
///
/// Evaluated as GCRA: one request is "emitted" every `period / count`, and up to
/// `burst` requests may arrive at once (the default burst is `count`, so a fresh key
/// may spend its whole quota immediately, then one request per `period / count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: u32,
}

/// The longest period a quota may have: one year.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

impl Quota {
    /// `count` requests per `period`, with a burst of `count`.
    ///
    /// # Errors
    /// [`PolicyError::Range`] when `count` is zero or the period is zero, shorter than a
    /// millisecond per request, or longer than [`MAX_PERIOD`].
    pub fn new(count: u32, period: Duration) -> Result<Self, PolicyError> {
        if count == 0 {
            return Err(PolicyError::Range("the count must be at least 1"));
        }
        if period.is_zero() {
            return Err(PolicyError::Range("the period must be longer than zero"));
        }
        if period > MAX_PERIOD {
            return Err(PolicyError::Range("the period may not exceed a year"));
        }
        // One microsecond per request is the resolution of the Redis script.
        if period.as_micros() < u128::from(count) {
            return Err(PolicyError::Range(
                "more than one request per microsecond cannot be limited",
            ));
        }
        Ok(Self {
            count,
            period,
            burst: count,
        })
    }

    /// `count` requests per second.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn per_second(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn per_minute(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn per_hour(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `count` requests per day.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn per_day(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// The same rate with a different burst (how many requests may arrive at once).
    ///
    /// # Errors
    /// [`PolicyError::Range`] when `burst` is zero.
    pub fn with_burst(self, burst: u32) -> Result<Self, PolicyError> {
        if burst == 0 {
            return Err(PolicyError::Range("the burst must be at least 1"));
        }
        Ok(Self { burst, ..self })
    }

    /// Parses one quota or several separated by `;` or `,`.
    ///
    /// Accepted: `N/unit`, `N per unit`, `N/M units`, `N per M units`, with units
    /// `second`, `minute`, `hour`, `day`, `month` (30 days), `year` (365 days), their
    /// plurals, and the short forms `s`, `sec`, `m`, `min`, `h`, `hr`, `d`.
    ///
    /// # Errors
    /// [`PolicyError::Parse`] naming the string and its problem.
    pub fn parse_many(input: &str) -> Result<Vec<Self>, PolicyError> {
        let parts: Vec<&str> = input
            .split([';', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(PolicyError::Parse {
                input: input.to_owned(),
                problem: "it is empty",
            });
        }
        parts.into_iter().map(str::parse).collect()
    }

    /// Requests per period.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }

    /// How many requests may arrive at once.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time between two requests at the sustained rate (`period / count`).
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        self.period / self.count
    }

    /// The emission interval in microseconds (at least 1).
    pub(crate) fn interval_micros(&self) -> u64 {
        u64::try_from(self.emission_interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A stable label for the quota inside a key: `100r60000ms`.
    pub(crate) fn label(&self) -> String {
        format!("{}r{}ms", self.count, self.period.as_millis())
    }

    /// The window in whole seconds, for `RateLimit-Policy` (`w`), at least 1.
    #[must_use]
    pub fn window_secs(&self) -> u64 {
        self.period.as_secs().max(1)
    }

    /// The `governor` quota with the same rate and burst.
    pub(crate) fn to_governor(self) -> governor::Quota {
        let burst = std::num::NonZeroU32::new(self.burst).unwrap_or(std::num::NonZeroU32::MIN);
        governor::Quota::with_period(self.emission_interval())
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MAX))
            .allow_burst(burst)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.period.subsec_nanos() != 0 {
            return write!(f, "{}/{}ms", self.count, self.period.as_millis());
        }
        let (n, unit) = match self.period.as_secs() {
            s if s % 86_400 == 0 => (s / 86_400, "day"),
            s if s % 3600 == 0 => (s / 3600, "hour"),
            s if s % 60 == 0 => (s / 60, "minute"),
            s => (s, "second"),
        };
        if n == 1 {
            write!(f, "{}/{unit}", self.count)?;
        } else {
            write!(f, "{}/{n} {unit}s", self.count)?;
        }
        if self.burst != self.count {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for Quota {
    type Err = PolicyError;

    /// Parses one quota (`"100/minute"`, `"100 per minute"`, `"5 per 2 minutes"`).
    fn from_str(input: &str) -> Result<Self, PolicyError> {
        let err = |problem| PolicyError::Parse {
            input: input.to_owned(),
            problem,
        };
        let lower = input.trim().to_ascii_lowercase();
        let (count, rest) = if let Some((c, r)) = lower.split_once('/') {
            (c.trim(), r.trim())
        } else if let Some((c, r)) = lower.split_once(" per ") {
            (c.trim(), r.trim())
        } else {
            return Err(err("no \"/\" or \"per\" between the count and the period"));
        };
        let count: u32 = count
            .parse()
            .map_err(|_| err("the count is not a whole number"))?;
        let (multiple, unit) = match rest.split_once(char::is_whitespace) {
            Some((n, unit)) => (
                n.trim()
                    .parse::<u64>()
                    .map_err(|_| err("the period's multiple is not a whole number"))?,
                unit.trim(),
            ),
            None => {
                // `10/5s` or `10/s`
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                if digits == 0 {
                    (1, rest)
                } else {
                    let (n, unit) = rest.split_at(digits);
                    (
                        n.parse::<u64>()
                            .map_err(|_| err("the period's multiple is not a whole number"))?,
                        unit,
                    )
                }
            }
        };
        if multiple == 0 {
            return Err(err("the period's multiple is zero"));
        }
        let unit_secs: u64 = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "month" | "months" => 30 * 86_400,
            "y" | "year" | "years" => 365 * 86_400,
            "" => return Err(err("the period has no unit")),
            _ => {
                return Err(err(
                    "unknown unit (use second, minute, hour, day, month or year)",
                ))
            }
        };
        let secs = multiple
            .checked_mul(unit_secs)
            .ok_or_else(|| err("the period is too long"))?;
        Self::new(count, Duration::from_secs(secs)).map_err(|e| match e {
            PolicyError::Range(problem) => err(problem),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quota {
        s.parse().unwrap()
    }

    #[test]
    fn parses_flask_limiter_forms() {
        assert_eq!(q("100/minute"), Quota::per_minute(100).unwrap());
        assert_eq!(q("100 per minute"), Quota::per_minute(100).unwrap());
        assert_eq!(q("100 PER Minute"), Quota::per_minute(100).unwrap());
        assert_eq!(q("5 per 2 minutes").period(), Duration::from_secs(120));
        assert_eq!(q("5/2 minutes").period(), Duration::from_secs(120));
        assert_eq!(q("10/5s").period(), Duration::from_secs(5));
        assert_eq!(q("10/s"), Quota::per_second(10).unwrap());
        assert_eq!(q("1/day"), Quota::per_day(1).unwrap());
        assert_eq!(q("3/month").period(), Duration::from_secs(30 * 86_400));
        assert_eq!(q("3/year").period(), Duration::from_secs(365 * 86_400));
        let many = Quota::parse_many("10/second;1000/hour").unwrap();
        assert_eq!(
            many,
            vec![
                Quota::per_second(10).unwrap(),
                Quota::per_hour(1000).unwrap()
            ]
        );
        assert_eq!(Quota::parse_many("1/s, 2/m").unwrap().len(), 2);
    }

    #[test]
    fn bad_strings_name_the_problem() {
        for (input, needle) in [
            ("", "empty"),
            ("100", "no \"/\""),
            ("abc/minute", "count"),
            ("100/fortnight", "unknown unit"),
            ("0/minute", "at least 1"),
            ("10/0 minutes", "zero"),
            ("-1/minute", "count"),
            ("10/", "no unit"),
            ("10 per 99999999999999999 years", "too long"),
            ("2000000/second", "microsecond"),
        ] {
            let err = Quota::parse_many(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
            if !input.is_empty() {
                assert!(err.contains(input), "{input:?}: {err}");
            }
        }
    }

    #[test]
    fn burst_and_display() {
        let quota = Quota::per_minute(100).unwrap();
        assert_eq!(quota.burst(), 100);
        assert_eq!(quota.emission_interval(), Duration::from_millis(600));
        assert_eq!(quota.to_string(), "100/minute");
        let bursty = quota.with_burst(10).unwrap();
        assert_eq!(bursty.to_string(), "100/minute (burst 10)");
        assert!(quota.with_burst(0).is_err());
        assert_eq!(q("5 per 2 minutes").to_string(), "5/2 minutes");
        assert_eq!(q("7/3 hours").window_secs(), 3 * 3600);
    }
}
