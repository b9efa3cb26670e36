//! Keeps watching the roots: inotify on every folder, and a full rescan every few minutes as a
//! safety net for what inotify misses (network shares, a full event queue, too many folders).

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::{scan, Options, Scope, Summary};
use crate::store::{self, Handle};

/// How the watcher paces itself.
#[derive(Debug, Clone)]
pub struct Pace {
    /// A full rescan runs this often whatever inotify says.
    pub rescan: Duration,
    /// Events are gathered until the tree has been quiet this long.
    pub settle: Duration,
    /// ...but never longer than this.
    pub max_wait: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            rescan: Duration::from_secs(300),
            settle: Duration::from_millis(300),
            max_wait: Duration::from_secs(2),
        }
    }
}

struct Watches {
    ino: Inotify,
    dirs: HashMap<WatchDescriptor, (usize, String)>,
    exhausted: bool,
}

const MASK: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_ATTRIB);

impl Watches {
    fn add_tree(&mut self, root_idx: usize, root: &Path, rel: &str) {
        let mut stack = vec![rel.to_owned()];
        while let Some(rel) = stack.pop() {
            let abs: PathBuf = if rel.is_empty() {
                root.to_owned()
            } else {
                root.join(&rel)
            };
            match self.ino.add_watch(&abs, MASK) {
                Ok(wd) => {
                    self.dirs.insert(wd, (root_idx, rel.clone()));
                }
                Err(Errno::ENOSPC) => {
                    if !self.exhausted {
                        tracing::warn!("inotify watch limit reached (fs.inotify.max_user_watches): the rest of the tree relies on the periodic rescan");
                        self.exhausted = true;
                    }
                    return;
                }
                Err(e) => tracing::debug!(folder = %abs.display(), error = %e, "not watched"),
            }
            if let Ok(entries) = std::fs::read_dir(&abs) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        if let Some(n) = e.file_name().to_str().filter(|n| !n.starts_with('.')) {
                            stack.push(if rel.is_empty() {
                                n.to_owned()
                            } else {
                                format!("{rel}/{n}")
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Scans everything, then follows changes until `stop` says so; `report` sees every scan's summary.
pub fn run(
    store: &Handle,
    opts: &Options,
    pace: &Pace,
    mut stop: impl FnMut() -> bool,
    mut report: impl FnMut(&Summary),
) -> Result<(), store::Error> {
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| store::Error::Gone(format!("inotify: {e}")))?;
    let mut w = Watches {
        ino,
        dirs: HashMap::new(),
        exhausted: false,
    };
    for (i, root) in opts.roots.iter().enumerate() {
        w.add_tree(i, root, "");
    }
    report(&scan(store, opts, &Scope::Full)?);
    let mut last_full = Instant::now();
    while !stop() {
        let dirty = gather(&mut w, opts, pace, Duration::from_millis(500));
        if last_full.elapsed() >= pace.rescan {
            report(&scan(store, opts, &Scope::Full)?);
            last_full = Instant::now();
        } else if !dirty.is_empty() {
            report(&scan(
                store,
                opts,
                &Scope::Dirs(dirty.into_iter().collect()),
            )?);
        }
    }
    Ok(())
}

/// Waits up to `first` for an event, then gathers events until the tree settles. Returns the
/// folders to rescan: the parent of every file event, and every new folder (watched from now on).
fn gather(
    w: &mut Watches,
    opts: &Options,
    pace: &Pace,
    first: Duration,
) -> BTreeSet<(usize, String)> {
    let mut dirty = BTreeSet::new();
    let start = Instant::now();
    let mut timeout = first;
    loop {
        let ready = {
            let mut fds = [PollFd::new(w.ino.as_fd(), PollFlags::POLLIN)];
            poll(
                &mut fds,
                PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::NONE),
            )
            .unwrap_or(0)
        };
        if ready == 0 {
            return dirty;
        }
        let events = w.ino.read_events().unwrap_or_default();
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: rescan every root.
                dirty.extend((0..opts.roots.len()).map(|i| (i, String::new())));
                continue;
            }
            let Some((ri, dir)) = w.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask.contains(AddWatchFlags::IN_IGNORED)
                || ev.mask.contains(AddWatchFlags::IN_DELETE_SELF)
            {
                w.dirs.remove(&ev.wd);
            }
            let name = ev.name.as_ref().and_then(|n| n.to_str()).map(str::to_owned);
            let child = name.as_ref().map(|n| {
                if dir.is_empty() {
                    n.clone()
                } else {
                    format!("{dir}/{n}")
                }
            });
            if ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                if let Some(c) = &child {
                    if ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    {
                        w.add_tree(ri, &opts.roots[ri], c);
                    }
                }
            }
            // The folder holding the change; files at a root's top are not storage.
            dirty.insert((ri, dir));
        }
        if start.elapsed() >= pace.max_wait {
            return dirty;
        }
        timeout = pace.settle;
    }
}
