//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `1e3`), parsed exactly.
//!
//! Values are held as an integer count of nano-units so that comparisons are exact: `2432Mi`
//! and `2550136832` compare equal, `0.5` and `500m` too. Fractions below a nano-unit round up,
//! as Kubernetes does.

use std::cmp::Ordering;
use std::fmt;

/// A parsed quantity: the text as written and its exact value in nano-units.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    nanos: i128,
}

/// Why a quantity could not be parsed; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not the Kubernetes quantity syntax at all.
    #[error(
        "{0:?} is not a Kubernetes quantity (a number with an optional suffix: n u m k M G T P E \
         Ki Mi Gi Ti Pi Ei, or an exponent such as 1e3)"
    )]
    Syntax(String),
    /// Valid syntax, but too large (or too precise) to hold exactly: Kubernetes would accept
    /// it, so it must never be mistaken for garbage, nor compared as if it were small.
    #[error(
        "{0:?} is too large to read and compare (beyond 10^20 units, 64 characters or an \
         exponent outside -9..18); write a smaller quantity"
    )]
    OutOfRange(String),
}

impl QuantityError {
    /// Whether the text is a quantity Kubernetes accepts that is only too large to compare.
    pub fn is_out_of_range(&self) -> bool {
        matches!(self, Self::OutOfRange(_))
    }
}

/// Why [`Quantity::value_of`] failed, without the text (it allocates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    Syntax,
    OutOfRange,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

impl Quantity {
    /// Parses a quantity in the Kubernetes syntax.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        match Self::value_of(text) {
            Ok(nanos) => Ok(Self {
                text: text.to_owned(),
                nanos,
            }),
            Err(Unreadable::Syntax) => Err(QuantityError::Syntax(text.to_owned())),
            Err(Unreadable::OutOfRange) => Err(QuantityError::OutOfRange(text.to_owned())),
        }
    }

    /// The value of a quantity in nano-units, or `None` when it is not one (or too large to
    /// hold). Allocates nothing: the quota charge reads every container's quantities on every
    /// review.
    pub fn nanos_of(text: &str) -> Option<i128> {
        Self::value_of(text).ok()
    }

    fn value_of(text: &str) -> Result<i128, Unreadable> {
        use Unreadable::{OutOfRange, Syntax};
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Syntax);
        }
        let (sign, unsigned) = match trimmed.as_bytes()[0] {
            b'-' => (-1, &trimmed[1..]),
            b'+' => (1, &trimmed[1..]),
            _ => (1, trimmed),
        };
        let number_end = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(Syntax);
        }
        let (multiplier_num, multiplier_den): (i128, i128) = match suffix {
            "" => (1, 1),
            "n" => (1, 1_000_000_000),
            "u" => (1, 1_000_000),
            "m" => (1, 1_000),
            "k" => (1_000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            exponent if is_exponent(exponent) => {
                // Digits only, so a failed parse can only be an overflow.
                let power: i32 = exponent[1..].parse().map_err(|_| OutOfRange)?;
                if !(-9..=18).contains(&power) {
                    return Err(OutOfRange);
                }
                if power >= 0 {
                    (10_i128.pow(power.unsigned_abs()), 1)
                } else {
                    (1, 10_i128.pow(power.unsigned_abs()))
                }
            }
            _ => return Err(Syntax),
        };
        // The syntax is right from here on: whatever fails now is only too large to hold.
        if trimmed.len() > 64 {
            return Err(OutOfRange);
        }
        // The digits of whole and fraction as one integer, over 10^fraction_digits.
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or(OutOfRange)?;
        }
        let fraction_digits = u32::try_from(fraction.len()).map_err(|_| OutOfRange)?;
        let denominator = 10_i128
            .checked_pow(fraction_digits)
            .and_then(|d| d.checked_mul(multiplier_den))
            .ok_or(OutOfRange)?;
        let numerator = mantissa
            .checked_mul(multiplier_num)
            .and_then(|n| n.checked_mul(NANOS_PER_UNIT))
            .ok_or(OutOfRange)?;
        // Round up like Kubernetes: 0.1n is 1n.
        let nanos = numerator.checked_add(denominator - 1).ok_or(OutOfRange)? / denominator;
        Ok(sign * nanos)
    }

    /// A whole number of units, written as Kubernetes and Spark write it (`2`).
    pub fn whole(units: i64) -> Self {
        Self {
            text: units.to_string(),
            nanos: i128::from(units) * NANOS_PER_UNIT,
        }
    }

    /// A whole number of mebibytes, written as Spark writes executor memory (`2432Mi`).
    pub fn mebibytes(mib: i64) -> Self {
        Self {
            text: format!("{mib}Mi"),
            nanos: i128::from(mib) * (1 << 20) * NANOS_PER_UNIT,
        }
    }

    /// The quantity as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in nano-units (for CPU: nano-cores; for memory: nano-bytes).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }
}

/// `e`/`E`, an optional sign, then at least one digit.
fn is_exponent(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn binary_and_decimal_suffixes_compare_exactly() {
        assert_eq!(q("2432Mi"), q("2550136832"));
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert!(q("64Gi") > q("63.9Gi"));
        assert!(q("8") < q("8001m"));
        assert_eq!(q("4Ti").nanos(), 4 * (1_i128 << 40) * 1_000_000_000);
    }

    #[test]
    fn constructed_quantities_equal_their_parsed_text() {
        for n in [0, 1, 2432, 1 << 40] {
            assert_eq!(Quantity::mebibytes(n), q(&format!("{n}Mi")));
            assert_eq!(Quantity::mebibytes(n).as_str(), format!("{n}Mi"));
            assert_eq!(Quantity::whole(n), q(&n.to_string()));
            assert_eq!(Quantity::whole(n).as_str(), n.to_string());
        }
    }

    #[test]
    fn sub_nano_fractions_round_up() {
        assert_eq!(q("0.1n").nanos(), 1);
    }

    #[test]
    fn a_value_too_large_for_128_bit_nano_units_is_refused_rather_than_wrapped() {
        // 1.7e29 nano-cores: the nano-units fit, rounding up would not.
        for huge in [
            "170141183460469231731687303715n",
            "99999999999999999999999999999999Ei",
            "1e99",
        ] {
            let err = Quantity::parse(huge).expect_err(huge);
            assert!(err.is_out_of_range(), "{huge}: {err}");
            assert!(err.to_string().contains("too large"), "{err}");
        }
        assert_eq!(Quantity::nanos_of("2"), Some(2_000_000_000));
        assert_eq!(Quantity::nanos_of("-500m"), Some(-500_000_000));
    }

    #[test]
    fn garbage_is_rejected_with_the_allowed_syntax() {
        for bad in [
            "", "two", "2 Gi", "2GB", "1.2.3", "Gi", ".", "--1", "1e", "1e+-3", "1ex",
        ] {
            let err = Quantity::parse(bad).expect_err(bad);
            assert!(!err.is_out_of_range(), "{bad}: {err}");
            assert!(err.to_string().contains("Ki Mi Gi"), "{err}");
        }
    }
}
