//! Kubernetes quantities: parsing, and the exact values comparisons rest on.
//!
//! Two inputs from each run: the raw bytes as text (never a panic; `parse` and the allocation-free
//! `nanos_of` agree; the text is kept as written; the forms the apiserver stores keep the value,
//! read back as it, and are fixed points), and a quantity assembled from the bytes
//! (sign, digits, fraction, suffix or exponent) whose value is also computed here, independently,
//! as digits times a power of two times a power of ten. The parser must give that value whenever
//! it accepts the text, and must accept it whenever no intermediate can come near 128 bits.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use spark_admission::policy::Quantity;

/// A suffix and its value as 2^binary * 10^decimal.
const SUFFIXES: &[(&str, u32, i32)] = &[
    ("", 0, 0),
    ("n", 0, -9),
    ("u", 0, -6),
    ("m", 0, -3),
    ("k", 0, 3),
    ("M", 0, 6),
    ("G", 0, 9),
    ("T", 0, 12),
    ("P", 0, 15),
    ("E", 0, 18),
    ("Ki", 10, 0),
    ("Mi", 20, 0),
    ("Gi", 30, 0),
    ("Ti", 40, 0),
    ("Pi", 50, 0),
    ("Ei", 60, 0),
];

struct Built {
    text: String,
    /// Exact value in nano-units, rounded away from zero; `None` if it does not fit in i128.
    nanos: Option<i128>,
    /// Whether every intermediate stays far below 128 bits, so the parser must accept it.
    small: bool,
}

fn build(u: &mut Unstructured<'_>) -> Result<Built> {
    let negative = u.arbitrary::<bool>()?;
    let whole = u.arbitrary::<u64>()? >> u.int_in_range(0..=63)?;
    let fraction_digits = u.int_in_range(0..=12_u32)?;
    let fraction = u.int_in_range(0..=10_u64.pow(fraction_digits) - 1)?;
    let (suffix, binary, mut decimal) = if u.ratio(1, 4)? {
        let power = u.int_in_range(-9..=18_i32)?;
        let letter = if u.arbitrary::<bool>()? { 'e' } else { 'E' };
        (format!("{letter}{power}"), 0, power)
    } else {
        let (suffix, binary, decimal) = *u.choose(SUFFIXES)?;
        (suffix.to_owned(), binary, decimal)
    };
    let number = match fraction_digits {
        0 => whole.to_string(),
        digits => format!("{whole}.{fraction:0width$}", width = digits as usize),
    };
    let text = format!("{}{number}{suffix}", if negative { "-" } else { "" });

    // digits * 2^binary * 10^(decimal + 9 - fraction_digits), rounded up when the power of ten
    // is negative.
    let suffix_decimal = decimal;
    let digits = u128::from(whole) * 10_u128.pow(fraction_digits) + u128::from(fraction);
    decimal += 9 - fraction_digits as i32;
    let magnitude = digits.checked_mul(1_u128 << binary).and_then(|scaled| {
        if decimal >= 0 {
            scaled.checked_mul(10_u128.checked_pow(decimal as u32)?)
        } else {
            Some(scaled.div_ceil(10_u128.pow(decimal.unsigned_abs())))
        }
    });
    let nanos = magnitude
        .and_then(|m| i128::try_from(m).ok())
        .map(|m| if negative { -m } else { m });
    // The parser multiplies the digits by the suffix and by 10^9 before dividing: when that
    // product stays below 2^120 it has no reason to refuse.
    let small = digits
        .checked_mul(1_u128 << binary)
        .and_then(|n| n.checked_mul(10_u128.pow(suffix_decimal.max(0).unsigned_abs() + 9)))
        .is_some_and(|n| n < 1 << 120);
    Ok(Built { text, nanos, small })
}

/// `canonical` keeps the value, except a binary value past 2^63-1 units, which Kubernetes caps
/// and so does `canonical`; `as_pod_resource` rounds it up to milli-units, away from zero. Both texts read back as
/// their value (when they are within what the parser holds) and are their own stored form.
fn stored_forms_hold_the_value(quantity: &Quantity) {
    const NANOS: i128 = 1_000_000_000;
    let cap = i128::from(i64::MAX) * NANOS;
    let canonical = quantity.canonical();
    if quantity.nanos().abs() <= cap {
        assert_eq!(
            canonical.nanos(),
            quantity.nanos(),
            "{:?} -> {canonical}",
            quantity.as_str()
        );
    }
    let stored = quantity.as_pod_resource();
    let magnitude = canonical.nanos().unsigned_abs();
    if magnitude < i128::MAX.unsigned_abs() - 1_000_000 {
        let rounded = magnitude.div_ceil(1_000_000) * 1_000_000;
        assert_eq!(
            stored.nanos().unsigned_abs(),
            rounded,
            "{:?} -> {stored}",
            quantity.as_str()
        );
        assert_eq!(stored.nanos().signum(), canonical.nanos().signum());
    }
    for form in [&canonical, &stored] {
        if let Some(read) = Quantity::nanos_of(form.as_str()) {
            assert_eq!(
                read,
                form.nanos(),
                "{:?} -> {form} reads back differently",
                quantity.as_str()
            );
        }
    }
    assert_eq!(canonical.canonical().as_str(), canonical.as_str());
    assert_eq!(stored.as_pod_resource().as_str(), stored.as_str());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let parsed = Quantity::parse(text);
        assert_eq!(
            parsed.as_ref().ok().map(Quantity::nanos),
            Quantity::nanos_of(text),
            "parse and nanos_of disagree on {text:?}"
        );
        match parsed {
            Ok(quantity) => {
                assert_eq!(quantity.as_str(), text);
                assert_eq!(quantity.to_string(), text);
                stored_forms_hold_the_value(&quantity);
            }
            // Garbage says what the syntax is; a valid but huge quantity says it is too large.
            Err(error) if error.is_out_of_range() => {
                assert!(error.to_string().contains("too large"), "{error}")
            }
            Err(error) => assert!(error.to_string().contains("Ki Mi Gi"), "{error}"),
        }
    }

    let mut u = Unstructured::new(data);
    let (Ok(a), Ok(b)) = (build(&mut u), build(&mut u)) else {
        return;
    };
    for built in [&a, &b] {
        if let Ok(quantity) = Quantity::parse(&built.text) {
            stored_forms_hold_the_value(&quantity);
        }
        let parsed = Quantity::nanos_of(&built.text);
        match (parsed, built.nanos) {
            (Some(got), Some(want)) => assert_eq!(got, want, "value of {:?}", built.text),
            (Some(got), None) => {
                panic!("{:?} parsed as {got} but does not fit in i128", built.text)
            }
            // Built from the grammar, it is never garbage; one it cannot hold exactly (too many
            // characters, an exponent out of range) is refused as too large, which is allowed.
            (None, _) => match Quantity::parse(&built.text) {
                Err(error) if !error.is_out_of_range() => {
                    panic!("{:?} refused as garbage: {error}", built.text)
                }
                _ if built.small
                    && built
                        .nanos
                        .is_some_and(|n| n.unsigned_abs() < 10_u128.pow(29))
                    && built.text.len() <= 64
                    && !built.text.contains(['e', 'E']) =>
                {
                    panic!("{:?} refused though within 10^20 units", built.text)
                }
                _ => {}
            },
        }
    }
    if let (Ok(qa), Ok(qb), Some(na), Some(nb)) = (
        Quantity::parse(&a.text),
        Quantity::parse(&b.text),
        a.nanos,
        b.nanos,
    ) {
        assert_eq!(qa.cmp(&qb), na.cmp(&nb), "{:?} vs {:?}", a.text, b.text);
        assert_eq!(qa == qb, na == nb);
    }

    // The constructors write what they mean.
    let Ok(n) = u.arbitrary::<i64>() else {
        return;
    };
    let whole = Quantity::whole(n);
    assert_eq!(Quantity::nanos_of(whole.as_str()), Some(whole.nanos()));
    assert_eq!(whole.nanos(), i128::from(n) * 1_000_000_000);
    let mib = Quantity::mebibytes(n);
    assert_eq!(Quantity::nanos_of(mib.as_str()), Some(mib.nanos()));
    assert_eq!(mib.nanos(), i128::from(n) * 1_048_576 * 1_000_000_000);
});
