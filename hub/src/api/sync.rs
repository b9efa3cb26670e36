//! What an enrolled appliance calls as it runs: `ping`, the copy's position and segment upload,
//! and, for the hub's outages, its staff's password verifiers and the accesses served meanwhile.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use http_body_util::BodyExt;
use serde_json::json;

use super::error::{authed, ApiError, ApiResult};
use super::Peer;
use crate::copy::{self, Refusal};
use crate::now;
use crate::state::Hub;
use shared::chain::ChainError;

/// A cheap answer that proves the hub is up and still accepts this appliance.
pub(super) async fn ping(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = authed(&peer, &hub)?;
    Ok(Json(json!({ "facility": id.facility, "at": now() })))
}

/// The password verifiers of the appliance's own facility's staff, for logins while the hub is down.
pub(super) async fn verifiers(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = authed(&peer, &hub)?;
    let (f, h) = (id.facility.clone(), hub.clone());
    let list = tokio::task::spawn_blocking(move || {
        h.region_readers
            .with(move |c| Ok(crate::offline::verifiers(c, &f, now())?))
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))??;
    tracing::debug!(facility = %id.facility, appliance = %id.appliance, users = list.len(), "verifiers handed to the appliance");
    Ok(Json(json!({ "facility": id.facility, "users": list })))
}

/// Accesses an appliance served while the hub was down, into the audit log.
pub(super) async fn offline_accesses(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Json(batch): Json<Vec<crate::offline::Access>>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = authed(&peer, &hub)?;
    if batch.len() > 10_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many",
            "send at most 10000 accesses at a time",
        ));
    }
    let (f, a) = (id.facility.clone(), id.appliance.clone());
    let taken = hub
        .region
        .call(move |c| crate::offline::take(c, &f, &a, &batch))
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_accesses", e))?;
    if taken > 0 {
        tracing::info!(facility = %id.facility, appliance = %id.appliance, accesses = taken, "offline accesses taken into the audit log");
    }
    Ok(Json(json!({ "taken": taken })))
}

pub(super) async fn position(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<copy::Position>> {
    let id = authed(&peer, &hub)?;
    let pos = hub
        .copy(&id.facility)?
        .call(|c| copy::position(c))
        .await??;
    Ok(Json(pos))
}

pub(super) async fn segments(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<copy::Position>> {
    let id = authed(&peer, &hub)?;
    let limit = hub.settings.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a batch may hold at most {limit} bytes; send fewer segments at a time"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let (claimed, segs) = shared::wire::decode_batch(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_batch", e))?;
    if claimed != id.facility {
        tracing::warn!(facility = %id.facility, claimed = %claimed, serial = %id.serial, "batch claims another facility");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_facility",
            format!(
                "this appliance's certificate is for facility {}, but the batch claims {claimed}",
                id.facility
            ),
        ));
    }
    let n = segs.len();
    let result = hub
        .copy(&id.facility)?
        .call(move |c| copy::apply_batch(c, &segs))
        .await??;
    match result {
        Ok(pos) => {
            tracing::debug!(facility = %id.facility, segments = n, seq = pos.seq, "segments applied");
            hub.reindex(&id.facility);
            Ok(Json(pos))
        }
        Err((pos, refusal)) => {
            tracing::warn!(facility = %id.facility, seq = pos.seq, reason = %refusal, "segment refused");
            let code = match refusal {
                Refusal::Chain(ChainError::Gap { .. }) => "gap",
                Refusal::Chain(ChainError::Broken { .. }) => "broken_chain",
                Refusal::Chain(ChainError::Corrupt { .. } | ChainError::BadRow { .. }) => "corrupt",
                Refusal::Conflict { .. } => "conflict",
                Refusal::Unappliable { .. } => "unappliable",
                Refusal::Newer { .. } => "upgrade_hub",
            };
            let mut e = ApiError::new(StatusCode::CONFLICT, code, refusal.to_string());
            e.position = Some((pos.seq, shared::chain::hex(&pos.hash), pos.seq + 1));
            Err(e)
        }
    }
}
