//! The hub's shared state (`Hub`, with its `Settings`): the CA, the registry and the regional
//! database, each facility's copy and snapshots, the indexer's queue, and `still_valid`, the check
//! that a certificate has not been revoked or expired. Also what the listeners attach to each
//! request (`Channel`, `Remote`), and `ChannelBody`, the streamed answer of the API and the portal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;

use provisioning::{Ca, Identity};

use crate::db::{self, Worker};
use crate::key::Key;
use crate::region::{self, Readers};
use crate::tls::Revocations;
use crate::{now, registry};

/// Settings `serve` was started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client_cert_lifetime: i64,
    pub max_body: usize,
    pub snapshots_kept: usize,
}

/// Everything a request handler may need.
pub struct Hub {
    pub data: PathBuf,
    pub ca: Ca,
    pub key: Key,
    pub registry: Worker,
    pub revoked: Arc<Revocations>,
    pub settings: Settings,
    /// The regional database's writer, and readers for searches and pages.
    pub region: Worker,
    pub region_readers: Readers,
    copies: Mutex<HashMap<String, Arc<Worker>>>,
    copy_readers: Mutex<HashMap<String, Arc<Readers>>>,
    /// Facilities whose copy moved, for the indexer (`index_loop`).
    index_tx: tokio::sync::mpsc::UnboundedSender<String>,
    index_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Certificate serials whose first use the registry has been told of (`still_valid`).
    used: Mutex<std::collections::HashSet<String>>,
}

impl Hub {
    pub fn new(
        data: PathBuf,
        ca: Ca,
        key: Key,
        revoked: Arc<Revocations>,
        settings: Settings,
    ) -> anyhow::Result<Hub> {
        let conn = db::open(
            &data.join(registry::FILE),
            &key.derive("registry"),
            registry::MIGRATIONS,
        )?;
        let registry = db::worker("registry", conn)?;
        let region = db::worker("region", region::open(&data, &key.derive("region"))?)?;
        let region_readers = Readers::new(
            data.join(region::FILE),
            key.derive("region"),
            region::MIGRATIONS,
        );
        let (index_tx, index_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Hub {
            data,
            ca,
            key,
            registry,
            revoked,
            settings,
            region,
            region_readers,
            copies: Mutex::new(HashMap::new()),
            copy_readers: Mutex::new(HashMap::new()),
            index_tx,
            index_rx: Mutex::new(Some(index_rx)),
            used: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Read-only connections to a facility's copy, for the portal.
    pub fn copy_readers(&self, facility: &str) -> Arc<Readers> {
        let mut open = self.copy_readers.lock().unwrap_or_else(|e| e.into_inner());
        open.entry(facility.to_string())
            .or_insert_with(|| {
                Arc::new(Readers::new(
                    self.copy_path(facility),
                    self.key.derive(&format!("copy:{facility}")),
                    shared::schema::MIGRATIONS,
                ))
            })
            .clone()
    }

    /// Asks the indexer to take in what a facility's copy gained.
    pub fn reindex(&self, facility: &str) {
        let _ = self.index_tx.send(facility.to_string());
    }

    /// Indexes every copy once, then each copy again whenever it moves, until the hub stops.
    pub async fn index_loop(self: Arc<Self>) {
        let Some(mut rx) = self
            .index_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        for f in self.facilities() {
            self.reindex(&f);
        }
        while let Some(first) = rx.recv().await {
            let mut due = std::collections::BTreeSet::from([first]);
            while let Ok(f) = rx.try_recv() {
                due.insert(f);
            }
            for f in due {
                if let Err(e) = self.index_facility(&f).await {
                    tracing::error!(facility = %f, error = %format!("{e:#}"), "indexing failed; will retry at the next segment");
                }
            }
        }
    }

    /// Takes in what one facility's copy gained since the last run.
    pub async fn index_facility(&self, facility: &str) -> anyhow::Result<usize> {
        self.copy(facility)?;
        let copy = reader(self, facility)?;
        let f = facility.to_string();
        let n = self
            .region
            .call(move |region| -> anyhow::Result<usize> {
                Ok(crate::index::catch_up(region, &copy, &f, now())?)
            })
            .await??;
        if n > 0 {
            tracing::info!(facility = %facility, patients = n, "patients indexed");
        }
        Ok(n)
    }

    pub fn copy_path(&self, facility: &str) -> PathBuf {
        copy_path(&self.data, facility)
    }

    pub fn snapshot_dir(&self, facility: &str) -> PathBuf {
        snapshot_dir(&self.data, facility)
    }

    /// The worker that owns the facility's copy, opening (and creating) the copy on first use.
    pub fn copy(&self, facility: &str) -> anyhow::Result<Arc<Worker>> {
        let mut open = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = open.get(facility) {
            return Ok(w.clone());
        }
        let conn = db::open(
            &self.copy_path(facility),
            &self.key.derive(&format!("copy:{facility}")),
            shared::schema::MIGRATIONS,
        )?;
        let w = Arc::new(db::worker(&format!("copy-{facility}"), conn)?);
        open.insert(facility.to_string(), w.clone());
        Ok(w)
    }

    /// The facilities that have a copy.
    pub fn facilities(&self) -> Vec<String> {
        facilities(&self.data)
    }
}

pub fn copy_path(data: &std::path::Path, facility: &str) -> PathBuf {
    data.join("copies").join(format!("{facility}.db"))
}

pub fn snapshot_dir(data: &std::path::Path, facility: &str) -> PathBuf {
    data.join("snapshots").join(facility)
}

pub fn facilities(data: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(data.join("copies"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".db")
                .map(str::to_owned)
        })
        .filter(|f| provisioning::token::check_facility(f).is_ok())
        .collect();
    out.sort();
    out
}

/// A reader on the facility's copy, separate from its writer, for plans and restore streams.
pub(crate) fn reader(hub: &Hub, facility: &str) -> anyhow::Result<rusqlite::Connection> {
    db::open_read_only(
        &hub.copy_path(facility),
        &hub.key.derive(&format!("copy:{facility}")),
        shared::schema::MIGRATIONS,
    )
}

/// A certificate verified at the handshake may since have been revoked or have expired.
pub fn still_valid(hub: &Hub, id: &Identity) -> Result<(), (&'static str, String)> {
    hub.revoked.check(id).map_err(|e| ("revoked", e))?;
    if now() > id.not_after {
        return Err((
            "expired",
            "the client certificate has expired; enrol the appliance again".into(),
        ));
    }
    hub.note_use(&id.serial);
    Ok(())
}

/// How many first uses the hub remembers having written; past it, it forgets and writes again
/// (the write is idempotent).
const USED_REMEMBERED: usize = 100_000;

impl Hub {
    /// Records in the registry, once per serial, that a certificate has been used: a renewal
    /// replaces the certificate before it only once the appliance presents the new one, which is
    /// what `ca withdraw-issuing` goes by.
    fn note_use(&self, serial: &str) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains(serial) {
            return;
        }
        if used.len() >= USED_REMEMBERED {
            used.clear();
        }
        used.insert(serial.to_string());
        let (serial, t) = (serial.to_string(), now());
        self.registry.send(move |c| {
            if let Err(e) = registry::mark_used(c, &serial, t) {
                tracing::error!(error = %e, "cannot record a certificate's first use");
            }
        });
    }
}

/// The address a request's connection came from.
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub SocketAddr);

/// How a request reached the hub: which certificate its connection presented, on which listener.
#[derive(Clone, Debug)]
pub enum Channel {
    /// An appliance's own certificate (`Purpose::Appliance`): the API, never the portal.
    Appliance(Identity),
    /// Through a facility's LAN proxy, whose portal-only certificate this is: the portal, never
    /// the API.
    Proxy(Identity),
    /// On the operators' listener.
    Operators,
    /// On the appliances' listener without a client certificate: enrolment only.
    Unauthenticated,
}

/// A response body fed by a channel, so a large restore or download streams instead of sitting
/// in memory. With a known length, the answer carries it, so a stream cut short is seen as such.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>, pub Option<u64>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.1 {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}
