//! The hash chain that links outbox segments: each segment's hash covers the previous hash, its
//! sequence number and its body, so a gap, a reorder or a changed byte is detected by the receiver.

use ring::digest;

use crate::wire::Segment;

/// The hash that stands before segment 1.
pub const GENESIS: [u8; 32] = [0; 32];

const DOMAIN: &[u8] = b"tsunagi-segment-v1\0";

/// The hash of segment `seq` with compressed body `body`, chained to `prev`.
pub fn segment_hash(prev: &[u8; 32], seq: u64, body: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&(body.len() as u64).to_be_bytes());
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Why segments do not continue a chain. Both sides check with `next` and `verify` and say the
/// same thing: the edge of a restore stream, the hub of a batch and of its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// Not the next number.
    Gap { expected: u64, got: u64 },
    /// Its previous hash is not the hash of the segment before.
    Broken { seq: u64 },
    /// Its hash does not cover its body.
    Corrupt { seq: u64 },
    /// A stored row that cannot be a segment (a hash that is not 32 bytes, a negative number).
    BadRow { seq: i64, what: String },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Gap { expected, got } => write!(f, "segment {got} arrived where {expected} was expected: send from {expected}"),
            ChainError::Broken { seq } => write!(f, "segment {seq} does not chain to segment {}: its previous hash differs", seq.saturating_sub(1)),
            ChainError::Corrupt { seq } => write!(f, "segment {seq}'s hash does not match its body: it was changed in transit or at rest"),
            ChainError::BadRow { seq, what } => write!(f, "the stored segment {seq} is damaged: {what}"),
        }
    }
}

impl std::error::Error for ChainError {}

/// Checks that `s` follows the segment (`seq`, `hash`): the next number, chained to it, and its
/// hash over its body.
pub fn next(seq: u64, hash: &[u8; 32], s: &Segment) -> Result<(), ChainError> {
    let expected = seq.wrapping_add(1);
    if s.seq != expected {
        return Err(ChainError::Gap {
            expected,
            got: s.seq,
        });
    }
    if &s.prev_hash != hash {
        return Err(ChainError::Broken { seq: s.seq });
    }
    if segment_hash(hash, s.seq, &s.body) != s.hash {
        return Err(ChainError::Corrupt { seq: s.seq });
    }
    Ok(())
}

/// Checks that `segs` continue the chain at (`after`, `prev`) without gap or change, and returns
/// where they end.
pub fn verify(after: u64, prev: [u8; 32], segs: &[Segment]) -> Result<(u64, [u8; 32]), ChainError> {
    let (mut seq, mut hash) = (after, prev);
    for s in segs {
        next(seq, &hash, s)?;
        (seq, hash) = (s.seq, s.hash);
    }
    Ok((seq, hash))
}

/// A hash read back from storage: exactly 32 bytes, or why not.
pub fn stored_hash(seq: i64, what: &str, bytes: &[u8]) -> Result<[u8; 32], ChainError> {
    bytes.try_into().map_err(|_| ChainError::BadRow {
        seq,
        what: format!("its {what} has {} bytes, not 32", bytes.len()),
    })
}

/// SHA-256 of a file's content, the identity of a stored SS-MIX2 file's bytes.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Lower-case hexadecimal, for showing hashes to people.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses lower- or upper-case hexadecimal; `None` when the text is not hex of an even length.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    t.chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// The columns of an `outbox` row, in the order `Segment::from_row` takes them.
pub const SEGMENT_COLUMNS: &str = "seq, prev_hash, hash, body, raw_len, files, created_at, schema";

impl Segment {
    /// A segment from a stored `outbox` row (`SEGMENT_COLUMNS`), refusing one that cannot be a
    /// segment rather than reading it as something else.
    #[expect(clippy::too_many_arguments, reason = "one per column of the row")]
    pub fn from_row(
        seq: i64,
        prev_hash: &[u8],
        hash: &[u8],
        body: Vec<u8>,
        raw_len: i64,
        files: i64,
        created_at: String,
        schema: i64,
    ) -> Result<Segment, ChainError> {
        let bad = |what: &str| ChainError::BadRow {
            seq,
            what: what.to_string(),
        };
        Ok(Segment {
            seq: u64::try_from(seq).map_err(|_| bad("its number is negative"))?,
            prev_hash: stored_hash(seq, "previous hash", prev_hash)?,
            hash: stored_hash(seq, "hash", hash)?,
            body,
            raw_len: usize::try_from(raw_len).map_err(|_| bad("its length is negative"))?,
            files: u64::try_from(files).map_err(|_| bad("its file count is negative"))?,
            created_at,
            schema: u32::try_from(schema).map_err(|_| bad("its schema version is out of range"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_every_input() {
        let a = segment_hash(&GENESIS, 1, b"body");
        assert_ne!(a, segment_hash(&GENESIS, 2, b"body"));
        assert_ne!(a, segment_hash(&GENESIS, 1, b"bodz"));
        assert_ne!(a, segment_hash(&a, 1, b"body"));
        assert_eq!(a, segment_hash(&GENESIS, 1, b"body"));
    }

    #[test]
    fn hex_round_trips() {
        let h = content_hash(b"abc");
        assert_eq!(
            hex(&h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(unhex(&hex(&h)).unwrap(), h.to_vec());
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
