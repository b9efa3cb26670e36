//! The documents tab through the proxy: a PDF offered to open in the browser's own viewer, under
//! a policy that lets nothing else run, and every other file only downloaded whatever the link
//! asks; the size in words.

use crate::common::browser::Browser;
use crate::common::net::Appliance;

/// On the documents tab open in `b` (at the appliance `base`), with `links` the download links and
/// `wanted` the letter's bytes.
pub fn the_letter_opens_in_the_viewer_and_nothing_else_inline(
    b: &mut Browser,
    base: &str,
    edge: &Appliance,
    links: &serde_json::Value,
    wanted: &[u8],
) {
    // Names, not codes: the letter's size in KB, not bytes; a PDF is offered to open in the
    // browser's viewer (inline, under a policy that lets nothing else run) besides the download;
    // asking for any other file inline still downloads it.
    let rows = b.texts("#records tr.record");
    let letter_row = rows
        .iter()
        .find(|r| r.contains("referral.pdf"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    let kb = if wanted.len() < 1024 {
        format!("（{} B）", wanted.len())
    } else {
        format!("（{:.1} KB）", wanted.len() as f64 / 1024.0)
    };
    assert!(
        letter_row.contains(&kb) && !letter_row.contains("bytes"),
        "{letter_row} {kb}"
    );
    let open = b.eval("Array.from(document.querySelectorAll('#records a.open-link')).map(a => a.getAttribute('href'))");
    let open = open.as_array().unwrap();
    assert!(!open.is_empty(), "the letter can be opened");
    // The pages allow no fetch: the headers are read with curl as the same terminal (its
    // cookies), pinned to the appliance's LAN key as the browser is.
    let lan_pin = edge.lan_spki_pin();
    let head = |b: &mut Browser, href: &str| {
        let url = format!("{base}{href}");
        let cookies = b.cookie_header(&url);
        let out = std::process::Command::new("curl")
            .args(["-s", "-k", "-o", "/dev/null", "-D", "-", "--max-time", "30"])
            .arg("--pinnedpubkey")
            .arg(format!("sha256//{lan_pin}"))
            .arg("-H")
            .arg(format!("Cookie: {cookies}"))
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        let header = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let status = text.split_whitespace().nth(1).unwrap_or("").to_string();
        [
            status,
            header("content-type"),
            header("content-disposition"),
            header("content-security-policy"),
        ]
        .join("|")
    };
    let shown = head(b, open[0].as_str().unwrap());
    assert!(
        shown.starts_with("200|application/pdf|inline;")
            && shown.contains("default-src 'none'")
            && !shown.contains("script-src"),
        "{shown}"
    );
    // Chromium shows it in its viewer under that policy.
    let back = b.url();
    b.goto(&format!("{base}{}", open[0].as_str().unwrap()));
    assert_eq!(b.eval("document.contentType"), "application/pdf");
    b.screenshot("02b-letter-opened");
    b.goto(&back);
    for href in links.as_array().unwrap() {
        let href = href.as_str().unwrap();
        let forced = head(b, &format!("{href}?view=inline"));
        assert!(
            forced.contains("|attachment;") || forced.starts_with("200|application/pdf|inline;"),
            "only a PDF is ever shown inline: {forced}"
        );
    }
}
