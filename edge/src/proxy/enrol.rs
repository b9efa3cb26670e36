//! The appliance's own enrolment endpoints, never passed to the hub: screen-lock reporters
//! enrol and post at `POSTURE_PATH`, and a terminal is enrolled at `ENROL_PATH`.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};

use super::{
    cookie, escape, offline, page, random_token, set_cookie, Body, Proxy, ENROL_COOKIE, ENROL_PATH,
    TERMINAL_COOKIE,
};
use crate::policy::Terminal;

impl Proxy {
    /// A screen-lock reporter: `{"code": …}` enrols it (with a one-time terminal code) and
    /// answers its token; a report with `Authorization: Bearer <token>` is classified and kept.
    pub(super) async fn posture_report(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let json = |status: StatusCode, v: serde_json::Value| {
            page(status, "application/json", v.to_string())
        };
        if req.method() != hyper::Method::POST {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "POST a report (see docs/policy.md)"}),
            );
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    serde_json::json!({"error": "a report is at most 64 KB"}),
                )
            }
        };
        let value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("the report is not JSON: {e}")}),
                )
            }
        };
        let now = shared::time::now();
        if let Some(code) = value.get("code").and_then(|c| c.as_str()) {
            let fresh = random_token();
            let (local, hash, code) = (
                self.local.clone(),
                shared::chain::content_hash(fresh.as_bytes()),
                code.to_string(),
            );
            return match tokio::task::spawn_blocking(move || {
                local.enrol_reporter(&code, &hash, now)
            })
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            {
                Some(name) => {
                    tracing::info!(name = %name, from = %remote.ip(), "screen-lock reporter enrolled");
                    json(
                        StatusCode::OK,
                        serde_json::json!({"token": fresh, "terminal": name}),
                    )
                }
                None => {
                    tracing::warn!(from = %remote.ip(), "screen-lock reporter enrolment refused: wrong, used or expired code");
                    json(
                        StatusCode::FORBIDDEN,
                        serde_json::json!({"error": "the code is wrong, used or expired: ask the facility administrator for a new one (tsunagi-edge terminal code)"}),
                    )
                }
            };
        }
        let Some(token) = token else {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "no reporter token: enrol the reporter first with a code from tsunagi-edge terminal code"}),
            );
        };
        let (local, hash) = (
            self.local.clone(),
            shared::chain::content_hash(token.as_bytes()),
        );
        let name = match tokio::task::spawn_blocking(move || local.reporter_name(&hash))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
        {
            Some(n) => n,
            None => {
                tracing::warn!(from = %remote.ip(), "screen-lock report with an unknown token refused");
                return json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "unknown reporter token: enrol the reporter again with a new code"}),
                );
            }
        };
        let posted: crate::policy::screenlock::Posted = match serde_json::from_value(value) {
            Ok(p) => p,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("the report does not have the expected fields: {e}")}),
                )
            }
        };
        let policy = self.policy.clone();
        match tokio::task::spawn_blocking(move || policy.report(&name, &posted)).await {
            Ok(Ok(v)) => json(StatusCode::OK, v),
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "a screen-lock report could not be kept");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"error": format!("the report could not be kept: {e:#}")}),
                )
            }
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "internal error"}),
            ),
        }
    }

    /// The page where a terminal is enrolled with a one-time code from the facility
    /// administrator. A terminal enrolled gets a fresh cookie id, so an id seen before enrolment
    /// does not carry the name.
    pub(super) async fn enrol_terminal(
        &self,
        req: Request<Incoming>,
        terminal: &mut Terminal,
    ) -> Response<Body> {
        let mut message = match &terminal.enrolled {
            Some(n) => format!("この端末は「{n}」として登録されています。"),
            None => "この端末はまだ登録されていません。施設の管理者から受け取った登録コードを入力してください。".to_string(),
        };
        if req.method() == hyper::Method::POST {
            let (parts, body) = req.into_parts();
            let form = Limited::new(body, 4096)
                .collect()
                .await
                .ok()
                .map(|b| offline::fields(&String::from_utf8_lossy(&b.to_bytes())));
            let code = form
                .as_ref()
                .and_then(|f| f.get("code").cloned())
                .unwrap_or_default();
            let fresh = random_token();
            let (local, id, now) = (
                self.local.clone(),
                shared::chain::content_hash(fresh.as_bytes()),
                shared::time::now(),
            );
            let sent_from_here = cookie(&parts.headers, ENROL_COOKIE).is_some_and(|c| {
                form.as_ref()
                    .and_then(|f| f.get("csrf"))
                    .is_some_and(|t| view::password::same_bytes(t.as_bytes(), c.as_bytes()))
            });
            let taken = if sent_from_here {
                tokio::task::spawn_blocking(move || local.enrol_terminal(&code, &id, now))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            } else {
                None
            };
            match taken {
                Some(name) => {
                    tracing::info!(terminal = %format!("t-{}@{}", &fresh[..12], terminal.addr), name = %name, "terminal enrolled");
                    self.terminals
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, name.clone());
                    terminal.id = fresh;
                    terminal.new = true;
                    terminal.enrolled = Some(name.clone());
                    message = format!("この端末を「{name}」として登録しました。");
                }
                None => {
                    tracing::warn!(terminal = %terminal.label(), "terminal enrolment refused: wrong, used or expired code");
                    message = "登録コードが違うか、使用済みか、期限切れです。施設の管理者に新しいコードを発行してもらってください。".into();
                }
            }
        }
        let csrf = random_token();
        let html = format!(
            "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>端末の登録 — tsunagi</title><link rel=\"stylesheet\" href=\"/static/portal.css\"></head><body><header class=\"bar\"><a class=\"brand\" href=\"/\">tsunagi 地域医療連携</a></header><main><h1>端末の登録</h1><p class=\"notice\" id=\"message\">{}</p><form method=\"post\" action=\"{ENROL_PATH}\" class=\"card narrow\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><label>登録コード <input name=\"code\" id=\"code\" required maxlength=\"64\" autocomplete=\"off\"></label><button id=\"submit\">登録する</button></form><p><a href=\"/\">ポータルへ</a></p></main></body></html>",
            escape(&message)
        );
        let mut r = page(StatusCode::OK, "text/html; charset=utf-8", html);
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(ENROL_COOKIE, &csrf, None));
        if terminal.new {
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(TERMINAL_COOKIE, &terminal.id, Some(10 * 365 * 86_400)),
            );
        }
        r
    }
}
