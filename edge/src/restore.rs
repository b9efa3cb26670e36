//! Restoring a facility's store from the hub onto a fresh appliance: ask the hub for the plan
//! (which snapshot, which segments, what the chosen point leaves out), then read the stream and
//! build the store beside the real path, verify it, and move it into place. An interrupted restore
//! leaves nothing at the store's path.

use std::path::Path;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::Method;
use rusqlite::session::{ConflictAction, ConflictType};

use shared::wire::{Frame, RESTORE_MAGIC, RESTORE_MAGIC_1};

use crate::identity::Identity;
use crate::outbox;
use crate::store::{self, Key};

/// The restore point.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub to_seq: Option<u64>,
    pub to_time: Option<String>,
}

impl Target {
    fn query(&self) -> String {
        match (&self.to_seq, &self.to_time) {
            (Some(n), _) => format!("?to_seq={n}"),
            (None, Some(t)) => format!("?to_time={}", t.replace(':', "%3A").replace('+', "%2B")),
            _ => String::new(),
        }
    }
}

pub use shared::api::Plan;

/// Fetches the plan.
pub async fn plan(id: &Identity, hub: Option<&str>, target: &Target) -> anyhow::Result<Plan> {
    let reply = id
        .client(hub)?
        .get(&format!("/v1/restore/plan{}", target.query()))
        .await?;
    if !reply.status.is_success() {
        anyhow::bail!("the hub cannot plan this restore: {}", reply.message());
    }
    let plan: Plan = reply.json()?;
    check_schema(&plan)?;
    Ok(plan)
}

/// Refuses a copy whose schema is newer than this appliance knows: its rows would not fit the
/// store, and must never be dropped.
fn check_schema(plan: &Plan) -> anyhow::Result<()> {
    if plan.schema > shared::schema::VERSION {
        anyhow::bail!(
            "the hub's copy has schema {}, and this appliance knows up to {}: upgrade tsunagi-edge on this appliance, then restore",
            plan.schema,
            shared::schema::VERSION
        );
    }
    Ok(())
}

/// What a finished restore reached.
#[derive(Debug)]
pub struct Restored {
    pub seq: u64,
    pub snapshot_frames: u64,
    pub segments: u64,
    pub bytes: u64,
}

/// Restores into `store_dir`, which must not hold a store yet.
pub async fn restore(
    id: &Identity,
    hub: Option<&str>,
    target: &Target,
    store_dir: &Path,
    key: &Key,
) -> anyhow::Result<Restored> {
    if store_dir.join(store::DB_FILE).exists() {
        anyhow::bail!(
            "{} already holds a store; move it away first (a restore never overwrites a store)",
            store_dir.display()
        );
    }
    let plan = plan(id, hub, target).await?;
    let tmp = store_dir.with_extension("restoring");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    let conn = store::open(&tmp, key)?;
    let resp = id
        .client(hub)?
        .send(
            Method::GET,
            &format!("/v1/restore?to_seq={}", plan.to_seq),
            "text/plain",
            bytes::Bytes::new(),
        )
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::bail!(
            "the hub refused the restore ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut base: Option<(u64, [u8; 32])> = None;
    let mut chain = (0u64, [0u8; 32]);
    let mut done = None;
    let mut out = Restored {
        seq: 0,
        snapshot_frames: 0,
        segments: 0,
        bytes: 0,
    };
    while done.is_none() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.context("the restore stream broke off")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        out.bytes += data.len() as u64;
        buf.extend_from_slice(&data);
        let mut at = 0;
        if base.is_none() {
            if buf.len() < 44 {
                continue;
            }
            if &buf[..4] != RESTORE_MAGIC && &buf[..4] != RESTORE_MAGIC_1 {
                anyhow::bail!("the hub's restore stream does not start as one should (a newer hub? upgrade tsunagi-edge on this appliance)");
            }
            let b = (
                u64::from_be_bytes(buf[4..12].try_into()?),
                buf[12..44].try_into()?,
            );
            base = Some(b);
            chain = b;
            at = 44;
        }
        while let Some((f, used)) = Frame::decode(&buf[at..]).map_err(anyhow::Error::msg)? {
            at += used;
            match f {
                Frame::Snapshot { raw_len, body } => {
                    let cs = zstd::bulk::decompress(&body, raw_len.max(1))
                        .context("a snapshot chunk does not decompress")?;
                    let tx = conn.unchecked_transaction()?;
                    conn.apply_strm(
                        &mut &cs[..],
                        None::<fn(&str) -> bool>,
                        |_: ConflictType, _| ConflictAction::SQLITE_CHANGESET_ABORT,
                    )
                    .context("a snapshot chunk does not apply")?;
                    tx.commit()?;
                    out.snapshot_frames += 1;
                }
                Frame::Segment(s) => {
                    if s.schema > shared::schema::VERSION {
                        anyhow::bail!(
                            "segment {} of the copy was written at schema {}, and this appliance knows up to {}: upgrade tsunagi-edge on this appliance, then restore",
                            s.seq,
                            s.schema,
                            shared::schema::VERSION
                        );
                    }
                    let next = shared::chain::verify(chain.0, chain.1, std::slice::from_ref(&s))
                        .map_err(|e| {
                            anyhow::anyhow!("the restore stream's chain is broken: {e}")
                        })?;
                    outbox::apply(&conn, std::slice::from_ref(&s))?;
                    chain = next;
                    out.segments += 1;
                }
                Frame::End { seq, hash } => {
                    if (seq, hash) != chain {
                        anyhow::bail!(
                            "the restore stream ends at segment {seq} but its segments reach {}",
                            chain.0
                        );
                    }
                    done = Some((seq, hash));
                }
            }
        }
        buf.drain(..at);
    }
    let Some((seq, hash)) = done else {
        anyhow::bail!(
            "the restore stream ended early; nothing was put in place, run the restore again"
        );
    };
    if shared::chain::hex(&hash) != plan.to_hash {
        anyhow::bail!(
            "the restore reached {} but the plan promised {}",
            shared::chain::hex(&hash),
            plan.to_hash
        );
    }
    outbox::reset_to(&conn, seq, &hash, &crate::ingest::now())?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        anyhow::bail!("the restored store fails its integrity check: {check}");
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    drop(conn);
    std::fs::create_dir_all(store_dir.parent().unwrap_or(Path::new(".")))?;
    if store_dir.exists() {
        // An empty folder (no store in it, checked above) may stand where the store goes.
        std::fs::remove_dir(store_dir)
            .with_context(|| format!("{} is in the way and not empty", store_dir.display()))?;
    }
    std::fs::rename(&tmp, store_dir)?;
    out.seq = seq;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy newer than this appliance's schema is refused before anything is written; an
    /// older one, or one from a hub that does not say, is taken.
    #[test]
    fn a_copy_newer_than_this_appliance_is_refused_with_what_to_upgrade() {
        let plan = |schema| Plan {
            snapshot: None,
            base_seq: 0,
            segments: 0,
            first_segment: None,
            segment_bytes: 0,
            to_seq: 0,
            to_hash: String::new(),
            to_captured_at: None,
            head: shared::api::PlanHead {
                seq: 0,
                hash: String::new(),
            },
            lost_segments: 0,
            lost_files: 0,
            lost_from: None,
            lost_to: None,
            schema,
        };
        assert!(check_schema(&plan(0)).is_ok());
        assert!(check_schema(&plan(shared::schema::VERSION)).is_ok());
        let e = check_schema(&plan(shared::schema::VERSION + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upgrade tsunagi-edge on this appliance"), "{e}");
    }
}
