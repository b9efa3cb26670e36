//! Name normalisation for search and matching: the regional index on the hub and the offline
//! search on the appliance compare names the same way.

/// Katakana for the half-width forms U+FF66..=U+FF9D.
const HALF_KANA: &str = "ヲァィゥェォャュョッーアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";

/// Normalizes a kana name for matching: half-width katakana to full width (joining sound marks),
/// hiragana to katakana, ASCII letters to upper case, spaces removed.
pub fn kana_norm(s: &str) -> String {
    let half: Vec<char> = HALF_KANA.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    for ch in s.chars() {
        let u = ch as u32;
        match u {
            0xFF66..=0xFF9D => out.push(half[(u - 0xFF66) as usize]),
            // Voiced and semi-voiced sound marks join the kana before them.
            0xFF9E | 0x309B | 0x3099 => {
                if let Some(last) = out.last_mut() {
                    *last = voiced(*last, 1);
                }
            }
            0xFF9F | 0x309C | 0x309A => {
                if let Some(last) = out.last_mut() {
                    *last = voiced(*last, 2);
                }
            }
            0x3041..=0x3096 => out.push(char::from_u32(u + 0x60).unwrap_or(ch)),
            0xFF21..=0xFF3A | 0xFF41..=0xFF5A | 0xFF10..=0xFF19 => out.push(
                char::from_u32(u - 0xFEE0)
                    .unwrap_or(ch)
                    .to_ascii_uppercase(),
            ),
            _ if ch.is_whitespace() || ch == '\u{3000}' || ch == '・' || ch == '･' => {}
            _ => out.push(ch.to_ascii_uppercase()),
        }
    }
    out.into_iter().collect()
}

fn voiced(k: char, mark: u32) -> char {
    if k == 'ウ' && mark == 1 {
        return 'ヴ';
    }
    let takes = if mark == 1 {
        "カキクケコサシスセソタチツテトハヒフヘホ"
    } else {
        "ハヒフヘホ"
    };
    if takes.contains(k) {
        char::from_u32(k as u32 + mark).unwrap_or(k)
    } else {
        k
    }
}

/// A kana name as the portal shows it: full-width katakana with the sound marks joined, family
/// and given names apart (`ﾔﾏﾀﾞ ﾀﾛｳ` → `ヤマダ タロウ`).
pub fn kana_shown(s: &str) -> String {
    s.split([' ', '\u{3000}'])
        .filter(|p| !p.is_empty())
        .map(kana_norm)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalizes a kanji name: spaces removed.
pub fn kanji_norm(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{3000}')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kana_is_shown_full_width_with_the_names_apart() {
        assert_eq!(kana_shown("ﾔﾏﾀﾞ ﾀﾛｳ"), "ヤマダ タロウ");
        assert_eq!(kana_shown("ヤマタ゛\u{3000}タロウ"), "ヤマダ タロウ");
        assert_eq!(kana_shown("  "), "");
    }
}
