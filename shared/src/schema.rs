//! The store's schema as SQL text, one migration per version. The edge's store and the hub's
//! failover copies run the same clinical schema, so that a changeset captured on the edge applies
//! as it is on the hub.
//!
//! Clinical rows are derived from SS-MIX2 files: every row names the `source_file` it came from,
//! and only files that are current (flag 1, newest of their logical key) have rows.

/// Tables whose changes are captured into outbox segments and shipped to the hub, in the order a
/// changeset applies them (parents first).
pub const SYNCED_TABLES: &[&str] = &[
    "source_file",
    "patient",
    "patient_insurance",
    "patient_contact",
    "encounter",
    "allergy",
    "diagnosis",
    "medication_order",
    "administration",
    "lab_order",
    "lab_result",
    "exam_order",
    "exam_report",
    "exam_observation",
    "diet_order",
    "document",
];

/// The clinical tables: every row has `file_id` and is removed when its file stops being current.
pub fn clinical_tables() -> &'static [&'static str] {
    &SYNCED_TABLES[1..]
}

/// Migrations, applied in order; `PRAGMA user_version` records how many have run.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
];

/// The version of what segments carry (the synced tables and their columns) after each
/// migration. Only a migration that changes a synced table or column raises it: migrations 2 to
/// 5 changed local tables and indexes only.
pub const SYNCED_AT: &[u32] = &[1, 1, 1, 1, 1];
const _: () = assert!(
    SYNCED_AT.len() == MIGRATIONS.len(),
    "say the synced version after every migration"
);

/// The version of the synced tables a store or a copy at the newest migration holds: what every
/// segment says, what an appliance says at enrolment, what a restore plan says of a copy. A
/// local-only migration does not change it, so it never makes an older peer refuse a newer one.
pub const VERSION: u32 = SYNCED_AT[SYNCED_AT.len() - 1];

/// The synced version of a store or copy at `PRAGMA user_version` `v` (0 before any migration).
pub fn synced_version(v: i64) -> u32 {
    usize::try_from(v)
        .ok()
        .and_then(|v| v.checked_sub(1))
        .and_then(|i| SYNCED_AT.get(i))
        .copied()
        .unwrap_or(0)
}

/// The schema version a store has after all migrations.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

const MIGRATION_1: &str = r#"
-- One row per SS-MIX2 file ever seen, with its raw bytes, so the tree can be written back out.
CREATE TABLE source_file (
    id              INTEGER PRIMARY KEY,
    rel_path        TEXT NOT NULL UNIQUE,   -- path below the storage root, '/'-separated
    version_path    TEXT NOT NULL,          -- the file (standard) or content folder (extended)
    storage         TEXT NOT NULL,          -- 'standard' or 'extended'
    patient_id      TEXT NOT NULL,
    care_date       TEXT,                   -- YYYYMMDD, NULL for '-'
    data_type       TEXT NOT NULL,
    order_no        TEXT,                   -- NULL for the fifteen nines
    issued_at       TEXT NOT NULL,          -- the 17-digit time of the file name
    department      TEXT,                   -- NULL for '-'
    flag            INTEGER NOT NULL,       -- 1 current, 2 superseded, 0 deleted
    is_current      INTEGER NOT NULL DEFAULT 0,
    sha256          BLOB NOT NULL,
    size            INTEGER NOT NULL,
    message_type    TEXT,                   -- MSH-9
    message_id      TEXT,                   -- MSH-10
    sent_at         TEXT,                   -- MSH-7
    decode_warnings TEXT,                   -- one warning a line, NULL when clean
    missing_since   TEXT,                   -- set when the file vanished from the source tree
    -- Last, so that reading the columns before it never walks the blob's overflow pages.
    raw             BLOB NOT NULL
);
CREATE INDEX source_file_key ON source_file (patient_id, data_type, care_date, order_no);
CREATE INDEX source_file_missing ON source_file (rel_path) WHERE missing_since IS NOT NULL;

CREATE TABLE patient (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    family_kanji TEXT, given_kanji TEXT, family_kana TEXT, given_kana TEXT,
    birth_date TEXT, sex TEXT, postal_code TEXT, address TEXT, phone_home TEXT, phone_work TEXT,
    blood_abo TEXT, height TEXT, height_unit TEXT, weight TEXT, weight_unit TEXT,
    patient_class TEXT, ward TEXT, room TEXT, bed TEXT, attending TEXT,
    updated_at TEXT, message_patient_id TEXT
);
CREATE INDEX patient_file ON patient (file_id);
CREATE INDEX patient_pid ON patient (patient_id);

CREATE TABLE patient_insurance (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    seq TEXT, plan_code TEXT, plan_name TEXT, insurer_number TEXT, insurer_name TEXT,
    insured_symbol TEXT, insured_number TEXT, valid_from TEXT, valid_to TEXT,
    relationship_code TEXT, relationship TEXT
);
CREATE INDEX patient_insurance_file ON patient_insurance (file_id);

CREATE TABLE patient_contact (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    seq TEXT, family TEXT, given TEXT, relationship_code TEXT, relationship TEXT,
    postal_code TEXT, address TEXT, phone TEXT, organisation TEXT
);
CREATE INDEX patient_contact_file ON patient_contact (file_id);

-- Visits, admissions, leaves, transfers and discharges (ADT-12 .. ADT-52), one row a message.
CREATE TABLE encounter (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    data_type TEXT NOT NULL, event TEXT, is_cancel INTEGER NOT NULL DEFAULT 0,
    patient_class TEXT, ward TEXT, room TEXT, bed TEXT,
    prior_ward TEXT, prior_room TEXT, prior_bed TEXT,
    attending_id TEXT, attending TEXT, department TEXT, admitting TEXT,
    event_at TEXT, recorded_at TEXT, admit_at TEXT, discharge_at TEXT,
    expected_admit_at TEXT, expected_discharge_at TEXT, discharge_disposition TEXT
);
CREATE INDEX encounter_file ON encounter (file_id);
CREATE INDEX encounter_pid ON encounter (patient_id);

-- Allergies: IAM of ADT-61 and AL1 of ADT-00.
CREATE TABLE allergy (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    source TEXT NOT NULL, seq TEXT, type_code TEXT, type TEXT,
    allergen_code TEXT, allergen TEXT, allergen_system TEXT,
    severity_code TEXT, severity TEXT, reaction TEXT, action_code TEXT,
    onset_date TEXT, onset_text TEXT
);
CREATE INDEX allergy_file ON allergy (file_id);
CREATE INDEX allergy_pid ON allergy (patient_id);

-- The patient's diagnosis list (PPR-01: the newest file holds the whole list).
CREATE TABLE diagnosis (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    action TEXT, action_at TEXT, code TEXT, name TEXT, code_system TEXT, problem_id TEXT,
    established_on TEXT, resolved_on TEXT, icd10 TEXT, icd10_edition TEXT,
    diagnosis_type_code TEXT, diagnosis_type TEXT, certainty TEXT,
    outcome_code TEXT, outcome TEXT, outcome_on TEXT, onset_on TEXT, display_name TEXT,
    ranking TEXT, is_main INTEGER NOT NULL DEFAULT 0,
    exchange_code TEXT, prefix_modifier TEXT, suffix_modifier TEXT
);
CREATE INDEX diagnosis_file ON diagnosis (file_id);
CREATE INDEX diagnosis_pid ON diagnosis (patient_id);

-- Prescriptions (OMP-01) and injections (OMP-02): one row a drug.
CREATE TABLE medication_order (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    kind TEXT NOT NULL, order_no TEXT, control TEXT, rp_no TEXT, ordered_at TEXT,
    entered_by TEXT, orderer_id TEXT, orderer TEXT, department_code TEXT, department TEXT,
    patient_class TEXT, injection_type TEXT, component TEXT,
    drug_code TEXT, drug_name TEXT, drug_system TEXT,
    dose TEXT, dose_max TEXT, unit_code TEXT, unit TEXT, dosage_form TEXT,
    dispense_amount TEXT, dispense_unit TEXT, rx_no TEXT, daily_dose TEXT, daily_unit TEXT,
    category TEXT, usage_code TEXT, usage_text TEXT, days TEXT, start_at TEXT, end_at TEXT,
    route_code TEXT, route TEXT, device TEXT, rate TEXT, rate_unit TEXT, instruction TEXT
);
CREATE INDEX medication_order_file ON medication_order (file_id);
CREATE INDEX medication_order_pid ON medication_order (patient_id);

-- What was given (OMP-11 prescriptions, OMP-12 injections): one row an RXA.
CREATE TABLE administration (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    kind TEXT NOT NULL, order_no TEXT, started_at TEXT, ended_at TEXT,
    drug_code TEXT, drug_name TEXT, drug_system TEXT, amount TEXT, unit_code TEXT, unit TEXT,
    note TEXT, performer TEXT, location TEXT, rate TEXT, completion TEXT, entered_at TEXT,
    route TEXT
);
CREATE INDEX administration_file ON administration (file_id);

-- Specimen test orders (OML-01): one row a requested test.
CREATE TABLE lab_order (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    order_no TEXT, ordered_at TEXT, orderer TEXT, department TEXT,
    specimen_code TEXT, specimen TEXT, collected_at TEXT,
    item_code TEXT, item TEXT, test_code TEXT, test_name TEXT, test_system TEXT,
    local_code TEXT, local_name TEXT
);
CREATE INDEX lab_order_file ON lab_order (file_id);

-- Specimen test results (OML-11): one row an OBX.
CREATE TABLE lab_result (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    order_no TEXT, specimen_id TEXT, specimen_code TEXT, specimen TEXT, collected_at TEXT,
    item_code TEXT, item TEXT, reported_at TEXT, set_id TEXT, sub_id TEXT, value_type TEXT,
    code TEXT, name TEXT, code_system TEXT, local_code TEXT, local_name TEXT,
    value TEXT, value_text TEXT, unit TEXT, reference_range TEXT, abnormal_flag TEXT,
    status TEXT, observed_at TEXT
);
CREATE INDEX lab_result_file ON lab_result (file_id);
CREATE INDEX lab_result_pid ON lab_result (patient_id, code);

-- Imaging (OMG-01), endoscopy (OMG-02) and physiology (OMG-03) orders: one row an OBR.
CREATE TABLE exam_order (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    kind TEXT NOT NULL, order_no TEXT, control TEXT, parent_order_no TEXT, ordered_at TEXT,
    orderer TEXT, department TEXT, item_code TEXT, item TEXT, item_system TEXT, priority TEXT
);
CREATE INDEX exam_order_file ON exam_order (file_id);

-- Reports of those exams (OMG-11, OMG-12, OMG-13): one row an OBR.
CREATE TABLE exam_report (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    kind TEXT NOT NULL, order_no TEXT, parent_order_no TEXT,
    item_code TEXT, item TEXT, item_system TEXT, observed_at TEXT, reported_at TEXT,
    result_status TEXT, accession_no TEXT, procedure_id TEXT, study_uid TEXT, modality TEXT
);
CREATE INDEX exam_report_file ON exam_report (file_id);

-- Observations attached to exam orders and reports (findings, measurements, staff, drugs).
CREATE TABLE exam_observation (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    kind TEXT NOT NULL, order_no TEXT, set_id TEXT, sub_id TEXT, value_type TEXT,
    code TEXT, name TEXT, code_system TEXT, value TEXT, unit TEXT, status TEXT
);
CREATE INDEX exam_observation_file ON exam_observation (file_id);

-- Diet orders (OMD).
CREATE TABLE diet_order (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    order_no TEXT, control TEXT, ordered_at TEXT, orderer TEXT, department TEXT,
    timing_code TEXT, timing TEXT, start_at TEXT, priority TEXT,
    diet_kind TEXT, diet_code TEXT, diet_name TEXT, instruction TEXT
);
CREATE INDEX diet_order_file ON diet_order (file_id);

-- Extended-storage documents: the content is source_file.raw.
CREATE TABLE document (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, patient_id TEXT NOT NULL,
    doc_code TEXT, doc_name TEXT, doc_system TEXT, std_code TEXT, std_name TEXT, std_system TEXT,
    content_key TEXT, file_name TEXT NOT NULL, media_type TEXT, size INTEGER NOT NULL
);
CREATE INDEX document_file ON document (file_id);

-- Local state below: never captured, never shipped.

-- What the last scan saw of each file, so that an unchanged file is not read again.
CREATE TABLE file_stat (
    rel_path   TEXT PRIMARY KEY,
    root       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    sha256     BLOB NOT NULL
) WITHOUT ROWID;

-- Files that could not be taken in, with the reason; tried again when they change.
CREATE TABLE quarantine (
    rel_path   TEXT PRIMARY KEY,
    root       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    sha256     BLOB,
    raw        BLOB,
    first_seen TEXT NOT NULL,
    last_tried TEXT NOT NULL
) WITHOUT ROWID;

-- Loud events: mass disappearance, a surge of undecodable rewrites, a root gone.
CREATE TABLE alarm (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);

-- The change log shipped to the hub: zstd-compressed session changesets, hash-chained.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL,
    body       BLOB NOT NULL,
    raw_len    INTEGER NOT NULL,
    files      INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

-- The newest segment ever written, kept apart from the outbox so that pruning acked segments
-- never loses the chain's head.
CREATE TABLE outbox_head (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO outbox_head (one, seq, hash) VALUES (1, 0, zeroblob(32));
"#;

const MIGRATION_2: &str = r#"
-- Where the hub's copy stands, as the hub last acknowledged it, and how the last upload went.
-- On the hub's own copies this row stays at zero: the copy's outbox_head is its position.
CREATE TABLE sync_state (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    hub_seq      INTEGER NOT NULL,
    hub_hash     BLOB NOT NULL,
    acked_at     TEXT,
    last_attempt TEXT,
    last_error   TEXT
);
INSERT INTO sync_state (one, hub_seq, hub_hash) VALUES (1, 0, zeroblob(32));
-- When each segment was acknowledged, so pruning can keep a retention window after the ack.
ALTER TABLE outbox ADD COLUMN acked_at TEXT;
"#;

const MIGRATION_3: &str = r#"
-- The portal reads exam reports and documents by patient.
CREATE INDEX exam_report_pid ON exam_report (patient_id);
CREATE INDEX document_pid ON document (patient_id);
"#;

const MIGRATION_4: &str = r#"
-- The synced-tables version (`SYNCED_AT`) each segment was written at, so that a reader that
-- knows less refuses it by name instead of misreading it. Segments from before were all written
-- at version 1.
ALTER TABLE outbox ADD COLUMN schema INTEGER NOT NULL DEFAULT 1;
"#;

const MIGRATION_5: &str = r#"
-- Which version of the decoder derived the stored rows: when it learns to read more (the
-- ISO-2022-JP dialects of version 2), the files it reads differently are derived again from
-- their raw bytes, through the outbox like any change, in chunks; `after_id` is how far the
-- current pass has come. Local to each side, never synced.
CREATE TABLE derive_state (
    one      INTEGER PRIMARY KEY CHECK (one = 1),
    decoder  INTEGER NOT NULL,
    after_id INTEGER NOT NULL DEFAULT 0
);
INSERT INTO derive_state (one, decoder) VALUES (1, 1);
"#;

/// The version segments from before segments said theirs are read as (see `MIGRATION_4`).
pub const LEGACY_SEGMENT_SCHEMA: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_synced_table_is_created() {
        for t in SYNCED_TABLES {
            assert!(
                MIGRATION_1.contains(&format!("CREATE TABLE {t} (")),
                "{t} has no CREATE TABLE"
            );
        }
    }
}
