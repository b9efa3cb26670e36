//! Consent and publication per patient and facility, the portal inbox that tells facilities when a
//! publication takes effect, emergency access by core hospitals, and the one rule that decides
//! which facilities' records of a regional patient a facility may see.

mod emergency;
mod messages;
mod publication;
mod visibility;

pub use emergency::{
    emergency_until, end_emergency, is_core, refusals, set_core, start_emergency, Emergency,
    EMERGENCY_MINUTES,
};
pub use messages::{inbox, mark_read, unread, Message, OFFICE_INBOX};
pub use publication::{check, get, set, Consent, Scope, State, Stored};
pub use visibility::{visible, Basis, Viewer};

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::index::{self, upsert, Demographics, Entry};

    pub(super) fn entry(c: &Connection, facility: &str, pid: &str) -> Entry {
        let d = Demographics {
            patient_id: pid.into(),
            family_kanji: "山田".into(),
            given_kanji: "太郎".into(),
            family_kana: "ヤマダ".into(),
            given_kana: "タロウ".into(),
            birth_date: "19600101".into(),
            sex: "M".into(),
        };
        let id = upsert(c, facility, &d, 0).unwrap();
        index::get(c, id).unwrap().unwrap()
    }
}
