//! `/metrics`: the fleet in OpenMetrics text (`prometheus-client`), served in plain HTTP to a
//! scraper on the operators' network. Aggregates only: counts and sums over the fleet, never a
//! series per appliance. The endpoint has no login, so it names no facility; and a region's
//! thousands of appliances would be thousands of series per metric for a scraper to keep. Each
//! appliance is on the operators' fleet page, behind their login.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Fleet;
use crate::now;

/// The posture states an appliance reports (`edge::posture::State`), and `unknown` for one that
/// has sent no status yet; anything else counts as `other`, so a box cannot add label values.
const POSTURES: [&str; 5] = ["compliant", "in-grace", "non-compliant", "error", "unknown"];

type Labelled = Family<Vec<(&'static str, &'static str)>, Gauge>;

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter<u64, AtomicU64> = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn family(
    r: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: &[(&'static str, i64)],
) {
    let f = Labelled::default();
    for (label, v) in values {
        f.get_or_create(&vec![(key, *label)]).set(*v);
    }
    r.register(name, help, f);
}

impl Fleet {
    /// The fleet's aggregates in OpenMetrics text.
    pub fn metrics(&self) -> String {
        let list = self.list();
        let now = now();
        let mut r = Registry::with_prefix("tsunagi");
        let count =
            |f: &dyn Fn(&super::Appliance) -> bool| list.iter().filter(|a| f(a)).count() as i64;
        gauge(
            &mut r,
            "broker_connected",
            "Whether the hub is connected to the MQTT broker.",
            self.broker().connected as i64,
        );
        counter(
            &mut r,
            "fleet_messages",
            "MQTT messages the hub took.",
            self.messages.load(Ordering::Relaxed),
        );
        counter(
            &mut r,
            "fleet_webhook_failures",
            "Webhook POSTs that failed (each carries every alert that started or ended in one upkeep round).",
            self.webhook_failures.load(Ordering::Relaxed),
        );
        family(
            &mut r,
            "fleet_appliances",
            "Appliances by liveness.",
            "state",
            &[
                ("online", count(&|a| a.online == Some(true))),
                ("offline", count(&|a| a.online == Some(false))),
                ("unknown", count(&|a| a.online.is_none())),
            ],
        );
        gauge(
            &mut r,
            "fleet_reporting",
            "Appliances whose status the hub holds.",
            count(&|a| a.status.is_some()),
        );
        let firing = self.firing();
        let kinds = ["offline", "lag", "posture", "certificate"]
            .map(|k| (k, firing.iter().filter(|f| f.2 == k).count() as i64));
        family(
            &mut r,
            "fleet_alerts",
            "Alerts firing, by kind.",
            "kind",
            &kinds,
        );
        let mut postures: Vec<(&'static str, i64)> = POSTURES
            .iter()
            .map(|p| (*p, count(&|a| a.posture() == *p)))
            .collect();
        postures.push(("other", count(&|a| !POSTURES.contains(&a.posture()))));
        family(
            &mut r,
            "fleet_posture",
            "Appliances by posture (unknown: no status yet).",
            "state",
            &postures,
        );
        let statuses = || list.iter().filter_map(|a| a.status.as_ref());
        gauge(
            &mut r,
            "fleet_sync_backlog_segments",
            "Segments the appliances have not had acknowledged, summed.",
            statuses().map(|s| s.sync.backlog as i64).sum(),
        );
        gauge(
            &mut r,
            "fleet_sync_lag_segments",
            "Segments the hub's copies are behind the appliances, summed.",
            list.iter().filter_map(|a| a.lag()).map(|l| l as i64).sum(),
        );
        gauge(
            &mut r,
            "fleet_sync_behind",
            "Appliances the hub's copy is behind.",
            count(&|a| a.lag().is_some_and(|l| l > 0)),
        );
        gauge(
            &mut r,
            "fleet_quarantine_files",
            "Files the appliances could not ingest, summed.",
            statuses().map(|s| s.quarantine as i64).sum(),
        );
        let within = |days: i64| {
            statuses()
                .filter(|s| s.cert_not_after - now < days * 86_400)
                .count() as i64
        };
        family(
            &mut r,
            "fleet_certificates_expiring",
            "Appliances whose client certificate has expired or expires within the window.",
            "within",
            &[
                ("expired", within(0)),
                ("7d", within(7)),
                ("30d", within(30)),
            ],
        );
        if let Some(soonest) = statuses().map(|s| s.cert_not_after - now).min() {
            let g: Gauge<i64, AtomicI64> = Gauge::default();
            g.set(soonest);
            r.register(
                "fleet_cert_expiry_min_seconds",
                "Seconds until the soonest client certificate expires.",
                g,
            );
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Serves `/metrics` in plain HTTP (bind it to loopback or the operators' network).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    fleet: Arc<Fleet>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let f = fleet.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    f.metrics(),
                )
            }
        }),
    );
    // Plain HTTP for a scraper: a header deadline, at most 32 connections at once, one request
    // per connection, 30 s at most; nothing a stranger on the network can hold open.
    let limits = serve::Limits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        lifetime: Some(Duration::from_secs(30)),
        max_connections: 32,
        per_peer: 4,
        keep_alive: false,
        drain: Duration::from_secs(2),
        ..serve::Limits::web("metrics")
    };
    let service = move |_: &serve::Conn| {
        use tower::ServiceExt;
        let app = app.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            app.clone().oneshot(req.map(axum::body::Body::new))
        })
    };
    serve::serve(listener, None, limits, service, stop).await
}
