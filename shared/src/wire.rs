//! What travels between edge and hub, byte for byte: a batch of outbox segments (edge to hub) and
//! a restore stream (hub to a replacement appliance). Binary, length-prefixed and checked: every
//! decoder names what was wrong and never reads past what it was given.
//!
//! A batch: `TSB2`, the 10-digit facility code the sender believes it is, a u32 count, then the
//! segments. A segment: seq u64, raw_len u64, files u64, schema u32 (the schema version it was
//! written at), prev_hash [32], hash [32], created_at (u16 length + UTF-8), body (u32 length +
//! zstd bytes). All integers big-endian. `TSB1` batches (protocol 1) are read too: their
//! segments have no schema field and are read as `schema::LEGACY_SEGMENT_SCHEMA`. The schema
//! field is not under the segment hash, which covers the previous hash, the number and the body
//! as in protocol 1; it travels inside mutual TLS and rests in the encrypted stores.
//!
//! A restore stream: `TSR2` (or `TSR1`), the base it starts from (seq u64, hash [32]: the
//! snapshot's position, or 0 and zeros), then frames, each a kind byte: `S` a snapshot chunk
//! (u32 raw length, u32 length + zstd-compressed changeset of inserts), `H` a segment (as
//! above; `G` one without its schema, as protocol 1 wrote it), `E` the end (seq u64 and hash
//! [32] of the restored position). A stream without its `E` frame is incomplete.

/// Largest compressed segment body a hub accepts; the edge's batches stay well below it.
pub const MAX_BODY: usize = 64 << 20;
/// Largest changeset a segment may expand to (guards against decompression bombs).
pub const MAX_RAW: usize = 512 << 20;

pub const BATCH_MAGIC: &[u8; 4] = b"TSB2";
/// Batches of protocol 1, whose segments do not say their schema.
pub const BATCH_MAGIC_1: &[u8; 4] = b"TSB1";
pub const RESTORE_MAGIC: &[u8; 4] = b"TSR2";
/// Restore streams of protocol 1.
pub const RESTORE_MAGIC_1: &[u8; 4] = b"TSR1";

/// One outbox segment: a zstd-compressed SQLite changeset, chained by hash to the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub body: Vec<u8>,
    pub raw_len: usize,
    pub files: u64,
    pub created_at: String,
    /// The schema version (`schema::VERSION`) of the store that wrote it.
    pub schema: u32,
}

impl Segment {
    /// Bytes this segment takes in a batch.
    pub fn wire_len(&self) -> usize {
        8 * 3 + 4 + 64 + 2 + self.created_at.len() + 4 + self.body.len()
    }

    /// Writes the segment as protocol 2 does (with its schema).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(self.raw_len as u64).to_be_bytes());
        out.extend_from_slice(&self.files.to_be_bytes());
        out.extend_from_slice(&self.schema.to_be_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&(self.created_at.len() as u16).to_be_bytes());
        out.extend_from_slice(self.created_at.as_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
    }

    /// Reads a segment as protocol `protocol` (1 or 2) wrote it.
    pub fn decode(r: &mut Reader<'_>, protocol: u32) -> Result<Segment, String> {
        let seq = r.u64("segment number")?;
        let raw_len = r.u64("changeset length")? as usize;
        let files = r.u64("file count")?;
        let schema = if protocol >= 2 {
            r.u32("schema version")?
        } else {
            crate::schema::LEGACY_SEGMENT_SCHEMA
        };
        let prev_hash = r.hash("previous hash")?;
        let hash = r.hash("hash")?;
        let n = r.u16("time length")? as usize;
        let created_at = String::from_utf8(r.take(n, "time")?.to_vec())
            .map_err(|_| format!("segment {seq}: the time is not UTF-8"))?;
        let n = r.u32("body length")? as usize;
        if n > MAX_BODY {
            return Err(format!(
                "segment {seq}: body of {n} bytes is over the limit of {MAX_BODY}"
            ));
        }
        if raw_len > MAX_RAW {
            return Err(format!(
                "segment {seq}: changeset of {raw_len} bytes is over the limit of {MAX_RAW}"
            ));
        }
        let body = r.take(n, "body")?.to_vec();
        Ok(Segment {
            seq,
            prev_hash,
            hash,
            body,
            raw_len,
            files,
            created_at,
            schema,
        })
    }

    /// Decompresses the body, refusing to expand beyond the length the segment declares.
    pub fn changeset(&self) -> Result<Vec<u8>, String> {
        let out = zstd::bulk::decompress(&self.body, self.raw_len.max(1))
            .map_err(|e| format!("segment {}: the body does not decompress: {e}", self.seq))?;
        if out.len() != self.raw_len {
            return Err(format!(
                "segment {}: the body expands to {} bytes, not the {} declared",
                self.seq,
                out.len(),
                self.raw_len
            ));
        }
        Ok(out)
    }
}

/// Encodes a batch of segments sent by `facility`.
pub fn encode_batch(facility: &str, segs: &[Segment]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + segs.iter().map(Segment::wire_len).sum::<usize>());
    out.extend_from_slice(BATCH_MAGIC);
    let mut code = [b' '; 10];
    for (d, s) in code.iter_mut().zip(facility.bytes()) {
        *d = s;
    }
    out.extend_from_slice(&code);
    out.extend_from_slice(&(segs.len() as u32).to_be_bytes());
    for s in segs {
        s.encode(&mut out);
    }
    out
}

/// Decodes a batch: the facility it claims and its segments.
pub fn decode_batch(bytes: &[u8]) -> Result<(String, Vec<Segment>), String> {
    let mut r = Reader::new(bytes);
    let protocol = match r.take(4, "magic")? {
        m if m == BATCH_MAGIC => 2,
        m if m == BATCH_MAGIC_1 => 1,
        m if m.starts_with(b"TSB") => {
            return Err(format!(
                "a segment batch of a newer protocol ({}): upgrade the hub",
                String::from_utf8_lossy(m)
            ))
        }
        _ => return Err("not a tsunagi segment batch (bad magic)".into()),
    };
    let facility = String::from_utf8_lossy(r.take(10, "facility")?)
        .trim()
        .to_string();
    let n = r.u32("segment count")? as usize;
    let mut segs = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        segs.push(Segment::decode(&mut r, protocol)?);
    }
    if !r.is_empty() {
        return Err(format!("{} bytes after the last segment", r.rest()));
    }
    Ok((facility, segs))
}

/// One frame of a restore stream.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A zstd-compressed changeset of inserts and the length it expands to.
    Snapshot {
        raw_len: usize,
        body: Vec<u8>,
    },
    Segment(Segment),
    End {
        seq: u64,
        hash: [u8; 32],
    },
}

impl Frame {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Snapshot { raw_len, body } => {
                out.push(b'S');
                out.extend_from_slice(&(*raw_len as u32).to_be_bytes());
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(body);
            }
            Frame::Segment(s) => {
                out.push(b'H');
                s.encode(out);
            }
            Frame::End { seq, hash } => {
                out.push(b'E');
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(hash);
            }
        }
    }

    /// Decodes one frame from the front of `buf`. `Ok(None)` means more bytes are needed;
    /// `Ok(Some((frame, used)))` gives the frame and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
        let mut r = Reader::new(buf);
        let kind = match r.take(1, "frame kind") {
            Ok(k) => k[0],
            Err(_) => return Ok(None),
        };
        let frame = match kind {
            b'S' => {
                let (Ok(raw_len), Ok(n)) =
                    (r.u32("snapshot length"), r.u32("snapshot body length"))
                else {
                    return Ok(None);
                };
                let (raw_len, n) = (raw_len as usize, n as usize);
                if n > MAX_BODY || raw_len > MAX_RAW {
                    return Err(format!(
                        "snapshot chunk of {n} bytes ({raw_len} expanded) is over the limit"
                    ));
                }
                let Ok(body) = r.take(n, "snapshot body") else {
                    return Ok(None);
                };
                Frame::Snapshot {
                    raw_len,
                    body: body.to_vec(),
                }
            }
            b'G' | b'H' => match Segment::decode(&mut r, if kind == b'H' { 2 } else { 1 }) {
                Ok(s) => Frame::Segment(s),
                Err(e) if e.contains("over the limit") => return Err(e),
                Err(_) => return Ok(None),
            },
            b'E' => match (r.u64("seq"), r.hash("hash")) {
                (Ok(seq), Ok(hash)) => Frame::End { seq, hash },
                _ => return Ok(None),
            },
            k => return Err(format!("unknown restore frame kind {k:#04x}")),
        };
        Ok(Some((frame, buf.len() - r.rest())))
    }
}

/// A bounds-checked reader over a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn hash(&mut self, what: &str) -> Result<[u8; 32], String> {
        Ok(self.take(32, what)?.try_into().unwrap())
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn rest(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u64) -> Segment {
        let body = zstd::bulk::compress(b"changeset", 3).unwrap();
        Segment {
            seq,
            prev_hash: [1; 32],
            hash: [2; 32],
            body,
            raw_len: 9,
            files: 3,
            created_at: "2026-11-21T00:00:00Z".into(),
            schema: crate::schema::VERSION,
        }
    }

    /// A batch as protocol 1 wrote it: no schema in its segments.
    fn batch_v1(facility: &str, s: &Segment) -> Vec<u8> {
        let mut out = BATCH_MAGIC_1.to_vec();
        out.extend_from_slice(format!("{facility:<10}").as_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&s.seq.to_be_bytes());
        out.extend_from_slice(&(s.raw_len as u64).to_be_bytes());
        out.extend_from_slice(&s.files.to_be_bytes());
        out.extend_from_slice(&s.prev_hash);
        out.extend_from_slice(&s.hash);
        out.extend_from_slice(&(s.created_at.len() as u16).to_be_bytes());
        out.extend_from_slice(s.created_at.as_bytes());
        out.extend_from_slice(&(s.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&s.body);
        out
    }

    #[test]
    fn each_segment_says_its_schema_and_older_batches_still_read() {
        let (_, segs) = decode_batch(&encode_batch("3712345678", &[seg(1)])).unwrap();
        assert_eq!(segs[0].schema, crate::schema::VERSION);
        let (f, old) = decode_batch(&batch_v1("3712345678", &seg(1))).unwrap();
        assert_eq!(f, "3712345678");
        assert_eq!(old[0].schema, crate::schema::LEGACY_SEGMENT_SCHEMA);
        assert_eq!(old[0].body, seg(1).body);
        let mut newer = encode_batch("3712345678", &[seg(1)]);
        newer[3] = b'9';
        assert!(decode_batch(&newer)
            .unwrap_err()
            .contains("newer protocol (TSB9): upgrade the hub"));
        // A restore stream's segment frame says its schema; a protocol-1 frame (G) reads as legacy.
        let mut f = Vec::new();
        Frame::Segment(seg(4)).encode(&mut f);
        assert_eq!(f[0], b'H');
        assert_eq!(
            Frame::decode(&f).unwrap().unwrap().0,
            Frame::Segment(seg(4))
        );
        let mut g = vec![b'G'];
        g.extend_from_slice(&batch_v1("3712345678", &seg(4))[18..]);
        match Frame::decode(&g).unwrap().unwrap().0 {
            Frame::Segment(s) => {
                assert_eq!((s.seq, s.schema), (4, crate::schema::LEGACY_SEGMENT_SCHEMA))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_round_trip_and_truncation_is_named() {
        let b = encode_batch("3712345678", &[seg(1), seg(2)]);
        let (f, segs) = decode_batch(&b).unwrap();
        assert_eq!((f.as_str(), segs.len()), ("3712345678", 2));
        assert_eq!(segs[1], seg(2));
        assert_eq!(segs[0].changeset().unwrap(), b"changeset");
        assert!(decode_batch(&b[..b.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        assert!(decode_batch(b"XXXX").unwrap_err().contains("magic"));
        let mut lying = seg(1);
        lying.raw_len = 4;
        assert!(lying.changeset().is_err());
    }

    #[test]
    fn frames_decode_incrementally() {
        let mut buf = Vec::new();
        Frame::Snapshot {
            raw_len: 5,
            body: vec![9; 5],
        }
        .encode(&mut buf);
        Frame::Segment(seg(7)).encode(&mut buf);
        Frame::End {
            seq: 7,
            hash: [3; 32],
        }
        .encode(&mut buf);
        let mut got = Vec::new();
        let mut at = 0;
        for end in 1..=buf.len() {
            while let Some((f, used)) = Frame::decode(&buf[at..end]).unwrap() {
                got.push(f);
                at += used;
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            Frame::End {
                seq: 7,
                hash: [3; 32]
            }
        );
        assert!(Frame::decode(b"Zxx").is_err());
    }
}
