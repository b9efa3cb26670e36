//! The hub's two TLS listeners (`Listener`): their limits, and `serve`, which attaches the
//! connection's verified identity to every request and serves it the router of its entrance.

use std::sync::Arc;

use axum::body::Body;

use provisioning::{Identity, Purpose};

use super::{Entrances, Peer};
use crate::state::{Channel, Remote};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Appliances: the API, and the portal for people behind an appliance (mutual TLS).
    Appliances,
    /// The hub's own operators and the network office: the portal with a login, no API.
    Operators,
}

/// The limits of the hub's two TLS listeners. The appliances' one carries sync bodies and restore
/// streams (a snapshot is built before its first byte goes out), so it allows a connection five
/// quiet minutes; the operators' two.
pub fn limits(kind: Listener) -> serve::Limits {
    match kind {
        Listener::Appliances => serve::Limits {
            idle: std::time::Duration::from_secs(300),
            max_connections: 4096,
            per_peer: 512,
            ..serve::Limits::web("appliances")
        },
        Listener::Operators => serve::Limits {
            max_connections: 256,
            per_peer: 64,
            ..serve::Limits::web("operators")
        },
    }
}

/// Serves `app` over TLS on `listener` (`serve::serve`: deadlines, a connection cap, drain on
/// stop), with the connection's verified identity attached to every request and the router
/// chosen by it (its entrance), until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    kind: Listener,
    tls: Arc<rustls::ServerConfig>,
    app: Entrances,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tower::ServiceExt;
    let service = move |conn: &serve::Conn| {
        let peer = Peer(
            conn.certs
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| Identity::from_der(c).ok()),
        );
        let (channel, app) = match (kind, &peer.0) {
            (Listener::Operators, _) => (Channel::Operators, app.operators.clone()),
            (Listener::Appliances, Some(id)) if id.purpose == Purpose::PortalProxy => {
                (Channel::Proxy(id.clone()), app.proxy.clone())
            }
            (Listener::Appliances, Some(id)) => {
                (Channel::Appliance(id.clone()), app.appliance.clone())
            }
            (Listener::Appliances, None) => (Channel::Unauthenticated, app.stranger.clone()),
        };
        let addr = conn.peer;
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            req.extensions_mut().insert(channel.clone());
            req.extensions_mut().insert(Remote(addr));
            app.clone().oneshot(req.map(Body::new))
        })
    };
    serve::serve(listener, Some(tls), limits(kind), service, shutdown).await
}
