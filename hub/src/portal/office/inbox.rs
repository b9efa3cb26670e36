//! The inbox of a facility (or the office): the notices it was sent, marked read when shown.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::account::Role;
use crate::portal::{authed, jst, render, Nav, Portal, Result, Term};
use crate::{consent, now};

pub struct Msg {
    pub at: String,
    pub subject: String,
    pub body: String,
    pub read: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    nav: Option<Nav>,
    messages: Vec<Msg>,
}

pub async fn inbox(State(p): State<Arc<Portal>>, t: Term, headers: HeaderMap) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(
        ctx.user.role.in_facility() || ctx.user.role == Role::Office,
        "受信箱",
    )?;
    let (f, t) = (ctx.user.facility.clone(), now());
    let list = p.read(move |c| Ok(consent::inbox(c, &f, 200)?)).await?;
    let f = ctx.user.facility.clone();
    p.write(move |c| Ok(consent::mark_read(c, &f, t)?)).await?;
    let messages = list
        .into_iter()
        .map(|m| Msg {
            at: jst(m.at),
            subject: m.subject,
            body: m.body,
            read: m.read,
        })
        .collect();
    render(&InboxPage {
        nav: Some(ctx.nav),
        messages,
    })
}
