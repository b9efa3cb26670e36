//! The portal in Chromium from login to the audit CSV: two facilities and a core hospital, search,
//! the patient page, linking, consent, emergency access, the access history and the audit chain.

use super::{
    first_login, legacy_verifier, login, logout, reading, region, search, A, A_NAME, B, B_NAME, C,
    FIRST, NEW,
};
use crate::common::browser::{artefacts, Browser};

#[test]
fn the_portal_in_chromium_from_login_to_the_audit_csv() {
    let (hub, boxes) = region();
    let (a, b, c, op) = (
        boxes[0].1.proxy_url(),
        boxes[1].1.proxy_url(),
        boxes[2].1.proxy_url(),
        hub.operator_url(),
    );
    hub.user("office1", "office", "", FIRST);
    hub.user("dr-a", "doctor", A, FIRST);
    hub.user("adm-a", "facility-admin", A, FIRST);
    hub.user("adm-b", "facility-admin", B, FIRST);
    hub.user("dr-c", "doctor", C, FIRST);
    hub.user("ns-c", "nurse", C, FIRST);
    assert!(hub
        .cmd("facility")
        .args(["core", "--facility", C])
        .status()
        .unwrap()
        .success());
    let dir = artefacts("portal");
    let pin = [
        hub.spki_pin(),
        boxes[0].1.lan_spki_pin(),
        boxes[1].1.lan_spki_pin(),
        boxes[2].1.lan_spki_pin(),
    ]
    .join(",");
    let mut doc = Browser::start(dir.clone(), &pin);
    let mut office = Browser::start(dir.clone(), &pin);

    // A doctor of facility A: forced password change, then a search by name sees only A's patient.
    first_login(&mut doc, &a, "dr-a", Some("01-password-change"));
    doc.screenshot("02-home");

    // Each person has one entrance: A's doctor is refused at B's appliance and on the operators'
    // listener, the office is refused at an appliance, and the hub without a client certificate
    // serves no portal at all. A right password at the wrong entrance reads exactly like a wrong
    // one, so a stolen password is not confirmed there.
    for (base, user, password) in [
        (&b, "dr-a", NEW),
        (&op, "dr-a", NEW),
        (&a, "office1", FIRST),
        (&b, "dr-a", "Wrong-pass9"),
        (&b, "nobody", NEW),
    ] {
        login(&mut office, base, user, password);
        assert_eq!(
            office.text("#message"),
            "IDまたはパスワードが違います。",
            "{user} at {base}"
        );
    }
    office.goto(&format!("{}/login", hub.url()));
    assert_eq!(office.text("#error-title"), "アクセスできません");
    assert!(office.text("#error-message").contains("アプライアンス経由"));
    let refused: i64 = hub
        .region()
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'login' AND outcome = 'wrong-entrance'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 4, "the audit log still says what happened");
    let hits = search(&mut doc, &a, "name", "山田 太郎");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].contains("0000770001") && hits[0].contains(A_NAME));
    doc.screenshot("03-search");
    doc.click("#results a.patient-link");
    let rid_a = doc.text("#rid");
    assert!(rid_a.starts_with('R'), "{rid_a}");
    assert_eq!(doc.count("#holders tr.holder"), 1);
    // The patient header: who this is, before anything else.
    reading::header_names_the_shared_person(&mut doc, &rid_a, &[A_NAME]);
    doc.screenshot("03b-patient-header");

    // The tabs: each shows its rows, with the source facility on every row.
    let mut seen_rows = 0;
    for tab in [
        "visits",
        "allergy",
        "diagnosis",
        "prescription",
        "injection",
        "lab",
        "documents",
    ] {
        doc.click(&format!("#tab-{tab}"));
        assert!(doc
            .eval(&format!(
                "document.querySelector('#tab-{tab}').classList.contains('active')"
            ))
            .as_bool()
            .unwrap());
        let sources = doc.texts("#records td.source");
        assert!(sources.iter().all(|s| s == A_NAME), "{tab}: {sources:?}");
        seen_rows += sources.len();
        if tab == "prescription" {
            assert!(!sources.is_empty(), "the shared person has prescriptions");
            doc.screenshot("04-prescriptions");
        }
    }
    assert!(seen_rows > 5, "tabs showed {seen_rows} rows in all");
    reading::names_not_codes(&mut doc);

    // The calendar, on the month of the first visit, then that week.
    doc.click("#tab-visits");
    let first_visit = doc
        .texts("#records tr.record td:nth-child(2)")
        .last()
        .cloned()
        .unwrap();
    let day = first_visit[..10].replace('/', "-");
    doc.goto(&format!(
        "{a}/patient/{rid_a}/calendar?view=month&date={day}"
    ));
    let events = doc.texts("#calendar .event");
    assert!(
        events
            .iter()
            .any(|e| e.contains(A_NAME) && e.contains("受診")),
        "{events:?}"
    );
    reading::header_names_the_shared_person(&mut doc, &rid_a, &[A_NAME]);
    assert!(doc.text("#back-to-patient").contains("記録"));
    doc.screenshot("05-calendar-month");
    doc.click("#view-week");
    assert_eq!(doc.count("#calendar tbody td"), 7);
    assert!(doc
        .texts("#calendar .event")
        .iter()
        .any(|e| e.contains("受診")));
    doc.screenshot("06-calendar-week");

    // The office finds both facilities' entries of the person.
    first_login(&mut office, &op, "office1", None);
    office.goto(&format!(
        "{op}/search?name=%E3%83%A4%E3%83%9E%E3%83%80&birth_date=1958-04-12"
    ));
    let rows = office.eval("Array.from(document.querySelectorAll('#results tbody tr')).map(r => [r.textContent, r.querySelector('td.rid').textContent])");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let rid_b = rows
        .iter()
        .find(|r| r[0].as_str().unwrap().contains("0000880002"))
        .unwrap()[1]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rid_a, rid_b);

    reading::search_forgives(&mut office, &op, &mut doc, &a);

    // Refused: A's doctor editing the URL to B's patient.
    doc.goto(&format!("{a}/patient/{rid_b}"));
    assert_eq!(doc.text("#error-title"), "アクセスできません");
    doc.goto(&format!("{a}/patient/{rid_b}/calendar"));
    assert_eq!(doc.text("#error-title"), "アクセスできません");
    doc.goto(&format!("{a}/patient/{rid_b}/trend?code=3D010000001926101"));
    assert_eq!(doc.text("#error-title"), "アクセスできません");

    // The office confirms the proposed link: one regional ID for both.
    office.goto(&format!("{op}/links"));
    let proposals = office.texts("#proposals tr.proposal");
    assert_eq!(proposals.len(), 1, "{proposals:?}");
    assert!(proposals[0].contains("0000770001") && proposals[0].contains("0000880002"));
    office.click("#proposals tr.proposal button.confirm");
    assert!(office.text("#message").contains("紐付けました"));
    let rid = rid_a.clone().min(rid_b.clone());

    // Linked but not consented: A still sees only its own records.
    doc.goto(&format!("{a}/patient/{rid}?tab=prescription"));
    assert_eq!(doc.count("#holders tr.holder"), 1);
    assert!(doc.texts("#records td.source").iter().all(|s| s == A_NAME));

    // The office records B's consent: published to A, clinical scope.
    office.goto(&format!("{op}/search?patient_id=0000880002"));
    office.click("#results a.consent-link");
    let consent_b = office.path();
    office.eval("document.querySelector('#state-public').checked = true; document.querySelector('#scope-clinical').checked = true");
    office.fill("#facilities", A);
    office.fill("#consent_date", "2026-11-20");
    office.fill("#form_ref", "同意書-2026-0042");
    office.screenshot("07-consent");
    office.click("#save");
    assert!(
        office.text("#message").contains("1施設に通知"),
        "{}",
        office.text("#message")
    );
    assert!(office.text("#published").starts_with("20"));

    // A's doctor now sees B's data beside A's, each row with its source, and the notice in the inbox.
    doc.goto(&format!("{a}/patient/{rid}?tab=prescription"));
    assert_eq!(doc.count("#holders tr.holder"), 2);
    let sources = doc.texts("#records td.source");
    assert!(
        sources.iter().any(|s| s == B_NAME) && sources.iter().any(|s| s == A_NAME),
        "{sources:?}"
    );
    doc.screenshot("08-other-facility");
    doc.goto(&format!("{a}/inbox"));
    assert!(doc
        .texts("#messages .subject")
        .iter()
        .any(|s| s.contains(B_NAME)));

    // A lab trend across both facilities.
    doc.goto(&format!("{a}/patient/{rid}?tab=lab"));
    reading::out_of_range_values_are_marked(&mut doc);
    let links = doc.eval("Array.from(document.querySelectorAll('#records a.trend-link')).map(a => a.getAttribute('href'))");
    let mut by_test: std::collections::BTreeMap<String, u64> = Default::default();
    for l in links.as_array().unwrap() {
        *by_test.entry(l.as_str().unwrap().to_string()).or_default() += 1;
    }
    let (href, n) = by_test
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("lab rows with trend links");
    doc.goto(&format!("{a}{href}"));
    assert_eq!(
        doc.count("#chart circle.dot"),
        n,
        "one point per result of {href}"
    );
    assert_eq!(doc.count("#values tbody tr"), n);
    assert!(!doc.text("#test-name").is_empty());
    reading::trend_has_its_band_and_even_ticks(&mut doc);
    // Across both facilities now: the header lists each, with why it is visible.
    reading::header_names_the_shared_person(&mut doc, &rid, &[A_NAME, B_NAME]);
    let holders = doc.texts("#ph-holders li");
    assert!(
        holders
            .iter()
            .any(|h| h.contains(B_NAME) && h.contains("0000880002") && h.contains("同意")),
        "{holders:?}"
    );
    doc.screenshot("09-trend");

    // Refused: A's administrator posting B's consent form by editing the form's target, and a
    // form without its CSRF token.
    logout(&mut office);
    first_login(&mut office, &a, "adm-a", None);
    office.goto(&format!("{a}/patient/{rid}"));
    office.click("#holders a.consent-link");
    let consent_a = office.path();
    assert_ne!(consent_a, consent_b);
    office.navigating(&format!("(() => {{ const f = document.querySelector('#consent-form'); f.action = '{consent_b}'; document.querySelector('#state-private').checked = true; document.querySelector('#consent_date').value = '2026-11-21'; document.querySelector('#form_ref').value = 'x'; f.submit(); }})()"));
    assert_eq!(office.text("#error-title"), "アクセスできません");
    office.goto(&format!("{a}{consent_a}"));
    office.navigating("(() => { const f = document.querySelector('#consent-form'); f.querySelector('input[name=csrf]').remove(); f.submit(); })()");
    assert_eq!(office.text("#error-title"), "アクセスできません");
    assert!(office.text("#error-message").contains("不正な送信"));
    // B's consent is untouched by either attempt.
    let state: String = hub.region().query_row("SELECT c.state FROM consent c JOIN patient p ON p.id = c.patient WHERE p.facility = ?1", [B], |r| r.get(0)).unwrap();
    assert_eq!(state, "public");

    // Search input that tries SQL or HTML comes back as plain text.
    for evil in [
        "<script>alert(1)</script>",
        "' OR '1'='1' --",
        "%",
        "\"><img src=x onerror=alert(1)>",
    ] {
        let hits = search(&mut office, &a, "name", evil);
        assert!(hits.is_empty(), "{evil}: {hits:?}");
        assert_eq!(
            office
                .eval("document.querySelector('#name').value")
                .as_str()
                .unwrap(),
            evil
        );
        // Only the portal's own script file, never one the input made.
        assert_eq!(office.count("script:not([src='/static/portal.js'])"), 0);
        assert_eq!(office.count("img"), 0);
    }
    let hits = search(&mut office, &a, "patient_id", "' OR 1=1 --");
    assert!(hits.is_empty());

    // B's administrator sees who viewed B's records.
    logout(&mut office);
    first_login(&mut office, &b, "adm-b", None);
    office.goto(&format!("{b}/history?view=ours"));
    let ours = office.texts("#history tr.event");
    assert!(
        ours.iter()
            .any(|r| r.contains("dr-a") && r.contains("閲覧") && r.contains(&rid)),
        "{ours:?}"
    );
    office.screenshot("10-history-ours");
    office.goto(&format!("{b}/history?view=staff"));
    assert!(office
        .texts("#history tr.event")
        .iter()
        .any(|r| r.contains("adm-b") && r.contains("ログイン")));
    // A doctor sees only their own history, not who saw the facility's records.
    doc.goto(&format!("{a}/history?view=ours"));
    assert_eq!(doc.text("#error-title"), "アクセスできません");

    // A's doctor downloads the month's access history as CSV and finds the views of B's records.
    doc.goto(&format!("{a}/history"));
    let csv = doc.download("#csv-month");
    let text = std::fs::read_to_string(&csv).unwrap();
    let text = text
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark for Excel");
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), hub::portal::CSV_HEADER);
    let rows: Vec<Vec<String>> = lines
        .map(|l| {
            l.split("\",\"")
                .map(|c| c.trim_matches('"').to_string())
                .collect()
        })
        .collect();
    assert!(
        rows.iter()
            .all(|r| r.len() == 10 && r[1] == "dr-a" && r[2] == A),
        "a doctor's history is their own"
    );
    let views_of_b: Vec<_> = rows
        .iter()
        .filter(|r| r[1] == "dr-a" && r[4] == "閲覧" && r[5] == rid && r[6].contains(B))
        .collect();
    assert!(
        views_of_b.len() >= 2,
        "views of B's records: {views_of_b:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[4] == "閲覧" && r[9] == "denied" && r[5] == rid_b),
        "the refused URL edit is in the log"
    );
    assert!(rows.iter().any(|r| r[4] == "検索"));
    // And by patient: every row is that patient.
    doc.goto(&format!("{a}/history?view=mine&patient={rid}"));
    let csv = doc.download("#csv-patient");
    let text = std::fs::read_to_string(&csv).unwrap();
    let by_patient: Vec<&str> = text.lines().skip(1).collect();
    assert!(
        !by_patient.is_empty() && by_patient.iter().all(|l| l.contains(&format!("\"{rid}\""))),
        "{by_patient:?}"
    );

    // Emergency access by a core hospital's doctor: time-boxed, bannered, reported to A and B.
    let mut er = Browser::start(dir.clone(), &pin);
    first_login(&mut er, &c, "dr-c", None);
    er.goto(&format!("{c}/patient/{rid}"));
    assert_eq!(
        er.text("#error-title"),
        "アクセスできません",
        "no consent, no emergency yet"
    );
    er.goto(&format!("{c}/emergency"));
    er.fill("#regional_id", &rid);
    er.fill("#reason", "意識障害で救急搬送、服薬歴の確認");
    er.click("#start");
    assert!(er.text("#emergency").contains("緊急閲覧中"));
    assert_eq!(er.count("#holders tr.holder"), 2);
    er.screenshot("11-emergency");
    office.goto(&format!("{b}/inbox"));
    assert!(office
        .texts("#messages .subject")
        .iter()
        .any(|s| s.contains("緊急閲覧")));
    // The access is the doctor's own: a nurse of the same hospital, meanwhile, sees nothing.
    let mut ns = Browser::start(dir.clone(), &pin);
    first_login(&mut ns, &c, "ns-c", None);
    ns.goto(&format!("{c}/patient/{rid}"));
    assert_eq!(
        ns.text("#error-title"),
        "アクセスできません",
        "a colleague does not ride on the doctor's emergency access"
    );
    ns.screenshot("12-emergency-colleague-refused");
    drop(ns);
    // Ended early by the doctor: the record closes at once, and the stop is audited.
    er.click("#emergency-end");
    assert!(er.text("#done").contains("緊急閲覧を終了"));
    assert_eq!(
        er.eval("getComputedStyle(document.querySelector('#done')).backgroundColor"),
        "rgb(231, 246, 236)",
        "success in green, not the notices' yellow"
    );
    er.goto(&format!("{c}/patient/{rid}"));
    assert_eq!(er.text("#error-title"), "アクセスできません");
    let stops: i64 = hub.region().query_row("SELECT count(*) FROM audit WHERE action = 'emergency-stop' AND login = 'dr-c' AND patient = ?1", [&rid], |r| r.get(0)).unwrap();
    assert_eq!(stops, 1);

    // The patient then refuses at B (非公開), recorded by B's administrator. An emergency honours
    // the refusal; only a doctor who states that the patient's life is at stake, on a second step
    // that shows the refusal, opens B's records, and B and the office are told at once.
    office.goto(&format!("{b}/patient/{rid}"));
    office.click("#holders a.consent-link");
    office.eval("document.querySelector('#state-private').checked = true");
    office.fill("#consent_date", "2026-11-25");
    office.fill("#form_ref", "拒否-2026-0007");
    office.click("#save");
    let state: String = hub.region().query_row("SELECT c.state FROM consent c JOIN patient p ON p.id = c.patient WHERE p.facility = ?1", [B], |r| r.get(0)).unwrap();
    assert_eq!(state, "private");
    let start = |br: &mut Browser, reason: &str| {
        br.goto(&format!("{c}/emergency"));
        br.fill("#regional_id", &rid);
        br.fill("#reason", reason);
        br.click("#start");
    };
    // A nurse is told there is a refusal, but not where, and cannot open it even by forging the form.
    let mut ns = Browser::start(dir.clone(), &pin);
    // ns-c's verifier is put back in the format before PHC strings: the login still succeeds,
    // and stores a PHC string of the same password in its place.
    let (pw_at, prev): (i64, Option<String>) = hub
        .region()
        .query_row(
            "SELECT pw_changed_at, pw_prev FROM user WHERE login = 'ns-c'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    hub.region()
        .execute(
            "UPDATE user SET pw = ?1 WHERE login = 'ns-c'",
            [legacy_verifier(NEW)],
        )
        .unwrap();
    login(&mut ns, &c, "ns-c", NEW);
    let (pw, pw_at2, prev2): (String, i64, Option<String>) = hub
        .region()
        .query_row(
            "SELECT pw, pw_changed_at, pw_prev FROM user WHERE login = 'ns-c'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(pw.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{pw}");
    assert!(view::password::verify(&pw, NEW));
    assert_eq!(
        (pw_at2, prev2),
        (pw_at, prev),
        "a rehash is not a password change"
    );
    start(&mut ns, "意識障害で搬送");
    assert!(ns.text("#refusal").contains("非公開"));
    assert_eq!((ns.count("#refused li"), ns.count("#life-form")), (0, 0));
    ns.navigating("(() => { const f = document.querySelector('#without-form'); f.querySelector('input[name=open]').value = 'life'; const l = document.createElement('input'); l.name = 'life'; l.value = 'yes'; f.appendChild(l); f.submit(); })()");
    assert_eq!(ns.text("#error-title"), "アクセスできません");
    drop(ns);
    start(&mut er, "心肺停止で搬送、既往歴と服薬の確認");
    assert_eq!(er.texts("#refused li"), vec![B_NAME.to_string()]);
    er.screenshot("13-emergency-refusal");
    er.click("#start-life");
    assert!(
        er.text("#message").contains("チェック"),
        "the statement must be ticked: {}",
        er.text("#message")
    );
    assert_eq!(er.count("#holders"), 0, "nothing opened without it");
    er.click("#start-without");
    assert_eq!(
        er.count("#holders tr.holder"),
        1,
        "the refusal holds in an ordinary emergency"
    );
    assert!(er.texts("#records td.source").iter().all(|s| s == A_NAME));
    er.click("#emergency-end");
    start(&mut er, "心肺停止で搬送、既往歴と服薬の確認");
    er.eval("document.querySelector('#life').checked = true");
    er.click("#start-life");
    assert_eq!(er.count("#holders tr.holder"), 2);
    assert!(
        er.texts(".notice")
            .iter()
            .any(|n| n.contains(B_NAME) && n.contains("非公開")),
        "{:?}",
        er.texts(".notice")
    );
    er.screenshot("14-emergency-life-at-stake");
    office.goto(&format!("{b}/inbox"));
    assert!(office
        .texts("#messages .subject")
        .iter()
        .any(|s| s.contains("非公開") && s.contains("生命の危険")));
    logout(&mut office);
    login(&mut office, &op, "office1", NEW);
    office.goto(&format!("{op}/inbox"));
    let told = office.texts("#messages tr.message");
    assert!(
        told.iter().any(|m| m.contains("生命の危険")
            && m.contains("dr-c")
            && m.contains(&format!("{B_NAME}（{B}）"))),
        "the office is told which facility, by name: {told:?}"
    );
    office.screenshot("15-office-inbox");
    let detail: String = hub.region().query_row("SELECT detail FROM audit WHERE action = 'emergency-start' AND login = 'dr-c' ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).unwrap();
    assert!(
        detail.contains("life at stake") && detail.contains(B),
        "{detail}"
    );
    let view: String = hub.region().query_row("SELECT reason FROM audit WHERE action = 'view' AND login = 'dr-c' ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).unwrap();
    assert!(view.contains("life at stake"), "{view}");
    er.click("#emergency-end");

    // A disabled user is out at the next click and cannot log in again.
    assert!(hub
        .cmd("user")
        .args(["disable", "--login", "dr-a"])
        .status()
        .unwrap()
        .success());
    doc.goto(&format!("{a}/search"));
    assert_eq!(doc.path(), "/login");
    assert!(doc.text("#message").contains("無効"));
    login(&mut doc, &a, "dr-a", NEW);
    assert!(doc.text("#message").contains("無効"));
    // Only the person, who knows the password, learns the ID is disabled; a guess reads like
    // a guess at any ID.
    login(&mut doc, &a, "dr-a", "Guess-pass7");
    assert_eq!(doc.text("#message"), "IDまたはパスワードが違います。");

    // The hub logged what happened, and no patient's name.
    let log = std::fs::read_to_string(hub.log_path()).unwrap();
    assert!(
        log.contains("logged in") && log.contains("emergency access started"),
        "{log}"
    );
    for name in ["山田", "ヤマダ", "ﾔﾏﾀﾞ", "太郎", "タロウ"] {
        assert!(!log.contains(name), "the hub's log names a patient: {name}");
    }

    // The audit chain verifies, then a row edited behind the hub's back is found.
    let out = hub.cmd("audit").arg("verify").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("head: row "),
        "{said}"
    );
    let db = hub.region();
    db.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    let seq: i64 = db
        .query_row(
            "SELECT min(seq) FROM audit WHERE action = 'view' AND login = 'dr-a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE audit SET login = 'someone-else' WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    let out = hub.cmd("audit").arg("verify").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("row {seq}")), "{said}");
}
