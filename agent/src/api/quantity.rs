//! Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1e3`, `1G`).
//!
//! Parsed exactly (no floating point) into thousandths of a unit, as
//! apimachinery's `resource.Quantity` does for its canonical forms. Values
//! are rounded up, as `Quantity.Value()`/`MilliValue()` do.

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax,
    #[error("quantity is too large")]
    Overflow,
    #[error("must be greater than or equal to 0")]
    Negative,
}

/// A parsed quantity, in thousandths of its unit (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Parsed {
    milli: i128,
}

impl Parsed {
    /// `MilliValue()`: e.g. CPU millicores.
    pub fn milli(self) -> i128 {
        self.milli
    }
    /// `Value()`: whole units rounded up, e.g. bytes.
    pub fn value(self) -> i128 {
        self.milli.div_euclid(1000) + i128::from(self.milli.rem_euclid(1000) != 0)
    }
}

/// Parses a quantity string.
pub fn parse(s: &str) -> Result<Parsed, QuantityError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (negative, num) = match num.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    if num.is_empty() || num.matches('.').count() > 1 || num.contains(['+', '-']) {
        return Err(QuantityError::Syntax);
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::Syntax);
    }
    // Mantissa as an integer with `scale` decimal places.
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = 0;
    for d in digits.bytes() {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(d - b'0')))
            .ok_or(QuantityError::Overflow)?;
    }
    let mut dec_exp: i32 = -i32::try_from(frac_part.len()).map_err(|_| QuantityError::Overflow)?;
    let mut bin_mult: i128 = 1;
    match suffix {
        "" => {}
        "Ki" => bin_mult = 1 << 10,
        "Mi" => bin_mult = 1 << 20,
        "Gi" => bin_mult = 1 << 30,
        "Ti" => bin_mult = 1 << 40,
        "Pi" => bin_mult = 1 << 50,
        "Ei" => bin_mult = 1 << 60,
        "n" => dec_exp -= 9,
        "u" => dec_exp -= 6,
        "m" => dec_exp -= 3,
        "k" => dec_exp += 3,
        "M" => dec_exp += 6,
        "G" => dec_exp += 9,
        "T" => dec_exp += 12,
        "P" => dec_exp += 15,
        "E" => dec_exp += 18,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| QuantityError::Syntax)?;
            if !(-40..=40).contains(&e) {
                return Err(QuantityError::Overflow);
            }
            dec_exp += e;
        }
        _ => return Err(QuantityError::Syntax),
    }
    // To thousandths: value * 1000 = mantissa * bin_mult * 10^(dec_exp+3).
    let mut v = mantissa
        .checked_mul(bin_mult)
        .ok_or(QuantityError::Overflow)?;
    let e = dec_exp + 3;
    if e >= 0 {
        for _ in 0..e {
            v = v.checked_mul(10).ok_or(QuantityError::Overflow)?;
        }
    } else {
        let mut div: i128 = 1;
        for _ in 0..(-e) {
            div = div.checked_mul(10).ok_or(QuantityError::Overflow)?;
        }
        v = v / div + i128::from(v % div != 0);
    }
    if v > i128::from(i64::MAX) {
        return Err(QuantityError::Overflow);
    }
    Ok(Parsed {
        milli: if negative { -v } else { v },
    })
}

/// CPU in millicores (`500m` → 500, `2` → 2000); negative is an error.
pub fn cpu_millis(s: &str) -> Result<u64, QuantityError> {
    let p = parse(s)?;
    u64::try_from(p.milli()).map_err(|_| QuantityError::Negative)
}

/// A byte count (`128Mi`, `1G`); negative is an error.
pub fn bytes(s: &str) -> Result<u64, QuantityError> {
    let p = parse(s)?;
    if p.milli() < 0 {
        return Err(QuantityError::Negative);
    }
    u64::try_from(p.value()).map_err(|_| QuantityError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(cpu_millis("100m"), Ok(100));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.0001"), Ok(1001));
        assert_eq!(bytes("128Mi"), Ok(128 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1e3"), Ok(1000));
        assert_eq!(bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(bytes("100m"), Ok(1));
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(parse("-1").map(Parsed::milli), Ok(-1000));
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "abc", "1..2", "1Qi", "--1", "1e", "Mi", ".", "1e999"] {
            assert!(parse(s).is_err(), "{s}");
        }
        assert_eq!(cpu_millis("-1"), Err(QuantityError::Negative));
        assert_eq!(bytes("16Ei"), Err(QuantityError::Overflow));
    }
}
