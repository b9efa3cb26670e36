//! The LAN proxy's gate: which request paths it forwards to the hub's portal. A path it takes
//! must mean the same to every parser: no percent sign, no backslash, no empty, `.` or `..`
//! segment, never the appliance API, and it matches one of the portal's routes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::route;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    if route::is_portal_path(p) {
        assert!(p.starts_with('/'));
        assert!(
            !p.contains('%') && !p.contains('\\') && !p.contains('?') && !p.contains('#'),
            "{p:?}"
        );
        assert!(
            !p.starts_with("/v1") && !p.starts_with("/_tsunagi"),
            "{p:?}"
        );
        let segs: Vec<&str> = p[1..].split('/').collect();
        if p != "/" {
            assert!(
                segs.iter()
                    .all(|s| !s.is_empty() && *s != "." && *s != ".."),
                "{p:?}"
            );
        }
        assert!(p.bytes().all(|b| b.is_ascii_graphic()), "{p:?}");
    }
});
