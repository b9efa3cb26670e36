//! Sync benchmarks (issue 3): the bytes one day of a clinic's changes costs on the wire, side by
//! side with restic and rsync on the same tree and with the floor; sync throughput through a real
//! hub; and the time to restore a clinic-year and a hospital onto a fresh appliance.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

pub fn run(c: &mut Command) -> anyhow::Result<String> {
    let out = c.output().with_context(|| format!("cannot run {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn du(p: &Path) -> anyhow::Result<u64> {
    Ok(run(Command::new("du").arg("-sb").arg(p))?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()?)
}

/// A hub serving on a free loopback port, stopped on drop.
pub struct Hub {
    pub data: PathBuf,
    pub url: String,
    /// The operators' listener, `https://ADDR`.
    pub operators: String,
    /// Prometheus' /metrics, `ADDR`.
    pub metrics: String,
    pub fingerprint: String,
    bin: PathBuf,
    child: Child,
}

impl Hub {
    pub fn start(bin_dir: &Path, data: &Path) -> anyhow::Result<Hub> {
        let _ = std::fs::remove_dir_all(data);
        let bin = bin_dir.join("tsunagi-hub");
        let hub = |args: &[&str]| {
            let mut c = Command::new(&bin);
            c.arg("--data").arg(data).args(args);
            c
        };
        run(&mut hub(&["keygen"]))?;
        run(&mut hub(&["ca", "init"]))?;
        let fingerprint = run(&mut hub(&["ca", "fingerprint"]))?.trim().to_string();
        let (child, url, operators, metrics) = serve(&bin, data, &[])?;
        Ok(Hub {
            data: data.to_owned(),
            url,
            operators,
            metrics,
            fingerprint,
            bin,
            child,
        })
    }

    /// Stops the hub and serves again with extra arguments (a broker, say).
    pub fn serve_again(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url, operators, metrics) = serve(&self.bin, &self.data, extra)?;
        (self.child, self.url, self.operators, self.metrics) = (child, url, operators, metrics);
        Ok(())
    }

    /// The hub process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--data").arg(&self.data).args(args);
        c
    }

    /// A configuration for a new appliance in `state`, enrolled with a fresh token.
    pub fn appliance(
        &self,
        edge: &Path,
        state: &Path,
        key: &Path,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        self.appliance_for(edge, state, key, name, "3712345678")
    }

    /// The same for a given facility.
    pub fn appliance_for(
        &self,
        edge: &Path,
        state: &Path,
        key: &Path,
        name: &str,
        facility: &str,
    ) -> anyhow::Result<PathBuf> {
        let _ = std::fs::remove_dir_all(state);
        std::fs::create_dir_all(state)?;
        let config = state.join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\nkey_file = {:?}\n[sync]\nmax_batch_bytes = 33554432\n",
                state.display().to_string(),
                key.display().to_string()
            ),
        )?;
        let out = run(&mut self.cmd(&[
            "token",
            "create",
            "--facility",
            facility,
            "--name",
            &format!("bench {facility}"),
        ]))?;
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("token:"))
            .context("no token")?
            .trim()
            .to_string();
        run(Command::new(edge)
            .arg("enroll")
            .arg("--config")
            .arg(&config)
            .args([
                "--hub",
                &self.url,
                "--token",
                &token,
                "--ca-fingerprint",
                &self.fingerprint,
                "--appliance",
                name,
            ]))?;
        Ok(config)
    }
}

fn serve(
    bin: &Path,
    data: &Path,
    extra: &[&str],
) -> anyhow::Result<(Child, String, String, String)> {
    let mut child = Command::new(bin)
        .arg("--data")
        .arg(data)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--operator-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-body",
            "268435456",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        out.read_line(&mut line)?;
        lines.push(line);
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = lines[0]
        .trim()
        .strip_prefix("listening on ")
        .context("hub did not start")?
        .to_string();
    let operators = lines[2]
        .trim()
        .strip_prefix("operators on ")
        .and_then(|s| s.strip_suffix("/login"))
        .context("hub did not start its operators' listener")?
        .to_string();
    let metrics = lines[3]
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .context("hub did not start its metrics listener")?
        .to_string();
    Ok((child, url, operators, metrics))
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Wire {
    pub day: String,
    pub files: usize,
    pub bytes: u64,
    pub tsunagi: u64,
    pub tsunagi_segments: u64,
    pub restic: u64,
    pub rsync: u64,
    pub floor: u64,
}

fn files_with_dates(root: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut all = Vec::new();
    super::files_under(root, &mut all)?;
    Ok(all
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(root).ok()?.to_string_lossy().to_string();
            let date = rel.split('/').nth(3)?.to_string();
            Some((rel, date))
        })
        .collect())
}

/// One day of changes: the corpus without its last care date, then with it.
pub fn wire(corpus: &Path, work: &Path, bin_dir: &Path, key: &Path) -> anyhow::Result<Wire> {
    let edge = bin_dir.join("tsunagi-edge");
    let files = files_with_dates(corpus)?;
    let day = files
        .iter()
        .map(|(_, d)| d.clone())
        .filter(|d| d != "-")
        .max()
        .context("no dated files")?;
    let today: Vec<&String> = files
        .iter()
        .filter(|(_, d)| *d == day)
        .map(|(r, _)| r)
        .collect();
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let tree = work.join("ssmix2");
    run(Command::new("cp").arg("-a").arg(corpus).arg(&tree))?;
    for r in &today {
        std::fs::remove_file(tree.join(r))?;
    }
    let add_day = || -> anyhow::Result<u64> {
        let mut bytes = 0;
        for r in &today {
            let to = tree.join(r);
            std::fs::create_dir_all(to.parent().unwrap())?;
            bytes += std::fs::copy(corpus.join(r), to)?;
        }
        Ok(bytes)
    };

    // tsunagi: the segments the day's ingest makes, as framed on the wire, through a real hub.
    let hub = Hub::start(bin_dir, &work.join("hub"))?;
    let config = hub.appliance(&edge, &work.join("edge"), key, "bench-wire")?;
    let ingest = || {
        run(Command::new(&edge)
            .arg("ingest")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&tree)
            .arg("--once"))
    };
    ingest()?;
    run(Command::new(&edge).arg("sync").arg("--config").arg(&config))?;
    let store = |sql: &str| -> anyhow::Result<i64> {
        let k = edge::store::read_key(key)?;
        let c = edge::store::open_read_only(&work.join("edge/store"), &k)?;
        Ok(c.query_row(sql, [], |r| r.get(0))?)
    };
    let before = store("SELECT seq FROM outbox_head")?;
    let day_bytes = add_day()?;
    ingest()?;
    let after = store("SELECT seq FROM outbox_head")?;
    let seg_bytes = store(&format!("SELECT coalesce(sum(length(body) + length(created_at) + 94), 0) FROM outbox WHERE seq > {before}"))?;
    run(Command::new(&edge).arg("sync").arg("--config").arg(&config))?;
    drop(hub);
    // Undo the day for the next tools.
    for r in &today {
        std::fs::remove_file(tree.join(r))?;
    }

    // restic: repository growth of the second backup of the same path.
    let repo = work.join("restic");
    let pw = work.join("restic.pw");
    std::fs::write(&pw, "bench")?;
    let restic = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&repo)
            .arg("--password-file")
            .arg(&pw)
            .arg("--quiet")
            .args(args);
        c
    };
    run(&mut restic(&["init"]))?;
    run(restic(&["backup"]).arg(&tree))?;
    let r0 = du(&repo)?;
    add_day()?;
    run(restic(&["backup"]).arg(&tree))?;
    let restic_bytes = du(&repo)? - r0;
    for r in &today {
        std::fs::remove_file(tree.join(r))?;
    }

    // rsync: to an rsync daemon on loopback, compressed, delta transfer on; bytes sent + received.
    let mirror = work.join("mirror");
    std::fs::create_dir_all(&mirror)?;
    let conf = work.join("rsyncd.conf");
    // As the running user: a daemon started by root would otherwise write as `nobody`.
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    std::fs::write(
        &conf,
        format!(
            "use chroot = no\nuid = {uid}\ngid = {gid}\n[m]\npath = {}\nread only = no\n",
            mirror.display()
        ),
    )?;
    let port = 20000 + (std::process::id() % 20000);
    let mut daemon = Command::new("rsync")
        .args([
            "--daemon",
            "--no-detach",
            "--address=127.0.0.1",
            &format!("--port={port}"),
            &format!("--config={}", conf.display()),
        ])
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dest = format!("rsync://127.0.0.1:{port}/m/");
    let sync = || {
        run(Command::new("rsync")
            .args(["-az", "--no-whole-file", "--stats"])
            .arg(format!("{}/", tree.display()))
            .arg(&dest))
    };
    sync()?;
    add_day()?;
    let stats = sync()?;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let num = |label: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.split_whitespace().next().unwrap_or("0").replace(',', ""))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rsync_bytes = num("Total bytes sent:") + num("Total bytes received:");

    // The floor: the day's new files alone, tar | zstd -19 --long.
    let list = work.join("day.list");
    std::fs::write(
        &list,
        today.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )?;
    let floor = run(Command::new("bash").arg("-c").arg(format!(
        "tar -C {} -cf - -T {} | zstd -19 --long -q -c | wc -c",
        tree.display(),
        list.display()
    )))?
    .trim()
    .parse()?;
    Ok(Wire {
        day,
        files: today.len(),
        bytes: day_bytes,
        tsunagi: seg_bytes as u64,
        tsunagi_segments: (after - before) as u64,
        restic: restic_bytes,
        rsync: rsync_bytes,
        floor,
    })
}

pub struct Restore {
    pub name: &'static str,
    pub segments: u64,
    pub mb: f64,
    pub sync_s: f64,
    pub snapshot_s: f64,
    pub restore_s: f64,
    pub restored_mb: f64,
}

/// Sync an ingested store to a fresh hub, snapshot it, restore it onto a fresh appliance.
pub fn throughput(
    name: &'static str,
    store: &Path,
    work: &Path,
    bin_dir: &Path,
    key: &Path,
) -> anyhow::Result<Restore> {
    let edge = bin_dir.join("tsunagi-edge");
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let hub = Hub::start(bin_dir, &work.join("hub"))?;
    let state = work.join("edge");
    let config = hub.appliance(&edge, &state, key, "bench-old")?;
    run(Command::new("cp")
        .arg("-a")
        .arg(store)
        .arg(state.join("store")))?;
    let k = edge::store::read_key(key)?;
    let (segments, bytes): (i64, i64) = edge::store::open_read_only(&state.join("store"), &k)?
        .query_row(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    let t = Instant::now();
    run(Command::new(&edge).arg("sync").arg("--config").arg(&config))?;
    let sync_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    run(&mut hub.cmd(&["copy", "snapshot", "--facility", "3712345678"]))?;
    let snapshot_s = t.elapsed().as_secs_f64();
    let fresh = hub.appliance(&edge, &work.join("fresh"), key, "bench-new")?;
    let t = Instant::now();
    let out = run(Command::new(&edge)
        .arg("restore")
        .arg("--config")
        .arg(&fresh))?;
    let restore_s = t.elapsed().as_secs_f64();
    let received: f64 = out
        .split(" bytes received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let _ = std::fs::remove_dir_all(work.join("edge/store"));
    Ok(Restore {
        name,
        segments: segments as u64,
        mb: bytes as f64 / 1e6,
        sync_s,
        snapshot_s,
        restore_s,
        restored_mb: received / 1e6,
    })
}

pub fn report(md: &mut String, wire: &Wire, rows: &[Restore]) -> std::fmt::Result {
    writeln!(md, "\n## Sync (issue 3)\n")?;
    writeln!(
        md,
        "### Bytes on the wire for one day of a clinic's changes\n"
    )?;
    writeln!(md, "The clinic-year corpus (standard storage) without its last care date ({}), then with it: {} new files, {:.0} kB, the day's new visits with the orders, results, corrections (flag 2) and cancellations (flag 0) the generator puts on that date. Each tool first takes the tree without the day, then the day is added and the tool runs again; the second run is measured.\n", wire.day, wire.files, wire.bytes as f64 / 1e3)?;
    writeln!(md, "| method | bytes for the day | vs tsunagi |")?;
    writeln!(md, "|---|---:|---:|")?;
    let t = wire.tsunagi.max(1) as f64;
    for (m, b) in [
        (
            "**tsunagi** (outbox segments, zstd -3 changesets, framed)",
            wire.tsunagi,
        ),
        (
            "restic 0.14 incremental backup (repository growth)",
            wire.restic,
        ),
        (
            "rsync -az --no-whole-file to an rsync daemon (sent + received)",
            wire.rsync,
        ),
        (
            "floor: the day's new files alone, tar \\| zstd -19 --long",
            wire.floor,
        ),
    ] {
        writeln!(md, "| {m} | {b} | {:.2}x |", b as f64 / t)?;
    }
    writeln!(md, "\ntsunagi sent {} segments. **restic / tsunagi = {:.1}x** (aim: 100x or more), **tsunagi / floor = {:.2}x** (aim: 2x or less).\n", wire.tsunagi_segments, wire.restic as f64 / t, t / wire.floor.max(1) as f64)?;
    writeln!(
        md,
        "### Sync throughput and restore onto a fresh appliance\n"
    )?;
    writeln!(md, "A store already ingested by the ingest benchmark is given to an enrolled appliance, which uploads its whole outbox to a fresh hub on loopback (`tsunagi-edge sync`, mutual TLS, batches up to 32 MB); the hub snapshots the copy (`copy snapshot`); a second appliance enrols and restores from it (`tsunagi-edge restore`).\n")?;
    writeln!(md, "| corpus | segments | compressed MB | sync s | segments/s | MB/s through the hub | snapshot s | restore s | restore stream MB |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {:.1} | {:.2} | {:.0} | {:.1} | {:.2} | {:.2} | {:.1} |",
            r.name,
            r.segments,
            r.mb,
            r.sync_s,
            r.segments as f64 / r.sync_s,
            r.mb / r.sync_s,
            r.snapshot_s,
            r.restore_s,
            r.restored_mb
        )?;
    }
    writeln!(md, "\nOne run each (these are minutes-long end-to-end runs, not micro-benchmarks). The hub and the appliance share the machine's 2 cores.")
}
