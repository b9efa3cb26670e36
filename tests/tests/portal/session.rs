//! Portal sessions: the idle timeout, forms refused without their tokens, and the lock after
//! wrong passwords lifted by a reset.

use super::{first_login, login, FIRST, NEW};
use crate::common::browser::{artefacts, Browser};
use crate::common::net::Hub;

#[test]
fn idle_sessions_end_and_forms_need_their_tokens() {
    let hub = Hub::start(&["--session-idle", "2s"]);
    hub.user("office1", "office", "", FIRST);
    let op = hub.operator_url();
    let mut b = Browser::start(artefacts("portal-session"), &hub.spki_pin());
    first_login(&mut b, &op, "office1", None);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    b.goto(&format!("{op}/history?view=ours"));
    assert_eq!(b.path(), "/login");
    assert!(
        b.text("#message").contains("一定時間"),
        "{}",
        b.text("#message")
    );
    b.screenshot("expired");
    // The login returns to the page asked for, with its query.
    login(&mut b, &op, "office1", NEW);
    assert_eq!(b.path(), "/history");
    assert_eq!(b.eval("location.search"), "?view=ours");
    b.goto(&format!("{op}/search"));
    // Left alone, the page blanks itself when the session ends (the portal's own script, allowed
    // by the CSP as a file of its own), then shows the login.
    crate::common::net::wait_for(15, "the page to blank itself", || {
        b.eval("document.querySelector('#search-form') === null && (document.querySelector('#session-ended') !== null || location.pathname === '/login')") == serde_json::json!(true)
    });
    crate::common::net::wait_for(15, "the login after the blank", || {
        b.eval("location.pathname === '/login' && document.readyState === 'complete'")
            == serde_json::json!(true)
    });
    b.screenshot("blanked-then-login");
    // The blank asked for nothing that renews the session: it has ended at the hub.
    b.goto(&format!("{op}/search"));
    assert_eq!(b.path(), "/login");
    assert!(
        b.text("#message").contains("一定時間"),
        "{}",
        b.text("#message")
    );
    login(&mut b, &op, "office1", NEW);
    // A page the portal does not have says so in Japanese, with the way home.
    b.goto(&format!("{op}/no-such-page"));
    assert_eq!(b.text("#error-title"), "見つかりません");
    assert!(b
        .text("#error-message")
        .contains("お探しのページはありません"));
    // No notice comes from the URL: a link cannot put words on the login page.
    b.goto(&format!("{op}/"));
    b.click("#logout");
    assert_eq!(b.text("#message"), "ログアウトしました。");
    b.goto(&format!("{op}/login?m=disabled"));
    assert_eq!(b.count("#message"), 0, "the URL's m= is not a notice");
    // Nor can a remembered page send the login elsewhere: only the portal's own paths.
    b.goto(&format!("{op}//evil.example/"));
    login(&mut b, &op, "office1", NEW);
    assert_eq!(b.path(), "/");
    let host = b.eval("location.host");
    assert!(op.contains(host.as_str().unwrap()), "{host}");
    b.click("#logout");
    // A login posted with a forged token is refused, whatever the password.
    b.goto(&format!("{op}/login"));
    b.fill("#login", "office1");
    b.fill("#password", NEW);
    b.fill("input[name=csrf]", "forged");
    b.click("#submit");
    assert_eq!(b.text("#error-title"), "アクセスできません");
    // Wrong passwords slow down and then lock the account, and the log shows it.
    for _ in 0..hub::account::LOCK_AFTER {
        login(&mut b, &op, "office1", "wrong-pass9");
    }
    assert!(
        b.text("#message").contains("ロック"),
        "{}",
        b.text("#message")
    );
    login(&mut b, &op, "office1", NEW);
    assert!(
        b.text("#message").contains("ロック"),
        "the right password is refused while locked"
    );
    let locked: i64 = hub
        .region()
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'login' AND outcome = 'locked'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(locked >= 2);
    // The office lifts the lock with a reset; the new temporary password must be changed.
    let out = hub
        .cmd("user")
        .args(["reset", "--login", "office1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let temp = said
        .split("temporary password: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    login(&mut b, &op, "office1", &temp);
    assert_eq!(b.path(), "/password");
}
