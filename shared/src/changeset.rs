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
        assert_eq!(values.len(), self.columns, "a row must have one value per column");
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
    }
}
