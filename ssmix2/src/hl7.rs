//! HL7 v2 messages as SS-MIX2 stores them: ISO-2022-JP bytes, decoded to text *before* the
//! delimiters are split (JIS X 0208 codes contain `| ^ ~ \ &`), then a tolerant tokenizer.

/// Why a file's bytes are not a message we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A byte that ISO-2022-JP never has: the file is another encoding, binary, or encrypted.
    NotIso2022Jp {
        offset: usize,
        byte: u8,
    },
    Empty,
    NoMsh(String),
    BadDelimiters,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotIso2022Jp { offset, byte } => write!(
                f,
                "not ISO-2022-JP: 8-bit byte 0x{byte:02X} at offset {offset} (Shift_JIS, UTF-8, binary or encrypted bytes); have the EMR gateway write ISO-2022-JP"
            ),
            Error::Empty => write!(f, "the file holds no HL7 message"),
            Error::NoMsh(first) => write!(f, "the first segment is {first}, not MSH"),
            Error::BadDelimiters => write!(f, "MSH does not declare its five delimiters"),
        }
    }
}

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

/// The five delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delims {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

/// One segment: `fields[0]` is its name, `fields[n]` is field n (for MSH too: MSH-1 is stored).
#[derive(Debug, Clone)]
pub struct Segment {
    fields: Vec<String>,
    d: Delims,
}

/// A parsed message: its segments in order and what the tokenizer had to tolerate.
#[derive(Debug, Clone)]
pub struct Message {
    pub segments: Vec<Segment>,
    pub delims: Delims,
    pub warnings: Vec<String>,
}

impl Message {
    /// Splits decoded text into segments. Accepts CR, LF and CRLF, blank lines and trailing blanks.
    pub fn parse(text: &str) -> Result<Message, Error> {
        let mut warnings = Vec::new();
        let mut lines = text
            .split(['\r', '\n'])
            .map(|l| l.trim_end_matches([' ', '\t']))
            .enumerate()
            .filter(|(_, l)| !l.is_empty());
        let (_, first) = lines.next().ok_or(Error::Empty)?;
        if !first.starts_with("MSH") {
            return Err(Error::NoMsh(segment_label(first)));
        }
        let mut chars = first[3..].chars();
        let (Some(field), Some(component), Some(repetition), Some(escape), Some(subcomponent)) = (
            chars.next(),
            chars.next(),
            chars.next(),
            chars.next(),
            chars.next(),
        ) else {
            return Err(Error::BadDelimiters);
        };
        let d = Delims {
            field,
            component,
            repetition,
            escape,
            subcomponent,
        };
        let distinct = [field, component, repetition, escape, subcomponent];
        if distinct
            .iter()
            .enumerate()
            .any(|(i, c)| distinct[..i].contains(c) || c.is_alphanumeric())
        {
            return Err(Error::BadDelimiters);
        }
        let mut segments = Vec::new();
        let mut msh: Vec<String> = first.split(field).map(str::to_owned).collect();
        msh.insert(1, field.to_string());
        segments.push(Segment { fields: msh, d });
        for (n, line) in lines {
            let name: String = line.split(field).next().unwrap_or("").to_owned();
            let valid_name = name.len() == 3
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !valid_name {
                warnings.push(format!(
                    "line {}: not a segment ({}), skipped",
                    n + 1,
                    segment_label(line)
                ));
                continue;
            }
            if !line.contains(field) {
                warnings.push(format!("line {}: segment {name} has no fields", n + 1));
            }
            segments.push(Segment {
                fields: line.split(field).map(str::to_owned).collect(),
                d,
            });
        }
        Ok(Message {
            segments,
            delims: d,
            warnings,
        })
    }

    pub fn first(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name() == name)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.name() == name)
    }
}

impl Segment {
    pub fn name(&self) -> &str {
        &self.fields[0]
    }

    /// Field `n` as written, with repetitions and escapes intact.
    pub fn raw(&self, n: usize) -> &str {
        self.fields.get(n).map(String::as_str).unwrap_or("")
    }

    /// Repetition `r` (0-based) of field `n`, raw.
    fn rep(&self, n: usize, r: usize) -> &str {
        if self.name() == "MSH" && n <= 2 {
            return if r == 0 { self.raw(n) } else { "" };
        }
        self.raw(n).split(self.d.repetition).nth(r).unwrap_or("")
    }

    /// Number of repetitions field `n` has (0 when empty).
    pub fn reps(&self, n: usize) -> usize {
        let f = self.raw(n);
        if f.is_empty() {
            0
        } else {
            f.split(self.d.repetition).count()
        }
    }

    /// Component `c` (1-based) of repetition `r` of field `n`, unescaped; `None` when empty or `""`.
    pub fn comp_rep(&self, n: usize, r: usize, c: usize) -> Option<String> {
        let rep = self.rep(n, r);
        let comp = if self.name() == "MSH" && n <= 2 {
            rep
        } else {
            rep.split(self.d.component).nth(c - 1).unwrap_or("")
        };
        self.clean(comp)
    }

    /// Component `c` (1-based) of the first repetition of field `n`.
    pub fn comp(&self, n: usize, c: usize) -> Option<String> {
        self.comp_rep(n, 0, c)
    }

    /// Field `n`'s first component: the value of a simple field.
    pub fn get(&self, n: usize) -> Option<String> {
        self.comp_rep(n, 0, 1)
    }

    /// Subcomponent `s` of component `c` of the first repetition of field `n`.
    pub fn sub(&self, n: usize, c: usize, s: usize) -> Option<String> {
        let comp = self
            .rep(n, 0)
            .split(self.d.component)
            .nth(c - 1)
            .unwrap_or("");
        self.clean(comp.split(self.d.subcomponent).nth(s - 1).unwrap_or(""))
    }

    /// The whole field with escapes decoded and delimiters kept, for free-text fields.
    pub fn text(&self, n: usize) -> Option<String> {
        self.clean(self.raw(n))
    }

    fn clean(&self, s: &str) -> Option<String> {
        if s.is_empty() || s == "\"\"" {
            return None;
        }
        let v = unescape(s, &self.d);
        if v.is_empty() {
            None
        } else {
            Some(v)
        }
    }
}

/// Names a line by its first three characters when they look like a segment name, and never
/// quotes other content: a broken line may hold a patient's name, and reasons reach the logs.
fn segment_label(line: &str) -> String {
    let head: String = line.chars().take(3).collect();
    if head.len() == 3
        && head
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        format!("{head:?}")
    } else {
        "text that is not a segment name".to_owned()
    }
}

/// Decodes HL7 escape sequences: \F\ \S\ \T\ \R\ \E\, \Xhh..\, \.br\ (a line break), and drops
/// the formatting and character-set escapes (\H\ \N\ \Cxxyy\ \Mxxyyzz\ \.sp\ ...).
pub fn unescape(s: &str, d: &Delims) -> String {
    if !s.contains(d.escape) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(d.escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + d.escape.len_utf8()..];
        let Some(end) = after.find(d.escape) else {
            // An escape character with no closing one is kept as text.
            out.push_str(&rest[start..]);
            return out;
        };
        let seq = &after[..end];
        match seq {
            "F" => out.push(d.field),
            "S" => out.push(d.component),
            "T" => out.push(d.subcomponent),
            "R" => out.push(d.repetition),
            "E" => out.push(d.escape),
            ".br" => out.push('\n'),
            "H" | "N" => {}
            _ if seq.starts_with('X') && seq.len() > 1 => {
                let bytes: Option<Vec<u8>> = (1..seq.len())
                    .step_by(2)
                    .map(|i| {
                        seq.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect();
                match bytes.and_then(|b| String::from_utf8(b).ok()) {
                    Some(t) => out.push_str(&t),
                    None => out.push_str(&rest[start..start + end + 2 * d.escape.len_utf8()]),
                }
            }
            _ if seq.starts_with('C')
                || seq.starts_with('M')
                || seq.starts_with('.')
                || seq.starts_with('Z') => {}
            _ => out.push_str(&rest[start..start + end + 2 * d.escape.len_utf8()]),
        }
        rest = &after[end + d.escape.len_utf8()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn unescapes_hl7_sequences() {
        let d = Delims {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        };
        assert_eq!(unescape(r"a\F\b\S\c\T\d\R\e\E\f", &d), r"a|b^c&d~e\f");
        assert_eq!(unescape(r"line1\.br\line2", &d), "line1\nline2");
        assert_eq!(unescape(r"\H\bold\N\ \X41\", &d), "bold A");
        assert_eq!(unescape(r"keep\Q\this", &d), r"keep\Q\this");
        assert_eq!(unescape(r"dangling\", &d), r"dangling\");
    }

    #[test]
    fn fields_components_repetitions_and_null() {
        let m = Message::parse("MSH|^~\\&|HIS\rPID|0001||9^^^^PI||k1^k2~n1^n2||\"\"|M").unwrap();
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.comp_rep(5, 1, 2).as_deref(), Some("n2"));
        assert_eq!(pid.reps(5), 2);
        assert_eq!(pid.get(7), None, "an HL7 null is no value");
        assert_eq!(pid.get(8).as_deref(), Some("M"));
        let msh = m.first("MSH").unwrap();
        assert_eq!(msh.raw(1), "|");
        assert_eq!(msh.raw(2), "^~\\&");
        assert_eq!(msh.get(3).as_deref(), Some("HIS"));
    }

    #[test]
    fn junk_lines_warn_and_a_missing_msh_fails() {
        let m = Message::parse("MSH|^~\\&|A\rAL1\rjunk here\rPID|1").unwrap();
        assert_eq!(m.segments.len(), 3);
        assert_eq!(m.warnings.len(), 2);
        assert!(matches!(
            Message::parse("PID|1\rMSH|^~\\&"),
            Err(Error::NoMsh(_))
        ));
        assert_eq!(Message::parse("MSH|").unwrap_err(), Error::BadDelimiters);
    }
}
