//! `/metrics`: the fleet in Prometheus' text format, served in plain HTTP to a scraper on the
//! operators' network.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Appliance, Fleet};
use crate::now;

impl Fleet {
    /// Prometheus' text format.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let list = self.list();
        let now = now();
        let mut o = String::new();
        let b = self.broker();
        let _ = writeln!(o, "# HELP tsunagi_broker_connected Whether the hub is connected to the MQTT broker.\n# TYPE tsunagi_broker_connected gauge\ntsunagi_broker_connected {}", b.connected as u8);
        let _ = writeln!(o, "# HELP tsunagi_fleet_messages_total MQTT messages the hub took.\n# TYPE tsunagi_fleet_messages_total counter\ntsunagi_fleet_messages_total {}", self.messages.load(Ordering::Relaxed));
        let count = |f: &dyn Fn(&Appliance) -> bool| list.iter().filter(|a| f(a)).count();
        let _ = writeln!(o, "# HELP tsunagi_fleet_appliances Appliances by liveness.\n# TYPE tsunagi_fleet_appliances gauge");
        let _ = writeln!(
            o,
            "tsunagi_fleet_appliances{{state=\"online\"}} {}",
            count(&|a| a.online == Some(true))
        );
        let _ = writeln!(
            o,
            "tsunagi_fleet_appliances{{state=\"offline\"}} {}",
            count(&|a| a.online == Some(false))
        );
        let _ = writeln!(
            o,
            "tsunagi_fleet_appliances{{state=\"unknown\"}} {}",
            count(&|a| a.online.is_none())
        );
        let _ = writeln!(o, "# HELP tsunagi_fleet_reporting Appliances whose status the hub holds.\n# TYPE tsunagi_fleet_reporting gauge\ntsunagi_fleet_reporting {}", count(&|a| a.status.is_some()));
        let _ = writeln!(o, "# HELP tsunagi_fleet_alerts Alerts firing, by kind.\n# TYPE tsunagi_fleet_alerts gauge");
        let firing = self.firing();
        for k in ["offline", "lag", "posture", "certificate"] {
            let _ = writeln!(
                o,
                "tsunagi_fleet_alerts{{kind=\"{k}\"}} {}",
                firing.iter().filter(|f| f.2 == k).count()
            );
        }
        let lbl = |a: &Appliance| {
            format!(
                "facility=\"{}\",appliance=\"{}\"",
                esc(&a.facility),
                esc(&a.appliance)
            )
        };
        let _ = writeln!(o, "# HELP tsunagi_appliance_up Whether the appliance is connected to the broker.\n# TYPE tsunagi_appliance_up gauge");
        for a in &list {
            let _ = writeln!(
                o,
                "tsunagi_appliance_up{{{}}} {}",
                lbl(a),
                (a.online == Some(true)) as u8
            );
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_sync_backlog_segments Segments the appliance has not had acknowledged.\n# TYPE tsunagi_appliance_sync_backlog_segments gauge");
        for a in &list {
            if let Some(s) = &a.status {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_sync_backlog_segments{{{}}} {}",
                    lbl(a),
                    s.sync.backlog
                );
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_sync_lag_segments Segments the hub's copy is behind the appliance.\n# TYPE tsunagi_appliance_sync_lag_segments gauge");
        for a in &list {
            if let Some(l) = a.lag() {
                let _ = writeln!(o, "tsunagi_appliance_sync_lag_segments{{{}}} {l}", lbl(a));
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_quarantine_files Files the appliance could not ingest.\n# TYPE tsunagi_appliance_quarantine_files gauge");
        for a in &list {
            if let Some(s) = &a.status {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_quarantine_files{{{}}} {}",
                    lbl(a),
                    s.quarantine
                );
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_posture The appliance's posture (1 for its current state).\n# TYPE tsunagi_appliance_posture gauge");
        for a in &list {
            if a.status.is_some() {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_posture{{{},state=\"{}\"}} 1",
                    lbl(a),
                    esc(a.posture())
                );
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_cert_expiry_seconds Seconds until the client certificate expires.\n# TYPE tsunagi_appliance_cert_expiry_seconds gauge");
        for a in &list {
            if let Some(s) = &a.status {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_cert_expiry_seconds{{{}}} {}",
                    lbl(a),
                    s.cert_not_after - now
                );
            }
        }
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
                        "text/plain; version=0.0.4",
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
