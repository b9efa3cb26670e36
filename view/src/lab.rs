//! Whether a lab result is out of its range, as the portal marks it: from the facility's abnormal
//! flag (HL7 table 0078) or, when it sent none, from the value against its reference range.

/// How an out-of-range result is shown: the class its value is marked with, the arrow before the
/// value, and the word in the 判定 column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub class: &'static str,
    pub arrow: &'static str,
    pub word: &'static str,
}

/// A result's judgement: from its abnormal flag (HL7 table 0078) when the facility sent one, or
/// else from the value against its reference range (`3.3-8.6`, `-0.5`, `10-`, `<5`), so a result
/// whose system sends no flags is marked too. `None` for a normal result or one that cannot be
/// judged.
pub fn judge(value: &str, range: &str, flag: &str) -> Option<Judgement> {
    let j = |class, arrow, word| Some(Judgement { class, arrow, word });
    let by_range = || -> Option<bool> {
        // true: above the range, false: below it. A value may carry a comparator (`>1000`).
        let v = crate::fmt::ascii_width(value);
        let v = v.trim();
        let (cmp, num) = match v.chars().next()? {
            c @ ('<' | '>' | '≦' | '≧' | '≤' | '≥') => (Some(c), v[c.len_utf8()..].trim()),
            _ => (None, v),
        };
        let x: f64 = num.parse().ok()?;
        let (lo, hi) = reference(range)?;
        let above = hi.is_some_and(|h| match cmp {
            Some('>' | '≧' | '≥') => x >= h.value,
            Some(_) => false,
            None => h.exceeded_by(x),
        });
        let below = lo.is_some_and(|l| match cmp {
            Some('<' | '≦' | '≤') => x <= l.value,
            Some(_) => false,
            None => l.undercut_by(x),
        });
        match (above, below) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    };
    match flag.trim() {
        "H" => return j("high", "↑", "高値"),
        "HH" => return j("high critical", "↑↑", "異常高値"),
        ">" => return j("high", "↑", "測定上限超"),
        "L" => return j("low", "↓", "低値"),
        "LL" => return j("low critical", "↓↓", "異常低値"),
        "<" => return j("low", "↓", "測定下限未満"),
        "A" => return j("abnormal", "！", "異常"),
        "AA" => return j("abnormal critical", "！！", "重大な異常"),
        // The facility said normal; a value outside the range it sent is still shown as such,
        // marked as the range's reading, not the facility's.
        "N" => {
            return match by_range() {
                Some(true) => j("high", "↑", "基準値外（施設の判定は正常）"),
                Some(false) => j("low", "↓", "基準値外（施設の判定は正常）"),
                None => None,
            }
        }
        _ => {}
    }
    match by_range()? {
        true => j("high", "↑", "高値（基準値から）"),
        false => j("low", "↓", "低値（基準値から）"),
    }
}

/// One bound of a reference range, and whether a value equal to it is outside (`<0.5`, `0.5未満`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub value: f64,
    pub exclusive: bool,
}

impl Bound {
    fn inclusive(value: f64) -> Bound {
        Bound {
            value,
            exclusive: false,
        }
    }

    /// Whether `x` is above this upper bound.
    pub fn exceeded_by(self, x: f64) -> bool {
        x > self.value || (self.exclusive && x >= self.value)
    }

    /// Whether `x` is below this lower bound.
    pub fn undercut_by(self, x: f64) -> bool {
        x < self.value || (self.exclusive && x <= self.value)
    }
}

/// A reference range's bounds: `3.3-8.6` and `-2.0-+2.0` → both; `-0.5`, `<0.5`, `≦0.5`,
/// `0.5以下`, `0.5未満` → an upper one; `10-`, `>10`, `10以上`, `10超` → a lower one (`<` and
/// 未満, `>` and 超 exclusive); `None` for text that is not a numeric range.
pub fn reference(range: &str) -> Option<(Option<Bound>, Option<Bound>)> {
    let r: String = crate::fmt::ascii_width(range)
        .chars()
        .map(|c| match c {
            '～' | '〜' | '~' | '−' | 'ー' | '–' | '—' | '‐' => '-',
            c => c,
        })
        .filter(|c| !c.is_whitespace())
        .collect();
    let num = |s: &str| s.trim_start_matches('+').parse::<f64>().ok();
    let upper = |v: f64, exclusive| {
        Some((
            None,
            Some(Bound {
                value: v,
                exclusive,
            }),
        ))
    };
    let lower = |v: f64, exclusive| {
        Some((
            Some(Bound {
                value: v,
                exclusive,
            }),
            None,
        ))
    };
    for (p, exclusive) in [("<=", false), ("≦", false), ("≤", false), ("<", true)] {
        if let Some(x) = r.strip_prefix(p) {
            return upper(num(x)?, exclusive);
        }
    }
    for (p, exclusive) in [(">=", false), ("≧", false), ("≥", false), (">", true)] {
        if let Some(x) = r.strip_prefix(p) {
            return lower(num(x)?, exclusive);
        }
    }
    for (s, is_upper, exclusive) in [
        ("以下", true, false),
        ("未満", true, true),
        ("以上", false, false),
        ("超", false, true),
    ] {
        if let Some(x) = r.strip_suffix(s) {
            let v = num(x)?;
            return if is_upper {
                upper(v, exclusive)
            } else {
                lower(v, exclusive)
            };
        }
    }
    // A dash splits the bounds: the first dash after the first character, so a negative lower
    // bound stays a number (`-2.0-2.0`); a range that starts with one is "up to" (`-0.5`), one
    // that ends with one is "from" (`10-`).
    if let Some(x) = r.strip_suffix('-') {
        return lower(num(x)?, false);
    }
    match r.char_indices().skip(1).find(|(_, c)| *c == '-') {
        Some((i, _)) if i + 1 < r.len() => {
            let (a, b) = (&r[..i], &r[i + 1..]);
            let (l, h) = (num(a)?, num(b)?);
            (l <= h).then_some((Some(Bound::inclusive(l)), Some(Bound::inclusive(h))))
        }
        _ => r
            .strip_prefix('-')
            .and_then(num)
            .and_then(|h| upper(h, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_judged_by_their_flag_or_else_their_range() {
        let class = |v, r, f| judge(v, r, f).map(|j| j.class);
        assert_eq!(class("9.1", "3.3-8.6", "H"), Some("high"));
        assert_eq!(class("2.0", "3.3-8.6", "L"), Some("low"));
        assert_eq!(class("30", "", "HH"), Some("high critical"));
        // The facility said normal but the value is outside the range it sent: still marked,
        // with the facility's judgement said.
        assert_eq!(class("9.1", "3.3-8.6", "N"), Some("high"));
        assert!(judge("9.1", "3.3-8.6", "N")
            .unwrap()
            .word
            .contains("施設の判定は正常"));
        assert_eq!(class("5.0", "3.3-8.6", "N"), None);
        assert_eq!(class("1", "", "AA"), Some("abnormal critical"));
        // Negative lower bounds, words for the bounds, exclusive ones, other dashes.
        assert_eq!(class("-3.1", "-2.0-+2.0", ""), Some("low"));
        assert_eq!(class("0", "-2.0-2.0", ""), None);
        assert_eq!(class("2.5", "-3～+3", ""), None);
        assert_eq!(class("0.6", "0.5以下", ""), Some("high"));
        assert_eq!(
            class("0.5", "0.5未満", ""),
            Some("high"),
            "未満 excludes the bound"
        );
        assert_eq!(class("0.5", "<0.5", ""), Some("high"));
        assert_eq!(class("0.5", "0.5以下", ""), None);
        assert_eq!(class("9", "10以上", ""), Some("low"));
        assert_eq!(class("10", "10超", ""), Some("low"));
        assert_eq!(class("9.0", "3.3ー8.6", ""), Some("high"));
        assert_eq!(class("9.0", "3.3–8.6", ""), Some("high"));
        // A value with a comparator, or in full width.
        assert_eq!(class(">1000", "0-200", ""), Some("high"));
        assert_eq!(class("<0.5", "1.0-2.0", ""), Some("low"));
        assert_eq!(
            class("<0.5", "0-2.0", ""),
            None,
            "below 0.5 may well be in range"
        );
        assert_eq!(class("９.１", "3.3-8.6", ""), Some("high"));
        // No flag sent: the range decides.
        assert_eq!(class("9.1", "3.3-8.6", ""), Some("high"));
        assert_eq!(class("3.2", "3.3～8.6", ""), Some("low"));
        assert_eq!(class("5.0", "3.3-8.6", ""), None);
        assert_eq!(class("0.6", "-0.5", ""), Some("high"));
        assert_eq!(class("0.6", "<0.5", ""), Some("high"));
        assert_eq!(class("9", "10-", ""), Some("low"));
        assert_eq!(class("9", "≧10", ""), Some("low"));
        assert_eq!(
            class("九", "3.3-8.6", ""),
            None,
            "a value that is no number is not judged"
        );
        assert_eq!(class("9", "３．３－８．６", ""), Some("high"));
        assert_eq!(class("陰性", "陰性", ""), None);
        assert_eq!(
            class("5", "8.6-3.3", ""),
            None,
            "a range upside down is no range"
        );
        assert_eq!(judge("9.1", "", "H").unwrap().arrow, "↑");
        let b = |v| Some(Bound::inclusive(v));
        assert_eq!(reference("3.3-8.6"), Some((b(3.3), b(8.6))));
        assert_eq!(reference("-0.5"), Some((None, b(0.5))));
        assert_eq!(reference("-2.0-2.0"), Some((b(-2.0), b(2.0))));
        assert_eq!(reference("abc"), None);
    }
}
