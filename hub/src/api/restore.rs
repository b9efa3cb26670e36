//! Restore: the plan (which snapshot, then which archived segments) and the stream that sends
//! a facility's copy to a replacement appliance, up to a sequence number, a time or the head.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;

use super::error::{authed, ApiError, ApiResult};
use super::Peer;
use crate::key::Key;
use crate::snapshot::{self, Target};
use crate::state::{reader, ChannelBody, Hub};

#[derive(Deserialize, Default)]
pub struct RestoreQuery {
    to_seq: Option<u64>,
    to_time: Option<String>,
}

fn target(q: &RestoreQuery) -> Target {
    match (&q.to_seq, &q.to_time) {
        (Some(n), _) => Target::Seq(*n),
        (None, Some(t)) => Target::Time(t.clone()),
        _ => Target::Head,
    }
}

/// Opens a reader on the facility's copy and works out the plan, on a blocking thread: it reads
/// the copy and opens every snapshot.
async fn plan_for(
    hub: &Arc<Hub>,
    facility: &str,
    q: RestoreQuery,
) -> ApiResult<(rusqlite::Connection, snapshot::Plan, Key)> {
    hub.copy(facility)?;
    let (h, facility) = (hub.clone(), facility.to_string());
    tokio::task::spawn_blocking(move || {
        let key = h.key.derive(&format!("copy:{facility}"));
        let c = reader(&h, &facility).map_err(ApiError::from)?;
        let plan = snapshot::plan(&c, &h.snapshot_dir(&facility), &key, &target(&q))
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, "no_plan", format!("{e:#}")))?;
        Ok((c, plan, key))
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?
}

pub(super) async fn restore_plan(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<RestoreQuery>,
) -> ApiResult<Json<shared::api::Plan>> {
    let id = authed(&peer, &hub)?;
    let (c, plan, _) = plan_for(&hub, &id.facility, q).await?;
    let schema =
        shared::schema::synced_version(c.query_row("PRAGMA user_version", [], |r| r.get(0))?);
    Ok(Json(plan.wire(schema)))
}

pub(super) async fn restore(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<RestoreQuery>,
) -> ApiResult<Response> {
    let id = authed(&peer, &hub)?;
    let (c, plan, key) = plan_for(&hub, &id.facility, q).await?;
    tracing::info!(facility = %id.facility, appliance = %id.appliance, to = plan.to_seq, base = plan.base_seq, "restore started");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = snapshot::stream(&c, &plan, &key, |b| {
            tx.blocking_send(Bytes::from(b)).is_ok()
        }) {
            tracing::error!(error = %format!("{e:#}"), "restore stream failed");
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::new(ChannelBody(rx, None)))
        .map_err(|e| anyhow::anyhow!(e))?)
}
