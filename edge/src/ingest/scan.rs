//! One pass over the roots (all of them, or some folders after inotify events): find what changed
//! since the store last looked, and apply it in batches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use serde::Serialize;

use super::apply::{apply, Outcome, Work};
use super::path;
use super::{derive, now};
use crate::outbox;
use crate::store::{self, sql, sql::Stat, Handle};

/// How the ingest behaves; the defaults suit a clinic and a hospital alike.
#[derive(Debug, Clone)]
pub struct Options {
    pub roots: Vec<PathBuf>,
    /// Files a transaction (and so an outbox segment) holds at most.
    pub batch_files: usize,
    /// Bytes of raw files a transaction holds at most.
    pub batch_bytes: usize,
    /// A larger file is quarantined instead of read.
    pub max_file_bytes: u64,
    /// Files gone in one scan that count as a mass disappearance: at least this many...
    pub mass_missing_min: usize,
    /// ...and at least this share of the files known under the scanned folders.
    pub mass_missing_ratio: f64,
    /// Good files rewritten into unreadable bytes in one scan that raise a ransomware alarm.
    pub surge_min: usize,
}

impl Options {
    pub fn new(roots: Vec<PathBuf>) -> Options {
        Options {
            roots,
            batch_files: 512,
            batch_bytes: 16 << 20,
            max_file_bytes: 64 << 20,
            mass_missing_min: 50,
            mass_missing_ratio: 0.10,
            surge_min: 10,
        }
    }
}

/// Which part of the roots a scan covers.
#[derive(Debug, Clone)]
pub enum Scope {
    Full,
    /// Folders (root index, path below the root), each scanned with everything below it.
    Dirs(Vec<(usize, String)>),
}

/// What a scan did, as `ingest --once` prints it.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub seen: u64,
    pub ingested: u64,
    pub unchanged: u64,
    pub superseded: u64,
    pub deleted: u64,
    pub renamed: u64,
    pub quarantined: u64,
    pub still_quarantined: u64,
    /// Stored files rewritten in place into bytes that cannot be read (kept, new bytes quarantined).
    pub rewritten_unreadable: u64,
    pub missing: u64,
    pub reappeared: u64,
    pub ignored: u64,
    pub segments: u64,
    pub last_seq: u64,
    pub alarms: Vec<String>,
    /// Stored files whose rows were derived again by a newer decoder (`ingest::rederive`).
    pub rederived: usize,
}

struct Found {
    root: usize,
    size: i64,
    mtime_ns: i64,
    inode: i64,
}

fn root_key(root: &Path) -> String {
    root.canonicalize()
        .unwrap_or_else(|_| root.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Scans `scope` of the roots and brings the store in line with it.
pub fn scan(store: &Handle, opts: &Options, scope: &Scope) -> Result<Summary, store::Error> {
    let mut summary = Summary::default();
    if matches!(scope, Scope::Full) {
        // Rows an older decoder derived are derived again before anything new is taken in.
        summary.rederived = store.call(|c| super::rederive(c, &now()))??;
    }
    let keys: Vec<String> = opts.roots.iter().map(|r| root_key(r)).collect();
    let dirs: Vec<(usize, String)> = match scope {
        Scope::Full => (0..opts.roots.len()).map(|i| (i, String::new())).collect(),
        Scope::Dirs(d) => {
            // A folder below another one in the list is scanned with it.
            d.iter()
                .filter(|(i, x)| {
                    !d.iter().any(|(j, p)| {
                        i == j && p != x && (p.is_empty() || x.starts_with(&format!("{p}/")))
                    })
                })
                .cloned()
                .collect()
        }
    };

    // Walk.
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut unscanned: Vec<(usize, String)> = Vec::new();
    for (i, dir) in &dirs {
        let root = &opts.roots[*i];
        let top = if dir.is_empty() {
            root.clone()
        } else {
            root.join(dir)
        };
        if dir.is_empty() && !top.is_dir() {
            summary.alarms.push(format!("root {} is not a readable folder: nothing under it was scanned or marked missing (is the share mounted?)", root.display()));
            unscanned.push((*i, String::new()));
            continue;
        }
        walk(*i, root, dir, &mut found, &mut unscanned, &mut summary);
    }
    summary.seen = found.len() as u64;

    // Compare with what the store saw.
    let prefixes: Vec<Option<String>> = dirs
        .iter()
        .map(|(_, d)| (!d.is_empty()).then(|| d.clone()))
        .collect();
    let (known, quarantined, missing) = store.call(move |c| -> rusqlite::Result<_> {
        let (mut k, mut q, mut m) = (HashMap::new(), HashMap::new(), HashSet::new());
        for p in &prefixes {
            k.extend(sql::stats(c, p.as_deref())?);
            q.extend(sql::quarantined(c, p.as_deref())?);
            m.extend(sql::missing_under(c, p.as_deref())?);
        }
        Ok((k, q, m))
    })??;

    // Roots that were readable but came back empty while the store knows files from them.
    for (i, dir) in &dirs {
        if dir.is_empty() && !unscanned.contains(&(*i, String::new())) {
            let had = known.values().filter(|s| s.root == keys[*i]).count();
            if had > 0 && !found.values().any(|f| f.root == *i) {
                summary.alarms.push(format!(
                    "root {} is empty but {had} files were stored from it: treated as unmounted, nothing marked missing",
                    opts.roots[*i].display()
                ));
                unscanned.push((*i, String::new()));
            }
        }
    }
    let is_unscanned = |rel: &str, root: &str| {
        unscanned
            .iter()
            .any(|(i, d)| keys[*i] == root && (d.is_empty() || rel.starts_with(&format!("{d}/"))))
    };

    let mut work: Vec<Work> = Vec::new();
    let mut to_read: Vec<(&String, &Found)> = Vec::new();
    for (rel, f) in &found {
        match known.get(rel) {
            Some(k)
                if k.size == f.size
                    && k.mtime_ns == f.mtime_ns
                    && k.inode == f.inode
                    && k.root == keys[f.root] =>
            {
                if missing.contains(rel) {
                    work.push(Work::Restat {
                        rel: rel.clone(),
                        stat: k.clone(),
                    });
                } else {
                    summary.unchanged += 1;
                }
            }
            _ => match quarantined.get(rel) {
                Some(&(size, mtime)) if size == f.size && mtime == f.mtime_ns => {
                    summary.still_quarantined += 1
                }
                _ => to_read.push((rel, f)),
            },
        }
    }
    let gone: Vec<String> = known
        .iter()
        .filter(|(rel, s)| !found.contains_key(*rel) && !is_unscanned(rel, &s.root))
        .map(|(rel, _)| rel.clone())
        .collect();
    let known_count = known.len().max(1);
    if gone.len() >= opts.mass_missing_min
        && gone.len() as f64 >= opts.mass_missing_ratio * known_count as f64
    {
        summary.alarms.push(format!(
            "mass disappearance: {} of {} stored files vanished from the source in one scan; they stay in the store, marked missing (check the EMR export and the share for ransomware or a failed volume)",
            gone.len(),
            known.len()
        ));
    }
    let found_paths: Arc<HashSet<String>> = Arc::new(found.keys().cloned().collect());

    // Read and parse in order, applying batch by batch; one batch is applied while the next is read.
    let mut pending: Option<mpsc::Receiver<Result<Outcome, store::Error>>> = None;
    let mut batch: Vec<Work> = Vec::new();
    let mut batch_bytes = 0usize;
    let flush = |batch: Vec<Work>,
                 pending: &mut Option<mpsc::Receiver<Result<Outcome, store::Error>>>,
                 summary: &mut Summary|
     -> Result<(), store::Error> {
        if let Some(rx) = pending.take() {
            rx.recv()
                .map_err(|_| store::Error::Gone("the store thread ended".into()))??
                .add_to(summary);
        }
        if !batch.is_empty() {
            let present = Arc::clone(&found_paths);
            let path = store.path.clone();
            *pending = Some(store.submit(move |c| {
                apply(c, batch, &present).map_err(|e| store::Error::classify(e, &path))
            }));
        }
        Ok(())
    };
    let items = to_read.into_iter().map(|(rel, f)| {
        read(
            rel,
            f,
            &opts.roots[f.root],
            &keys[f.root],
            opts.max_file_bytes,
        )
    });
    let rest = gone.into_iter().map(|rel| Work::Gone { rel }).chain(
        quarantined
            .keys()
            .filter(|r| !found.contains_key(*r))
            .map(|rel| Work::Unquarantine { rel: rel.clone() }),
    );
    for w in work.drain(..).chain(items).chain(rest) {
        batch_bytes += w.bytes();
        batch.push(w);
        if batch.len() >= opts.batch_files || batch_bytes >= opts.batch_bytes {
            flush(std::mem::take(&mut batch), &mut pending, &mut summary)?;
            batch_bytes = 0;
        }
    }
    flush(std::mem::take(&mut batch), &mut pending, &mut summary)?;
    flush(Vec::new(), &mut pending, &mut summary)?;

    if summary.rewritten_unreadable >= opts.surge_min as u64 {
        summary.alarms.push(format!(
            "possible ransomware: {} stored files were rewritten into bytes that cannot be read; the stored versions are kept and the new bytes quarantined",
            summary.rewritten_unreadable
        ));
    }
    if !summary.alarms.is_empty() {
        let alarms = summary.alarms.clone();
        store.call(move |c| -> rusqlite::Result<()> {
            let t = now();
            for a in &alarms {
                let kind = a.split(':').next().unwrap_or("alarm").to_owned();
                sql::alarm(c, &kind, a, &t)?;
            }
            Ok(())
        })??;
        for a in &summary.alarms {
            tracing::error!(alarm = %a, "ingest alarm");
        }
    }
    summary.last_seq = store.call(|c| outbox::head(c).map(|h| h.0))??;
    Ok(summary)
}

/// Walks `dir` below `root`, recording regular files by their path below the root.
fn walk(
    ri: usize,
    root: &Path,
    dir: &str,
    found: &mut BTreeMap<String, Found>,
    unscanned: &mut Vec<(usize, String)>,
    summary: &mut Summary,
) {
    let mut stack = vec![dir.to_owned()];
    while let Some(rel_dir) = stack.pop() {
        let abs = if rel_dir.is_empty() {
            root.to_owned()
        } else {
            root.join(&rel_dir)
        };
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound || rel_dir.is_empty() {
                    tracing::warn!(folder = %abs.display(), error = %e, "cannot read folder; its files are neither read nor marked missing");
                    unscanned.push((ri, rel_dir));
                }
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else {
                unscanned.push((ri, rel_dir.clone()));
                continue;
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                summary.ignored += 1;
                tracing::warn!(folder = %abs.display(), "a file name that is not UTF-8 was skipped");
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let rel = if rel_dir.is_empty() {
                name.to_owned()
            } else {
                format!("{rel_dir}/{name}")
            };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(rel);
            } else if meta.is_file() && !rel_dir.is_empty() {
                if found.contains_key(&rel) {
                    tracing::warn!(path = %rel, "the same path is under two roots; the first is used");
                    continue;
                }
                let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                found.insert(
                    rel,
                    Found {
                        root: ri,
                        size: meta.size() as i64,
                        mtime_ns,
                        inode: meta.ino() as i64,
                    },
                );
            } else {
                // Files at the top of a root (index files, notices) and links are not storage.
                summary.ignored += 1;
            }
        }
    }
}

fn read(rel: &str, f: &Found, root: &Path, root_key: &str, max: u64) -> Work {
    let bad = |reason: String, raw: Option<Vec<u8>>| Work::Bad {
        rel: rel.to_owned(),
        root: root_key.to_owned(),
        size: f.size,
        mtime_ns: f.mtime_ns,
        raw,
        reason,
    };
    if f.size as u64 > max {
        return bad(
            format!(
                "the file is {} bytes, more than the {} byte limit (max_file_bytes)",
                f.size, max
            ),
            None,
        );
    }
    let raw = match std::fs::read(root.join(rel)) {
        Ok(r) => r,
        Err(e) => return bad(format!("cannot read the file: {e}"), None),
    };
    let name = match path::parse(rel) {
        Ok(n) => n,
        Err(reason) => return bad(reason, Some(raw)),
    };
    match derive(&name, &raw) {
        Ok(derived) => {
            let sha256 = shared::chain::content_hash(&raw).to_vec();
            let stat = Stat {
                root: root_key.to_owned(),
                size: raw.len() as i64,
                mtime_ns: f.mtime_ns,
                inode: f.inode,
                sha256,
            };
            Work::Content {
                rel: rel.to_owned(),
                name,
                stat,
                raw,
                derived,
            }
        }
        Err(reason) => bad(reason, Some(raw)),
    }
}
