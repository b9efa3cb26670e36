//! Staff accounts: the list, adding a person with a temporary password, and disabling, enabling
//! or resetting an account.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;

use crate::account::{self, Role};
use crate::audit;
use crate::now;
use crate::portal::{
    authed, field, jst, now_ms, render, Ctx, Error, Nav, Params, Portal, Result, Term,
};

pub struct UserRow {
    pub login: String,
    pub name: String,
    pub facility: String,
    pub role: &'static str,
    pub state: String,
    pub disabled: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Option<Nav>,
    office: bool,
    users: Vec<UserRow>,
    roles: Vec<(&'static str, &'static str)>,
    message: String,
    issued: Option<(String, String)>,
}

fn may_manage(ctx: &Ctx) -> Result<()> {
    ctx.require(
        matches!(ctx.user.role, Role::Office | Role::FacilityAdmin),
        "利用者の管理",
    )
}

/// Roles an administrator may give: the office any; a facility administrator its own staff.
fn grantable(ctx: &Ctx) -> Vec<Role> {
    if ctx.user.role == Role::Office {
        Role::ALL.to_vec()
    } else {
        vec![Role::Doctor, Role::Nurse, Role::Pharmacist, Role::Clerk]
    }
}

async fn users_page(
    p: &Arc<Portal>,
    ctx: &Ctx,
    message: String,
    issued: Option<(String, String)>,
) -> Result<Response> {
    let office = ctx.user.role == Role::Office;
    let f = (!office).then(|| ctx.user.facility.clone());
    let list = p.read(move |c| Ok(account::list(c, f.as_deref())?)).await?;
    let t = now();
    let mut users = Vec::new();
    for u in list {
        let state = if u.disabled_at.is_some() {
            "無効".to_string()
        } else if u.locked_until.is_some_and(|x| x > t) {
            "ロック中".to_string()
        } else if u.must_change {
            "初回パスワード変更待ち".to_string()
        } else {
            format!("有効（パスワード期限 {}）", jst(u.password_expires_at()))
        };
        users.push(UserRow {
            facility: p.facility_name(&u.facility).await,
            role: u.role.label(),
            disabled: u.disabled_at.is_some(),
            login: u.login,
            name: u.name,
            state,
        });
    }
    let roles = grantable(ctx)
        .into_iter()
        .map(|r| (r.code(), r.label()))
        .collect();
    render(&UsersPage {
        nav: Some(ctx.nav.clone()),
        office,
        users,
        roles,
        message,
        issued,
    })
}

pub async fn users(State(p): State<Arc<Portal>>, t: Term, headers: HeaderMap) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_manage(&ctx)?;
    users_page(&p, &ctx, String::new(), None).await
}

pub async fn user_add(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_manage(&ctx)?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let role = Role::parse(field(&f, "role")).map_err(Error::BadRequest)?;
    if !grantable(&ctx).contains(&role) {
        return Err(Error::Forbidden(format!(
            "{}の利用者は、この権限では登録できません。",
            role.label()
        )));
    }
    // A facility administrator always adds to its own facility, whatever the form says.
    let facility = if ctx.user.role == Role::Office {
        field(&f, "facility").to_string()
    } else {
        ctx.user.facility.clone()
    };
    let (login, name) = (
        field(&f, "login").to_lowercase(),
        field(&f, "name").to_string(),
    );
    let temp = account::temporary_password();
    let t2 = temp.clone();
    let verifier = p.hash(move || account::hash_password(&t2)).await?;
    let (by, t, at) = (ctx.user.login.clone(), now(), now_ms());
    let mut e = ctx.event("user-add", "");
    e.detail = format!("login={login} facility={facility} role={}", role.code());
    let (l, fa) = (login.clone(), facility.clone());
    let result = p
        .write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let r = account::add(&tx, &l, &name, &fa, role, &verifier, &by, t)?;
            if r.is_ok() {
                audit::append(&tx, at, &e)?;
            }
            tx.commit()?;
            Ok(r)
        })
        .await?;
    match result {
        Ok(()) => users_page(&p, &ctx, format!("利用者 {login} を登録しました。仮パスワードを本人に渡してください（初回ログイン時に変更が必要です）。"), Some((login, temp))).await,
        Err(err) => users_page(&p, &ctx, format!("登録できません: {err}"), None).await,
    }
}

pub async fn user_action(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path((login, action)): Path<(String, String)>,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_manage(&ctx)?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let l = login.clone();
    let target = p
        .read(move |c| Ok(account::get(c, &l)?))
        .await?
        .ok_or_else(|| Error::NotFound(format!("利用者 {login} はいません。")))?;
    if ctx.user.role != Role::Office
        && (target.facility != ctx.user.facility || !grantable(&ctx).contains(&target.role))
    {
        return Err(Error::Forbidden(
            "他施設の利用者や管理者は、この権限では変更できません。".into(),
        ));
    }
    if target.login == ctx.user.login {
        return Err(Error::BadRequest(
            "自分自身のIDはここでは変更できません。".into(),
        ));
    }
    let (t, at) = (now(), now_ms());
    let mut e = ctx.event("", "");
    e.detail = format!("login={login}");
    let temp = account::temporary_password();
    let t2 = temp.clone();
    let verifier = p.hash(move || account::hash_password(&t2)).await?;
    let (l, act) = (login.clone(), action.clone());
    p.write(move |c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        match act.as_str() {
            "disable" => {
                account::disable(&tx, &l, t)?.map_err(anyhow::Error::from)?;
                e.action = "user-disable".into();
            }
            "enable" => {
                account::enable(&tx, &l)?.map_err(anyhow::Error::from)?;
                e.action = "user-enable".into();
            }
            "reset" => {
                account::reset(&tx, &l, &verifier, t)?.map_err(anyhow::Error::from)?;
                e.action = "user-reset".into();
            }
            other => anyhow::bail!("unknown user action {other}"),
        }
        audit::append(&tx, at, &e)?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    p.sessions.end_all(&login);
    match action.as_str() {
        "reset" => {
            users_page(
                &p,
                &ctx,
                format!("{login} のパスワードを再設定しました。"),
                Some((login, temp)),
            )
            .await
        }
        "disable" => {
            users_page(
                &p,
                &ctx,
                format!("{login} を無効にしました。ログイン中の画面も終了しました。"),
                None,
            )
            .await
        }
        _ => users_page(&p, &ctx, format!("{login} を有効にしました。"), None).await,
    }
}
