//! The API's errors (`ApiError`: a status, a short code and a message, answered as
//! `shared::api::ErrorBody`), and `authed`, the certificate check every route but enrolment makes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use provisioning::{Identity, Purpose};

use super::Peer;
use crate::state::{still_valid, Hub};
use shared::api::ErrorBody;

/// An API error: a status, a short machine-readable code and a message for the person reading the
/// appliance's log. Internal failures are logged here and answered without detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Where the copy stands, for a refused batch: seq, hash, the seq it expects.
    pub(super) position: Option<(u64, String, u64)>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            position: None,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        tracing::error!(error = %format!("{e:#}"), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the hub failed internally; it has logged why",
        )
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        anyhow::Error::from(e).into()
    }
}

impl From<sqlkit::Error> for ApiError {
    fn from(e: sqlkit::Error) -> ApiError {
        anyhow::Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (seq, hash, expected) = match self.position {
            Some((s, h, e)) => (Some(s), Some(h), Some(e)),
            None => (None, None, None),
        };
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            seq,
            hash,
            expected,
        };
        (self.status, Json(body)).into_response()
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// The verified facility of the request, refusing a connection without a certificate, and a
/// certificate revoked or expired since the connection was made.
pub(super) fn authed(peer: &Peer, hub: &Hub) -> ApiResult<Identity> {
    let id = peer.0.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_certificate",
            "a client certificate from the network CA is required; enrol the appliance first",
        )
    })?;
    if id.purpose != Purpose::Appliance {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_certificate", "this certificate is for the portal only; the API takes the appliance's own certificate"));
    }
    still_valid(hub, &id).map_err(|(code, m)| ApiError::new(StatusCode::FORBIDDEN, code, m))?;
    Ok(id)
}
