//! The ISO-2022-JP/HL7 v2 decoder, the tokenizer and the mapping to table rows, as the appliance's
//! ingest runs them on a file from the EMR's export. The first byte picks the data type the file's
//! path names; the rest is the file. Nothing may panic, and what decodes is valid UTF-8 text
//! without the escape byte (ISO-2022-JP's ESC never survives decoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssmix2::{hl7, path, record};

const TYPES: &[&str] = &[
    "ADT-00", "ADT-01", "ADT-12", "ADT-21", "ADT-22", "ADT-31", "ADT-32", "ADT-41", "ADT-42",
    "ADT-51", "ADT-52", "ADT-61", "PPR-01", "OMD", "OMP-01", "OMP-02", "OMP-11", "OMP-12",
    "OML-01", "OML-11", "OMG-01", "OMG-02", "OMG-03", "OMG-11", "OMG-12", "OMG-13", "ZZZ-99",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let kind = TYPES[pick as usize % TYPES.len()];
    let rel = format!("999/901/9999013/20111220/{kind}/9999013_20111220_{kind}_999999999999999_20111220224447339_01_1");
    let name = path::parse(&rel).expect("a well-formed path");
    let Ok((text, _warnings)) = hl7::decode(file) else {
        return;
    };
    assert!(
        !text.contains('\u{1b}'),
        "an escape sequence survived decoding"
    );
    let Ok(msg) = hl7::Message::parse(&text) else {
        return;
    };
    assert!(!msg.segments.is_empty(), "a parsed message has its MSH");
    let mapped = record::map(&name, &msg);
    for row in &mapped.rows {
        assert!(!row.table.is_empty());
    }
});
