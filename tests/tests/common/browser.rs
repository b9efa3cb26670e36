//! A real headless Chromium (Debian's package), driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages separated by NUL on file descriptors 3 and 4), so the
//! portal tests click through pages as a person would, with no driver to install.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    to: ChildStdin,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    pub profile: tempfile::TempDir,
    pub downloads: PathBuf,
    /// Where screenshots go: the test's artefacts folder.
    pub artefacts: PathBuf,
}

/// The folder for screenshots and other test artefacts: `target/test-artefacts/<name>`.
/// Logs in on the portal's form at `base`.
pub fn login(b: &mut Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("#login", user);
    b.fill("#password", password);
    b.click("#submit");
}

/// The first login with the office's password `first`, and the forced change to `new`.
pub fn first_login(b: &mut Browser, base: &str, user: &str, first: &str, new: &str) {
    login(b, base, user, first);
    assert_eq!(b.path(), "/password");
    b.fill("#current", first);
    b.fill("#new", new);
    b.fill("#again", new);
    b.click("#submit");
    assert_eq!(b.path(), "/", "home after the change");
}

pub fn artefacts(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artefacts")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts Chromium with a fresh profile. It trusts no certificate it cannot verify except by
    /// `--ignore-certificate-errors-spki-list`: exactly these server keys (comma-separated).
    pub fn start(artefacts: PathBuf, spki_sha256_b64: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let stderr = std::fs::File::create(artefacts.join("chromium.log")).unwrap();
        // The shell moves our pipes to descriptors 3 and 4, where Chromium expects them.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec 3<&0 4>&1 0</dev/null 1>&2; exec chromium \"$@\"")
            .arg("sh")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--lang=ja",
                "--window-size=1280,1000",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--ignore-certificate-errors-spki-list={spki_sha256_b64}"
            ))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start chromium (install it with ./scripts/setup.sh)");
        let to = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next: 0,
            session: String::new(),
            profile,
            downloads,
            artefacts,
        };
        let target = b.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": id, "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        let dl = b.downloads.display().to_string();
        b.call_browser(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": dl }),
        );
        b.call("Page.enable", json!({}));
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        match self.send_result(method, params, session) {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }

    /// Sends a command and returns its result or the error Chromium answered.
    fn send_result(
        &mut self,
        method: &str,
        params: Value,
        session: Option<String>,
    ) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.to.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    return Err(e.clone());
                }
                return Ok(v["result"].clone());
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.send(method, params, Some(s))
    }

    /// Sends these headers with every request from now on, as a forging terminal would.
    pub fn extra_headers(&mut self, headers: &[(&str, &str)]) {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.call("Network.enable", json!({}));
        self.call("Network.setExtraHTTPHeaders", json!({ "headers": map }));
    }

    /// The `Cookie` header the browser would send to `url`, for a tool that asks the same server
    /// as the same terminal (the portal's pages allow no `fetch`).
    pub fn cookie_header(&mut self, url: &str) -> String {
        let r = self.call("Network.getCookies", json!({ "urls": [url] }));
        r["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["name"].as_str().unwrap(),
                    c["value"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Evaluates JavaScript in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("script failed: {js}\n{e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates JavaScript that may race a navigation: None when the page went away under it
    /// (Chromium answers "Inspected target navigated or closed"), to be asked again.
    fn eval_during_navigation(&mut self, js: &str) -> Option<Value> {
        let s = self.session.clone();
        match self.send_result(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            Some(s),
        ) {
            Ok(r) if r.get("exceptionDetails").is_none() => Some(r["result"]["value"].clone()),
            Ok(r) => panic!("script failed: {js}\n{}", r["exceptionDetails"]),
            Err(e)
                if e.to_string().contains("navigated or closed")
                    || e.to_string().contains("context") =>
            {
                None
            }
            Err(e) => panic!("Runtime.evaluate failed: {e}"),
        }
    }

    /// Marks the current document, runs `js` (which should navigate), and waits until a new
    /// document has loaded.
    pub fn navigating(&mut self, js: &str) {
        self.eval("window.__tsunagi_old = true");
        let _ = self.eval_during_navigation(js);
        let start = Instant::now();
        loop {
            let v = self.eval_during_navigation(
                "(window.__tsunagi_old === undefined) && document.readyState === 'complete'",
            );
            if v == Some(json!(true)) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "page did not load after: {js}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn goto(&mut self, url: &str) {
        let u = serde_json::to_string(url).unwrap();
        self.navigating(&format!("location.href = {u}"));
    }

    /// Sets a form field's value.
    pub fn fill(&mut self, selector: &str, value: &str) {
        let (s, v) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        let found = self.eval(&format!("(() => {{ const e = document.querySelector({s}); if (!e) return false; e.value = {v}; return true; }})()"));
        assert_eq!(found, json!(true), "no field {selector} on {}", self.url());
    }

    /// Clicks an element that leads to a new page.
    pub fn click(&mut self, selector: &str) {
        let s = serde_json::to_string(selector).unwrap();
        assert_eq!(
            self.eval(&format!("!!document.querySelector({s})")),
            json!(true),
            "nothing to click at {selector} on {}",
            self.url()
        );
        self.navigating(&format!("document.querySelector({s}).click()"));
    }

    pub fn text(&mut self, selector: &str) -> String {
        let s = serde_json::to_string(selector).unwrap();
        self.eval(&format!(
            "(document.querySelector({s}) || {{innerText: ''}}).innerText"
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    pub fn count(&mut self, selector: &str) -> u64 {
        let s = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelectorAll({s}).length"))
            .as_u64()
            .unwrap()
    }

    /// The inner text of every element matching `selector`.
    pub fn texts(&mut self, selector: &str) -> Vec<String> {
        let s = serde_json::to_string(selector).unwrap();
        let v = self.eval(&format!(
            "Array.from(document.querySelectorAll({s})).map(e => e.innerText)"
        ));
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn url(&mut self) -> String {
        self.eval("location.href")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn path(&mut self) -> String {
        self.eval("location.pathname")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Saves a PNG of the page into the artefacts folder.
    pub fn screenshot(&mut self, name: &str) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64_decode(r["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(self.artefacts.join(format!("{name}.png")), png).unwrap();
    }

    /// Clicks a download link and waits for the finished file; returns its path.
    pub fn download(&mut self, selector: &str) -> PathBuf {
        self.download_nth(selector, 0)
    }

    /// Clicks the `n`th element matching `selector` (from 0) and waits for the file it downloads.
    pub fn download_nth(&mut self, selector: &str, n: usize) -> PathBuf {
        let before: Vec<_> = std::fs::read_dir(&self.downloads)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let s = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelectorAll({s})[{n}].click()"));
        let start = Instant::now();
        // Chromium reserves the final name with an empty file at the start, writes to a
        // `.crdownload` beside it and renames that over it at the end: a download is done when
        // no `.crdownload` is left and the new file's size held still for one more look.
        let mut last: Option<(PathBuf, u64)> = None;
        loop {
            let all: Vec<PathBuf> = std::fs::read_dir(&self.downloads)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            let pending = all
                .iter()
                .any(|p| p.extension().is_some_and(|x| x == "crdownload"));
            let done = all
                .into_iter()
                .find(|p| !before.contains(p) && p.extension().is_none_or(|x| x != "crdownload"));
            if let (false, Some(p)) = (pending, done) {
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                if last.as_ref() == Some(&(p.clone(), size)) {
                    return p;
                }
                last = Some((p, size));
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no download from {selector}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, c| (acc << 6) | val(*c));
        let n = n << (6 * (4 - chunk.len() as u32));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.max(4 - chunk.len())]);
    }
    out
}
