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
        use Unreadable::OutOfRange;
        let trimmed = text.trim();
        let parts = Parts::scan(trimmed)?;
        // The syntax is right from here on: whatever fails now is only too large to hold.
        if trimmed.len() > 64 {
            return Err(OutOfRange);
        }
        // value = ±(whole.fraction) × base^exponent, as the fraction over 10^digits.
        let (multiplier_num, multiplier_den): (i128, i128) = match parts.format {
            Format::BinarySi => (1_i128 << parts.exponent, 1),
            Format::DecimalSi | Format::DecimalExponent => {
                if !(-9..=18).contains(&parts.exponent) {
                    return Err(OutOfRange);
                }
                let power = 10_i128.pow(parts.exponent.unsigned_abs());
                if parts.exponent >= 0 {
                    (power, 1)
                } else {
                    (1, power)
                }
            }
        };
        // The digits of whole and fraction as one integer, over 10^fraction_digits.
        let mut mantissa: i128 = 0;
        for digit in parts.whole.bytes().chain(parts.fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or(OutOfRange)?;
        }
        let fraction_digits = u32::try_from(parts.fraction.len()).map_err(|_| OutOfRange)?;
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
        Ok(if parts.negative { -nanos } else { nanos })
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

    /// The same quantity, written as the apiserver writes a `resource.Quantity` back after
    /// decoding this text from JSON (see [`stored_text`]).
    #[must_use]
    pub fn canonical(&self) -> Self {
        let (text, nanos) = stored_text(&self.text, self.nanos, false);
        Self { text, nanos }
    }

    /// The same amount as the apiserver stores it in a pod's requests or limits (or any other
    /// `ResourceList`): its defaulting rounds every value up to a thousandth of a unit
    /// (`SetDefaults_ResourceList`, "round up resource values to milli scale"), which writes a
    /// value that needed it afresh, then the canonical form applies (`100u` is stored as `1m`,
    /// `0.0001` as `1m`). A policy's quantities are kept in this form, so what the webhook
    /// writes into a pod is what the apiserver stores and a reinvocation finds nothing to
    /// change.
    #[must_use]
    pub fn as_pod_resource(&self) -> Self {
        let (text, nanos) = stored_text(&self.text, self.nanos, true);
        Self { text, nanos }
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

/// How Kubernetes writes a quantity back, which depends on how it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// No suffix or `n u m k M G T P E`.
    DecimalSi,
    /// `Ki Mi Gi Ti Pi Ei`.
    BinarySi,
    /// `e3`, `E-2`.
    DecimalExponent,
}

/// The text (and value) the apiserver stores for a quantity written as `text` whose value is
/// `nanos`, following apimachinery's `resource.Quantity` (the rules of `ParseQuantity`,
/// `CanonicalizeBytes`, `AsCanonicalBytes` and `RoundUp`, read in Kubernetes 1.20 and unchanged
/// since):
///
/// - surrounding whitespace is dropped (`UnmarshalJSON` trims it before parsing);
/// - with `round_to_milli` (a `ResourceList`), a value finer than a thousandth is rounded up
///   to one, away from zero, and written afresh;
/// - a text already in canonical form is kept byte for byte, and Kubernetes' test of "already
///   canonical" is cheap rather than exact: the value must fit its fast integer path, and then
///   a decimal text counts when its exponent is a multiple of 3, its digits (the whole part
///   without leading zeros, then the fraction) do not end in `000` and do not start with `0`;
///   a binary one when those digits are not a multiple of 8. So `+2`, `02` and `1e3` are kept
///   as written;
/// - otherwise the value is written with the largest exponent that loses nothing and no
///   fractional digits, in the family of the suffix it was written with: `1.5` is `1500m`,
///   `1024Mi` is `1Gi`, `2000m` is `2`, `1.5e3` is `1500`, `.001e12` is `1e9`. A binary value
///   below 1024 in magnitude, or not a whole number, is written in decimal (`0.5Gi` is
///   `512Mi`, `.001Ki` is `1024m`), and a binary value past the fast path is capped at 2^63-1.
///
/// One departure: Kubernetes has no decimal suffix past `E` and then writes the digits with no
/// suffix at all (so `1000E` would be stored as `1`); here such a value is written with `E`
/// and the digits it needs (`1000E`), keeping its value.
///
/// The apiserver never sees the policy's text, only what the webhook writes, and reads that
/// afresh: a binary value written with no suffix (`1.953125Ki` is `2000`) is decimal to it, and
/// stored as `2k`. So the form is taken once more from the text the first pass wrote; the
/// second pass is where it settles (found by the `quantity` fuzz target).
fn stored_text(text: &str, nanos: i128, round_to_milli: bool) -> (String, i128) {
    let (written, nanos) = stored_text_once(text, nanos, round_to_milli);
    stored_text_once(&written, nanos, round_to_milli)
}

fn stored_text_once(text: &str, nanos: i128, round_to_milli: bool) -> (String, i128) {
    const NANOS_PER_MILLI: i128 = 1_000_000;
    let round = |nanos: i128| {
        if !round_to_milli {
            return nanos;
        }
        // Away from zero, as `RoundUp` does.
        let magnitude = nanos.abs();
        // Saturating: a value within a milli of i128's end is past anything comparable anyway.
        let rounded =
            magnitude.saturating_add(NANOS_PER_MILLI - 1) / NANOS_PER_MILLI * NANOS_PER_MILLI;
        if nanos < 0 { -rounded } else { rounded }
    };
    let text = text.trim();
    if text == "0" {
        return (text.to_owned(), 0);
    }
    let Ok(parts) = Parts::scan(text) else {
        return (text.to_owned(), nanos);
    };
    if let Some((kept, scale)) = parts.fast_path() {
        // `RoundUp` leaves a value of scale -3 or more alone, its text included.
        if round_to_milli && scale < -3 {
            let rounded = round(nanos);
            return (write(rounded, parts.format), rounded);
        }
        return if kept {
            (text.to_owned(), nanos)
        } else {
            (write(nanos, parts.format), nanos)
        };
    }
    let mut nanos = nanos;
    if parts.format == Format::BinarySi {
        // Past the integer fast path Kubernetes caps binary values.
        let cap = i128::from(i64::MAX) * NANOS_PER_UNIT;
        nanos = nanos.clamp(-cap, cap);
    }
    let nanos = round(nanos);
    (write(nanos, parts.format), nanos)
}

/// A quantity's text taken apart as Kubernetes' scanner takes it: the one scanner, from which
/// both the value ([`Quantity::value_of`]) and the stored text ([`stored_text`]) are computed.
struct Parts<'t> {
    negative: bool,
    /// The whole part without leading zeros, `0` when nothing is left.
    whole: &'t str,
    fraction: &'t str,
    format: Format,
    /// The power of the suffix: of 10 for decimal, of 2 for binary.
    exponent: i32,
}

impl<'t> Parts<'t> {
    /// Scans `text` (already trimmed): an optional sign, digits with at most one '.', at least
    /// one digit, then nothing or one suffix. Allocates nothing.
    fn scan(text: &'t str) -> Result<Self, Unreadable> {
        use Unreadable::{OutOfRange, Syntax};
        let negative = text.starts_with('-');
        let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
        let number_end = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(Syntax);
        }
        let whole = whole.trim_start_matches('0');
        let whole = if whole.is_empty() { "0" } else { whole };
        let (format, exponent) = match suffix {
            "" => (Format::DecimalSi, 0),
            "n" => (Format::DecimalSi, -9),
            "u" => (Format::DecimalSi, -6),
            "m" => (Format::DecimalSi, -3),
            "k" => (Format::DecimalSi, 3),
            "M" => (Format::DecimalSi, 6),
            "G" => (Format::DecimalSi, 9),
            "T" => (Format::DecimalSi, 12),
            "P" => (Format::DecimalSi, 15),
            "E" => (Format::DecimalSi, 18),
            "Ki" => (Format::BinarySi, 10),
            "Mi" => (Format::BinarySi, 20),
            "Gi" => (Format::BinarySi, 30),
            "Ti" => (Format::BinarySi, 40),
            "Pi" => (Format::BinarySi, 50),
            "Ei" => (Format::BinarySi, 60),
            // Digits only, so a failed parse can only be an overflow.
            exponent if is_exponent(exponent) => (
                Format::DecimalExponent,
                exponent[1..].parse().map_err(|_| OutOfRange)?,
            ),
            _ => return Err(Syntax),
        };
        Ok(Self {
            negative,
            whole,
            fraction,
            format,
            exponent,
        })
    }

    /// Kubernetes' integer fast path: `None` when the value does not take it, else whether
    /// the text counts as canonical and is kept as written, and the value's decimal scale.
    fn fast_path(&self) -> Option<(bool, i32)> {
        let digits = i32::try_from(self.whole.len() + self.fraction.len()).ok()?;
        let fraction_digits = i32::try_from(self.fraction.len()).ok()?;
        let (precision, scale, multiplier) = match self.format {
            Format::DecimalSi | Format::DecimalExponent => (18 - digits, self.exponent, 1_i64),
            Format::BinarySi if self.fraction.is_empty() => (
                15 - digits - self.exponent * 3 / 10 - 1,
                0,
                1_i64 << self.exponent,
            ),
            Format::BinarySi => return None,
        };
        let scale = scale - fraction_digits;
        if precision < 0 || scale < -9 {
            return None;
        }
        let shifted = format!("{}{}", self.whole, self.fraction);
        let value: i64 = shifted.parse().ok()?;
        value.checked_mul(multiplier)?;
        let kept = match self.format {
            Format::BinarySi => value & 0x07 != 0,
            Format::DecimalSi | Format::DecimalExponent => {
                scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0')
            }
        };
        Some((kept, scale))
    }
}

/// Writes `nanos` canonically in `format`: no fractional digits, the largest exponent that
/// loses nothing.
fn write(nanos: i128, format: Format) -> String {
    if nanos == 0 {
        return "0".to_owned();
    }
    if format == Format::BinarySi
        && nanos.abs() >= 1024 * NANOS_PER_UNIT
        && nanos % NANOS_PER_UNIT == 0
    {
        let mut units = nanos / NANOS_PER_UNIT;
        let mut power = 0;
        while power < 6 && units % 1024 == 0 {
            units /= 1024;
            power += 1;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
        return format!("{units}{suffix}");
    }
    // Every factor of 10 into the exponent, then back down to a multiple of 3. The mantissa
    // never grows past `nanos`: at most two factors come back, and only after as many left.
    let mut mantissa = nanos;
    let mut exponent: i32 = -9;
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    while exponent.rem_euclid(3) != 0 {
        mantissa *= 10;
        exponent -= 1;
    }
    if format == Format::DecimalExponent {
        return if exponent == 0 {
            mantissa.to_string()
        } else {
            format!("{mantissa}e{exponent}")
        };
    }
    let (mantissa, suffix) = match exponent {
        -9 => (mantissa.to_string(), "n"),
        -6 => (mantissa.to_string(), "u"),
        -3 => (mantissa.to_string(), "m"),
        0 => (mantissa.to_string(), ""),
        3 => (mantissa.to_string(), "k"),
        6 => (mantissa.to_string(), "M"),
        9 => (mantissa.to_string(), "G"),
        12 => (mantissa.to_string(), "T"),
        15 => (mantissa.to_string(), "P"),
        18 => (mantissa.to_string(), "E"),
        beyond => {
            let zeros = usize::try_from(beyond - 18).unwrap_or_default();
            (format!("{mantissa}{}", "0".repeat(zeros)), "E")
        }
    };
    format!("{mantissa}{suffix}")
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

    /// Written as Kubernetes writes them back. Sources, apimachinery 1.20.2
    /// `pkg/api/resource`: the `Quantity` doc comment ("1.5 will be serialized as "1500m"",
    /// "1.5Gi will be serialized as "1536Mi""), `TestQuantityString` (each `expect` is kept as
    /// written when parsed, each `alternate` is written as its `expect`) and
    /// `TestQuantityParseEmit`. `TestQuantityString`'s `1000e-12` is left out: its exponent is
    /// outside the -9..18 a policy may use.
    #[test]
    fn quantities_are_written_as_kubernetes_writes_them() {
        let documented = [
            ("1.5", "1500m"),
            ("1.5Gi", "1536Mi"),
            // TestQuantityString, alternates.
            ("1024Mi", "1Gi"),
            ("307200Ki", "300Mi"),
            ("1025024Mi", "1001Gi"),
            ("1024Gi", "1Ti"),
            ("5000m", "5"),
            ("0.5", "500m"),
            ("1000M", "1G"),
            ("0.001T", "1G"),
            ("1000u", "1m"),
            ("1.08", "1080m"),
            ("1080000000n", "1080m"),
            (".001e12", "1e9"),
            ("0.001e0", "1e-3"),
            ("00", "0"),
            // TestQuantityParseEmit.
            ("1Ki", "1Ki"),
            ("1Mi", "1Mi"),
            ("1Gi", "1Gi"),
            (".001Ki", "1024m"),
            (".000001Ki", "1024u"),
            (".000000001Ki", "1024n"),
            (".000000000001Ki", "2n"),
        ];
        for (input, expected) in documented {
            assert_eq!(q(input).canonical().as_str(), expected, "{input}");
        }
        // TestQuantityString, expects: already canonical, kept byte for byte.
        for kept in [
            "1Gi", "300Mi", "6Ki", "1001Gi", "1Ti", "5", "500m", "1G", "1m", "80m", "1080m",
            "300M", "1T", "1234567M", "1234567m", "3k", "1025", "0", "1e9", "1e-3", "1e-9",
            "80e-3", "300e6", "1e12", "1e3", "3e3", "1n", "80n", "1080n", "1u", "80u", "1080u",
        ] {
            assert_eq!(q(kept).canonical().as_str(), kept);
        }
    }

    /// What the rules above give for what policies hold. The end-to-end test
    /// `quantities_are_stored_as_written_here` checks each against a real apiserver.
    #[test]
    fn policy_quantities_are_written_without_spaces_fractions_or_needless_digits() {
        for (input, expected) in [
            (" 2", "2"),
            ("2 ", "2"),
            // A YAML number: `memory: 1e3` reaches the parser as the float 1000.0.
            ("1000.0", "1k"),
            ("2000m", "2"),
            ("0.5Gi", "512Mi"),
            ("1.5e3", "1500"),
            ("2.5Gi", "2560Mi"),
            ("1536Mi", "1536Mi"),
            ("1048576Ki", "1Gi"),
            // Written as `2000`, which the apiserver reads as decimal and stores as `2k`.
            ("1.953125Ki", "2k"),
            ("-2796187.5Ki", "-2863296k"),
            ("0.1", "100m"),
            ("0.0001", "100u"),
            ("10e3", "10e3"),
            // Kubernetes keeps these as written: its test of "canonical" looks at the digits.
            ("1e3", "1e3"),
            ("+2", "+2"),
            ("02", "02"),
            ("64Gi", "64Gi"),
            ("2432Mi", "2432Mi"),
            // Past `E` Kubernetes has no suffix; the value is kept (see `stored_text`).
            ("1000E", "1000E"),
            ("12345E", "12345E"),
        ] {
            let written = q(input).canonical();
            assert_eq!(written.as_str(), expected, "{input:?}");
            assert_eq!(written, q(input), "{input:?}: the value is unchanged");
        }
    }

    /// In a pod's requests and limits the apiserver first rounds up to milli-units
    /// (`SetDefaults_ResourceList` in Kubernetes' `pkg/apis/core/v1/defaults.go`); the
    /// end-to-end test checks these against a real apiserver too.
    #[test]
    fn pod_resources_are_rounded_up_to_milli_units_then_written_canonically() {
        for (input, expected) in [
            ("100u", "1m"),
            ("0.0001", "1m"),
            ("1n", "1m"),
            ("1500u", "2m"),
            ("1.0001", "1001m"),
            ("1e-4", "1e-3"),
            (".000000000001Ki", "1m"),
            // Nothing to round: as `canonical`, written texts kept as written included.
            ("1e-3", "1e-3"),
            ("+2", "+2"),
            (" 2", "2"),
            ("1000.0", "1k"),
            ("0.5Gi", "512Mi"),
            ("1.5", "1500m"),
            ("64Gi", "64Gi"),
        ] {
            assert_eq!(q(input).as_pod_resource().as_str(), expected, "{input:?}");
            assert_eq!(
                q(input).as_pod_resource(),
                q(expected),
                "{input:?}: the value is the rounded one"
            );
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
