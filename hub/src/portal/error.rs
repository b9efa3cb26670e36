//! What went wrong, as the person at the browser sees it: the portal's `Error`, the error page it
//! renders into, and the `Result` every handler returns.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::Nav;

/// What went wrong, as the person at the browser sees it.
#[derive(Debug)]
pub enum Error {
    /// Not logged in, or the session ended: back to the login page with a reason.
    Login(&'static str),
    /// Logged in but must change the password first.
    MustChange,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    /// Too many logins at once: try again shortly.
    Busy,
    Internal,
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        tracing::error!(error = %format!("{e:#}"), "portal internal error");
        Error::Internal
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        anyhow::Error::from(e).into()
    }
}

impl From<sqlkit::Error> for Error {
    fn from(e: sqlkit::Error) -> Error {
        anyhow::Error::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Option<Nav>,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Error::Login(m) => return super::session::redirect_with_notice("/login", m),
            Error::MustChange => return Redirect::to("/password").into_response(),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "アクセスできません", m.as_str()),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "見つかりません", m.as_str()),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "入力を確認してください", m.as_str()),
            Error::Busy => (StatusCode::SERVICE_UNAVAILABLE, "混み合っています", "ただいまログインが集中しています。10秒ほど待ってから、もう一度お試しください。"),
            Error::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "システムエラー", "処理中にエラーが発生しました。記録されていますので、時間をおいて再度お試しください。続く場合はネットワーク事務局へ連絡してください。"),
        };
        let body = ErrorPage {
            nav: None,
            title,
            message,
        }
        .render()
        .unwrap_or_else(|_| title.to_string());
        (status, Html(body)).into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
