//! Mirrors SS-MIX2 trees into the store: walk, compare with what the store saw last time, read and
//! parse only what changed, and apply it in batched transactions, each captured into the outbox.
//!
//! The store never loses what it holds to the source: a vanished file is marked missing, a file
//! rewritten into bytes that cannot be read goes to quarantine while the good version stays, and
//! surges of either raise an alarm.

pub use ssmix2::{hl7, path, record};
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
    shared::time::rfc3339(unix_now())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
