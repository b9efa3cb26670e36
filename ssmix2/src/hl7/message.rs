//! Decoded text to a message: segments, fields, repetitions, components and subcomponents, and
//! the HL7 escape sequences in their values.

use super::Error;

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
