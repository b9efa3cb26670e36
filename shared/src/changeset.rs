//! Writes SQLite changesets of inserts (the format of the session extension), so that a snapshot
//! of a failover copy can travel to a replacement appliance in the same form as every other
//! change, and be applied by SQLite itself.
//!
//! Format: per table `T`, a varint column count, one byte per column (its position in the primary
//! key, 0 when not part of it), the table name and a NUL; then per row the operation (18 for an
//! insert), the indirect flag (0) and each value as a type byte (1 integer, 2 real, 3 text, 4 blob,
//! 5 null) followed by 8 big-endian bytes, or a varint length and the bytes.

/// One column value, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Accumulates a changeset.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
    columns: usize,
}

const SQLITE_INSERT: u8 = 18;

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Starts the rows of a table; `pk` gives each column's position in the primary key (0 if none).
    pub fn table(&mut self, name: &str, pk: &[u8]) {
        self.buf.push(b'T');
        put_varint(&mut self.buf, pk.len() as u64);
        self.buf.extend_from_slice(pk);
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.columns = pk.len();
    }

    /// Adds an inserted row to the current table.
    pub fn insert(&mut self, values: &[Value<'_>]) {
        assert_eq!(
            values.len(),
            self.columns,
            "a row must have one value per column"
        );
        self.buf.push(SQLITE_INSERT);
        self.buf.push(0);
        for v in values {
            match *v {
                Value::Null => self.buf.push(5),
                Value::Integer(i) => {
                    self.buf.push(1);
                    self.buf.extend_from_slice(&i.to_be_bytes());
                }
                Value::Real(f) => {
                    self.buf.push(2);
                    self.buf.extend_from_slice(&f.to_bits().to_be_bytes());
                }
                Value::Text(t) => {
                    self.buf.push(3);
                    put_varint(&mut self.buf, t.len() as u64);
                    self.buf.extend_from_slice(t);
                }
                Value::Blob(b) => {
                    self.buf.push(4);
                    put_varint(&mut self.buf, b.len() as u64);
                    self.buf.extend_from_slice(b);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The changeset so far; the writer starts over, and the next rows need a `table` again.
    pub fn take(&mut self) -> Vec<u8> {
        self.columns = 0;
        std::mem::take(&mut self.buf)
    }
}

/// One table of a changeset as it is read: its name, its column count, and how many changes it
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChanges {
    pub name: String,
    pub columns: usize,
    pub changes: usize,
}

const SQLITE_DELETE: u8 = 9;
const SQLITE_UPDATE: u8 = 23;

/// Reads SQLite's varint from the start of `b`: the value and the bytes it took.
fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(9) {
        if i == 8 {
            return Some(((v << 8) | byte as u64, 9));
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Walks a changeset (the session extension's format, not a patchset) and lists its tables in
/// order, without applying anything: what the copies check before they let SQLite apply it. Any
/// byte out of place is an error naming the offset.
pub fn tables(cs: &[u8]) -> Result<Vec<TableChanges>, String> {
    let mut out: Vec<TableChanges> = Vec::new();
    let mut i = 0usize;
    let need = |i: usize, n: usize| {
        if i.checked_add(n).is_some_and(|e| e <= cs.len()) {
            Ok(())
        } else {
            Err(format!("the changeset ends early at byte {i}"))
        }
    };
    while i < cs.len() {
        match cs[i] {
            b'T' => {
                i += 1;
                let (n, used) =
                    get_varint(&cs[i..]).ok_or_else(|| format!("bad column count at byte {i}"))?;
                i += used;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=2000).contains(n))
                    .ok_or_else(|| format!("a table with {n} columns at byte {i}"))?;
                need(i, n)?;
                i += n;
                let end = cs[i..]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| format!("a table name without its end at byte {i}"))?;
                let name = std::str::from_utf8(&cs[i..i + end])
                    .map_err(|_| format!("a table name that is not UTF-8 at byte {i}"))?
                    .to_string();
                i += end + 1;
                out.push(TableChanges {
                    name,
                    columns: n,
                    changes: 0,
                });
            }
            b'P' => {
                return Err(format!(
                    "a patchset table at byte {i}; only changesets are taken"
                ))
            }
            op @ (SQLITE_INSERT | SQLITE_DELETE | SQLITE_UPDATE) => {
                let t = out
                    .last_mut()
                    .ok_or_else(|| format!("a change before any table at byte {i}"))?;
                i += 1;
                need(i, 1)?;
                i += 1; // the indirect flag
                let values = if op == SQLITE_UPDATE {
                    2 * t.columns
                } else {
                    t.columns
                };
                for _ in 0..values {
                    need(i, 1)?;
                    let kind = cs[i];
                    i += 1;
                    match kind {
                        0 | 5 => {}
                        1 | 2 => {
                            need(i, 8)?;
                            i += 8;
                        }
                        3 | 4 => {
                            let (len, used) = get_varint(&cs[i..])
                                .ok_or_else(|| format!("bad value length at byte {i}"))?;
                            i += used;
                            let len = usize::try_from(len)
                                .map_err(|_| format!("a value too long at byte {i}"))?;
                            need(i, len)?;
                            i += len;
                        }
                        k => return Err(format!("unknown value type {k} at byte {}", i - 1)),
                    }
                }
                t.changes += 1;
            }
            b => return Err(format!("unexpected byte {b:#04x} at byte {i}")),
        }
    }
    Ok(out)
}

/// Whether a changeset may be applied to a copy: every table it touches is one of `allowed`
/// (the synced tables), with exactly the column count `columns` says this side's table has. A
/// table this side does not know, or a local table (`outbox`, `sync_state`, …), is refused by name,
/// never skipped.
pub fn check_tables(
    cs: &[u8],
    allowed: &[&str],
    columns: impl Fn(&str) -> Option<usize>,
) -> Result<(), String> {
    for t in tables(cs)? {
        if !allowed.contains(&t.name.as_str()) {
            return Err(format!(
                "it changes table {:?}, which is not one of the synced tables",
                t.name
            ));
        }
        match columns(&t.name) {
            Some(n) if n == t.columns => {}
            Some(n) => return Err(format!("it has {} columns for table {}, which has {n} here: the two sides' schemas differ (upgrade the older side)", t.columns, t.name)),
            None => return Err(format!("table {} does not exist here", t.name)),
        }
    }
    Ok(())
}

/// SQLite's variable-length integer: big-endian groups of 7 bits, the ninth byte holding 8.
fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v >> 56 != 0 {
        let mut b = [0u8; 9];
        b[8] = v as u8;
        let mut v = v >> 8;
        for i in (0..8).rev() {
            b[i] = (v & 0x7f) as u8 | 0x80;
            v >>= 7;
        }
        out.extend_from_slice(&b);
        return;
    }
    let mut b = [0u8; 9];
    let mut n = 0;
    let mut v = v;
    loop {
        b[n] = (v & 0x7f) as u8 | 0x80;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    b[0] &= 0x7f;
    out.extend(b[..n].iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_sqlite() {
        let enc = |v| {
            let mut o = Vec::new();
            put_varint(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x81, 0x00]);
        assert_eq!(enc(16383), [0xff, 0x7f]);
        assert_eq!(enc(16384), [0x81, 0x80, 0x00]);
        assert_eq!(enc(u64::MAX).len(), 9);
        for v in [
            0,
            1,
            127,
            128,
            300,
            16383,
            16384,
            1 << 40,
            (1 << 56) - 1,
            1 << 56,
            u64::MAX,
        ] {
            assert_eq!(get_varint(&enc(v)), Some((v, enc(v).len())), "{v}");
        }
    }

    fn two_tables() -> Vec<u8> {
        let mut w = Writer::new();
        w.table("allergy", &[1, 0]);
        w.insert(&[Value::Integer(1), Value::Text(b"x")]);
        w.insert(&[Value::Integer(2), Value::Null]);
        w.table("outbox", &[1, 0, 0]);
        w.insert(&[Value::Integer(9), Value::Blob(&[1, 2, 3]), Value::Real(1.5)]);
        w.take()
    }

    #[test]
    fn tables_are_read_without_applying() {
        let t = tables(&two_tables()).unwrap();
        assert_eq!(
            t,
            vec![
                TableChanges {
                    name: "allergy".into(),
                    columns: 2,
                    changes: 2
                },
                TableChanges {
                    name: "outbox".into(),
                    columns: 3,
                    changes: 1
                }
            ]
        );
        let cs = two_tables();
        for cut in 1..cs.len() {
            // Every truncation is an error or a shorter, still well-formed reading: never a panic.
            let _ = tables(&cs[..cut]);
        }
        assert!(tables(&cs[..cs.len() - 1]).is_err());
        assert!(tables(b"P\x01\x01t\x00").is_err());
        assert!(tables(&[18, 0]).is_err(), "a change before any table");
    }

    #[test]
    fn only_synced_tables_with_their_columns_are_taken() {
        let cs = two_tables();
        let cols = |t: &str| match t {
            "allergy" => Some(2),
            "outbox" => Some(3),
            _ => None,
        };
        let e = check_tables(&cs, &["allergy"], cols).unwrap_err();
        assert!(
            e.contains("\"outbox\"") && e.contains("not one of the synced tables"),
            "{e}"
        );
        assert!(check_tables(&cs, &["allergy", "outbox"], cols).is_ok());
        let e = check_tables(&cs, &["allergy", "outbox"], |_| Some(3)).unwrap_err();
        assert!(e.contains("schemas differ"), "{e}");
        let e = check_tables(&cs, &["allergy", "outbox"], |t| {
            if t == "allergy" {
                Some(2)
            } else {
                None
            }
        })
        .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
