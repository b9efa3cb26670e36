//! The messages of one patient: the master record, visits with their orders and results,
//! admissions, extended-storage documents, and the malformed files that must be quarantined.

use super::vocab::{ALLERGENS, DISEASES, DRUGS, INJECTIONS, LABS, TOWNS, USAGES};
use super::writer::{msh, pid_seg, Writer};
use super::{ymd, Patient, Spec};

/// A patient's master record, their visits over the period and perhaps an admission.
pub(super) fn person(w: &mut Writer, p: &Patient, spec: &Spec) {
    patient_master(w, p, spec);
    // One reception a day at most: ADT-12 has no order number, so a second one the same day
    // would be a new version of the first, not a second visit.
    let days: std::collections::BTreeSet<i64> = match p.visits {
        Some(n) => (0..n)
            .map(|k| spec.start_day + (k * spec.days / n.max(1)) as i64)
            .collect(),
        None => {
            let visits = 1 + w.rng.below(spec.visits * 2);
            (0..visits)
                .map(|_| spec.start_day + w.rng.below(spec.days) as i64)
                .collect()
        }
    };
    for day in days {
        visit(w, p, &ymd(day));
    }
    if w.rng.chance(4) {
        let day = spec.start_day + w.rng.below(spec.days) as i64;
        admission(w, p, day);
    }
}

fn patient_master(w: &mut Writer, p: &Patient, spec: &Spec) {
    let date = ymd(spec.start_day);
    let (t, ts) = w.stamp(&date, 8);
    let town = *w.rng.pick(TOWNS);
    let mut segs = vec![
        msh("ADT^A08^ADT_A01", &ts, w.counter),
        format!("EVN||{}", &t[..12]),
        format!(
            "{}|||^^^^760-{:04}^JPN^H^{}||^PRN^PH^^^^^^^^^087-{:03}-{:04}|||||||||||||||||||{}",
            pid_seg(p),
            w.rng.below(10_000),
            town,
            w.rng.below(1000),
            w.rng.below(10_000),
            &t[..14]
        ),
        "PV1|0001|O".into(),
        format!(
            "OBX|1|NM|9N001000000000001^身長^JC10||{}.{}|cm^cm^ISO+|||||F",
            145 + w.rng.below(40),
            w.rng.below(10)
        ),
        format!(
            "OBX|2|NM|9N006000000000001^体重^JC10||{}.{}|kg^kg^ISO+|||||F",
            40 + w.rng.below(50),
            w.rng.below(10)
        ),
        format!(
            "IN1|1|06^組合管掌健康保険^JHSD0001|{:08}|||||||||{}|||||SEL^本人^HL70063",
            6_370_000 + w.rng.below(9999),
            date
        ),
    ];
    if w.rng.chance(20) || p.allergic {
        segs.push("AL1|1|DA^薬剤アレルギー^HL70127|1^ペニシリン^99XYZ".into());
    }
    let b = w.encode(&segs);
    w.write(&p.pid, "-", "ADT-00", "999999999999999", &t, "-", 1, &b);

    if w.rng.chance(15) {
        let (t, ts) = w.stamp(&date, 9);
        let a = *w.rng.pick(ALLERGENS);
        let segs = vec![
            msh("ADT^A60^ADT_A60", &ts, w.counter),
            format!("EVN||{}", &t[..14]),
            pid_seg(p),
            format!(
                "IAM|1|{}^{}^HL70127|{}^{}^JC10|MI^軽度^HL70128|発疹|A^追加^HL70323",
                a.0, a.1, a.2, a.3
            ),
        ];
        let b = w.encode(&segs);
        w.write(&p.pid, "-", "ADT-61", "999999999999999", &t, "-", 1, &b);
    }

    // The diagnosis list: some patients' lists were replaced once (the old file superseded).
    let n = 1 + w.rng.below(3);
    let versions = if w.rng.chance(20) { 2 } else { 1 };
    for v in 0..versions {
        let (t, ts) = w.stamp(&ymd(spec.start_day + 1 + v), 10);
        let mut segs = vec![msh("PPR^ZD1^PPR_ZD1", &ts, w.counter), pid_seg(p)];
        for k in 0..n + v as u64 {
            let d = DISEASES
                [((p.pid.len() as u64 + k * 3 + w.rng.below(2)) % DISEASES.len() as u64) as usize];
            segs.push(format!(
                "PRB|AD|{}|{}^{}^MDCDX2|{:015}|||{}||||{}^^I10^O^外来時^JHSD0004||||N^回復せず^HL70241|||{}|{}^{}^JHSD0007",
                &t[..8], d.0, d.1, k + 1, &t[..8], d.2, d.1, if k == 0 { 1 } else { 2 }, if k == 0 { "主診断" } else { "副診断" }
            ));
            segs.push(format!("ZPR||{}^{}^MDCDX2", d.0, d.1));
        }
        let b = w.encode(&segs);
        let flag = if v + 1 == versions { 1 } else { 2 };
        w.out.superseded += u64::from(flag == 2);
        w.write(&p.pid, "-", "PPR-01", "999999999999999", &t, "01", flag, &b);
    }
}

fn visit(w: &mut Writer, p: &Patient, date: &str) {
    let (t, ts) = w.stamp(date, 9);
    let segs = vec![
        msh("ADT^A04^ADT_A01", &ts, w.counter),
        format!("EVN||{}", &t[..12]),
        pid_seg(p),
        format!("PV1|0001|O|01^^^^^C||||110^医師^一郎^^^^^^^L^^^^^I|||01|||||||||||||||||||||||||||||||{}", &t[..12]),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, date, "ADT-12", "999999999999999", &t, "01", 1, &b);

    if w.rng.chance(80) {
        prescription(w, p, date);
    }
    if w.rng.chance(35) {
        lab(w, p, date);
    }
    if w.rng.chance(5) {
        exam(w, p, date);
    }
    if w.rng.chance(3) {
        document(w, p, date);
    }
}

fn prescription(w: &mut Writer, p: &Patient, date: &str) {
    let order = w.order_no();
    let drugs = 1 + w.rng.below(3);
    let mut body = Vec::new();
    for rp in 0..drugs {
        let d = *w.rng.pick(DRUGS);
        let u = *w.rng.pick(USAGES);
        let days = [3, 5, 7, 14, 28][w.rng.below(5) as usize];
        let dose = 1 + w.rng.below(2);
        body.push(format!("ORC|NW|{order}||{}|||||{date}1030|058^入力者^花子^^^^^^^L^^^^^I||110^医師^一郎^^^^^^^L^^^^^I|||||01^内科^99XY1||||||||||||O^外来患者オーダ^HL70482", rp + 1));
        body.push(format!(
            "RXE||{}^{}^HOT9|{dose}||{}^{}^MR9P|||||{}|{}^{}^MR9P||||{order}||||{}^{}&{}&MR9P||OHP^外来処方^MR9P",
            d.0, d.1, d.2, d.3, dose * u64::from(u.2) * days, d.2, d.3, dose * u64::from(u.2), d.2, d.3
        ));
        body.push(format!(
            "TQ1|1||{}&{}&JAMISDP01|||{days}^d|{date}",
            u.0, u.1
        ));
        body.push("RXR|PO^口^HL70162".into());
    }
    let mut versions = vec![(body.clone(), 1u8)];
    if w.rng.chance(8) {
        // Updated once: the first version was renamed to flag 2 when the second was written.
        let mut changed = body.clone();
        changed[1] = changed[1].replacen("|1||", "|2||", 1);
        versions = vec![(body, 2), (changed, 1)];
    }
    let cancel = w.rng.chance(3);
    let n = versions.len();
    for (i, (b, flag)) in versions.into_iter().enumerate() {
        let (t, ts) = w.stamp(date, 11 + i as u64);
        let mut segs = vec![
            msh("RDE^O11^RDE_O11", &ts, w.counter),
            pid_seg(p),
            "PV1|0001|O|01^^^^^C||||110^医師^一郎^^^^^^^L^^^^^I|||01".into(),
        ];
        segs.extend(b);
        let bytes = w.encode(&segs);
        let flag = if cancel { 0 } else { flag };
        w.out.superseded += u64::from(flag == 2);
        w.out.deleted += u64::from(flag == 0);
        w.write(&p.pid, date, "OMP-01", &order, &t, "01", flag, &bytes);
        if cancel && i + 1 == n {
            // The cancel message itself, written as a flag-0 tombstone.
            let (t, ts) = w.stamp(date, 16);
            let segs = vec![
                msh("RDE^O11^RDE_O11", &ts, w.counter),
                pid_seg(p),
                format!("ORC|CA|{order}|||||||{date}1600"),
            ];
            let bytes = w.encode(&segs);
            w.out.deleted += 1;
            w.write(&p.pid, date, "OMP-01", &order, &t, "01", 0, &bytes);
        }
    }
}

fn lab(w: &mut Writer, p: &Patient, date: &str) {
    let order = w.order_no();
    let (t, ts) = w.stamp(date, 10);
    let tests: Vec<_> = (0..3 + w.rng.below(4)).map(|_| *w.rng.pick(LABS)).collect();
    let mut segs = vec![
        msh("OML^O33^OML_O33", &ts, w.counter),
        pid_seg(p),
        "PV1|0001|O|01^^^^^C".into(),
        format!("SPM|1|||023^血清^JC10|||||||||||||{date}0930"),
        format!("ORC|NW|{order}|||||||{date}0900|||110^医師^一郎^^^^^^^L^^^^^I|||||01^内科^99XY1"),
        format!("OBR|1|{order}||E001^生化学的検査^99O03"),
    ];
    for (k, l) in tests.iter().enumerate() {
        segs.push(format!("OBX|{}||{}^{}^JC10||||||||O", k + 1, l.0, l.1));
    }
    let b = w.encode(&segs);
    w.write(&p.pid, date, "OML-01", &order, &t, "01", 1, &b);

    let (t, ts) = w.stamp(date, 15);
    let mut segs = vec![
        msh("OUL^R22^OUL_R22", &ts, w.counter),
        pid_seg(p),
        "PV1|0001|O|01^^^^^C".into(),
        format!("SPM|1|{order}||023^血清^JC10|||||||||||||{date}0930"),
        format!(
            "OBR|1|{order}||E001^生化学的検査^99O03|||{date}0930||||||||||||||||{}",
            &t[..14]
        ),
        format!(
            "ORC|SC|{order}|||CM||||{date}0900|||110^医師^一郎^^^^^^^L^^^^^I|||||01^内科^99XY1"
        ),
    ];
    for (k, l) in tests.iter().enumerate() {
        let span = l.4 - l.3;
        let v = l.3 - span * 0.2 + span * 1.4 * (w.rng.below(1000) as f64 / 1000.0);
        // Judged on the value as reported (to its decimals), as a laboratory system does.
        let scale = 10f64.powi(l.5 as i32);
        let v = (v * scale).round() / scale;
        let flag = if v < l.3 {
            "L"
        } else if v > l.4 {
            "H"
        } else {
            ""
        };
        // A unit with a component separator in it (`10^3/uL`) is escaped, as HL7 requires.
        let unit = l.2.replace('^', "\\S\\");
        segs.push(format!(
            "OBX|{}|NM|{}^{}^JC10||{:.*}|{}^{}^99XYZ|{}-{}|{flag}|||F|||{date}0930",
            k + 1,
            l.0,
            l.1,
            l.5 as usize,
            v,
            unit,
            unit,
            l.3,
            l.4
        ));
    }
    let b = w.encode(&segs);
    w.write(&p.pid, date, "OML-11", &order, &t, "01", 1, &b);
}

fn exam(w: &mut Writer, p: &Patient, date: &str) {
    let order = w.order_no();
    let (kind_o, kind_r, item, modality) = *w.rng.pick(&[
        (
            "OMG-01",
            "OMG-11",
            "10000002000102000000010000000000^胸部.Ｘ線単純撮影.立位正面^JJ1017",
            "CR",
        ),
        (
            "OMG-02",
            "OMG-12",
            "11000001000^検査.上部.−.−.上部通常内視鏡.−^LENDO",
            "ES",
        ),
        ("OMG-03", "OMG-13", "9A110^標準１２誘導心電図^JC10", "ECG"),
    ]);
    let (t, ts) = w.stamp(date, 10);
    let segs = vec![
        msh("OMG^O19^OMG_O19", &ts, w.counter),
        pid_seg(p),
        "PV1|0001|O|01^^^^^C".into(),
        format!("ORC|NW|{order}|||||||{date}1000|||110^医師^一郎^^^^^^^L^^^^^I|||||01^内科^99XY1"),
        "TQ1|1||||||||R^^HL70485".into(),
        format!("OBR|1|{order}||{item}"),
        "OBX|1|TX|MS3-34^臨床病名^JSHR||精査目的||||||F".into(),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, date, kind_o, &order, &t, "01", 1, &b);
    let (t, ts) = w.stamp(date, 14);
    let mut segs = if kind_r == "OMG-13" {
        vec![
            msh("ORU^R01^ORU_R01", &ts, w.counter),
            pid_seg(p),
            "PV1|0001|O".into(),
        ]
    } else {
        vec![
            msh("OMI^Z23^OMI_Z23", &ts, w.counter),
            pid_seg(p),
            "PV1|0001|O".into(),
            format!("ORC|SC|{order}|||CM||||{date}1000"),
        ]
    };
    segs.push(format!(
        "OBR|1|{order}||{item}|||{date}1100|||||||||||||||{}|||F",
        &t[..14]
    ));
    segs.push("OBX|1|TX|IMP^所見^JSHR||特記すべき異常所見なし||||||F".into());
    if kind_r != "OMG-13" {
        segs.push(format!(
            "IPC|A{order}|P{order}|1.2.392.200036.9999.{order}||{modality}^^DCM"
        ));
    }
    let b = w.encode(&segs);
    w.write(&p.pid, date, kind_r, &order, &t, "01", 1, &b);
}

fn admission(w: &mut Writer, p: &Patient, day: i64) {
    let date = ymd(day);
    let (t, ts) = w.stamp(&date, 10);
    let segs = vec![
        msh("ADT^A01^ADT_A01", &ts, w.counter),
        format!("EVN||{}", &t[..12]),
        pid_seg(p),
        format!("PV1|0001|I|32^302^1^^^N||||110^医師^一郎^^^^^^^L^^^^^I|||01|||||||110^医師^一郎^^^^^^^L^^^^^I|||||||||||||||||||||||||||{}", &t[..12]),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, &date, "ADT-22", "999999999999999", &t, "01", 1, &b);

    let order = w.order_no();
    let (t, ts) = w.stamp(&date, 12);
    let inj = *w.rng.pick(INJECTIONS);
    let add = *w.rng.pick(INJECTIONS);
    let segs = vec![
        msh("RDE^O11^RDE_O11", &ts, w.counter),
        pid_seg(p),
        "PV1|0001|I|32^302^^^^N".into(),
        format!("ORC|NW|{order}||{order}_01_001|||||{date}1200|||110^医師^一郎^^^^^^^L^^^^^I|||||01^内科^99XY1||||||||||||I^入院患者オーダ^HL70482"),
        "RXE||00^一般^99I02|500||ML^ミリリットル^MR9P|INJ^注射剤^MR9P".into(),
        format!("TQ1|1||||||{date}1300|{date}1800"),
        "RXR|IV^静脈内^HL70162||IVP^点滴ポンプ^HL70164".into(),
        format!("RXC|B|{}^{}^HOT9|1|{}^{}^MR9P", inj.0, inj.1, inj.2, inj.3),
        format!("RXC|A|{}^{}^HOT9|1|{}^{}^MR9P", add.0, add.1, add.2, add.3),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, &date, "OMP-02", &order, &t, "01", 1, &b);

    let (t, ts) = w.stamp(&date, 19);
    let segs = vec![
        msh("RAS^O17^RAS_O17", &ts, w.counter),
        pid_seg(p),
        "PV1|0001|I|32^302^^^^N".into(),
        format!("ORC|NW|{order}|||||||{date}1200"),
        format!("RXA|0|1|{date}1300|{date}1800|{}^{}^HOT9|1|{}^{}^MR9P|||200^看護^花子^^^^^^^L^^^^^I|32^302^1|||||||||CP||{}", inj.0, inj.1, inj.2, inj.3, &t[..14]),
        "RXR|IV^静脈内^HL70162".into(),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, &date, "OMP-12", &order, &t, "01", 1, &b);

    let diet = w.order_no();
    let (t, ts) = w.stamp(&date, 13);
    let segs = vec![
        msh("OMD^O03^OMD_O03", &ts, w.counter),
        pid_seg(p),
        "PV1|0001|I|32^302^^^^N".into(),
        format!("ORC|NW|{diet}|||||||{date}1300"),
        format!("TQ1|1||TID&１日３回&HL70335||||{date}18||R^ルーチン^HL70485"),
        "ODS|D||001^常食^99XY3|塩分控えめ".into(),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, &date, "OMD", &diet, &t, "01", 1, &b);

    let out = ymd(day + 2 + w.rng.below(10) as i64);
    let (t, ts) = w.stamp(&out, 11);
    let segs = vec![
        msh("ADT^A03^ADT_A03", &ts, w.counter),
        format!("EVN||{}", &t[..12]),
        pid_seg(p),
        format!("PV1|0001|I|32^302^1^^^N||||110^医師^一郎^^^^^^^L^^^^^I|||01|||||||||||||||||||||||||||01|||||||||{}", &t[..12]),
    ];
    let b = w.encode(&segs);
    w.write(&p.pid, &out, "ADT-52", "999999999999999", &t, "01", 1, &b);
}

fn document(w: &mut Writer, p: &Patient, date: &str) {
    let key = w.order_no();
    let (t, _) = w.stamp(date, 16);
    let folder = "^診療情報提供書^^MD0020730^診療情報提供書^JHSD";
    let content = format!("{}_{date}_MD0020730_{key}_{t}_01_1", p.pid);
    let dir = w
        .extended
        .join(&p.pid[..3])
        .join(&p.pid[3..6])
        .join(&p.pid)
        .join(date)
        .join(folder)
        .join(content);
    std::fs::create_dir_all(&dir).expect("create content folder");
    let mut pdf = b"%PDF-1.4\n% synthetic referral letter\n".to_vec();
    pdf.extend((0..200 + w.rng.below(2000)).map(|_| (w.rng.next_u64() & 0xFF) as u8));
    pdf.extend_from_slice(b"\n%%EOF\n");
    std::fs::write(dir.join("referral.pdf"), &pdf).expect("write document");
    w.out.files += 1;
    w.out.bytes += pdf.len() as u64;
    w.out.documents += 1;
}

/// Files that must be quarantined, one kind a call in turn.
pub(super) fn malformed(w: &mut Writer, k: u64) {
    let pid = format!("{:010}", 9_000_000 + k);
    let date = "20250501";
    let order = format!("{:015}", 900_000 + k);
    let time = format!("20250501120000{:03}", k % 1000);
    let (kind, bytes): (&str, Vec<u8>) = match k % 5 {
        // Shift_JIS bytes where ISO-2022-JP belongs.
        0 => (
            "OMP-01",
            encoding_rs::SHIFT_JIS
                .encode("MSH|^~\\&|HIS\rPID|0001||1||患者^太郎\r")
                .0
                .into_owned(),
        ),
        // Random bytes, as ransomware leaves them.
        1 => (
            "OMP-01",
            (0..512).map(|_| (w.rng.next_u64() & 0xFF) as u8).collect(),
        ),
        // No MSH.
        2 => ("OMP-01", b"PID|0001||1\rORC|NW|1\r".to_vec()),
        // Empty.
        3 => ("OMP-01", Vec::new()),
        // A message filed in the wrong data-type folder.
        _ => ("OMP-01", b"MSH|^~\\&|HIS\rPID|1\r".to_vec()),
    };
    let folder_kind = if k % 5 == 4 { "OML-11" } else { kind };
    let dir = w
        .standard
        .join(&pid[..3])
        .join(&pid[3..6])
        .join(&pid)
        .join(date)
        .join(folder_kind);
    std::fs::create_dir_all(&dir).expect("create folder");
    std::fs::write(
        dir.join(format!("{pid}_{date}_{kind}_{order}_{time}_01_1")),
        &bytes,
    )
    .expect("write");
    w.out.files += 1;
    w.out.bytes += bytes.len() as u64;
    w.out.malformed += 1;
}
