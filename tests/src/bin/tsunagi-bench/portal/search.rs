//! The search benchmark: a regional index of a million synthetic patients, built once by the hub's
//! own upsert, and ten doctors' searches over it, cold and warm.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use hub::index::{self, Demographics};
use tests::gen::{self, Rng};

use super::client::{app_for, open_hub, session, timed_get};
use super::{encode, pct, Latency, FACILITIES, PASSWORD, PER_FACILITY};
use crate::sync::run;

const KINDS: [&str; 7] = [
    "facility patient ID",
    "regional patient ID",
    "surname (kanji, partial)",
    "full name (kana)",
    "given name (kanji, partial)",
    "birth date",
    "surname + birth date",
];

// Common surnames, most frequent first (Zipf-weighted below), and given names.
const FAMILY: &[(&str, &str)] = &[
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
    ("佐々木", "ササキ"),
    ("山口", "ヤマグチ"),
    ("松本", "マツモト"),
    ("井上", "イノウエ"),
    ("木村", "キムラ"),
    ("林", "ハヤシ"),
    ("斎藤", "サイトウ"),
    ("清水", "シミズ"),
    ("山崎", "ヤマザキ"),
    ("森", "モリ"),
    ("池田", "イケダ"),
    ("橋本", "ハシモト"),
    ("阿部", "アベ"),
    ("石川", "イシカワ"),
    ("山下", "ヤマシタ"),
    ("中島", "ナカジマ"),
    ("石井", "イシイ"),
    ("小川", "オガワ"),
    ("前田", "マエダ"),
    ("岡田", "オカダ"),
    ("長谷川", "ハセガワ"),
    ("藤田", "フジタ"),
    ("後藤", "ゴトウ"),
    ("近藤", "コンドウ"),
    ("村上", "ムラカミ"),
    ("遠藤", "エンドウ"),
    ("青木", "アオキ"),
    ("坂本", "サカモト"),
    ("斉藤", "サイトウ"),
    ("福田", "フクダ"),
    ("太田", "オオタ"),
    ("西村", "ニシムラ"),
    ("藤井", "フジイ"),
    ("金子", "カネコ"),
    ("岡本", "オカモト"),
    ("藤原", "フジワラ"),
    ("中野", "ナカノ"),
    ("三浦", "ミウラ"),
    ("原田", "ハラダ"),
    ("中川", "ナカガワ"),
    ("松田", "マツダ"),
    ("竹内", "タケウチ"),
    ("小野", "オノ"),
    ("田村", "タムラ"),
    ("中山", "ナカヤマ"),
    ("和田", "ワダ"),
    ("石田", "イシダ"),
    ("森田", "モリタ"),
    ("上田", "ウエダ"),
    ("原", "ハラ"),
    ("内田", "ウチダ"),
    ("柴田", "シバタ"),
];

const GIVEN: &[(&str, &str)] = &[
    ("太郎", "タロウ"),
    ("一郎", "イチロウ"),
    ("健太", "ケンタ"),
    ("翔", "ショウ"),
    ("大輔", "ダイスケ"),
    ("浩", "ヒロシ"),
    ("誠", "マコト"),
    ("茂", "シゲル"),
    ("清", "キヨシ"),
    ("勇", "イサム"),
    ("拓也", "タクヤ"),
    ("直樹", "ナオキ"),
    ("花子", "ハナコ"),
    ("美咲", "ミサキ"),
    ("陽子", "ヨウコ"),
    ("結衣", "ユイ"),
    ("恵子", "ケイコ"),
    ("直美", "ナオミ"),
    ("愛", "アイ"),
    ("幸子", "サチコ"),
    ("和子", "カズコ"),
    ("久美子", "クミコ"),
    ("由美", "ユミ"),
    ("真由美", "マユミ"),
];

fn facility_code(i: u64) -> String {
    format!("{:010}", 3_700_000_000 + i)
}

/// A Zipf-like pick: index k with weight 1/(k+1).
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let h: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    let mut u = rng.below(1_000_000) as f64 / 1_000_000.0 * h;
    for k in 0..n {
        u -= 1.0 / (k + 1) as f64;
        if u <= 0.0 {
            return k;
        }
    }
    n - 1
}

fn person(rng: &mut Rng, f: u64, i: u64) -> Demographics {
    let fam = FAMILY[zipf(rng, FAMILY.len())];
    let giv = GIVEN[rng.below(GIVEN.len() as u64) as usize];
    let birth = gen::shared_date(-18_000 + rng.below(30_000) as i64);
    Demographics {
        patient_id: format!("{:08}", f * 7919 % 100_000_000 + i),
        family_kanji: fam.0.into(),
        given_kanji: giv.0.into(),
        family_kana: fam.1.into(),
        given_kana: giv.1.into(),
        birth_date: birth,
        sex: if rng.chance(50) {
            "M".into()
        } else {
            "F".into()
        },
    }
}

/// A hub data folder with its key, CA and registry, made by the real binary.
fn hub_data(bin_dir: &Path, data: &Path) -> anyhow::Result<()> {
    let bin = bin_dir.join("tsunagi-hub");
    run(Command::new(&bin).arg("--data").arg(data).arg("keygen"))?;
    run(Command::new(&bin)
        .arg("--data")
        .arg(data)
        .args(["ca", "init"]))?;
    Ok(())
}

/// The 1,000,000-patient index, built once and kept under the bench data folder.
fn build_index(bin_dir: &Path, data: &Path) -> anyhow::Result<f64> {
    let marker = data.join("built");
    if marker.exists() {
        return Ok(std::fs::read_to_string(&marker)?
            .trim()
            .parse()
            .unwrap_or(0.0));
    }
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data)?;
    hub_data(bin_dir, data)?;
    let key = hub::key::read(&data.join("hub.key"))?;
    let mut c = hub::region::open(data, &key.derive("region"))?;
    // A bulk load: the benchmark measures searches, not this.
    c.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;")?;
    let t = Instant::now();
    let mut rng = Rng::new(4);
    for f in 0..FACILITIES {
        if f % 200 == 0 {
            eprintln!("portal: indexing facility {f} of {FACILITIES}");
        }
        let code = facility_code(f);
        let tx = c.transaction()?;
        for i in 0..PER_FACILITY {
            let id = index::upsert(&tx, &code, &person(&mut rng, f, i), 0)?;
            // One patient in ten has consented comprehensively, one in twenty to a named facility.
            let grantee = match rng.below(100) {
                0..=9 => Some("*".to_string()),
                10..=14 => Some(facility_code(rng.below(FACILITIES))),
                _ => None,
            };
            if let Some(g) = grantee {
                tx.execute(
                    "INSERT OR IGNORE INTO publication (grantee, patient) VALUES (?1, ?2)",
                    rusqlite::params![g, id],
                )?;
            }
        }
        tx.commit()?;
    }
    c.execute_batch("PRAGMA synchronous = FULL; ANALYZE;")?;
    let s = t.elapsed().as_secs_f64();
    std::fs::write(&marker, format!("{s}"))?;
    Ok(s)
}

pub(super) async fn search_bench(
    bin_dir: &Path,
    data: &Path,
) -> anyhow::Result<(f64, Vec<Latency>)> {
    let build_s = build_index(bin_dir, &data.join("hub"))?;
    let users = 10u64;
    let bin = bin_dir.join("tsunagi-hub");
    let pw = data.join("pw");
    std::fs::write(&pw, PASSWORD)?;
    let key = hub::key::read(&data.join("hub/hub.key"))?;
    let c = hub::region::open(&data.join("hub"), &key.derive("region"))?;
    // Start every run from fresh accounts.
    c.execute("DELETE FROM user", [])?;
    drop(c);
    for u in 0..users {
        let f = facility_code(u * 197 % FACILITIES);
        run(Command::new(&bin)
            .arg("--data")
            .arg(data.join("hub"))
            .args([
                "user",
                "add",
                "--login",
                &format!("dr{u}"),
                "--name",
                "bench",
                "--role",
                "doctor",
                "--facility",
                &f,
                "--password-file",
            ])
            .arg(&pw))?;
    }
    let hub = open_hub(&data.join("hub"))?;
    let portal = Arc::new(hub::portal::Portal::new(
        hub.clone(),
        hub::portal::Settings::default(),
    ));
    let mut sessions = Vec::new();
    for u in 0..users {
        let f = facility_code(u * 197 % FACILITIES);
        let app = app_for(&portal, &f);
        let cookie = session(&app, &format!("dr{u}")).await?;
        sessions.push((f, app, cookie));
    }
    // Queries drawn from the index itself, each run by one of the ten doctors: a first pass with
    // region.db just dropped from the OS page cache, then a second pass of new queries.
    let reader = hub::region::open(&data.join("hub"), &key.derive("region"))?;
    for f in ["region.db", "region.db-wal"] {
        if let Ok(file) = std::fs::File::open(data.join("hub").join(f)) {
            nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )?;
        }
    }
    let mut rng = Rng::new(99);
    let per_kind = 200;
    let mut out = Vec::new();
    for pass in ["first pass, cold", "second pass"] {
        let mut all = Vec::new();
        for kind in KINDS {
            let mut times = Vec::new();
            let mut hits = 0usize;
            for q in 0..per_kind {
                let (facility, app, cookie) = &sessions[q % sessions.len()];
                // A patient of the searching facility, so there is something to find.
                let (pid, rid, kanji, kana, birth): (String, String, String, String, String) = reader.query_row(
                    "SELECT patient_id, regional_id, name_kanji, name_kana, birth_date FROM patient WHERE facility = ?1 LIMIT 1 OFFSET ?2",
                    rusqlite::params![facility, rng.below(PER_FACILITY) as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?;
                let surname = kanji.split(' ').next().unwrap_or("").to_string();
                let given = kanji.split(' ').nth(1).unwrap_or("").to_string();
                let iso = format!("{}-{}-{}", &birth[0..4], &birth[4..6], &birth[6..8]);
                let query = match kind {
                    "facility patient ID" => format!("patient_id={pid}"),
                    "regional patient ID" => format!("regional_id={rid}"),
                    "surname (kanji, partial)" => format!("name={}", encode(&surname)),
                    "full name (kana)" => format!("name={}", encode(&kana.replace(' ', ""))),
                    "given name (kanji, partial)" => format!("name={}", encode(&given)),
                    "birth date" => format!("birth_date={iso}"),
                    _ => format!("name={}&birth_date={iso}", encode(&surname)),
                };
                let (ms, body) = timed_get(app, cookie, &format!("/search?{query}")).await?;
                times.push(ms);
                hits += body.matches("class=\"patient-link\"").count();
            }
            all.extend(times.iter().copied());
            out.push(Latency {
                what: format!("{kind} ({pass})"),
                n: times.len(),
                p50: pct(times.clone(), 0.5),
                p99: pct(times, 0.99),
                note: format!("{:.1} results on average", hits as f64 / per_kind as f64),
            });
        }
        out.push(Latency {
            what: format!("**all searches ({pass})**"),
            n: all.len(),
            p50: pct(all.clone(), 0.5),
            p99: pct(all, 0.99),
            note: String::new(),
        });
    }
    Ok((build_s, out))
}
