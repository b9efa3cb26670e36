//! The SS-MIX2 storage path parser, on any relative path. Nothing may panic, and a path it takes
//! names the patient, data type and version folder it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssmix2::path;

fuzz_target!(|data: &[u8]| {
    let Ok(rel) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = path::parse(rel) {
        assert!(!n.patient_id.is_empty());
        assert!(
            rel.split('/').any(|p| p == n.patient_id),
            "the patient ID is one of the path's folders"
        );
        assert!(rel.contains(&n.data_type));
        assert!(
            rel.starts_with(&n.version_path),
            "the version path is a prefix of the path"
        );
    }
});
