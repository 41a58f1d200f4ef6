//! Money as an exact count of cents.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money, held as whole cents: stored, summed and compared exactly
/// (a sum of floats shows `13.750000000000002`). On the wire it is a JSON number
/// with at most two decimals (`13.75`); more decimals are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(i64);

/// The largest amount accepted, in cents: far below where a float stops telling
/// cents apart.
const MAX_CENTS: i64 = 1_000_000_000_000;

impl Money {
    /// `cents` cents.
    #[must_use]
    pub const fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    /// The amount in cents.
    #[must_use]
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// `units` of an amount: a sale line's total.
    #[must_use]
    pub fn times(self, units: i64) -> Self {
        Self(self.0.saturating_mul(units))
    }

    /// The amount read from a number with at most two decimals.
    ///
    /// # Errors
    /// A message for a number that is not finite, has more than two decimals, or
    /// is too large.
    pub fn from_decimal(value: f64) -> Result<Self, String> {
        let cents = value * 100.0;
        let whole = cents.round();
        #[allow(clippy::cast_precision_loss)]
        let max = MAX_CENTS as f64;
        if !cents.is_finite() || whole.abs() > max {
            return Err(format!("{value} is not an amount of money"));
        }
        if (cents - whole).abs() > 1e-6 {
            return Err(format!("{value} has more than two decimals"));
        }
        #[allow(clippy::cast_possible_truncation)]
        Ok(Self(whole as i64))
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, other: Money) -> Money {
        Money(self.0 + other.0)
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    fn sub(self, other: Money) -> Money {
        Money(self.0 - other.0)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::default(), |a, b| a + b)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // cents / 100 is the float nearest the decimal, and the shortest text
        // that reads back as that float is the decimal itself (13.75, 13.5).
        #[allow(clippy::cast_precision_loss)]
        s.serialize_f64(self.0 as f64 / 100.0)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Money::from_decimal(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    #[test]
    fn amounts_are_exact_and_print_as_decimals() {
        let price = Money::from_decimal(13.75).unwrap();
        assert_eq!(price.cents(), 1375);
        let total: Money = [0.1, 0.2, 13.75, 19.9]
            .into_iter()
            .map(|x| Money::from_decimal(x).unwrap())
            .sum();
        assert_eq!(total.cents(), 3395);
        assert_eq!(serde_json::to_string(&total).unwrap(), "33.95");
        assert_eq!(serde_json::to_string(&price.times(3)).unwrap(), "41.25");
        assert_eq!(
            serde_json::to_string(&Money::from_cents(1350)).unwrap(),
            "13.5"
        );
        assert_eq!(
            serde_json::to_string(&Money::from_cents(-5)).unwrap(),
            "-0.05"
        );
        for cents in [1, 7, 99, 1001, 123_456_789, 99_999_999_999] {
            let text = serde_json::to_string(&Money::from_cents(cents)).unwrap();
            let back: Money = serde_json::from_str(&text).unwrap();
            assert_eq!(back.cents(), cents, "{text}");
        }
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        for (json, why) in [("12.345", "two decimals"), ("1e300", "not an amount")] {
            let err = serde_json::from_str::<Money>(json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
        assert!(serde_json::from_str::<Money>("\"12\"").is_err());
    }
}
