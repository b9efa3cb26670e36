//! The ISO-2022-JP decoder: a file's bytes to text, in every dialect SS-MIX2 gateways write,
//! before any delimiter is split.

use super::Error;

/// Decodes an SS-MIX2 file's bytes to text, stripping MLLP-style framing bytes, and returns the
/// text with the warnings met on the way.
pub fn decode(bytes: &[u8]) -> Result<(String, Vec<String>), Error> {
    let mut warnings = Vec::new();
    let mut body = bytes;
    while let Some((&b, rest)) = body.split_first() {
        if b == 0x0B || b == 0xEF && rest.starts_with(&[0xBB, 0xBF]) {
            body = if b == 0x0B { rest } else { &rest[2..] };
        } else {
            break;
        }
    }
    while let Some((&b, rest)) = body.split_last() {
        if matches!(b, 0x1C | 0x1A | b'\r' | b'\n' | b' ' | b'\t' | 0) {
            body = rest;
        } else {
            break;
        }
    }
    if body.is_empty() {
        return Err(Error::Empty);
    }
    if let Some(offset) = body.iter().position(|&b| b >= 0x80) {
        return Err(Error::NotIso2022Jp {
            offset: offset + (body.as_ptr() as usize - bytes.as_ptr() as usize),
            byte: body[offset],
        });
    }
    let (text, problems) = decode_iso2022jp(body);
    warnings.extend(problems);
    Ok((text, warnings))
}

/// The character set an ISO-2022-JP stream is in after an escape sequence (or a shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// `ESC ( B`: ASCII.
    Ascii,
    /// `ESC ( J`: JIS X 0201 Roman, ASCII but for `\` (¥) and `~` (‾), which HL7 keeps as its
    /// escape and repetition characters: an SS-MIX2 message cannot carry them unescaped.
    Roman,
    /// `ESC ( I`, or SO (0x0E) in JIS7 output: JIS X 0201 half-width katakana for 0x21–0x5F.
    Katakana,
    /// `ESC $ B` (JIS X 0208-1983) or `ESC $ @` (JIS C 6226-1978), with the NEC row 13 and IBM
    /// extension codes CP50220/CP50221 write.
    Jis0208,
    /// `ESC $ ( D`: JIS X 0212.
    Jis0212,
    /// A double-byte set this decoder does not know (`ESC $ ( Q`, JIS X 0213, say): each pair
    /// is one character it cannot name.
    UnknownDouble,
}

/// The most decoding problems a file reports one by one; the rest are counted.
const MAX_PROBLEMS: usize = 20;

/// Decodes ISO-2022-JP in every dialect SS-MIX2 gateways write (see `Set`). Whatever cannot be
/// decoded becomes U+FFFD and is reported with its line and why; the caller keeps the raw
/// bytes. Bytes below 0x80 only (the caller has refused the others).
///
/// JIS C 6226-1978 is read with the JIS X 0208 table, as iconv, Python and browsers do: the
/// 1983 edition swapped 22 pairs of kanji between levels, and a 1978 writer's codes for those
/// read as their 1983 counterparts.
fn decode_iso2022jp(b: &[u8]) -> (String, Vec<String>) {
    let mut out = String::with_capacity(b.len());
    let mut problems = Vec::new();
    let mut set = Set::Ascii;
    // The set SI returns to after SO.
    let mut before_so = Set::Ascii;
    let mut line = 1usize;
    let mut i = 0;
    let mut pairs = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c == 0x1B {
            let (next, n) = match &b[i + 1..] {
                [b'(', b'B', ..] => (Some(Set::Ascii), 3),
                [b'(', b'J', ..] => (Some(Set::Roman), 3),
                [b'(', b'I', ..] => (Some(Set::Katakana), 3),
                [b'$', b'B' | b'@', ..] => (Some(Set::Jis0208), 3),
                [b'$', b'(', b'B' | b'@', ..] => (Some(Set::Jis0208), 4),
                [b'$', b'(', b'D', ..] => (Some(Set::Jis0212), 4),
                [b'$', b'(', f, ..] | [b'$', f, ..] if (0x40..=0x7E).contains(f) => {
                    let n = if b[i + 2] == b'(' { 4 } else { 3 };
                    problems.push(format!(
                        "line {line}: a double-byte set this decoder does not know (ESC {}); its characters became U+FFFD",
                        String::from_utf8_lossy(&b[i + 1..i + n])
                    ));
                    (Some(Set::UnknownDouble), n)
                }
                // `ESC & @` announces the 1990 revision before `ESC $ B`: nothing to switch.
                [b'&', b'@', ..] => (None, 3),
                _ => {
                    problems.push(format!("line {line}: an escape sequence this decoder does not know (ESC {:?}); a character became U+FFFD", String::from_utf8_lossy(&b[i + 1..(i + 3).min(b.len())])));
                    out.push('\u{FFFD}');
                    (None, 1)
                }
            };
            if let Some(s) = next {
                set = s;
            }
            i += n;
            continue;
        }
        if c == b'\r' || c == b'\n' {
            // A line ends in every set (some writers stay in a double-byte set across it).
            if c == b'\n' || b.get(i + 1) != Some(&b'\n') {
                line += 1;
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        match (c, set) {
            (0x0E, _) => {
                if set != Set::Katakana {
                    before_so = set;
                }
                set = Set::Katakana;
                i += 1;
            }
            (0x0F, _) => {
                if set == Set::Katakana {
                    set = before_so;
                }
                i += 1;
            }
            (0x21..=0x5F, Set::Katakana) => {
                out.push(char::from_u32(0xFF61 + (c as u32 - 0x21)).unwrap_or('\u{FFFD}'));
                i += 1;
            }
            (0x21..=0x7E, Set::UnknownDouble) => {
                out.push('\u{FFFD}');
                i += if i + 1 < b.len() && (0x21..=0x7E).contains(&b[i + 1]) {
                    2
                } else {
                    1
                };
            }
            (0x21..=0x7E, Set::Jis0208 | Set::Jis0212) => {
                // A run of double-byte characters up to the next control or escape.
                let start = i;
                while i + 1 < b.len()
                    && (0x21..=0x7E).contains(&b[i])
                    && (0x21..=0x7E).contains(&b[i + 1])
                {
                    i += 2;
                }
                decode_run(
                    &b[start..i],
                    set == Set::Jis0212,
                    line,
                    &mut pairs,
                    &mut out,
                    &mut problems,
                );
                if i < b.len() && (0x21..=0x7E).contains(&b[i]) {
                    problems.push(format!("line {line}: half of a double-byte character (0x{:02X}) before a control byte or the end; it became U+FFFD", b[i]));
                    out.push('\u{FFFD}');
                    i += 1;
                }
            }
            (b'\\', Set::Roman) => {
                out.push('\\');
                i += 1;
            }
            (b'~', Set::Roman) => {
                out.push('~');
                i += 1;
            }
            _ => {
                // ASCII, Roman's other bytes, the delimiters between katakana (| and ~ lie
                // outside its range), and control bytes.
                out.push(c as char);
                i += 1;
            }
        }
    }
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(format!(
            "and {more} more characters that could not be decoded"
        ));
    }
    (out, problems)
}

/// Decodes a run of 7-bit double-byte pairs through the EUC-JP tables (JIS X 0208 with NEC row
/// 13 and the IBM extensions; JIS X 0212 behind 0x8F), naming each code that has no character.
fn decode_run(
    run: &[u8],
    jis0212: bool,
    line: usize,
    buf: &mut Vec<u8>,
    out: &mut String,
    problems: &mut Vec<String>,
) {
    buf.clear();
    for p in run.chunks(2) {
        if jis0212 {
            buf.push(0x8F);
        }
        buf.extend(p.iter().map(|x| x | 0x80));
    }
    let (text, had_errors) = encoding_rs::EUC_JP.decode_without_bom_handling(buf);
    if !had_errors {
        out.push_str(&text);
        return;
    }
    let set = if jis0212 { "JIS X 0212" } else { "JIS X 0208" };
    for p in run.chunks(2) {
        let euc: Vec<u8> = jis0212
            .then_some(0x8F)
            .into_iter()
            .chain(p.iter().map(|x| x | 0x80))
            .collect();
        let (c, bad) = encoding_rs::EUC_JP.decode_without_bom_handling(&euc);
        if bad {
            problems.push(format!(
                "line {line}: {set} code 0x{:02X}{:02X} has no character; it became U+FFFD",
                p[0], p[1]
            ));
            out.push('\u{FFFD}');
        } else {
            out.push_str(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::{Message, Segment};
    use encoding_rs::ISO_2022_JP;

    fn jis(s: &str) -> Vec<u8> {
        ISO_2022_JP.encode(s).0.into_owned()
    }

    #[test]
    fn decodes_before_splitting_so_kanji_bytes_are_not_delimiters() {
        // 本日 encodes as `K\F|`: a split on raw bytes would cut it at `\` and `|`.
        let mut bytes = jis("MSH|^~\\&|A\rPID|0001||1||本日^入院^^^^^L^I\r");
        bytes.push(0x1C);
        let (text, warnings) = decode(&bytes).unwrap();
        assert!(warnings.is_empty());
        let m = Message::parse(&text).unwrap();
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.comp(5, 1).as_deref(), Some("本日"));
        assert_eq!(pid.comp(5, 2).as_deref(), Some("入院"));
    }

    #[test]
    fn tolerates_framing_and_line_endings() {
        for sep in ["\r", "\n", "\r\n", "\r\n\r\n"] {
            let raw = format!("\x0bMSH|^~\\&|A|B{sep}PID|1{sep}{sep}OBX|1|NM{sep}\x1c\x1a");
            let (text, _) = decode(raw.as_bytes()).unwrap();
            let m = Message::parse(&text).unwrap();
            let names: Vec<_> = m.segments.iter().map(Segment::name).collect();
            assert_eq!(names, ["MSH", "PID", "OBX"], "separator {sep:?}");
            assert_eq!(m.first("MSH").unwrap().get(3).as_deref(), Some("A"));
        }
    }

    #[test]
    fn rejects_eight_bit_bytes_with_their_offset() {
        let err = decode(b"MSH|^~\\&|\x82\xa0").unwrap_err();
        assert_eq!(
            err,
            Error::NotIso2022Jp {
                offset: 9,
                byte: 0x82
            }
        );
        assert!(err.to_string().contains("0x82"));
    }

    #[test]
    fn adjacent_escapes_do_not_make_replacement_characters() {
        let mut b = b"MSH|^~\\&|".to_vec();
        b.extend_from_slice(b"\x1b(B\x1b$B");
        b.extend_from_slice(&jis("患")[3..5]);
        b.extend_from_slice(b"\x1b(B|X");
        let (text, warnings) = decode(&b).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(text.contains("患|X"));
    }

    /// An MSH and a PID whose name field carries `name` as the writer's bytes.
    fn with_name(name: &[u8]) -> Vec<u8> {
        let mut b = b"MSH|^~\\&|A\rPID|0001||1||".to_vec();
        b.extend_from_slice(name);
        b.extend_from_slice(b"\x1b(B^X~Y\r");
        b
    }

    fn decoded(bytes: &[u8]) -> (Message, Vec<String>) {
        let (text, w) = decode(bytes).unwrap();
        (Message::parse(&text).unwrap(), w)
    }

    /// JIS X 0201 Roman as the single-byte state: its `~` and `\` are the message's repetition
    /// and escape characters still, not ‾ and ¥.
    #[test]
    fn roman_keeps_the_hl7_delimiters() {
        let mut b = b"\x1b(JMSH|^~\\&|A\rPID|0001||1||".to_vec();
        b.extend_from_slice(b"\x1b$B;3ED\x1b(J^X~Y^\\S\\\r");
        let (m, w) = decoded(&b);
        assert!(w.is_empty(), "{w:?}");
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.comp(5, 1).as_deref(), Some("山田"));
        assert_eq!(pid.reps(5), 2, "~ repeats the field under Roman too");
        assert_eq!(pid.comp_rep(5, 0, 2).as_deref(), Some("X"));
        assert_eq!(pid.comp_rep(5, 1, 1).as_deref(), Some("Y"));
        assert_eq!(
            pid.comp_rep(5, 1, 2).as_deref(),
            Some("^"),
            "\\S\\ is an escaped component separator"
        );
    }

    /// JIS C 6226-1978 (`ESC $ @`) reads as JIS X 0208.
    #[test]
    fn jis_c_6226_1978_reads_as_jis_x_0208() {
        let (m, w) = decoded(&with_name(b"\x1b$@;3ED"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(m.first("PID").unwrap().comp(5, 1).as_deref(), Some("山田"));
    }

    /// Half-width katakana by `ESC ( I` and by SO/SI (JIS7), with a dakuten (0x5E, the byte of
    /// `^`) that is a character there, and the delimiters outside its range intact.
    #[test]
    fn half_width_katakana_by_escape_and_by_shift() {
        // ﾔﾏﾀﾞ: 0x54 0x4F 0x40 0x5E.
        for name in [&b"\x1b(ITO@^"[..], &b"\x0eTO@^\x0f"[..]] {
            let (m, w) = decoded(&with_name(name));
            assert!(w.is_empty(), "{w:?}");
            let pid = m.first("PID").unwrap();
            assert_eq!(pid.comp(5, 1).as_deref(), Some("ﾔﾏﾀﾞ"), "{name:?}");
            assert_eq!(pid.comp_rep(5, 1, 1).as_deref(), Some("Y"));
        }
        // Under `ESC ( I` the field's own `|` and `~` stay delimiters.
        let (m, _) = decoded(b"MSH|^~\\&|A\rPID|0001||1||\x1b(ITO@|z~w\x1b(B\r");
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.comp(5, 1).as_deref(), Some("ﾔﾏﾀ"));
        assert_eq!(
            pid.get(6).as_deref(),
            Some("z"),
            "lower case lies outside the katakana range"
        );
    }

    /// The vendor rows CP50220/CP50221 write: NEC row 13 (①, ㈱) and the IBM extensions (髙).
    #[test]
    fn nec_row_13_and_ibm_extensions() {
        // ① 0x2D21 and ㈱ 0x2D6A in NEC row 13; 髙 where CP50221 puts the IBM extensions
        // (rows 89 to 92, lead bytes 0x79 to 0x7C).
        let bytes = jis("①㈱髙");
        assert_eq!(&bytes[3..7], b"-!-j");
        assert!((0x79..=0x7C).contains(&bytes[7]), "{bytes:?}");
        let (m, w) = decoded(&with_name(&bytes[..bytes.len() - 3]));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(m.first("PID").unwrap().comp(5, 1).as_deref(), Some("①㈱髙"));
    }

    /// JIS X 0212 (`ESC $ ( D`) decodes; a code with no character, a lone half of a pair and an
    /// escape nobody defined become U+FFFD and are each reported with their line.
    #[test]
    fn jis_x_0212_and_what_cannot_be_decoded_is_reported_by_line() {
        // 丂 is JIS X 0212 0x3021.
        let (m, w) = decoded(&with_name(b"\x1b$(D0!"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(m.first("PID").unwrap().comp(5, 1).as_deref(), Some("丂"));
        let (m, w) = decoded(&with_name(b"\x1b$B;3)!\x1b(B|\x1b$B;\x1b(B|\x1b%Gx"));
        assert_eq!(
            m.first("PID").unwrap().comp(5, 1).as_deref(),
            Some("山\u{FFFD}")
        );
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("line 2: JIS X 0208 code 0x2921 has no character"),
            "{w:?}"
        );
        assert!(w.iter().all(|x| x.starts_with("line 2:")), "{w:?}");
        assert!(
            w.iter()
                .any(|x| x.contains("half of a double-byte character")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|x| x.contains("escape sequence this decoder does not know")),
            "{w:?}"
        );
        // The four-byte designation of JIS X 0208 reads as it; a double-byte set nobody here
        // knows turns each pair into one U+FFFD, never into ASCII that splits the field.
        let (m, w) = decoded(&with_name(b"\x1b$(B;3ED"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(m.first("PID").unwrap().comp(5, 1).as_deref(), Some("山田"));
        let (m, w) = decoded(&with_name(b"\x1b$(Q;|ED"));
        assert_eq!(
            m.first("PID").unwrap().comp(5, 1).as_deref(),
            Some("\u{FFFD}\u{FFFD}")
        );
        assert!(
            w[0].contains("a double-byte set this decoder does not know (ESC $(Q)"),
            "{w:?}"
        );
        // A file of nothing but bad codes reports twenty and counts the rest.
        let mut bad = b"\x1b$B".to_vec();
        bad.extend(std::iter::repeat_n(*b")!", 500).flatten());
        let (_, w) = decoded(&with_name(&bad));
        assert_eq!(w.len(), 21, "{:?}", &w[..3]);
        assert_eq!(w[20], "and 480 more characters that could not be decoded");
    }
}
