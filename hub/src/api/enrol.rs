//! Enrolment (with a one-time token) and renewal (with the appliance's certificate): the
//! appliance's client certificate, and its LAN server and portal-proxy certificates if it asks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use provisioning::Purpose;

use super::error::{authed, ApiError, ApiResult};
use super::Peer;
use crate::state::Hub;
use crate::{now, registry};
use shared::api::{EnrollRequest, Issued, LanRequest, ProxyRequest, RenewRequest};

/// A certificate's start, set a little in the past to forgive an appliance whose clock is behind:
/// five minutes, or a quarter of a (test-short) lifetime.
fn not_before(hub: &Hub, t: i64) -> i64 {
    t - (hub.settings.client_cert_lifetime / 4).min(300)
}

/// The registry's row for a certificate issued to an appliance at `t`. Certificates issued
/// together share `t`: revoking the appliance's own certificate revokes the others with it.
fn cert_row(
    issued: &provisioning::ca::Issued,
    facility: &str,
    appliance: &str,
    not_before: i64,
    t: i64,
    how: &str,
) -> registry::Cert {
    registry::Cert {
        serial: issued.serial.clone(),
        facility: facility.to_string(),
        appliance: appliance.to_string(),
        not_before,
        not_after: issued.not_after,
        issued_at: t,
        how: how.into(),
        revoked_at: None,
        issuer: Some(issued.issuer.clone()),
    }
}

/// Issues the LAN proxy's portal-only client certificate, as of `t`.
fn issue_proxy(
    hub: &Hub,
    facility: &str,
    appliance: &str,
    req: &ProxyRequest,
    t: i64,
) -> ApiResult<(String, registry::Cert)> {
    let key = provisioning::ca::parse_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    let nb = not_before(hub, t);
    let issued = hub
        .ca
        .issue_client(
            &key,
            facility,
            appliance,
            Purpose::PortalProxy,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(anyhow::Error::msg)?;
    let cert = cert_row(&issued, facility, appliance, nb, t, "proxy");
    Ok((issued.chain_pem, cert))
}

/// Checks a request for the appliance's LAN server certificate: names its facility's browsers
/// may use for it and nothing else (`Ca::check_lan_names`: since those browsers trust the
/// network root, a name outside the facility's part of the LAN domain and private addresses, or
/// one of the hub's or broker's names, would let an appliance pose as another site), and a
/// valid CSR.
fn check_lan_request(hub: &Hub, facility: &str, lan: &LanRequest) -> ApiResult<()> {
    hub.ca
        .check_lan_names(facility, &lan.names)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_lan_names", e))?;
    provisioning::ca::parse_csr(&lan.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))
        .map(|_| ())
}

/// At most this many renewals an appliance in 24 hours.
pub const RENEWALS_PER_DAY: i64 = 10;

/// Checks (and with `claim`, records) that the private addresses a LAN certificate would carry
/// are this facility's: the first facility to be issued one holds it (`registry::lan_addresses`).
async fn claim_lan_addresses(
    hub: &Hub,
    facility: &str,
    names: &[String],
    claim: bool,
) -> ApiResult<()> {
    let (f, n, t) = (facility.to_string(), names.to_vec(), now());
    hub.registry
        .call(move |c| registry::lan_addresses(c, &f, &n, claim, t))
        .await??
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_lan_names", e))
}

/// Issues the appliance's LAN server certificate, as of `t`: `Ca::issue_lan` checks the names,
/// and the private addresses it carries are then claimed for the facility (a certificate refused
/// there is never handed out or recorded).
async fn issue_lan(
    hub: &Hub,
    facility: &str,
    appliance: &str,
    lan: &LanRequest,
    t: i64,
) -> ApiResult<(String, registry::Cert)> {
    let key = provisioning::ca::parse_csr(&lan.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    let nb = not_before(hub, t);
    let issued = hub
        .ca
        .issue_lan(
            &key,
            facility,
            &lan.names,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_lan_names", e))?;
    claim_lan_addresses(hub, facility, &lan.names, true).await?;
    let cert = cert_row(&issued, facility, appliance, nb, t, "lan");
    Ok((issued.chain_pem, cert))
}

/// Reads a request body that states its versions: an appliance newer than this hub is told to
/// upgrade the hub (409 `upgrade_hub`) before its body is held to this hub's type, and a body
/// with a field nobody defined is refused by name (400 `bad_request`).
fn versioned<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> ApiResult<T> {
    let v: shared::api::Versions = serde_json::from_value(body.clone()).unwrap_or_default();
    shared::api::hub_takes(v.protocol, v.schema)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "upgrade_hub", e))?;
    serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the request body is not what this hub reads: {e}"),
        )
    })
}

pub(super) async fn enroll(
    State(hub): State<Arc<Hub>>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<Issued>> {
    // An appliance newer than this hub is refused before anything is spent on it: it could send
    // rows this hub cannot keep.
    let req: EnrollRequest = versioned(body)?;
    provisioning::token::check_appliance(&req.appliance)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_appliance", e))?;
    let public_key = provisioning::ca::parse_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    // Everything the request asks for is checked before the one-time token is spent on it (the
    // LAN names against the facility the token is for, if it is one that can still be used).
    let hash = provisioning::token::hash(&req.token);
    let t = now();
    if let Some(l) = &req.lan {
        if let Some(facility) = hub
            .registry
            .call(move |c| registry::token_facility(c, &hash, t))
            .await??
        {
            check_lan_request(&hub, &facility, l)?;
            claim_lan_addresses(&hub, &facility, &l.names, false).await?;
        }
    }
    if let Some(p) = &req.proxy {
        provisioning::ca::parse_csr(&p.csr)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    }
    let taken = hub
        .registry
        .call(move |c| registry::take_token(c, &hash, t))
        .await??;
    let (facility, facility_name) = taken.map_err(|e| {
        tracing::warn!(appliance = %req.appliance, error = %e, "enrolment refused");
        ApiError::new(StatusCode::FORBIDDEN, "bad_token", e.to_string())
    })?;
    let nb = not_before(&hub, t);
    let lan = match &req.lan {
        Some(l) => Some(issue_lan(&hub, &facility, &req.appliance, l, t).await?),
        None => None,
    };
    let proxy = match &req.proxy {
        Some(p) => Some(issue_proxy(&hub, &facility, &req.appliance, p, t)?),
        None => None,
    };
    let issued = hub
        .ca
        .issue_client(
            &public_key,
            &facility,
            &req.appliance,
            Purpose::Appliance,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(anyhow::Error::msg)?;
    let cert = cert_row(&issued, &facility, &req.appliance, nb, t, "enrol");
    let serial = issued.serial.clone();
    let extra: Vec<registry::Cert> = lan
        .iter()
        .chain(proxy.iter())
        .map(|l| l.1.clone())
        .collect();
    hub.registry
        .call(move |c| {
            registry::record_cert(c, &cert)?;
            for l in &extra {
                registry::record_cert(c, l)?;
            }
            registry::token_used_by(c, &hash, &serial)
        })
        .await??;
    tracing::info!(facility = %facility, appliance = %req.appliance, serial = %issued.serial, "appliance enrolled");
    Ok(Json(Issued {
        chain_pem: issued.chain_pem,
        root_pem: hub.ca.root_pem().to_string(),
        facility,
        facility_name,
        appliance: req.appliance,
        serial: issued.serial,
        not_after: issued.not_after,
        lan_chain_pem: lan.map(|l| l.0),
        proxy_chain_pem: proxy.map(|p| p.0),
        protocol: shared::api::PROTOCOL,
        schema: shared::schema::VERSION,
    }))
}

pub(super) async fn renew(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<Issued>> {
    let id = authed(&peer, &hub)?;
    let req: RenewRequest = versioned(body)?;
    let public_key = provisioning::ca::parse_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    let t = now();
    // An appliance renews at two thirds of its lifetime, when its LAN names change, or when told
    // to; a stolen identity minting certificates by the dozen is not that.
    let (f, a) = (id.facility.clone(), id.appliance.clone());
    let recent = hub
        .registry
        .call(move |c| registry::renewals_since(c, &f, &a, t - 86_400))
        .await??;
    if recent >= RENEWALS_PER_DAY {
        tracing::warn!(facility = %id.facility, appliance = %id.appliance, recent, "renewal refused: too many in a day");
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_renewals", format!("this appliance renewed {recent} times in the last 24 hours; try again tomorrow, or ask the network office")));
    }
    let nb = not_before(&hub, t);
    let lan = match &req.lan {
        Some(l) => Some(issue_lan(&hub, &id.facility, &id.appliance, l, t).await?),
        None => None,
    };
    let proxy = match &req.proxy {
        Some(p) => Some(issue_proxy(&hub, &id.facility, &id.appliance, p, t)?),
        None => None,
    };
    let issued = hub
        .ca
        .issue_client(
            &public_key,
            &id.facility,
            &id.appliance,
            Purpose::Appliance,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(anyhow::Error::msg)?;
    let cert = cert_row(&issued, &id.facility, &id.appliance, nb, t, "renew");
    let f = id.facility.clone();
    let extra: Vec<registry::Cert> = lan
        .iter()
        .chain(proxy.iter())
        .map(|l| l.1.clone())
        .collect();
    let name = hub
        .registry
        .call(move |c| {
            registry::record_cert(c, &cert)?;
            for l in &extra {
                registry::record_cert(c, l)?;
            }
            registry::facility_name(c, &f)
        })
        .await??;
    tracing::info!(facility = %id.facility, appliance = %id.appliance, old = %id.serial, new = %issued.serial, "certificate renewed");
    Ok(Json(Issued {
        chain_pem: issued.chain_pem,
        root_pem: hub.ca.root_pem().to_string(),
        facility: id.facility,
        facility_name: name.unwrap_or_default(),
        appliance: id.appliance,
        serial: issued.serial,
        not_after: issued.not_after,
        lan_chain_pem: lan.map(|l| l.0),
        proxy_chain_pem: proxy.map(|p| p.0),
        protocol: shared::api::PROTOCOL,
        schema: shared::schema::VERSION,
    }))
}
