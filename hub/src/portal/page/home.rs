//! The home page: notices (a password about to expire, an action just done) and the count of
//! unread messages.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::portal::{authed, jst, render, session, Nav, Portal, Result, Term};
use crate::{account, consent, now};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Option<Nav>,
    /// What was just done (green).
    done: Vec<String>,
    /// What needs doing (yellow).
    notices: Vec<String>,
    unread: i64,
}

pub async fn home(State(p): State<Arc<Portal>>, t: Term, headers: HeaderMap) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let mut notices = Vec::new();
    let mut done = Vec::new();
    match session::notice(&headers).as_str() {
        "password" => done.push("パスワードを変更しました。".to_string()),
        "emergency-ended" => done.push("緊急閲覧を終了しました。".to_string()),
        _ => {}
    }
    let left = ctx.user.password_expires_at() - now();
    if left <= account::EXPIRY_NOTICE {
        notices.push(format!(
            "パスワードの有効期限は {} です（残り{}日）。期限までに変更してください。",
            jst(ctx.user.password_expires_at()),
            (left / 86_400).max(0)
        ));
    }
    let f = ctx.user.facility.clone();
    let unread = p.read(move |c| Ok(consent::unread(c, &f)?)).await?;
    let mut r = render(&HomePage {
        nav: Some(ctx.nav),
        done,
        notices,
        unread,
    })?;
    if !session::notice(&headers).is_empty() {
        session::add_cookie(&mut r, session::clear_cookie(session::NOTICE_COOKIE));
    }
    Ok(r)
}
