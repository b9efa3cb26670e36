// tsunagi portal: when the session's idle time has run out (the hub ends it then), the page
// blanks itself, so a patient's record is not left on an unattended screen, and opens the login.
// It asks for nothing that would renew the session: the login page needs none. The deadline is a
// clock time, checked again when a sleeping or hidden tab wakes. The only script of the portal;
// the pages work without it.
(function () {
  "use strict";
  var idle = parseInt(document.body.getAttribute("data-idle") || "0", 10);
  if (!(idle > 0)) {
    return;
  }
  var deadline = Date.now() + idle * 1000 + 500;
  var done = false;
  function blank() {
    if (done) {
      return;
    }
    done = true;
    var main = document.createElement("main");
    var h = document.createElement("h1");
    h.id = "session-ended";
    h.textContent = "一定時間操作がなかったため、表示を消しました";
    var p = document.createElement("p");
    var a = document.createElement("a");
    a.href = "/login";
    a.textContent = "もう一度ログインしてください";
    p.appendChild(a);
    main.appendChild(h);
    main.appendChild(p);
    document.title = "ログアウトしました — tsunagi 地域医療連携";
    document.body.replaceChildren(main);
    window.setTimeout(function () {
      window.location.replace(window.location.origin + "/login");
    }, 1000);
  }
  function check() {
    if (Date.now() >= deadline) {
      blank();
    } else {
      window.setTimeout(check, Math.min(deadline - Date.now(), 1000));
    }
  }
  document.addEventListener("visibilitychange", check);
  window.addEventListener("focus", check);
  check();
})();
