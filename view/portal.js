// tsunagi portal: when the session's idle time has run out (the hub ends it then), the page
// blanks itself, so a patient's record is not left on an unattended screen, and asks the hub for
// the same page again, which answers with the login (and returns there after it). The only script
// of the portal; the pages work without it.
(function () {
  "use strict";
  var idle = parseInt(document.body.getAttribute("data-idle") || "0", 10);
  if (!(idle > 0)) {
    return;
  }
  window.setTimeout(function () {
    var main = document.createElement("main");
    var h = document.createElement("h1");
    h.id = "session-ended";
    h.textContent = "一定時間操作がなかったため、表示を消しました";
    var p = document.createElement("p");
    p.textContent = "もう一度ログインしてください。";
    main.appendChild(h);
    main.appendChild(p);
    document.title = "ログアウトしました — tsunagi 地域医療連携";
    document.body.replaceChildren(main);
    window.setTimeout(function () {
      window.location.replace(window.location.pathname + window.location.search);
    }, 1000);
  }, idle * 1000 + 500);
})();
