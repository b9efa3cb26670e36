//! The fleet's upkeep every few seconds (history written, the copies' positions read, alerts
//! evaluated), and the webhook the alerts that start and end are posted to.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Fleet;
use crate::now;
use crate::state::Hub;

/// Every few seconds: writes history, reads the copies' positions, evaluates alerts and sends
/// them to the webhook.
pub async fn upkeep(fleet: Arc<Fleet>, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        if n % 5 == 1 {
            let mut positions = HashMap::new();
            let facilities: std::collections::HashSet<String> =
                fleet.list().into_iter().map(|a| a.facility).collect();
            for f in hub
                .facilities()
                .into_iter()
                .filter(|f| facilities.contains(f))
            {
                if let Ok(w) = hub.copy(&f) {
                    if let Ok(Ok(p)) = w.call(|c| crate::copy::position(c)).await {
                        positions.insert(f, p.seq);
                    }
                }
            }
            fleet.set_copy_positions(&positions);
        }
        let (started, ended) = fleet.evaluate(now());
        let f2 = fleet.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || f2.flush()).await {
            tracing::error!(error = %format!("{e:#}"), "the fleet history cannot be written");
        }
        for (f, a, k, d) in &started {
            tracing::warn!(facility = %f, appliance = %a, kind = k, detail = %d, "fleet alert");
        }
        if let Some(url) = fleet.settings.webhook.clone() {
            let mut items: Vec<serde_json::Value> = started.iter().map(|(f, a, k, d)| serde_json::json!({"state": "firing", "kind": k, "facility": f, "appliance": a, "detail": d, "at": now()})).collect();
            items.extend(ended.iter().map(|(f, a, k)| serde_json::json!({"state": "resolved", "kind": k, "facility": f, "appliance": a, "at": now()})));
            if !items.is_empty() {
                let body =
                    serde_json::json!({"source": "tsunagi-hub", "alerts": items}).to_string();
                if let Err(e) = post_webhook(&url, body).await {
                    fleet.webhook_failures.fetch_add(1, Ordering::Relaxed);
                    // The relay, not the URL: a path may carry the relay's token.
                    let relay = serve::client::origin(&url).map(|o| o.1).unwrap_or_default();
                    tracing::error!(webhook = %relay, error = %e, "the alert webhook failed");
                }
            }
        }
    }
}

/// POSTs JSON to an `http://` webhook (a relay on the operators' network forwards it on), through
/// the one client (`serve::client`), with 5 s to connect and 10 s for the answer.
async fn post_webhook(url: &str, body: String) -> Result<(), String> {
    if !url.starts_with("http://") {
        return Err(
            "only http:// webhooks (to a relay on the operators' network) are supported".into(),
        );
    }
    let client = serve::client::Client::http(
        url,
        serve::client::Options {
            connect: Duration::from_secs(5),
            ..serve::client::Options::default()
        },
    )?;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::post(path)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(Duration::from_secs(10), client.send(req))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    Ok(())
}
