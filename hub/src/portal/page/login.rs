//! Logging in and out (with the login throttle and the audit of every attempt) and the password
//! change.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use crate::account::{self, Login};
use crate::portal::{
    authed, entrance_fits, entrance_key, field, jst, now_ms, render, session, Ctx, Error, Nav,
    Params, Portal, Result, Term,
};
use crate::{audit, now};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    csrf: String,
    message: String,
    login: String,
}

fn login_message(m: &str) -> &'static str {
    match m {
        "expired" => {
            "一定時間操作がなかったため、ログアウトしました。もう一度ログインしてください。"
        }
        "disabled" => "このIDは無効になっています。施設の管理者または事務局に連絡してください。",
        "logout" => "ログアウトしました。",
        _ => "",
    }
}

fn login_page(message: &str, login: &str) -> Result<Response> {
    let csrf = session::token();
    let mut r = render(&LoginPage {
        nav: None,
        csrf: csrf.clone(),
        message: message.into(),
        login: login.into(),
    })?;
    session::add_cookie(&mut r, session::set_cookie(session::PRE_COOKIE, &csrf));
    Ok(r)
}

/// The login form, with the notice the redirect here carried (never text from the URL).
pub async fn login_form(headers: HeaderMap) -> Result<Response> {
    let mut r = login_page(login_message(&session::notice(&headers)), "")?;
    session::add_cookie(&mut r, session::clear_cookie(session::NOTICE_COOKIE));
    Ok(r)
}

pub async fn login(
    State(p): State<Arc<Portal>>,
    term: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let terminal = term.terminal.clone();
    let pre = session::cookie(&headers, session::PRE_COOKIE).unwrap_or_default();
    if pre.is_empty() || !session::same(&pre, field(&f, "csrf")) {
        return Err(Error::Forbidden(
            "ログイン画面の有効期限が切れたか、不正な送信です。ログイン画面を開き直してください。"
                .into(),
        ));
    }
    // An ID no account can have is not looked up, and only its start is kept (in memory and in
    // the audit log), however long what was typed.
    if !p
        .throttle
        .allow(&entrance_key(&term.channel), &terminal, now())
    {
        tracing::warn!(terminal = %terminal, "login attempts over the limit: answered without checking");
        let mut r = login_page(
            "ログインの試行が多すぎます。1分ほど待ってから、もう一度お試しください。",
            "",
        )?;
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(r);
    }
    let typed = field(&f, "login");
    let possible = account::check_login(typed).is_ok();
    let login: String = if possible {
        typed.to_string()
    } else {
        typed.chars().take(32).collect()
    };
    let password = f.get("password").cloned().unwrap_or_default();
    let t = now();
    let l = login.clone();
    let user = if possible {
        p.read(move |c| Ok(account::get(c, &l)?)).await?
    } else {
        None
    };
    let facility = user
        .as_ref()
        .map(|u| u.facility.clone())
        .unwrap_or_default();
    let fits = user
        .as_ref()
        .is_some_and(|u| entrance_fits(u, &term.channel).is_ok());
    let known = user.is_some();
    let old_verifier = user.as_ref().map(|u| u.pw.clone());
    // argon2 runs on a blocking thread, not on the region database's writer, and runs the same
    // for every attempt, whoever's ID it names.
    let check = p
        .hash({
            let password = password.clone();
            move || account::check_attempt(user.as_ref(), &password, t)
        })
        .await?;
    // A disabled account whose password was wrong is treated as any stranger's attempt.
    let disabled_wrong = check == account::Check::Disabled { right: false };
    let outcome = if fits && !disabled_wrong {
        let l = login.clone();
        p.write(move |c| Ok(account::record_login(c, &l, check, t)?))
            .await?
    } else {
        // An unknown ID, or an account whose entrance this is not (another facility's appliance,
        // the wrong listener): nothing is recorded on any account, and the answer is exactly what
        // a wrong password at a real account gets here, counted per entrance and ID.
        let entrance = entrance_key(&term.channel);
        p.strangers.fail(&entrance, &login, t)
    };
    let mut e = audit::Event {
        login: login.clone(),
        facility,
        terminal: terminal.clone(),
        action: "login".into(),
        ..Default::default()
    };
    let answer = match outcome {
        // `Strangers` never lets anyone in; were it to, the attempt is still refused.
        Login::Ok { .. } if !fits || disabled_wrong => "IDまたはパスワードが違います。".to_string(),
        Login::Wrong { delay } if !fits || disabled_wrong => {
            e.outcome = if disabled_wrong {
                "disabled"
            } else if known {
                "wrong-entrance"
            } else {
                "wrong-password"
            }
            .into();
            p.audit(e).await?;
            if known && !disabled_wrong {
                tracing::warn!(login = %login, terminal = %terminal, "login refused: not this user's entrance");
            }
            tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
            "IDまたはパスワードが違います。".to_string()
        }
        Login::Ok { must_change } => {
            e.outcome = "ok".into();
            p.audit(e).await?;
            // A verifier in an earlier format or with older parameters is replaced now that the
            // password is known to be right (only if nobody changed it meanwhile).
            // Best effort: the person is logged in whether or not it can be done now.
            if let Some(old) = old_verifier.filter(|v| account::needs_rehash(v)) {
                let l = login.clone();
                let done = match p.hash(move || account::hash_password(&password)).await {
                    Ok(new) => {
                        p.write(move |c| Ok(account::rehash(c, &l, &old, &new)?))
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    tracing::warn!(login = %login, error = ?e, "verifier not replaced at this login; the next one tries again");
                }
            }
            tracing::info!(login = %login, terminal = %terminal, "logged in");
            let token = p.sessions.create(&login, &terminal, must_change);
            // Back to the page asked for before the login (a password change comes first).
            let target = session::return_target(&headers).unwrap_or_else(|| "/".into());
            let mut r =
                Redirect::to(if must_change { "/password" } else { &target }).into_response();
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::set_cookie(session::COOKIE, &token)
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            h.append(
                header::SET_COOKIE,
                session::clear_cookie(session::PRE_COOKIE)
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            h.append(
                header::SET_COOKIE,
                session::clear_cookie(session::NEXT_COOKIE)
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            return Ok(r);
        }
        Login::Wrong { delay } => {
            e.outcome = "wrong-password".into();
            p.audit(e).await?;
            // Slow down repeated guessing; other people's requests are not held up.
            tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
            "IDまたはパスワードが違います。".to_string()
        }
        Login::Locked { until } => {
            e.outcome = "locked".into();
            p.audit(e).await?;
            format!("失敗が続いたため、このIDはロックされています。{} 以降に再度お試しいただくか、施設の管理者または事務局に解除を依頼してください。", jst(until))
        }
        Login::Disabled => {
            e.outcome = "disabled".into();
            p.audit(e).await?;
            login_message("disabled").to_string()
        }
    };
    login_page(&answer, &login)
}

pub async fn logout(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, true).await?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    p.sessions.end(&ctx.token);
    p.audit(ctx.event("logout", "")).await?;
    let mut r = session::redirect_with_notice("/login", "logout");
    // A remembered page is the person's who logged out, not the next one's.
    session::add_cookie(&mut r, session::clear_cookie(session::NEXT_COOKIE));
    session::add_cookie(&mut r, session::clear_cookie(session::COOKIE));
    Ok(r)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    nav: Option<Nav>,
    forced: bool,
    expired: bool,
    message: String,
}

pub async fn password_form(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, true).await?;
    password_page(&ctx, "")
}

fn password_page(ctx: &Ctx, message: &str) -> Result<Response> {
    let expired = now() >= ctx.user.password_expires_at();
    render(&PasswordPage {
        nav: Some(ctx.nav.clone()),
        forced: ctx.user.must_change || expired,
        expired,
        message: message.into(),
    })
}

pub async fn password(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, true).await?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let (current, new, again) = (
        f.get("current").cloned().unwrap_or_default(),
        f.get("new").cloned().unwrap_or_default(),
        f.get("again").cloned().unwrap_or_default(),
    );
    if new != again {
        return password_page(&ctx, "新しいパスワードが確認欄と一致しません。");
    }
    // argon2 is deliberately slow: keep it off the async threads.
    let user = ctx.user.clone();
    let checked = p
        .hash(move || -> Result<String, &'static str> {
            if !account::verify_password(&user.pw, &current) {
                return Err("現在のパスワードが違います。");
            }
            account::check_new_password(&user, &new)?;
            Ok(account::hash_password(&new))
        })
        .await?;
    let verifier = match checked {
        Ok(v) => v,
        Err(m) => return password_page(&ctx, m),
    };
    let (login, t, at) = (ctx.user.login.clone(), now(), now_ms());
    let e = ctx.event("password-change", "");
    p.write(move |c| {
        let tx = c.transaction()?;
        account::set_password(&tx, &login, &verifier, t)?;
        audit::append(&tx, at, &e)?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    p.sessions.password_changed(&ctx.token);
    Ok(session::redirect_with_notice("/", "password"))
}
