//! The changeset walker both copies run before SQLite applies a segment: nothing may panic, and a
//! changeset it lets through names only the allowed tables with their column counts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{changeset, schema};

fuzz_target!(|data: &[u8]| {
    let Ok(tables) = changeset::tables(data) else {
        return;
    };
    let columns = |t: &str| Some(t.len() % 7 + 1);
    let ok = changeset::check_tables(data, schema::SYNCED_TABLES, columns).is_ok();
    let expected = tables.iter().all(|t| {
        schema::SYNCED_TABLES.contains(&t.name.as_str()) && t.columns == t.name.len() % 7 + 1
    });
    assert_eq!(
        ok, expected,
        "check_tables agrees with the tables it walked: {tables:?}"
    );
});
