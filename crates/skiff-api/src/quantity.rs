//! Kubernetes resource quantities (`500m`, `1.5Gi`, `1e3`): parsing, comparison and canonical printing.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity was written, which decides how it is printed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Powers of 1000 (`m`, `k`, `M`, ... or no suffix).
    DecimalSI,
    /// Powers of 1024 (`Ki`, `Mi`, ...).
    BinarySI,
    /// Scientific notation (`1e3`, `5E-3`).
    DecimalExponent,
}

/// A parsed quantity. The value is kept exactly in nano-units (10^-9), which covers every
/// suffix Kubernetes accepts; values finer than 1n are rounded up, as Kubernetes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The wording Kubernetes uses when a quantity does not parse.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    #[error("quantity is too large")]
    TooLarge,
}

const NANO: i128 = 1_000_000_000;
/// Largest magnitude we keep (well above 2^63 units, the most Kubernetes itself can hold).
const MAX_NANOS: i128 = i128::MAX / 1024;

/// Parses a Kubernetes quantity string.
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QuantityError::Format);
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(QuantityError::Format);
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));

    // The value is mantissa * base^exp; for decimal bases we fold the exponent into
    // a power of ten, for binary we multiply by 1024^k.
    let (format, dec_exp, bin_exp): (QuantityFormat, i32, u32) = match suffix {
        "" => (QuantityFormat::DecimalSI, 0, 0),
        "n" => (QuantityFormat::DecimalSI, -9, 0),
        "u" => (QuantityFormat::DecimalSI, -6, 0),
        "m" => (QuantityFormat::DecimalSI, -3, 0),
        "k" => (QuantityFormat::DecimalSI, 3, 0),
        "M" => (QuantityFormat::DecimalSI, 6, 0),
        "G" => (QuantityFormat::DecimalSI, 9, 0),
        "T" => (QuantityFormat::DecimalSI, 12, 0),
        "P" => (QuantityFormat::DecimalSI, 15, 0),
        "E" => (QuantityFormat::DecimalSI, 18, 0),
        "Ki" => (QuantityFormat::BinarySI, 0, 1),
        "Mi" => (QuantityFormat::BinarySI, 0, 2),
        "Gi" => (QuantityFormat::BinarySI, 0, 3),
        "Ti" => (QuantityFormat::BinarySI, 0, 4),
        "Pi" => (QuantityFormat::BinarySI, 0, 5),
        "Ei" => (QuantityFormat::BinarySI, 0, 6),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or(QuantityError::Format)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Format);
            }
            let e: i32 = exp.parse().map_err(|_| QuantityError::TooLarge)?;
            (QuantityFormat::DecimalExponent, e, 0)
        }
    };

    // mantissa digits without the point, and the power of ten that point implies
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let mut exp10: i64 = i64::from(dec_exp) - frac_part.len() as i64 + 9; // +9: nano-units
    let mut mantissa: i128 = 0;
    let mut rounded_away = false;
    for (i, b) in digits.bytes().enumerate() {
        if mantissa > MAX_NANOS / 10 {
            // Too many significant digits: the rest only matters for finer-than-nano rounding
            // or for overflow, which the exponent check below catches.
            let remaining = (digits.len() - i) as i64;
            exp10 += remaining;
            if digits.as_bytes()[i..].iter().any(|&d| d != b'0') {
                rounded_away = true;
            }
            break;
        }
        mantissa = mantissa * 10 + i128::from(b - b'0');
    }
    let mut nanos = mantissa;
    if mantissa != 0 {
        if exp10 >= 0 {
            for _ in 0..exp10 {
                nanos = nanos
                    .checked_mul(10)
                    .filter(|v| *v <= MAX_NANOS)
                    .ok_or(QuantityError::TooLarge)?;
            }
        } else {
            let shift = -exp10;
            if shift > 38 {
                nanos = 1; // below a nano: rounds up to 1n
            } else {
                let div = 10i128.pow(shift as u32);
                let q = nanos / div;
                nanos = if nanos % div != 0 || rounded_away {
                    q + 1
                } else {
                    q
                };
            }
        }
        for _ in 0..bin_exp {
            nanos = nanos
                .checked_mul(1024)
                .filter(|v| *v <= MAX_NANOS)
                .ok_or(QuantityError::TooLarge)?;
        }
    }
    if negative {
        nanos = -nanos;
    }
    Ok(Quantity { nanos, format })
}

impl Quantity {
    /// A quantity of `milli` thousandths (e.g. 200 -> `200m`).
    pub fn from_milli(milli: i64, format: QuantityFormat) -> Self {
        Quantity {
            nanos: i128::from(milli) * 1_000_000,
            format,
        }
    }

    /// A quantity of whole units (e.g. bytes).
    pub fn from_value(value: i64, format: QuantityFormat) -> Self {
        Quantity {
            nanos: i128::from(value) * NANO,
            format,
        }
    }

    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue`).
    pub fn milli_value(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in whole units, rounded up (Kubernetes' `Value`).
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANO)
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is a whole number of units.
    pub fn is_integer(&self) -> bool {
        self.nanos % NANO == 0
    }

    /// The value as a float (for ratios such as utilization), exact up to f64 precision.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    /// A quantity of `nanos` billionths.
    pub fn from_nanos(nanos: i128, format: QuantityFormat) -> Self {
        Quantity { nanos, format }
    }

    /// Rounded up to a whole thousandth, as Kubernetes stores resource lists.
    pub fn round_up_to_milli(&self) -> Quantity {
        Quantity {
            nanos: div_ceil(self.nanos, 1_000_000) * 1_000_000,
            format: self.format,
        }
    }

    pub fn add(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }

    pub fn sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 { q + 1 } else { q }
}

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

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

/// The canonical form Kubernetes prints (`1536Mi`, `200m`, `2k`, `1e3`).
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let mut format = self.format;
        if format == QuantityFormat::BinarySI
            && (!abs.is_multiple_of(NANO as u128) || abs < 1024 * NANO as u128)
        {
            // Fractions and small values print as decimal, which avoids rounding.
            format = QuantityFormat::DecimalSI;
        }
        match format {
            QuantityFormat::BinarySI => {
                let mut units = abs / NANO as u128;
                let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                let mut i = 0;
                while i + 1 < suffixes.len() && units.is_multiple_of(1024) {
                    units /= 1024;
                    i += 1;
                }
                write!(f, "{sign}{units}{}", suffixes[i])
            }
            QuantityFormat::DecimalSI | QuantityFormat::DecimalExponent => {
                // Largest power of 1000 (from nano up) that divides the value exactly.
                let mut mantissa = abs;
                let mut exp: i32 = -9;
                while exp < 18 && mantissa.is_multiple_of(1000) {
                    mantissa /= 1000;
                    exp += 3;
                }
                if format == QuantityFormat::DecimalExponent {
                    if exp == 0 {
                        return write!(f, "{sign}{mantissa}");
                    }
                    return write!(f, "{sign}{mantissa}e{exp}");
                }
                let suffix = match exp {
                    -9 => "n",
                    -6 => "u",
                    -3 => "m",
                    0 => "",
                    3 => "k",
                    6 => "M",
                    9 => "G",
                    12 => "T",
                    15 => "P",
                    _ => "E",
                };
                write!(f, "{sign}{mantissa}{suffix}")
            }
        }
    }
}

/// Prints whole bytes the way Kubernetes prints memory it computed (`1Gi`, `1536Mi`, `1000`).
pub fn format_bytes(bytes: i64) -> String {
    Quantity::from_value(bytes, QuantityFormat::BinarySI).to_string()
}

/// Prints CPU thousandths the way Kubernetes does (`250m`, `2`).
pub fn format_milli_cpu(milli: i64) -> String {
    Quantity::from_milli(milli, QuantityFormat::DecimalSI).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        parse_quantity(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_suffixes() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("2k").value(), 2000);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1T").value(), 1_000_000_000_000);
        assert_eq!(q("1P").value(), 10i128.pow(15));
        assert_eq!(q("1E").value(), 10i128.pow(18));
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("1Mi").value(), 1 << 20);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("1Ti").value(), 1 << 40);
        assert_eq!(q("1Pi").value(), 1 << 50);
        assert_eq!(q("1Ei").value(), 1 << 60);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("5E-3").milli_value(), 5);
        assert_eq!(q("100n").nanos(), 100);
        assert_eq!(q("3u").nanos(), 3000);
        assert_eq!(q("-2").value(), -2);
        assert_eq!(q("+2").value(), 2);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("0.1m").nanos(), 100_000);
    }

    #[test]
    fn rounds_sub_nano_up() {
        assert_eq!(q("0.1n").nanos(), 1);
        assert_eq!(q("1.0000000001").nanos(), NANO + 1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.2.3", "1x", "1Gb", "m", "1e", "1e+", "--1", "1 Gi", ".",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(parse_quantity("1e400"), Err(QuantityError::TooLarge));
    }

    #[test]
    fn compares_across_formats() {
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1000m").cmp(&q("1")), Ordering::Equal);
        assert!(q("200m") < q("0.25"));
    }

    #[test]
    fn prints_canonically() {
        assert_eq!(q("200m").to_string(), "200m");
        assert_eq!(q("0.2").to_string(), "200m");
        assert_eq!(q("1500m").to_string(), "1500m");
        assert_eq!(q("2000").to_string(), "2k");
        assert_eq!(q("1500").to_string(), "1500");
        assert_eq!(q("1Gi").to_string(), "1Gi");
        assert_eq!(q("1.5Gi").to_string(), "1536Mi");
        assert_eq!(q("1024Mi").to_string(), "1Gi");
        assert_eq!(q("0.5Ki").to_string(), "512");
        assert_eq!(q("1e3").to_string(), "1e3");
        assert_eq!(q("0").to_string(), "0");
        assert_eq!(q("-1").to_string(), "-1");
        assert_eq!(format_bytes(3 << 30), "3Gi");
        assert_eq!(format_milli_cpu(2000), "2");
        assert_eq!(format_milli_cpu(250), "250m");
        assert_eq!(q("0.1m").round_up_to_milli().to_string(), "1m");
        assert_eq!(q("250m").as_f64(), 0.25);
        assert_eq!(
            Quantity::from_nanos(1, QuantityFormat::DecimalSI).to_string(),
            "1n"
        );
        assert_eq!(q("1.0001").round_up_to_milli().to_string(), "1001m");
    }
}
