//! A real hub and real appliances on 127.0.0.1 for the sync tests: the binaries, a test CA made
//! by `tsunagi-hub ca init`, temporary folders, and helpers to read both sides' databases.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod appliance;
mod broker;
mod hub_process;

// A test binary exports nothing: a re-export its tests leave unused is an unused import.
#[allow(
    unused_imports,
    reason = "each test binary uses a part of these helpers"
)]
pub use self::{appliance::Appliance, broker::Broker, hub_process::Hub};

pub const FACILITY: &str = "3712345678";

fn bin(name: &str) -> Command {
    Command::new(tests::run::bin(name))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback address for one appliance's LAN, its own within this test binary (127.0.0.2 and
/// up): the hub holds localhost and 127.0.0.1, and a private address belongs to one facility.
pub fn lan_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("127.0.0.{}", 2 + NEXT.fetch_add(1, Ordering::Relaxed) % 240)
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free on 127.0.0.1, below the kernel's ephemeral range (32768 and up), for a server a
/// test stops and starts again on the same address: while it is down, no `bind(0)` in a test
/// running beside it can be handed its port (which once made a hub restart fail in CI).
pub fn stable_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in 0..1000u64 {
        let port = 20000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1");
}

/// The base64 SHA-256 of the first certificate's public key in a PEM file.
pub fn spki_pin_of(pem: &[u8]) -> String {
    let certs = provisioning::cert::certs_from_pem(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    base64(&shared::chain::content_hash(
        cert.tbs_certificate.subject_pki.raw,
    ))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Polls `f` until it is true, failing the test with `what` after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The copy equals the store, table by table and row by row, ids included.
pub fn assert_same(hub: &Hub, edge: &Appliance) {
    let (a, b) = (super::dump(&edge.store()), super::dump(&hub.copy(FACILITY)));
    for ((t, ra), (_, rb)) in a.iter().zip(b.iter()) {
        assert_eq!(
            ra.len(),
            rb.len(),
            "table {t}: {} rows at the edge, {} in the copy",
            ra.len(),
            rb.len()
        );
        assert!(
            ra == rb,
            "table {t} differs between the edge and the hub's copy"
        );
    }
    assert!(
        a.iter().map(|(_, r)| r.len()).sum::<usize>() > 0,
        "nothing was compared"
    );
}
