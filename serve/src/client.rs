//! The one HTTP client: hyper-util's pooled client over hyper-rustls, for every request the hub
//! and the appliance make (the appliance's calls to the hub, the LAN proxy's requests upstream,
//! the hub's alert webhook). Who is trusted is the caller's `rustls::ClientConfig` (the appliance
//! pins the network root); what this module decides, once:
//!
//! - connecting, the TLS handshake included, has `connect` to finish, or the request fails as
//!   [`Error::Connect`] (the far side cannot be reached: the proxy goes offline on it). A server
//!   that refuses the client's certificate under TLS 1.3 says so after the client's side of the
//!   handshake is done, so that shows as [`Error::Failed`] on the request instead;
//! - the answer's head has `answer` to arrive once the request is sent, or the request fails as
//!   [`Error::Failed`] (a server that took the request and went silent, or a half-open kept-alive
//!   connection; TCP keepalive probes those too). Reading the body is the caller's to bound;
//! - an idle kept-alive connection is dropped after `idle`, below the 15 s a tsunagi listener
//!   waits for the next request on one, so a request is not sent down a connection the server is
//!   closing; one the server closed first is retried on another connection (only a request that
//!   was not sent is: a form is never submitted twice);
//! - the request goes to the client's one origin: a request carries a path, never a host, so no
//!   caller can be talked into another server. A URL with a user and password in it is refused
//!   (they would be dropped, and then logged with the URL).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client connects and keeps connections.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// TCP connect and TLS handshake together.
    pub connect: Duration,
    /// From the request sent to the answer's head.
    pub answer: Duration,
    /// How long an unused connection stays in the pool.
    pub idle: Duration,
    /// At most this many unused connections are kept.
    pub max_idle: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            connect: Duration::from_secs(15),
            answer: Duration::from_secs(120),
            idle: Duration::from_secs(10),
            max_idle: 4,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server could not be reached, or the TLS handshake failed or timed out.
    Connect(String),
    /// The server was reached but the exchange failed.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(m) | Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// A connector that gives connecting and the handshake one deadline.
#[derive(Clone)]
pub struct Timed {
    inner: HttpsConnector<HttpConnector>,
    within: Duration,
}

impl tower_service::Service<Uri> for Timed {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let within = self.within;
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            match tokio::time::timeout(within, connecting).await {
                Ok(r) => r,
                Err(_) => Err(format!("no connection within {} s", within.as_secs()).into()),
            }
        })
    }
}

/// A pooled client to one origin (`scheme://host:port`).
pub struct Client<B> {
    inner: hyper_util::client::legacy::Client<Timed, B>,
    scheme: &'static str,
    authority: String,
    host: HeaderValue,
    answer: Duration,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
            scheme: self.scheme,
            authority: self.authority.clone(),
            host: self.host.clone(),
            answer: self.answer,
        }
    }
}

/// The scheme and authority of `url` (`scheme://host[:port][/…]`), the port made explicit.
pub fn origin(url: &str) -> Result<(&'static str, String, String, u16), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("https") => "https",
        Some("http") => "http",
        _ => return Err(format!("{url:?} must start with https:// or http://")),
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "a URL must not carry a user or password (they would be sent to nobody and logged): {scheme}://…@{}",
            uri.host().unwrap_or("")
        ));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((scheme, format!("{host}:{port}"), bare, port))
}

impl<B> Client<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client to the `https://` origin of `url`, trusting what `tls` trusts. Plain http is
    /// refused, on the way in and on every connection.
    pub fn https(
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        options: Options,
    ) -> Result<Client<B>, String> {
        let (scheme, authority, _, _) = origin(url)?;
        if scheme != "https" {
            return Err(format!("{url:?} must start with https://"));
        }
        let mut connector = HttpsConnector::from((http(options), tls));
        connector.enforce_https();
        Ok(Client::with(connector, scheme, authority, options))
    }

    /// A client to the `http://` origin of `url` (the alert webhook's relay on the operators'
    /// network). It trusts no certificate, so it can never speak TLS to anyone.
    pub fn http(url: &str, options: Options) -> Result<Client<B>, String> {
        let (scheme, authority, _, _) = origin(url)?;
        if scheme != "http" {
            return Err(format!("{url:?} must start with http://"));
        }
        let nobody = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let connector = HttpsConnector::from((http(options), Arc::new(nobody)));
        Ok(Client::with(connector, scheme, authority, options))
    }

    fn with(
        connector: HttpsConnector<HttpConnector>,
        scheme: &'static str,
        authority: String,
        options: Options,
    ) -> Client<B> {
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(options.idle)
            .pool_max_idle_per_host(options.max_idle)
            .build(Timed {
                inner: connector,
                within: options.connect,
            });
        let host = HeaderValue::from_str(&authority).expect("an authority is a header value");
        Client {
            inner,
            scheme,
            authority,
            host,
            answer: options.answer,
        }
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `req` (its URI a path and query) to the origin, with `Host` set to it, and returns
    /// the response with its body still to read.
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<Incoming>, Error> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if !path.starts_with('/') {
            return Err(Error::Failed(format!(
                "a request names a path starting with /, not {path:?}"
            )));
        }
        let absolute = format!("{}://{}{}", self.scheme, self.authority, path);
        *req.uri_mut() = absolute
            .parse()
            .map_err(|e| Error::Failed(format!("bad request path: {e}")))?;
        req.headers_mut().insert(HOST, self.host.clone());
        let answered = tokio::time::timeout(self.answer, self.inner.request(req))
            .await
            .map_err(|_| {
                Error::Failed(format!(
                    "no answer within {} s of the request",
                    self.answer.as_secs()
                ))
            })?;
        answered.map_err(|e| {
            let text = chain(&e);
            if e.is_connect() {
                Error::Connect(text)
            } else {
                Error::Failed(text)
            }
        })
    }
}

fn http(options: Options) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(30)));
    http.set_connect_timeout(Some(options.connect));
    http
}

/// An error and its causes, in one line; a failed TLS handshake says so, with rustls' reason.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = rustls_error(e) {
        return format!("the TLS handshake failed: {tls}");
    }
    let mut out = e.to_string();
    let mut at = e.source();
    while let Some(s) = at {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        at = s.source();
    }
    out
}

/// The rustls error under `e`: through its sources, and into the `io::Error`s that tokio-rustls
/// and hyper-rustls wrap it in (an `io::Error`'s `source` skips what it wraps).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        at = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://127.0.0.1:8443").unwrap(),
            ("https", "127.0.0.1:8443".into(), "127.0.0.1".into(), 8443)
        );
        assert_eq!(origin("https://hub.example/").unwrap().3, 443);
        assert_eq!(origin("http://relay/alerts").unwrap().1, "relay:80");
        assert_eq!(origin("https://[::1]:9/").unwrap().2, "::1");
        assert!(origin("ftp://hub").is_err());
        assert!(origin("hub:8443").is_err());
        assert!(Client::<Full<Bytes>>::https("http://hub", tls(), Options::default()).is_err());
        assert!(Client::<Full<Bytes>>::http("https://hub", Options::default()).is_err());
    }

    fn tls() -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    }

    /// A server that accepts connections and never says a word (no handshake, no answer).
    async fn silent() -> (u16, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(l.accept().await.unwrap());
            }
        });
        (port, hold)
    }

    /// A plain HTTP server on a port: answers each request with its path and the `Host` it got,
    /// and counts connections.
    async fn echo() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    hyper_util::rt::TokioIo::new(s),
                    hyper::service::service_fn(|r: Request<Incoming>| async move {
                        let host = r.headers()[HOST].to_str().unwrap().to_string();
                        let path = r.uri().to_string();
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(format!(
                            "{path} {host}"
                        )))))
                    }),
                ));
            }
        });
        (port, conns)
    }

    #[tokio::test]
    async fn requests_go_to_the_one_origin_on_kept_connections() {
        let (port, conns) = echo().await;
        let c =
            Client::<Full<Bytes>>::http(&format!("http://127.0.0.1:{port}/x"), Options::default())
                .unwrap();
        for _ in 0..3 {
            // A request that names another host still goes to the origin, as a path.
            let req = Request::get("http://elsewhere.example:1/a?b=c")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = c.send(req).await.unwrap();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("/a?b=c 127.0.0.1:{port}"));
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unreachable_and_silent_servers_are_connect_errors() {
        // Nothing listens: refused at once.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let c = Client::<Full<Bytes>>::https(
            &format!("https://127.0.0.1:{port}"),
            tls(),
            Options::default(),
        )
        .unwrap();
        let e = c
            .send(Request::get("/").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Connect(_)), "{e:?}");
        // A server that accepts and never answers the handshake: the deadline.
        let (port, hold) = silent().await;
        let c = Client::<Full<Bytes>>::https(
            &format!("https://127.0.0.1:{port}"),
            tls(),
            Options {
                connect: Duration::from_millis(300),
                ..Options::default()
            },
        )
        .unwrap();
        let e = c
            .send(Request::get("/").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Connect(m) if m.contains("no connection within")),
            "{e:?}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn a_server_that_takes_the_request_and_goes_silent_fails_it_in_time() {
        let (port, hold) = silent().await;
        let c = Client::<Full<Bytes>>::http(
            &format!("http://127.0.0.1:{port}"),
            Options {
                answer: Duration::from_millis(300),
                ..Options::default()
            },
        )
        .unwrap();
        let e = c
            .send(Request::get("/").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Failed(m) if m.contains("no answer within")),
            "{e:?}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn credentials_in_urls_and_paths_without_a_slash_are_refused() {
        let e = Client::<Full<Bytes>>::http("http://user:secret@relay:9/x", Options::default())
            .err()
            .unwrap();
        assert!(
            e.contains("user or password") && !e.contains("secret"),
            "{e}"
        );
        let c = Client::<Full<Bytes>>::http("http://127.0.0.1:9", Options::default()).unwrap();
        let e = c
            .send(Request::options("*").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Failed(m) if m.contains("starting with /")),
            "{e:?}"
        );
    }
}
