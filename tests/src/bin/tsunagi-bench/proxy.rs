//! The LAN proxy's cost: the same portal pages through the appliance's proxy (HTTPS from the
//! browser, then mutual TLS to the hub on kept-alive connections) and straight from the hub (its
//! operators' listener, the only way in without an appliance), measured with `wrk` in the same run.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request};

use super::sync::{run, Hub};

const PASSWORD: &str = "Bench-pass1";
const FACILITY: &str = "3712345678";

pub struct Row {
    pub page: String,
    pub way: &'static str,
    pub connections: u32,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rps: f64,
}

/// A large document downloaded through the proxy: its size, and the proxy's memory.
pub struct Stream {
    pub bytes: u64,
    pub seconds: f64,
    pub rss_before_mb: f64,
    pub peak_after_mb: f64,
    /// The peak after downloading it three more times.
    pub peak_after_more_mb: f64,
    /// The hub's resident memory before and its peak after the four downloads.
    pub hub_before_mb: f64,
    pub hub_peak_mb: f64,
}

pub struct Report {
    pub rows: Vec<Row>,
    pub stream: Stream,
    pub runs: usize,
    pub seconds: u32,
}

struct Edge(Child);

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Trusts any server: the benchmark measures, it does not authenticate (wrk does not either).
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer))
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Downloads `path` with a session, reading the body as it arrives; returns the bytes read.
async fn download(addr: &str, path: &str, cookie: &str) -> anyhow::Result<u64> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector()?
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr)
        .header(header::COOKIE, cookie)
        .body(Full::new(Bytes::new()))?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "download of {path} answered {}",
        resp.status()
    );
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// The process's resident set and its peak, in MB (VmRSS, VmHWM).
pub fn rss(pid: u32) -> anyhow::Result<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
}

/// One HTTPS request: the status, the Set-Cookie values and the body.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    cookie: &str,
    form: Option<String>,
) -> anyhow::Result<(u16, Vec<String>, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector()?
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr)
        .header(header::COOKIE, cookie);
    if form.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(form.unwrap_or_default())))?)
        .await?;
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let body = String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
    Ok((status, cookies, body))
}

/// Logs in through the real forms and returns the Cookie header a browser would then send.
async fn login(addr: &str, login: &str) -> anyhow::Result<String> {
    let (_, cookies, body) = request(addr, "GET", "/login", "", None).await?;
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("no login token")?
        .to_string();
    let jar = cookies.join("; ");
    let (status, set, _) = request(
        addr,
        "POST",
        "/login",
        &jar,
        Some(format!("csrf={csrf}&login={login}&password={PASSWORD}")),
    )
    .await?;
    let session = set
        .iter()
        .find(|c| c.starts_with("__Host-tsunagi="))
        .with_context(|| format!("login of {login} at {addr} failed ({status})"))?;
    let terminal: Vec<&String> = cookies
        .iter()
        .chain(set.iter())
        .filter(|c| c.starts_with("__Host-tsunagi-terminal="))
        .collect();
    Ok(std::iter::once(session)
        .chain(terminal.into_iter().take(1))
        .cloned()
        .collect::<Vec<_>>()
        .join("; "))
}

/// `wrk` on one URL: p50 and p99 latency (ms) and requests per second.
fn wrk(url: &str, cookie: &str, connections: u32, seconds: u32) -> anyhow::Result<(f64, f64, f64)> {
    let out = run(Command::new("wrk").args([
        "-t",
        if connections > 1 { "2" } else { "1" },
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--latency",
        "-H",
        &format!("Cookie: {cookie}"),
        url,
    ]))?;
    let ms = |label: &str| -> anyhow::Result<f64> {
        let l = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .with_context(|| format!("wrk printed no {label} line:\n{out}"))?;
        let v = l.split_whitespace().nth(1).context("latency value")?;
        Ok(if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>()? / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse()?
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>()? * 1000.0
        } else {
            v.parse()?
        })
    };
    let rps: f64 = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("wrk printed no Requests/sec")?;
    if out.contains("Non-2xx or 3xx responses") {
        anyhow::bail!("wrk saw error answers from {url}:\n{out}");
    }
    Ok((ms("50%")?, ms("99%")?, rps))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn bench(bin_dir: &Path, data: &Path, runs: usize) -> anyhow::Result<Report> {
    let work = data.join("proxy");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let hub = Hub::start(bin_dir, &work.join("hub"))?;
    let edge_bin = bin_dir.join("tsunagi-edge");
    let key = work.join("edge.key");
    run(Command::new(&edge_bin).args(["keygen", "--out"]).arg(&key))?;
    let config = hub.appliance_for(&edge_bin, &work.join("edge"), &key, "bench-box", FACILITY)?;
    // A small clinic, one of whose referral letters is replaced by a 48 MB scan, for the download.
    let tree = work.join("clinic");
    tests::gen::generate(
        &tests::gen::Spec {
            patients: 200,
            days: 60,
            visits: 3,
            seed: 77,
            malformed: 0,
            start_day: 20_179,
        },
        &tree,
    );
    let big = find_file(&tree.join("extended"), "referral.pdf")?
        .context("the generated clinic has no referral letter")?;
    let pid = big
        .strip_prefix(tree.join("extended"))?
        .iter()
        .nth(2)
        .context("patient folder")?
        .to_string_lossy()
        .into_owned();
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    pdf.extend((0..(48u64 << 20) / 8).flat_map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    }));
    std::fs::write(&big, &pdf)?;
    run(Command::new(&edge_bin)
        .arg("ingest")
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(tree.join("standard"))
        .arg("--root")
        .arg(tree.join("extended"))
        .arg("--once"))?;
    run(Command::new(&edge_bin)
        .arg("sync")
        .arg("--config")
        .arg(&config))?;
    let mut toml = std::fs::read_to_string(&config)?;
    toml.push_str("[proxy]\nlisten = \"127.0.0.2:0\"\nnames = [\"127.0.0.2\"]\n");
    std::fs::write(&config, toml)?;
    let mut child = Command::new(&edge_bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let edge = Edge(child);
    let edge_pid = edge.0.id();
    let mut proxy = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        if out.read_line(&mut line)? == 0 {
            break;
        }
        if let Some(a) = line.trim().strip_prefix("proxy on https://") {
            proxy = a.to_string();
            break;
        }
    }
    anyhow::ensure!(!proxy.is_empty(), "the appliance's proxy did not start");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let operators = hub
        .operators
        .strip_prefix("https://")
        .context("operators' address")?
        .to_string();
    let pw = work.join("pw");
    std::fs::write(&pw, PASSWORD)?;
    for (login, role, facility) in [
        ("dr-bench", "doctor", FACILITY),
        ("office-bench", "office", ""),
    ] {
        run(hub
            .cmd(&[
                "user",
                "add",
                "--login",
                login,
                "--name",
                "bench",
                "--role",
                role,
                "--facility",
                facility,
                "--password-file",
            ])
            .arg(&pw))?;
    }
    // Past the first-login change, so a login lands on the portal.
    let k = hub::key::read(&hub.data.join("hub.key"))?.derive("region");
    let c = rusqlite::Connection::open(hub.data.join("region.db"))?;
    c.execute_batch(&format!(
        "PRAGMA key = \"{}\"; UPDATE user SET must_change = 0;",
        k.raw_literal().as_str()
    ))?;
    drop(c);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let via_proxy = rt.block_on(login(&proxy, "dr-bench"))?;
    let direct = rt.block_on(login(&operators, "office-bench"))?;
    // The large download, through the proxy, with its memory watched.
    let mut href = None;
    for _ in 0..600 {
        let (_, _, page) = rt.block_on(request(
            &proxy,
            "GET",
            &format!("/search?patient_id={pid}"),
            &via_proxy,
            None,
        ))?;
        if let Some(rid) = page
            .split("href=\"/patient/")
            .nth(1)
            .and_then(|s| s.split(['"', '?']).next())
        {
            let (_, _, docs) = rt.block_on(request(
                &proxy,
                "GET",
                &format!("/patient/{rid}?tab=documents"),
                &via_proxy,
                None,
            ))?;
            href = docs
                .split("href=\"")
                .filter_map(|s| s.split('"').next())
                .find(|h| h.contains("/document/"))
                .map(|h| h.replace("&amp;", "&"));
            if href.is_some() {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let href = href.context("no document link for the patient with the large letter")?;
    // Peaks from here on only: the hub's peak while it applied the 48 MB upload is not this.
    for pid in [edge_pid, hub.pid()] {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .with_context(|| format!("cannot reset the peak RSS of process {pid}"))?;
    }
    let (rss_before_mb, _) = rss(edge_pid)?;
    let (hub_before_mb, _) = rss(hub.pid())?;
    let t = std::time::Instant::now();
    let bytes = rt.block_on(download(&proxy, &href, &via_proxy))?;
    let seconds = t.elapsed().as_secs_f64();
    let (_, peak_after_mb) = rss(edge_pid)?;
    anyhow::ensure!(
        bytes == pdf.len() as u64,
        "downloaded {bytes} bytes of {}",
        pdf.len()
    );
    for _ in 0..3 {
        rt.block_on(download(&proxy, &href, &via_proxy))?;
    }
    let (_, peak_after_more_mb) = rss(edge_pid)?;
    let (_, hub_peak_mb) = rss(hub.pid())?;
    let stream = Stream {
        bytes,
        seconds,
        rss_before_mb,
        peak_after_mb,
        peak_after_more_mb,
        hub_before_mb,
        hub_peak_mb,
    };
    let seconds = 8u32;
    let mut rows = Vec::new();
    for (page, path) in [
        ("login page (the same page both ways)", "/login"),
        ("search form, logged in", "/search"),
    ] {
        for connections in [1u32, 16] {
            for (way, addr, cookie) in [
                ("through the proxy", proxy.as_str(), via_proxy.as_str()),
                ("hub directly", operators.as_str(), direct.as_str()),
            ] {
                let mut p50 = Vec::new();
                let mut p99 = Vec::new();
                let mut rps = Vec::new();
                for _ in 0..runs {
                    let (a, b, c) = wrk(
                        &format!("https://{addr}{path}"),
                        cookie,
                        connections,
                        seconds,
                    )?;
                    p50.push(a);
                    p99.push(b);
                    rps.push(c);
                }
                rows.push(Row {
                    page: page.into(),
                    way,
                    connections,
                    p50_ms: median(p50),
                    p99_ms: median(p99),
                    rps: median(rps),
                });
            }
        }
    }
    drop(edge);
    Ok(Report {
        rows,
        stream,
        runs,
        seconds,
    })
}

pub fn report(md: &mut String, r: &Report) -> std::fmt::Result {
    writeln!(md, "\n## Edge LAN proxy (issue 5)\n")?;
    writeln!(md, "The same portal pages through the appliance's LAN proxy and straight from the hub, measured with `wrk` in the same run, {} run(s) of {} s each, median shown.\n", r.runs, r.seconds)?;
    writeln!(md, "| page | connections | way | p50 ms | p99 ms | requests/s | added p50 ms | proxy / direct req/s |")?;
    writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|")?;
    for pair in r.rows.chunks(2) {
        let (p, d) = (&pair[0], &pair[1]);
        for x in pair {
            let (added, ratio) = if std::ptr::eq(x, p) {
                (
                    format!("{:+.2}", p.p50_ms - d.p50_ms),
                    format!("{:.2}", p.rps / d.rps),
                )
            } else {
                (String::new(), String::new())
            };
            writeln!(
                md,
                "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {added} | {ratio} |",
                x.page, x.connections, x.way, x.p50_ms, x.p99_ms, x.rps
            )?;
        }
    }
    let s = &r.stream;
    writeln!(md, "\nA {:.0} MB document downloaded through the proxy in {:.2} s ({:.0} MB/s). The appliance's resident memory was {:.0} MB before; its peak (VmHWM, reset just before) was {:.0} MB after the download and {:.0} MB after three more. The hub, which streams the document out of the copy in 256 KB pieces (SQLite incremental blob I/O), went from {:.0} MB to a peak of {:.0} MB over all four (most of it the reader connection's 32 MB page cache filling). Neither holds the document whole.\n", s.bytes as f64 / 1048576.0, s.seconds, s.bytes as f64 / 1048576.0 / s.seconds, s.rss_before_mb, s.peak_after_mb, s.peak_after_more_mb, s.hub_before_mb, s.hub_peak_mb)?;
    writeln!(md, "\n### How they were taken\n")?;
    writeln!(md, "- A real hub (`tsunagi-hub serve`) and a real appliance (`tsunagi-edge run` with `[proxy]`), release builds, on 127.0.0.1. The appliance enrolled with a token and got its LAN certificate from the network CA.")?;
    writeln!(md, "- **through the proxy**: `wrk` speaks HTTPS to the appliance's LAN listener; the proxy strips identity headers, checks the terminal and the idle time, and passes the request to the hub over mutual TLS on a kept-alive connection, streaming the answer back. A doctor of the appliance's facility, logged in through the real forms.")?;
    writeln!(md, "- **hub directly**: `wrk` speaks HTTPS to the hub's operators' listener, the only way to the portal without an appliance (the appliances' listener refuses a browser without a client certificate). The network office's account, logged in through the real forms; `wrk` cannot present a client certificate.")?;
    writeln!(md, "- `/login` is the same page both ways (template, login token, cookie). `/search` is the logged-in search form (session, account read, facility name), for a doctor through the proxy and for the office directly.")?;
    writeln!(md, "- With 1 connection the figures are the latency one person sees; with 16 (2 `wrk` threads), what two cores shared by `wrk`, the proxy and the hub can carry. `wrk`'s connections are kept alive, as a browser's are.")?;
    Ok(())
}

fn find_file(dir: &Path, name: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            if let Some(f) = find_file(&e.path(), name)? {
                return Ok(Some(f));
            }
        } else if e.file_name() == name {
            return Ok(Some(e.path()));
        }
    }
    Ok(None)
}
