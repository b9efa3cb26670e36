//! Each limit of `serve`, attacked on a real socket: a half-sent head, a silent kept-alive
//! connection, a slow but moving body, more connections than the cap, a stop while a request is
//! in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serve::{serve, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limits() -> Limits {
    Limits {
        header_read: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        drain: Duration::from_secs(5),
        ..Limits::web("test")
    }
}

/// Starts `serve` on a free port of 127.0.0.1 listening on every loopback address, so two
/// "peers" (127.0.0.1 and 127.0.0.3) can reach it.
async fn start_any(limits: Limits) -> (u16, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(
        listener,
        None,
        limits,
        |_conn: &serve::Conn| {
            hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok 0"))))
            })
        },
        rx,
    ));
    (port, tx)
}

/// Starts `serve` on a free port: `/slow` answers after 600 ms, anything else at once; a POST's
/// body is read whole first.
async fn start(
    limits: Limits,
) -> (
    SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve(
        listener,
        None,
        limits,
        |_conn: &serve::Conn| {
            hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("ok {body}")))))
            })
        },
        rx,
    ));
    (addr, tx, task)
}

/// Reads until the peer closes or `within` passes: the bytes, and whether it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// Reads one whole answer (`ok …` is the last thing in it) or gives up after `within`.
async fn answer(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("\r\n\r\nok") {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_half_sent_head_is_closed_at_the_header_deadline() {
    let (addr, _stop, _task) = start(Limits {
        header_read: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(
        closed && t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5),
        "closed {closed} after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_connection_that_moves_nothing_is_closed_and_a_slow_moving_body_is_not() {
    let (addr, _stop, _task) = start(Limits {
        idle: Duration::from_secs(1),
        ..limits()
    })
    .await;
    // Kept alive after an answer, then silent: closed once idle, long before the head deadline.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut s, Duration::from_secs(5)).await.is_some());
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(
        closed && t.elapsed() < Duration::from_secs(4),
        "closed {closed} after {:?}",
        t.elapsed()
    );
    // A body that keeps moving, one byte every 400 ms for 3 s, is served in full.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(b"x").await.unwrap();
    }
    let a = answer(&mut s, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(a.ends_with("ok 8"), "{a}");
}

#[tokio::test]
async fn no_more_than_the_cap_are_served_and_a_freed_place_is_taken() {
    let (addr, _stop, _task) = start(Limits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let held1 = TcpStream::connect(addr).await.unwrap();
    let mut held2 = TcpStream::connect(addr).await.unwrap();
    held2
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        answer(&mut held2, Duration::from_secs(5)).await.is_some(),
        "within the cap"
    );
    // The third waits in the backlog: its request is not answered while both places are held.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        answer(&mut third, Duration::from_millis(800))
            .await
            .is_none(),
        "served over the cap"
    );
    drop(held1);
    assert!(
        answer(&mut third, Duration::from_secs(5)).await.is_some(),
        "served once a place was free"
    );
}

#[tokio::test]
async fn a_stop_lets_the_request_in_flight_finish_then_takes_no_more() {
    let (addr, stop, task) = start(limits()).await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Another connection, kept alive and between requests: closed at once by the drain.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    quiet
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut quiet, Duration::from_secs(5)).await.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    stop.send(true).unwrap();
    let a = answer(&mut busy, Duration::from_secs(5))
        .await
        .expect("the request in flight is answered");
    assert!(
        a.to_ascii_lowercase().contains("connection: close"),
        "and told the connection closes: {a}"
    );
    let (_, closed) = read_until_closed(&mut quiet, Duration::from_secs(3)).await;
    assert!(
        closed,
        "an idle kept-alive connection is closed by the drain"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once drained")
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "not before the slow answer"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connection after the stop"
    );
}

#[tokio::test]
async fn a_connection_lives_no_longer_than_its_lifetime() {
    let (addr, _stop, _task) = start(Limits {
        lifetime: Some(Duration::from_secs(1)),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    // Busy the whole time: a request every 200 ms.
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(4) {
        if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
            || answer(&mut s, Duration::from_secs(2)).await.is_none()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        closed && t.elapsed() < Duration::from_secs(3),
        "closed {closed} after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_place() {
    let (port, _stop) = start_any(Limits {
        max_connections: 8,
        per_peer: 3,
        ..limits()
    })
    .await;
    // One source holds its three places with silent connections; a fourth from it is closed at
    // once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (_, closed) = read_until_closed(&mut fourth, Duration::from_secs(3)).await;
    assert!(closed, "a fourth connection from one address is closed");
    // Someone else is served at once.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut other = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        answer(&mut other, Duration::from_secs(2)).await.is_some(),
        "another address is served"
    );
    // A place given back is taken again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    again
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut again, Duration::from_secs(2)).await.is_some());
}
