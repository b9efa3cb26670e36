//! `tsunagi-bench`: measures the edge's ingest against its floor on generated corpora and writes
//! BENCHMARKS.md. Every figure is the median of several runs of real processes, taken side by side
//! in the same run on the same machine.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tests::gen::{generate, Spec};

mod fleet;
mod portal;
mod proxy;
mod sync;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Where corpora and stores live (kept between runs; corpora are regenerated only when absent).
    #[arg(long, default_value = "target/bench-data")]
    data: PathBuf,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the hospital corpus (about 50,000 patients).
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// The floor: read every file under the roots and insert the raw bytes into plain SQLite in
    /// transactions of 512 files.
    Floor {
        #[arg(long)]
        db: PathBuf,
        #[arg(long = "root")]
        roots: Vec<PathBuf>,
    },
    /// Walk and stat every file, read nothing: the floor of a rescan.
    Walk {
        #[arg(long = "root")]
        roots: Vec<PathBuf>,
    },
    /// Only the edge ingest benchmark (clinic-year; the hospital too unless --quick), printed to
    /// standard output.
    Ingest,
    /// Only the sync benchmarks (one day against restic and rsync; throughput and restore of
    /// clinic-year), printed to standard output.
    Sync,
    /// Only the portal benchmarks, printed to standard output.
    Portal,
    /// Only the LAN proxy benchmark (wrk), printed to standard output.
    Proxy,
    /// Only the fleet benchmark (simulated appliances, Mosquitto, the hub), printed to standard output.
    Fleet {
        #[arg(long, default_value_t = 2000)]
        appliances: usize,
    },
}

/// Where the appliance image's section starts; `image/tools/image-test.sh` writes it.
const IMAGE_SECTION: &str = "## Appliance image (issue 7)";

fn files_under(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(root)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            files_under(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

fn floor(db: &Path, roots: &[PathBuf]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(db);
    let conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE f (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, raw BLOB NOT NULL);")?;
    let mut files = Vec::new();
    for r in roots {
        files_under(r, &mut files)?;
    }
    files.sort();
    for chunk in files.chunks(512) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = conn.prepare_cached("INSERT INTO f (path, raw) VALUES (?1, ?2)")?;
            for p in chunk {
                st.execute(rusqlite::params![p.to_string_lossy(), std::fs::read(p)?])?;
            }
        }
        tx.commit()?;
    }
    println!("{}", files.len());
    Ok(())
}

/// One measured process: wall time, CPU time (user + system) and peak resident memory.
struct Run {
    wall: Duration,
    cpu: Duration,
    rss_kb: u64,
    stdout: String,
}

fn cpu_children() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn measure(cmd: &mut Command) -> anyhow::Result<Run> {
    let cpu0 = cpu_children();
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut rss_kb = 0;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                rss_kb = rss_kb.max(
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                );
            }
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = start.elapsed();
    let status = child.wait()?;
    let stdout = reader.join().unwrap_or_default();
    if !(status.success() || status.code() == Some(3)) {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(Run {
        wall,
        cpu: cpu_children() - cpu0,
        rss_kb,
        stdout,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    name: &'static str,
    files: u64,
    mb: f64,
    floor_s: f64,
    ingest_s: f64,
    ingest_cpu_s: f64,
    ingest_rss_mb: f64,
    floor_rss_mb: f64,
    rescan_s: f64,
    walk_s: f64,
}

fn bench(name: &'static str, spec: Spec, a: &Args, me: &Path, edge: &Path) -> anyhow::Result<Row> {
    let corpus = a.data.join(name);
    if !corpus.join("standard").exists() {
        eprintln!(
            "generating the {name} corpus ({} patients)...",
            spec.patients
        );
        let _ = std::fs::remove_dir_all(&corpus);
        generate(&spec, &corpus);
    }
    let roots = [corpus.join("standard"), corpus.join("extended")];
    let mut files = Vec::new();
    for r in &roots {
        files_under(r, &mut files)?;
    }
    let bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let key = a.data.join("bench.key");
    if !key.exists() {
        Command::new(edge)
            .args(["keygen", "--out"])
            .arg(&key)
            .status()?;
    }
    let (mut fl, mut fl_rss, mut ing, mut ing_cpu, mut ing_rss, mut re, mut wk) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..a.runs {
        eprintln!("{name}: run {} of {}", i + 1, a.runs);
        // Warm the page cache the same way for both sides: the floor reads first on every run.
        let r = measure(
            Command::new(me)
                .arg("floor")
                .arg("--db")
                .arg(a.data.join("floor.db"))
                .arg("--root")
                .arg(&roots[0])
                .arg("--root")
                .arg(&roots[1]),
        )?;
        fl.push(r.wall.as_secs_f64());
        fl_rss.push(r.rss_kb as f64 / 1024.0);
        let store = a.data.join(format!("store-{name}"));
        let _ = std::fs::remove_dir_all(&store);
        let ingest = |store: &Path| {
            let mut c = Command::new(edge);
            c.arg("ingest")
                .arg("--store")
                .arg(store)
                .arg("--key-file")
                .arg(&key)
                .arg("--root")
                .arg(&roots[0])
                .arg("--root")
                .arg(&roots[1])
                .args(["--once", "--json"]);
            c
        };
        let r = measure(&mut ingest(&store))?;
        let summary: serde_json::Value =
            serde_json::from_str(r.stdout.trim()).context("ingest summary")?;
        if summary["ingested"].as_u64().unwrap_or(0) + summary["quarantined"].as_u64().unwrap_or(0)
            != files.len() as u64
        {
            bail!("ingest took in {summary} of {} files", files.len());
        }
        ing.push(r.wall.as_secs_f64());
        ing_cpu.push(r.cpu.as_secs_f64());
        ing_rss.push(r.rss_kb as f64 / 1024.0);
        let r = measure(&mut ingest(&store))?;
        let summary: serde_json::Value = serde_json::from_str(r.stdout.trim())?;
        if summary["unchanged"].as_u64() != Some(files.len() as u64)
            || summary["segments"].as_u64() != Some(0)
        {
            bail!("rescan was not a no-op: {summary}");
        }
        re.push(r.wall.as_secs_f64());
        wk.push(
            measure(
                Command::new(me)
                    .arg("walk")
                    .arg("--root")
                    .arg(&roots[0])
                    .arg("--root")
                    .arg(&roots[1]),
            )?
            .wall
            .as_secs_f64(),
        );
    }
    let _ = std::fs::remove_file(a.data.join("floor.db"));
    Ok(Row {
        name,
        files: files.len() as u64,
        mb: bytes as f64 / 1e6,
        floor_s: median(fl),
        floor_rss_mb: median(fl_rss),
        ingest_s: median(ing),
        ingest_cpu_s: median(ing_cpu),
        ingest_rss_mb: median(ing_rss),
        rescan_s: median(re),
        walk_s: median(wk),
    })
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    match &a.cmd {
        Some(Cmd::Floor { db, roots }) => return floor(db, roots),
        Some(Cmd::Walk { roots }) => {
            let mut n = 0u64;
            for r in roots {
                let mut files = Vec::new();
                files_under(r, &mut files)?;
                for f in &files {
                    std::fs::metadata(f)?;
                }
                n += files.len() as u64;
            }
            println!("{n}");
            return Ok(());
        }
        Some(Cmd::Portal) => {
            let me = std::env::current_exe()?;
            let r = portal::bench(me.parent().expect("bin dir"), &a.data)?;
            let mut md = String::new();
            portal::report(&mut md, &r)?;
            println!("{md}");
            return Ok(());
        }
        Some(Cmd::Fleet { appliances }) => {
            let me = std::env::current_exe()?;
            let (r, runs) =
                fleet::bench_runs(me.parent().expect("bin dir"), &a.data, *appliances, a.runs)?;
            let mut md = String::new();
            fleet::report(&mut md, &r, runs)?;
            print!("{md}");
            return Ok(());
        }
        Some(Cmd::Proxy) => {
            let me = std::env::current_exe()?;
            let r = proxy::bench(me.parent().expect("bin dir"), &a.data, a.runs)?;
            let mut md = String::new();
            proxy::report(&mut md, &r)?;
            println!("{md}");
            return Ok(());
        }
        Some(Cmd::Ingest) => {
            std::fs::create_dir_all(&a.data)?;
            let me = std::env::current_exe()?;
            let edge = me.parent().expect("bin dir").join("tsunagi-edge");
            let mut rows = vec![bench("clinic-year", Spec::clinic_year(), &a, &me, &edge)?];
            if !a.quick {
                rows.push(bench("hospital", Spec::hospital(), &a, &me, &edge)?);
            }
            let mut md = String::new();
            ingest_report(&mut md, &rows)?;
            println!("{md}");
            return Ok(());
        }
        Some(Cmd::Sync) => {
            std::fs::create_dir_all(&a.data)?;
            let me = std::env::current_exe()?;
            let edge = me.parent().expect("bin dir").join("tsunagi-edge");
            let row = bench("clinic-year", Spec::clinic_year(), &a, &me, &edge)?;
            let bin_dir = me.parent().expect("bin dir").to_owned();
            let key = a.data.join("bench.key");
            let wire = sync::wire(
                &a.data.join("clinic-year/standard"),
                &a.data.join("sync-wire"),
                &bin_dir,
                &key,
            )?;
            let restore = sync::throughput(
                row.name,
                &a.data.join(format!("store-{}", row.name)),
                &a.data.join(format!("sync-{}", row.name)),
                &bin_dir,
                &key,
            )?;
            let mut md = String::new();
            sync::report(&mut md, &wire, &[restore])?;
            println!("{md}");
            return Ok(());
        }
        None => {}
    }
    std::fs::create_dir_all(&a.data)?;
    let me = std::env::current_exe()?;
    let edge = me.parent().expect("bin dir").join("tsunagi-edge");
    let mut rows = vec![bench("clinic-year", Spec::clinic_year(), &a, &me, &edge)?];
    if !a.quick {
        rows.push(bench("hospital", Spec::hospital(), &a, &me, &edge)?);
    }
    eprintln!("sync: one day of changes against restic and rsync");
    let bin_dir = me.parent().expect("bin dir").to_owned();
    let key = a.data.join("bench.key");
    let wire = sync::wire(
        &a.data.join("clinic-year/standard"),
        &a.data.join("sync-wire"),
        &bin_dir,
        &key,
    )?;
    let mut restores = Vec::new();
    for r in &rows {
        eprintln!("sync: throughput and restore, {}", r.name);
        restores.push(sync::throughput(
            r.name,
            &a.data.join(format!("store-{}", r.name)),
            &a.data.join(format!("sync-{}", r.name)),
            &bin_dir,
            &key,
        )?);
    }
    eprintln!("portal: search and patient page");
    let portal_report = portal::bench(&bin_dir, &a.data)?;
    eprintln!("proxy: portal pages through the appliance and directly, with wrk");
    let proxy_report = proxy::bench(&bin_dir, &a.data, a.runs)?;
    eprintln!("bench: fleet (2,000 simulated appliances)");
    let (fleet_report, fleet_runs) = fleet::bench_runs(&bin_dir, &a.data, 2000, a.runs)?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(md, "Written by `just bench` (`tsunagi-bench`), release build, on {} core(s) of {cpu}, {} run(s) per figure, median shown.\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), a.runs)?;
    ingest_report(&mut md, &rows)?;
    sync::report(&mut md, &wire, &restores)?;
    portal::report(&mut md, &portal_report)?;
    proxy::report(&mut md, &proxy_report)?;
    fleet::report(&mut md, &fleet_report, fleet_runs)?;
    // `just image-test` writes its own section (it needs qemu and about half an hour): keep it.
    if let Some(image) = std::fs::read_to_string(&a.out)
        .ok()
        .and_then(|old| old.find(IMAGE_SECTION).map(|i| old[i..].to_string()))
    {
        writeln!(md)?;
        md.push_str(&image);
    }
    std::fs::write(&a.out, md)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The edge ingest section.
fn ingest_report(md: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(md, "## Edge ingest (issue 2)\n")?;
    writeln!(md, "Corpora from `ssmix2-gen` (deterministic): **clinic-year** is 2,000 patients over a year, **hospital** 50,000 patients. One message = one SS-MIX2 file.\n")?;
    writeln!(md, "| corpus | files | MB | floor s | ingest s | ingest / floor | messages/s | MB/s | messages per CPU-second | ingest peak RSS MB | floor peak RSS MB |")?;
    writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2}x | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.files,
            r.mb,
            r.floor_s,
            r.ingest_s,
            r.ingest_s / r.floor_s,
            r.files as f64 / r.ingest_s,
            r.mb / r.ingest_s,
            r.files as f64 / r.ingest_cpu_s,
            r.ingest_rss_mb,
            r.floor_rss_mb
        )?;
    }
    writeln!(md, "\n### Rescan of the unchanged tree\n")?;
    writeln!(
        md,
        "| corpus | files | rescan s | stat walk s | rescan / walk | files per second |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2}x | {:.0} |",
            r.name,
            r.files,
            r.rescan_s,
            r.walk_s,
            r.rescan_s / r.walk_s,
            r.files as f64 / r.rescan_s
        )?;
    }
    writeln!(md, "\n### How they were taken\n")?;
    writeln!(md, "- **floor**: a separate process reads every file of the tree and inserts its raw bytes into plain (unencrypted) SQLite, WAL, `synchronous = FULL`, in transactions of 512 files: the least any mirror must do.")?;
    writeln!(md, "- **ingest**: `tsunagi-edge ingest --once` into a new SQLCipher store: walk, read, SHA-256, ISO-2022-JP decode, HL7 parse, map to the normalized tables, raw bytes kept, session changeset captured, zstd-compressed into the hash-chained outbox, in transactions of 512 files (`synchronous = FULL`).")?;
    writeln!(md, "- **messages per CPU-second**: files divided by the ingest process's user + system CPU time (it runs a reader thread and the store thread), the measure for \"on one core\".")?;
    writeln!(md, "- **rescan**: `ingest --once` again on the unchanged tree; it stats every file, compares size, mtime and inode with the store, reads nothing and writes no transaction. **stat walk**: a process that only walks and stats every file.")?;
    writeln!(md, "- Peak RSS is the process's VmHWM, sampled every 5 ms. The page cache is warm: the generator or the floor has just read every file.")?;
    Ok(())
}
