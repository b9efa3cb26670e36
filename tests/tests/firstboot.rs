//! First boot of an appliance image, without the image: `tsunagi-edge run` with a configuration
//! that names the hub and its root (as the image's does) but no identity. The LAN page is used as
//! the clinic's administrator would (curl as the browser), against a real hub that already holds
//! the facility's copy from the box being replaced. `just image-test` does the same inside qemu.

mod common;

use std::process::Command;

use common::browser::Browser;
use common::net::{free_port, wait_for, Appliance, Hub, FACILITY};

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn a_new_box_shows_its_enrolment_page_enrols_restores_the_facility_and_serves() {
    let hub = Hub::start(&[]);
    // The box being replaced: it mirrored the NHO fixture and synced it.
    let fixture = common::fixture();
    let old = Appliance::enrolled(&hub, &[&fixture], "");
    old.ingest(&[&fixture]);
    assert!(old.sync().status.success());
    let held = hub.copy_seq(FACILITY);
    assert!(held > 0);

    // The new box: the image's settings (hub, root, proxy on all of its LAN), no identity.
    let mut new = Appliance::new(&[], "");
    let (https, plain) = (free_port(), free_port());
    let mut toml = std::fs::read_to_string(&new.config).unwrap();
    toml.push_str(&format!("[hub]\nurl = \"https://{}\"\nfingerprint = {:?}\n[proxy]\nlisten = \"127.0.0.2:{https}\"\nplain_listen = \"127.0.0.2:{plain}\"\n", hub.addr, hub.fingerprint));
    std::fs::write(&new.config, toml).unwrap();
    let runtime = tempfile::tempdir().unwrap();
    new.start(&[("RUNTIME_DIRECTORY", runtime.path().to_str().unwrap())]);
    let page = format!("http://127.0.0.2:{plain}/");
    wait_for(30, "the enrolment page", || {
        std::net::TcpStream::connect(("127.0.0.2", plain)).is_ok()
    });

    let (body, code) = curl(&[&page]);
    assert_eq!(code, "200");
    assert!(
        body.contains("tsunagi 機器の登録") && body.contains(&hub.fingerprint),
        "{body}"
    );
    // The name the browser used is offered as the box's LAN name.
    assert!(body.contains("value=\"127.0.0.2\""), "{body}");
    // The page is styled by the stylesheet served beside it: its CSP allows no inline style, so
    // Chromium applies the portal's rules (the blue bar) only if the file is linked and served.
    assert!(!body.contains("<style"), "{body}");
    let (css, code) = curl(&[&format!("{page}static/portal.css")]);
    assert!(code == "200" && css.contains(".bar"), "{code} {css}");
    let mut b = Browser::start(common::browser::artefacts("firstboot"), "");
    b.goto(&page);
    assert_eq!(
        b.eval("getComputedStyle(document.querySelector('header.bar')).backgroundColor"),
        "rgb(31, 95, 168)"
    );
    assert_eq!(
        b.text("#title"),
        "tsunagi 機器の登録 / Enrol this appliance"
    );
    b.screenshot("01-enrolment-page");
    drop(b);
    let console = std::fs::read_to_string(runtime.path().join("console.issue")).unwrap();
    assert!(
        console.contains("not enrolled yet") && console.contains(&format!("http://\\4:{plain}/")),
        "{console}"
    );

    let enrol = format!("{page}enrol");
    // Another site's page cannot submit a token to the box.
    // Nor a sandboxed frame or a data: page (Origin: null), nor a page Chromium calls cross-site.
    let token = hub.token(FACILITY, "1d");
    for header in [
        "Origin: http://evil.example",
        "Origin: null",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Site: same-site",
    ] {
        let (body, code) = curl(&[
            "-H",
            header,
            "--data-urlencode",
            &format!("token={token}"),
            "--data-urlencode",
            "name=127.0.0.2",
            &enrol,
        ]);
        assert_eq!(code, "403", "{header}: {body}");
        assert!(body.contains("別のページからの送信"), "{header}: {body}");
    }
    assert!(!new.dir.path().join("identity/identity.pem").exists());
    // A wrong token: the hub's reason, and nothing written.
    let (body, code) = curl(&[
        "--data-urlencode",
        "token=not-a-token",
        "--data-urlencode",
        "name=127.0.0.2",
        &enrol,
    ]);
    assert_eq!(code, "400");
    assert!(body.contains("登録できませんでした"), "{body}");
    assert!(!new.dir.path().join("identity/identity.pem").exists());
    assert!(
        std::fs::read_to_string(runtime.path().join("console.issue"))
            .unwrap()
            .contains("last attempt")
    );
    // The hub's own address: refused by the hub, the page says what to use, the token is kept.
    let (body, code) = curl(&[
        "--data-urlencode",
        &format!("token={token}"),
        "--data-urlencode",
        "name=127.0.0.1",
        &enrol,
    ]);
    assert_eq!(code, "400");
    assert!(
        body.contains("登録できませんでした") && body.contains("private"),
        "{body}"
    );
    // No name: refused before anything is sent to the hub.
    let (_, code) = curl(&[
        "--data-urlencode",
        &format!("token={token}"),
        "--data-urlencode",
        "name=",
        &enrol,
    ]);
    assert_eq!(code, "400");

    let (body, code) = curl(&[
        "--data-urlencode",
        &format!("token={token}"),
        "--data-urlencode",
        "name=127.0.0.2",
        "--data-urlencode",
        "appliance=new-box",
        &enrol,
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("登録しました") && body.contains("https://127.0.0.2/"),
        "{body}"
    );

    // It restores the facility's copy, then serves the portal over its new LAN certificate.
    wait_for(60, "the LAN proxy after enrolment", || {
        std::net::TcpStream::connect(("127.0.0.2", https)).is_ok()
    });
    let log = std::fs::read_to_string(new.log_path()).unwrap();
    assert!(
        log.contains("restored the facility's copy") && log.contains(&format!("seq={held}")),
        "{log}"
    );
    assert_eq!(
        new.status()["hub"]["seq"].as_u64(),
        Some(held),
        "the new box starts where the hub's copy is"
    );
    let (_, code) = curl(&[
        "--cacert",
        hub.data().join("ca/root.crt").to_str().unwrap(),
        &format!("https://127.0.0.2:{https}/"),
    ]);
    assert!(code == "303" || code == "200", "{code}");
    assert!(
        std::fs::read_to_string(runtime.path().join("console.issue"))
            .unwrap()
            .contains("enrolled for facility")
    );
    new.kill();
}
