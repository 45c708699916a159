//! A small JSON scanner for the request bodies that carry tensors as float arrays.
//!
//! serde_json reads a number one digit at a time and calls a visitor per element, which made
//! JSON requests cost about 1.5× the binary ones at 64 rows of 20 features. This scanner walks a
//! body's structure itself, reads float arrays eight digits at a time, and hands every other value
//! to serde as its raw slice (`Scanner::serde`).
//!
//! Each number is computed exactly as serde_json 1.x computes it without `float_roundtrip` (the
//! decimal significand as `u64`, then one multiplication or division by a power of ten from a
//! table of correctly rounded literals), so what it reads is bit-identical to the serde paths;
//! `numbers_match_serde_json_bit_for_bit` checks that. Its readers are fast paths only: anything
//! it does not take returns `None` (`"NaN"` strings, escaped keys, more than 19 significant digits,
//! malformed JSON), and the caller falls back to serde, which keeps the one set of error messages.

use std::sync::LazyLock;

use serde::de::DeserializeOwned;

use crate::tensor::JsonFloatData;

/// serde_json's recursion limit is 128; nothing real nests float data this deep.
const MAX_DEPTH: usize = 64;

/// `10^0 ..= 10^308`, each the correctly rounded `f64` (what the literals `1e0`.. give).
static POW10: LazyLock<[f64; 309]> = LazyLock::new(|| {
    std::array::from_fn(|n| {
        format!("1e{n}")
            .parse()
            .expect("a power of ten is a valid float literal")
    })
});

/// A position in a JSON text. Every reader returns `None` on anything it does not take.
pub(crate) struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Scanner { b: bytes, i: 0 }
    }

    /// Only blanks are left.
    pub(crate) fn end(&mut self) -> Option<()> {
        self.ws();
        (self.i == self.b.len()).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next non-blank byte, consumed.
    fn next(&mut self) -> Option<u8> {
        self.ws();
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// Walks `open item, ... close`, calling `item` positioned (past blanks) at each element.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        self.ws();
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            item(self)?;
            match self.next()? {
                b',' => {}
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// Walks `{ "key": value, ... }`, calling `field` with each key positioned at its value.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.list(b'{', b'}', |s| {
            let key = s.key()?;
            s.expect(b':')?;
            s.ws();
            field(s, key)
        })
    }

    /// Walks `[ item, ... ]`, calling `item` positioned at each element.
    pub(crate) fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.list(b'[', b']', item)
    }

    /// A key without escapes, control characters or non-ASCII bytes (serde decodes those; a
    /// key that needs decoding goes to it).
    fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => return None,
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
        let key = &self.b[start..self.i];
        self.i += 1;
        Some(key)
    }

    /// The raw text of the value here, found by its delimiters only; the caller gives it to
    /// serde, which checks it.
    fn raw_value(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let start = self.i;
        let mut depth = 0usize;
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.i += 1;
                            break;
                        }
                        b'\\' => self.i += 2,
                        _ => self.i += 1,
                    }
                },
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.checked_sub(1)?,
                _ if depth > 0 => {}
                _ => {
                    // A scalar runs to the next delimiter.
                    while !matches!(
                        self.b.get(self.i),
                        None | Some(b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
                    ) {
                        self.i += 1;
                    }
                }
            }
            if depth == 0 {
                return Some(&self.b[start..self.i]);
            }
        }
    }

    /// The value here decoded by serde from its raw text.
    pub(crate) fn serde<T: DeserializeOwned>(&mut self) -> Option<T> {
        serde_json::from_slice(self.raw_value()?).ok()
    }

    /// Float tensor data here (a number or a nest of arrays of numbers), as
    /// [`crate::tensor::JsonFloatSeed`] reads it, appended to `out`.
    pub(crate) fn float_data(&mut self, out: &mut JsonFloatData) -> Option<()> {
        self.floats(out, 0, &POW10)
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.i)
    }

    fn floats(&mut self, out: &mut JsonFloatData, depth: usize, pow10: &[f64; 309]) -> Option<()> {
        if self.b.get(self.i) != Some(&b'[') {
            let x = self.number(pow10)?;
            out.push(depth, x);
            return Some(());
        }
        if depth == MAX_DEPTH {
            return None;
        }
        out.open_array(depth);
        let mut n = 0i64;
        self.list(b'[', b']', |s| {
            s.floats(out, depth + 1, pow10)?;
            n += 1;
            Some(())
        })?;
        out.close_array(depth, n);
        Some(())
    }

    /// A JSON number, computed as serde_json computes it; `None` where serde_json would fail or
    /// take its other routes (more than 19 significant digits, a power of ten past the table).
    fn number(&mut self, pow10: &[f64; 309]) -> Option<f64> {
        let negative = self.b.get(self.i) == Some(&b'-');
        self.i += usize::from(negative);
        let digits_start = self.i;
        let first = *self.b.get(self.i)?;
        let mut significand = 0u64;
        let int_digits = self.digits(&mut significand);
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        let mut all_digits = int_digits;
        let mut exponent = 0i64;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let frac_digits = self.digits(&mut significand);
            if frac_digits == 0 {
                return None;
            }
            exponent -= frac_digits as i64;
            all_digits += frac_digits;
        }
        // 19 digits always fit a u64; past that, leading zeros may be why (0.000123...).
        if all_digits > 19 {
            let leading_zeros = self.b[digits_start..self.i]
                .iter()
                .take_while(|&&c| c == b'0' || c == b'.')
                .filter(|&&c| c == b'0')
                .count();
            if all_digits - leading_zeros > 19 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            let negative_exp = self.b.get(self.i) == Some(&b'-');
            if let Some(b'-' | b'+') = self.b.get(self.i) {
                self.i += 1;
            }
            let start = self.i;
            let mut e = 0i64;
            while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                e = e * 10 + i64::from(c - b'0');
                // Past this no exponent comes back into the table's range.
                if e > 1 << 40 {
                    return None;
                }
                self.i += 1;
            }
            if self.i == start {
                return None;
            }
            exponent += if negative_exp { -e } else { e };
        }
        let pow = *pow10.get(usize::try_from(exponent.unsigned_abs()).ok()?)?;
        let magnitude = if exponent >= 0 {
            significand as f64 * pow
        } else {
            significand as f64 / pow
        };
        if magnitude.is_infinite() {
            return None;
        }
        Some(if negative { -magnitude } else { magnitude })
    }

    /// Decimal digits here, folded into `significand` (wrapping: the caller bounds the count).
    fn digits(&mut self, significand: &mut u64) -> usize {
        let start = self.i;
        while let Some(eight) = self
            .b
            .get(self.i..self.i + 8)
            .and_then(|chunk| eight_digits(chunk.try_into().ok()?))
        {
            *significand = significand.wrapping_mul(100_000_000).wrapping_add(eight);
            self.i += 8;
        }
        while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
            *significand = significand
                .wrapping_mul(10)
                .wrapping_add(u64::from(c - b'0'));
            self.i += 1;
        }
        self.i - start
    }
}

/// The non-finite literals some JSON writers emit as bare values: Python's `json` (and so
/// tritonclient's JSON data) writes `NaN`, `Infinity` and `-Infinity`, and RapidJSON (Triton)
/// also reads `Inf`. Longest first, so that `Infinity` is not taken as `Inf`.
const NON_FINITE: [&[u8]; 5] = [b"-Infinity", b"Infinity", b"-Inf", b"Inf", b"NaN"];

/// A text with its bare non-finite literals quoted, and where they were.
pub(crate) struct Quoted {
    pub text: Vec<u8>,
    /// (offset in the original, length) of each quoted literal, in order.
    literals: Vec<(usize, usize)>,
}

impl Quoted {
    /// The offset in the original text of `pos`, an offset in the quoted one: each literal
    /// before it added two quotes.
    pub fn original(&self, pos: usize) -> usize {
        let mut shift = 0;
        for &(start, len) in &self.literals {
            let quoted_start = start + shift;
            if pos <= quoted_start {
                break;
            }
            if pos < quoted_start + len + 2 {
                // Inside the quoted literal: the character of the literal it stands on.
                return start + (pos - quoted_start - 1).min(len);
            }
            shift += 2;
        }
        pos - shift
    }
}

/// `json` with every bare non-finite literal in value position quoted (`NaN` becomes `"NaN"`,
/// which float data accepts), or `None` when there is none. Only a fallback for bodies serde
/// refused: strict JSON has no such literals, so well-formed bodies never come here.
pub(crate) fn quote_non_finite(json: &[u8]) -> Option<Quoted> {
    let mut literals = Vec::new();
    let mut out = Vec::new();
    let mut copied = 0;
    let mut in_string = false;
    let mut prev = b'[';
    let mut i = 0;
    while i < json.len() {
        let c = json[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if matches!(prev, b'[' | b',' | b':')
            && let Some(lit) = NON_FINITE.iter().find(|lit| {
                json[i..].starts_with(lit)
                    && matches!(
                        json.get(i + lit.len()),
                        None | Some(b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
                    )
            })
        {
            out.extend_from_slice(&json[copied..i]);
            out.push(b'"');
            out.extend_from_slice(lit);
            out.push(b'"');
            literals.push((i, lit.len()));
            i += lit.len();
            copied = i;
            prev = b'"';
            continue;
        }
        if c == b'"' {
            in_string = true;
        }
        if !c.is_ascii_whitespace() {
            prev = c;
        }
        i += 1;
    }
    if literals.is_empty() {
        return None;
    }
    out.extend_from_slice(&json[copied..]);
    Some(Quoted {
        text: out,
        literals,
    })
}

/// The value of eight ASCII digits, or `None` unless all eight are digits. Works on the eight
/// bytes as one little-endian word: pairs, then quads, then the whole, each step one multiply.
fn eight_digits(chunk: [u8; 8]) -> Option<u64> {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let v = u64::from_le_bytes(chunk);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 keeps it 3.
    if v & HIGH_NIBBLES != ZEROS || v.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES != ZEROS {
        return None;
    }
    let d = v - ZEROS;
    // The first byte is the most significant digit.
    let pairs = (d.wrapping_mul(10) + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some(quads.wrapping_mul(10_000).wrapping_add(quads >> 32) & 0xFFFF_FFFF)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::Rng;
    use rand::rngs::StdRng;

    /// A JSON number in one of the forms clients write, or an edge of serde_json's routes.
    pub(crate) fn number(rng: &mut StdRng, edges: bool) -> String {
        let x: f64 = rng.random::<f64>() * 10f64.powi(rng.random_range(-12..12));
        let x = if rng.random_bool(0.5) { -x } else { x };
        match rng.random_range(0..if edges { 8 } else { 5 }) {
            0 => format!("{x}"),
            1 => format!("{x:e}"),
            2 if x.abs() >= 1.0 => format!("{x:E}").replace('E', "E+"),
            2 => format!("{x:E}"),
            3 => format!("{}", x as f32 as f64),
            4 => format!("{}", rng.random::<u64>() >> rng.random_range(1..64)),
            5 => {
                // Long digit strings, leading zeros, big exponents.
                let digits: String = (0..rng.random_range(1..26))
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                let zeros = "0".repeat(rng.random_range(0..6));
                format!("0.{zeros}{digits}e{}", rng.random_range(-330..330))
            }
            6 => f64::from_bits(rng.random()).to_string(),
            _ => [
                "0",
                "-0",
                "0.0",
                "-0.0",
                "1e308",
                "1e309",
                "-1e309",
                "2e-308",
                "1e-400",
                "0e999",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "9007199254740993",
                "0.30000000000000004",
                "1E5",
                "1e+5",
                "1.5E-3",
                "123456789012345678.9",
                "1234567890123456789",
                "12345678901234567890",
                "0.00000000000000000000123456789",
                "1e-3",
                "-2.5e-0",
            ][rng.random_range(0..24)]
            .to_string(),
        }
    }

    #[test]
    fn numbers_match_serde_json_bit_for_bit() {
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(12);
        let mut read = 0;
        for _ in 0..200_000 {
            let text = number(&mut rng, true);
            let mut s = Scanner {
                b: text.as_bytes(),
                i: 0,
            };
            let Some(x) = s.number(&POW10).filter(|_| s.i == text.len()) else {
                continue;
            };
            let want: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(x.to_bits(), want.to_bits(), "{text}");
            read += 1;
        }
        assert!(read > 150_000, "{read}");
    }

    #[test]
    fn bare_non_finite_literals_are_quoted() {
        let q =
            |s: &str| quote_non_finite(s.as_bytes()).map(|v| String::from_utf8(v.text).unwrap());
        assert_eq!(
            q(r#"{"data": [NaN, -Infinity,Infinity , 1, -Inf, Inf]}"#).as_deref(),
            Some(r#"{"data": ["NaN", "-Infinity","Infinity" , 1, "-Inf", "Inf"]}"#)
        );
        assert_eq!(q(r#"{"x": NaN}"#).as_deref(), Some(r#"{"x": "NaN"}"#));
        // Offsets map back past the added quotes.
        let original = r#"[NaN, 1, Inf, x]"#;
        let quoted = quote_non_finite(original.as_bytes()).unwrap();
        let text = String::from_utf8(quoted.text.clone()).unwrap();
        for (c, want) in [('[', '['), ('1', '1'), ('x', 'x'), (',', ',')] {
            let pos = text.find(c).unwrap();
            assert_eq!(original.as_bytes()[quoted.original(pos)], want as u8);
        }
        let inside = text.find("Inf").unwrap() + 1;
        assert_eq!(&original[quoted.original(inside)..][..2], "nf");
        // Inside strings, as part of longer words, or not in value position: left alone.
        for s in [
            r#"{"data": ["NaN", "a " NaN"]}"#,
            r#"{"data": [NaNa, Infinityx]}"#,
            r#"{"NaN": 1}"#,
            r#"[1 NaN]"#,
            r#"{"data": [1, 2]}"#,
        ] {
            assert_eq!(q(s), None, "{s}");
        }
    }

    #[test]
    fn quoting_random_texts_never_panics_and_maps_inside_the_original() {
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(7);
        let alphabet = b"NaIfity-[],:\"\\ 1";
        for _ in 0..20_000 {
            let text: Vec<u8> = (0..rng.random_range(0..24))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if let Some(q) = quote_non_finite(&text) {
                assert_eq!(q.text.len(), text.len() + 2 * q.literals.len());
                for pos in 0..=q.text.len() {
                    assert!(q.original(pos) <= text.len());
                }
            }
        }
    }

    #[test]
    fn eight_digits_reads_only_digits() {
        assert_eq!(eight_digits(*b"12345678"), Some(12_345_678));
        assert_eq!(eight_digits(*b"00000000"), Some(0));
        assert_eq!(eight_digits(*b"99999999"), Some(99_999_999));
        for bad in [
            *b"1234567.",
            *b"/2345678",
            *b":2345678",
            *b"1234\xff678",
            *b"12 45678",
        ] {
            assert_eq!(eight_digits(bad), None, "{bad:?}");
        }
    }
}
