//! A deterministic generator of realistic SS-MIX2 trees: patients with Japanese names, visits,
//! admissions, prescriptions, injections, lab tests, exams, diet, allergies, diagnoses and
//! extended-storage documents, in real ISO-2022-JP, with updates (flag 2) and cancellations
//! (flag 0) as a gateway writes them, and malformed files on request.

use std::path::Path;

mod messages;
mod vocab;
mod writer;

use messages::{malformed, person};
use vocab::{FAMILY, GIVEN_F, GIVEN_M};
use writer::Writer;

/// SplitMix64: small, fast and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub patients: u64,
    pub days: u64,
    /// Visits a patient makes over the period, on average.
    pub visits: u64,
    pub seed: u64,
    pub malformed: u64,
    /// First day, as days since 1970-01-01 (2025-04-01 by default).
    pub start_day: i64,
}

impl Spec {
    pub fn clinic_year() -> Spec {
        Spec {
            patients: 2_000,
            days: 365,
            visits: 6,
            seed: 1,
            malformed: 0,
            start_day: 20_179,
        }
    }
    pub fn hospital() -> Spec {
        Spec {
            patients: 50_000,
            days: 365,
            visits: 1,
            seed: 2,
            malformed: 0,
            start_day: 20_179,
        }
    }
    pub fn small(seed: u64) -> Spec {
        Spec {
            patients: 12,
            days: 30,
            visits: 3,
            seed,
            malformed: 0,
            start_day: 20_179,
        }
    }
}

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub files: u64,
    pub bytes: u64,
    pub superseded: u64,
    pub deleted: u64,
    pub malformed: u64,
    pub documents: u64,
}

fn ymd(day: i64) -> String {
    shared_date(day)
}

/// YYYYMMDD of a day number (days since 1970-01-01).
pub fn shared_date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// A person to write into a tree: (kanji, kana) name parts, birth date YYYYMMDD, sex M or F.
#[derive(Debug, Clone)]
pub struct Patient {
    pub pid: String,
    pub family: (&'static str, &'static str),
    pub given: (&'static str, &'static str),
    pub birth: String,
    pub sex: &'static str,
    /// Visit days over the period: spread evenly when given, random otherwise.
    pub visits: Option<u64>,
    /// Recorded as allergic to penicillin in the master record whatever the dice say.
    pub allergic: bool,
}

/// Writes a tree: `out/standard` (standardized storage) and `out/extended` (extended storage).
pub fn generate(spec: &Spec, out: &Path) -> Written {
    generate_with(spec, out, &[])
}

/// Writes a tree with `people` in it besides the spec's random patients: the way to put one
/// person into several facilities' trees under each facility's own patient ID.
pub fn generate_with(spec: &Spec, out: &Path, people: &[Patient]) -> Written {
    let mut w = Writer {
        standard: out.join("standard"),
        extended: out.join("extended"),
        out: Written::default(),
        rng: Rng::new(spec.seed),
        counter: 0,
    };
    std::fs::create_dir_all(&w.standard).expect("create standard root");
    std::fs::create_dir_all(&w.extended).expect("create extended root");
    for i in 0..spec.patients {
        let sex = if w.rng.chance(50) { "M" } else { "F" };
        let p = Patient {
            pid: format!("{:010}", 1_000_000 + i * 7 + spec.seed % 7),
            family: *w.rng.pick(FAMILY),
            given: *w.rng.pick(if sex == "M" { GIVEN_M } else { GIVEN_F }),
            birth: ymd(-18_000 + w.rng.below(25_000) as i64),
            sex,
            visits: None,
            allergic: false,
        };
        person(&mut w, &p, spec);
    }
    for p in people {
        person(&mut w, p, spec);
    }
    for k in 0..spec.malformed {
        malformed(&mut w, k);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(shared_date(0), "19700101");
        assert_eq!(shared_date(20_179), "20250401");
    }

    #[test]
    fn same_seed_same_tree() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let wa = generate(&Spec::small(5), a.path());
        let wb = generate(&Spec::small(5), b.path());
        assert_eq!(wa, wb);
        let st = std::process::Command::new("diff")
            .arg("-r")
            .arg(a.path())
            .arg(b.path())
            .status()
            .unwrap();
        assert!(st.success());
        assert!(wa.files > 12 * 3);
    }
}
