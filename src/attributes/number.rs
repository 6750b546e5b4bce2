//! Plain decimal numbers in attribute values, compared exactly (no floating point).

use std::cmp::Ordering;

/// A plain decimal number as written in an attribute value: an optional sign,
/// digits, and an optional fraction (`42`, `-3.5`, `+0.25`, `.5`, `7.`).
///
/// Nothing else is a number: no thousands separators (`1,234`), exponents,
/// `nan`, `inf`, hex or surrounding text. Surrounding spaces are allowed.
/// Numbers compare exactly, digit by digit, so integers above 2⁵³ never
/// collide and `0.1 + 0.2`-style rounding never happens.
///
/// ```
/// use switchboard::attributes::Decimal;
/// let big = Decimal::parse("9007199254740993").unwrap();
/// let next = Decimal::parse("9007199254740992").unwrap();
/// assert!(big > next);
/// assert_eq!(Decimal::parse("3.0"), Decimal::parse("03"));
/// assert!(Decimal::parse("1,234").is_none() && Decimal::parse("nan").is_none());
/// assert!(Decimal::parse("").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros (empty for zero).
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

impl Decimal {
    /// Parses a plain decimal number; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Decimal> {
        let s = raw.trim();
        let (negative, digits) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int = int.trim_start_matches('0').to_owned();
        let frac = frac.trim_end_matches('0').to_owned();
        let zero = int.is_empty() && frac.is_empty();
        Some(Decimal {
            negative: negative && !zero,
            int,
            frac,
        })
    }

    /// True if `raw` is a plain decimal number.
    pub fn is_number(raw: &str) -> bool {
        Decimal::parse(raw).is_some()
    }

    /// The number as an `f64` (rounded; for indexes and display only).
    pub fn to_f64(&self) -> f64 {
        let text = format!(
            "{}{}.{}",
            if self.negative { "-" } else { "" },
            if self.int.is_empty() { "0" } else { &self.int },
            if self.frac.is_empty() {
                "0"
            } else {
                &self.frac
            }
        );
        text.parse().unwrap_or(0.0)
    }

    /// An order-preserving binary key: for any two numbers, comparing their
    /// keys bytewise (SQLite `BLOB`, PostgreSQL `bytea`, `memcmp`) orders them
    /// exactly as [`Decimal`]'s `Ord` does, and equal numbers (`3`, `3.0`,
    /// `03`) have equal keys. SQL stores index this column, so numeric
    /// filters run as exact range scans without floating point.
    ///
    /// Layout: a class byte (`0` negative, `1` zero, `2` positive); then the
    /// number of integer digits as a big-endian `u32` and the integer digits
    /// followed by the fraction digits (ASCII). For negative numbers the
    /// length and digits are complemented and `0xFF` ends the key, so a
    /// larger magnitude sorts first.
    pub fn sort_key(&self) -> Vec<u8> {
        if self.int.is_empty() && self.frac.is_empty() {
            return vec![1];
        }
        let len = u32::try_from(self.int.len()).unwrap_or(u32::MAX);
        let mut key = Vec::with_capacity(6 + self.int.len() + self.frac.len());
        let digits = self.int.bytes().chain(self.frac.bytes());
        if self.negative {
            key.push(0);
            key.extend_from_slice(&(u32::MAX - len).to_be_bytes());
            key.extend(digits.map(|d| b'9' - d + b'0'));
            key.push(0xFF);
        } else {
            key.push(2);
            key.extend_from_slice(&len.to_be_bytes());
            key.extend(digits);
        }
        key
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap_or_else(|| panic!("{s} is a number"))
    }

    #[test]
    fn parses_only_plain_decimals() {
        for ok in ["0", "-0", "+1", "1.", ".5", " 42 ", "007", "-3.250"] {
            assert!(Decimal::is_number(ok), "{ok}");
        }
        for bad in [
            "", " ", "-", ".", "+.", "1,234", "1e3", "nan", "NaN", "inf", "-inf", "0x10", "1 2",
            "1.2.3", "--1", "١٢",
        ] {
            assert!(!Decimal::is_number(bad), "{bad}");
        }
    }

    #[test]
    fn compares_exactly() {
        assert_eq!(d("-0"), d("0.000"));
        assert!(d("9007199254740993") > d("9007199254740992"));
        assert!(d("-10") < d("-9.99"));
        assert!(d("0.1") < d("0.10001"));
        assert!(d("100") > d("99.999"));
        assert_eq!(d("1.50").cmp(&d("1.5")), Ordering::Equal);
        assert!((d("-2.5").to_f64() + 2.5).abs() < f64::EPSILON);
    }

    #[test]
    fn sort_keys_order_like_numbers() {
        let corpus = [
            "-100",
            "-99.999",
            "-10",
            "-9.99",
            "-9.9",
            "-1",
            "-0.5",
            "-0.05",
            "0",
            "-0",
            "0.000",
            "0.05",
            "0.1",
            "0.10001",
            "0.5",
            "1",
            "1.5",
            "1.50",
            "9.9",
            "10",
            "99",
            "99.999",
            "100",
            "9007199254740992",
            "9007199254740993",
            "18446744073709551616",
        ];
        for a in corpus {
            for b in corpus {
                assert_eq!(
                    d(a).sort_key().cmp(&d(b).sort_key()),
                    d(a).cmp(&d(b)),
                    "{a} vs {b}"
                );
            }
        }
    }
}
