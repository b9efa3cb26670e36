//! Mirrors SS-MIX2 trees into the store: walk, compare with what the store saw last time, read and
//! parse only what changed, and apply it in batched transactions, each captured into the outbox.
//!
//! The store never loses what it holds to the source: a vanished file is marked missing, a file
//! rewritten into bytes that cannot be read goes to quarantine while the good version stays, and
//! surges of either raise an alarm.

pub use ssmix2::{hl7, path, record};
mod apply;
mod scan;
pub mod watch;

pub use scan::{scan, Options, Scope, Summary};

use record::Row;
use store::sql::Header;

use crate::store;

/// What a file's bytes gave: the header to keep, the rows, and the warnings met.
pub struct Derived {
    pub header: Header,
    pub rows: Vec<Row>,
}

/// Decodes, parses and maps a file. The error is the quarantine reason.
pub fn derive(name: &path::StoredName, raw: &[u8]) -> Result<Derived, String> {
    let mut warnings = name.warnings.clone();
    if name.storage == path::Storage::Extended {
        return Ok(Derived {
            header: Header {
                warnings: join(&warnings),
                ..Header::default()
            },
            rows: vec![record::document(name, raw.len())],
        });
    }
    let (text, w) = hl7::decode(raw).map_err(|e| e.to_string())?;
    warnings.extend(w);
    let msg = hl7::Message::parse(&text).map_err(|e| e.to_string())?;
    warnings.extend(msg.warnings.iter().cloned());
    let mapped = record::map(name, &msg);
    warnings.extend(mapped.warnings);
    let msh = &msg.segments[0];
    let message_type = Some(
        [1, 2, 3]
            .iter()
            .filter_map(|&c| msh.comp(9, c))
            .collect::<Vec<_>>()
            .join("^"),
    )
    .filter(|s| !s.is_empty());
    Ok(Derived {
        header: Header {
            message_type,
            message_id: msh.get(10),
            sent_at: msh.get(7),
            warnings: join(&warnings),
        },
        rows: mapped.rows,
    })
}

fn join(w: &[String]) -> Option<String> {
    if w.is_empty() {
        None
    } else {
        Some(w.join("\n"))
    }
}

pub(crate) fn now() -> String {
    shared::time::rfc3339(shared::time::now())
}

/// The decoder's version: 2 reads every ISO-2022-JP dialect (`hl7::decode`); 1 read JIS X 0201
/// Roman's `\` and `~` as ¥ and ‾, and SO/SI, JIS X 0212 and some vendor codes as U+FFFD.
pub const DECODER: i64 = 2;

/// Files derived again per transaction (and so per segment), well below a segment's limits.
const REDERIVE_CHUNK: i64 = 256;

/// Derives again, from the raw bytes the store keeps, the rows of every file an older decoder
/// may have read wrongly (one with a Roman, katakana, SO or JIS X 0212 escape, or a file whose
/// warnings say a character became U+FFFD). It goes in chunks of `REDERIVE_CHUNK` files, each
/// one transaction captured into the outbox like any change, and remembers how far it came
/// (`derive_state.after_id`), so that a stop resumes where it was; the decoder's version is
/// recorded with the last chunk. Nothing happens when the rows are current. Returns how many
/// files were derived again.
pub fn rederive(conn: &rusqlite::Connection, now: &str) -> rusqlite::Result<usize> {
    let mut total = 0;
    loop {
        let (decoder, after): (i64, i64) = conn.query_row(
            "SELECT decoder, after_id FROM derive_state WHERE one = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if decoder >= DECODER {
            break;
        }
        let files: Vec<(i64, String, bool)> = conn
            .prepare_cached(
                "SELECT id, rel_path, is_current FROM source_file WHERE id > ?1 AND storage = 'standard' AND (
                    instr(raw, x'1b284a') > 0 OR instr(raw, x'1b2849') > 0 OR instr(raw, x'0e') > 0
                    OR instr(raw, x'1b242844') > 0 OR decode_warnings LIKE '%U+FFFD%')
                 ORDER BY id LIMIT ?2",
            )?
            .query_map(rusqlite::params![after, REDERIVE_CHUNK], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let last = files.last().map(|f| f.0);
        let (n, _) = crate::outbox::capture(
            conn,
            files.len() as u64,
            now,
            |c| -> rusqlite::Result<usize> {
                let mut n = 0;
                for (id, rel, current) in &files {
                    let raw = store::sql::raw(c, *id)?;
                    let Ok(name) = path::parse(rel) else { continue };
                    // A file that no longer derives keeps its rows: the store never loses what it holds.
                    let Ok(d) = derive(&name, &raw) else { continue };
                    c.execute(
                    "UPDATE source_file SET message_type = ?2, message_id = ?3, sent_at = ?4, decode_warnings = ?5 WHERE id = ?1",
                    rusqlite::params![id, d.header.message_type, d.header.message_id, d.header.sent_at, d.header.warnings],
                )?;
                    if *current {
                        store::sql::delete_rows(c, *id)?;
                        store::sql::insert_rows(c, *id, &name.patient_id, &d.rows)?;
                    }
                    n += 1;
                }
                match last {
                    Some(id) => {
                        c.execute("UPDATE derive_state SET after_id = ?1 WHERE one = 1", [id])?
                    }
                    None => c.execute(
                        "UPDATE derive_state SET decoder = ?1, after_id = 0 WHERE one = 1",
                        [DECODER],
                    )?,
                };
                Ok(n)
            },
        )?;
        total += n;
    }
    if total > 0 {
        tracing::info!(
            files = total,
            decoder = DECODER,
            "rows derived again from the stored raw bytes"
        );
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file an older decoder read with U+FFFD (half-width kana by SO/SI) is derived again from
    /// its raw bytes once, through the outbox; its name is read right and its warning goes.
    #[test]
    fn rows_an_older_decoder_derived_are_derived_again_from_the_raw_bytes() {
        let c = store::in_memory();
        let rel = "999/901/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1";
        let raw = b"MSH|^~\\&|HIS|FAC|||20111220224447||ADT^A08^ADT_A01|123|P|2.5\rEVN||20111220224447\rPID|0001||9999013^^^^PI||\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B^^^^^L^I~\x0eTO@^\x0f^\x0e@[3\x0f^^^^^L^P||19800101|M\r".to_vec();
        let name = path::parse(rel).unwrap();
        let d = derive(&name, &raw).unwrap();
        assert_eq!(d.header.warnings, None, "today's decoder reads it whole");
        // As version 1 stored it: the kana as U+FFFD, and a warning saying so.
        let old = Header { warnings: Some("2 character(s) could not be decoded (JIS X 0212 or a broken escape sequence) and became U+FFFD".into()), ..d.header.clone() };
        let id = store::sql::insert_file(&c, rel, &name, &raw, &ssmix2_sha(&raw), &old).unwrap();
        store::sql::insert_rows(&c, id, &name.patient_id, &d.rows).unwrap();
        store::sql::set_current(&c, id, true).unwrap();
        c.execute(
            "UPDATE patient SET family_kana = '\u{FFFD}', given_kana = '\u{FFFD}'",
            [],
        )
        .unwrap();
        let kana = |c: &rusqlite::Connection| -> (String, String) {
            c.query_row("SELECT family_kana, given_kana FROM patient", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        let head = crate::outbox::head(&c).unwrap().0;

        assert_eq!(rederive(&c, "2026-12-02T00:00:00Z").unwrap(), 1);
        let state: (i64, i64) = c
            .query_row("SELECT decoder, after_id FROM derive_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(state, (DECODER, 0));
        assert_eq!(kana(&c), ("ﾔﾏﾀﾞ".to_string(), "ﾀﾛｳ".to_string()));
        let w: Option<String> = c
            .query_row(
                "SELECT decode_warnings FROM source_file WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(w, None);
        assert_eq!(
            crate::outbox::head(&c).unwrap().0,
            head + 1,
            "one segment carries the change to the hub"
        );
        assert_eq!(
            rederive(&c, "2026-12-02T00:00:01Z").unwrap(),
            0,
            "once per decoder version"
        );
        assert_eq!(crate::outbox::head(&c).unwrap().0, head + 1);
    }

    fn ssmix2_sha(raw: &[u8]) -> Vec<u8> {
        shared::chain::content_hash(raw).to_vec()
    }
}
