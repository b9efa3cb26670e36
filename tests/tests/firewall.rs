//! The appliance image's firewall (`image/mkosi.extra/usr/lib/tsunagi/firewall.nft`) and the
//! script that fills its address sets (`netsets.sh`), loaded into real network namespaces:
//!
//! ```text
//!   lan (192.0.2.10) ─┐
//!                     ├─ br0 in router (192.0.2.254; DNS on :53) ─ hub (198.51.100.2: 8443, 8883, 22)
//!   appl (192.0.2.1) ─┘                                          └ outside (203.0.113.5: 443, 53)
//! ```
//!
//! The appliance has one wired interface, as a clinic box does: the clinic's PCs and its way to
//! the hub share it. Every probe is a real TCP connection; "dropped" means it timed out, and
//! "rejected" that the box's own program got an immediate admin-prohibited error.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn image_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../image/mkosi.extra/usr/lib/tsunagi")
        .join(name)
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Net {
    prefix: String,
    servers: Vec<Child>,
}

impl Net {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .output()
            .unwrap()
    }

    fn new() -> Net {
        let prefix = format!("tf{}-", std::process::id());
        let net = Net {
            prefix,
            servers: Vec::new(),
        };
        for n in ["lan", "appl", "router", "hub", "out"] {
            run(&["ip", "netns", "add", &net.ns(n)]);
            run(&["ip", "-n", &net.ns(n), "link", "set", "lo", "up"]);
        }
        let r = net.ns("router");
        run(&["ip", "-n", &r, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "192.0.2.254/24",
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &r, "link", "set", "br0", "up"]);
        // lan and appl hang off the router's bridge (one LAN); hub and outside are routed.
        for (n, addr, bridged, gw) in [
            ("lan", "192.0.2.10/24", true, "192.0.2.254"),
            ("appl", "192.0.2.1/24", true, "192.0.2.254"),
            ("hub", "198.51.100.2/24", false, "198.51.100.254"),
            ("out", "203.0.113.5/24", false, "203.0.113.254"),
        ] {
            let peer = format!("v-{n}");
            run(&[
                "ip",
                "-n",
                &net.ns(n),
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &r,
            ]);
            run(&["ip", "-n", &net.ns(n), "addr", "add", addr, "dev", "eth0"]);
            run(&["ip", "-n", &net.ns(n), "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &net.ns(n), "route", "add", "default", "via", gw]);
            if bridged {
                run(&["ip", "-n", &r, "link", "set", &peer, "master", "br0"]);
            } else {
                run(&[
                    "ip",
                    "-n",
                    &r,
                    "addr",
                    "add",
                    &format!("{gw}/24"),
                    "dev",
                    &peer,
                ]);
            }
            run(&["ip", "-n", &r, "link", "set", &peer, "up"]);
        }
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]);
        net
    }

    /// A TCP server in `ns` answering "ok" on each port.
    fn serve(&mut self, ns: &str, ports: &[u16]) {
        let code = format!(
            "import socket,threading\n\
             def srv(p):\n  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',p)); s.listen(16)\n  \
             while True:\n    c,_=s.accept(); c.sendall(b'ok'); c.close()\n\
             for p in {ports:?}: threading.Thread(target=srv,args=(p,),daemon=True).start()\n\
             threading.Event().wait()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "python3", "-c", &code])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }

    /// What a TCP connection from `ns` to `host:port` meets: open, dropped, rejected or refused.
    fn probe(&self, ns: &str, host: &str, port: u16) -> String {
        let code = format!(
            "import socket,errno\n\
             try:\n  s=socket.create_connection(('{host}',{port}),timeout=2); print('open' if s.recv(2)==b'ok' else 'other')\n\
             except socket.timeout: print('dropped')\n\
             except OSError as e: print({{errno.ECONNREFUSED:'refused',errno.EHOSTUNREACH:'rejected',errno.EACCES:'rejected',errno.EPERM:'rejected'}}.get(e.errno,'error '+str(e)))\n"
        );
        String::from_utf8_lossy(&self.exec(ns, &["python3", "-c", &code]).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["lan", "appl", "router", "hub", "out"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

#[test]
fn the_appliance_firewall_lets_through_only_the_lan_to_its_ports_and_the_box_to_its_hub() {
    let mut net = Net::new();
    net.serve("appl", &[8443, 8080, 22]);
    net.serve("lan", &[8080]);
    net.serve("hub", &[8443, 8883, 22]);
    net.serve("out", &[443, 53]);
    net.serve("router", &[53]);
    std::thread::sleep(Duration::from_millis(800));

    // Before the firewall: everything is reachable (the probes can tell open from closed).
    assert_eq!(net.probe("lan", "192.0.2.1", 22), "open");
    assert_eq!(net.probe("appl", "203.0.113.5", 443), "open");

    let out = net.exec(
        "appl",
        &["nft", "-f", image_file("firewall.nft").to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "the ruleset does not load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Loaded, the sets are empty: the box reaches nothing, not even its hub.
    assert_eq!(net.probe("appl", "198.51.100.2", 8443), "rejected");
    assert_eq!(
        net.probe("lan", "192.0.2.1", 8443),
        "dropped",
        "the LAN set is still empty"
    );

    let resolv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(resolv.path(), "nameserver 192.0.2.254\n").unwrap();
    let sets = |endpoints: &[&str]| {
        let mut args = vec![
            image_file("netsets.sh").to_str().unwrap().to_string(),
            "--resolv-conf".into(),
            resolv.path().to_str().unwrap().into(),
        ];
        args.extend(endpoints.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = net.exec("appl", &args);
        assert!(
            out.status.success(),
            "netsets.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let applied = sets(&["198.51.100.2:8443", "198.51.100.2:8883"]);
    assert!(
        applied.contains("lan4 { 192.0.2.1/24 }") && applied.contains("198.51.100.2 . 8443"),
        "{applied}"
    );

    let expect = [
        // in: the clinic's PCs to the proxy, its plain port, and 443/80 redirected to them
        ("lan", "192.0.2.1", 8443, "open"),
        ("lan", "192.0.2.1", 443, "open"),
        ("lan", "192.0.2.1", 8080, "open"),
        ("lan", "192.0.2.1", 80, "open"),
        // in: nothing else, from anywhere
        ("lan", "192.0.2.1", 22, "dropped"),
        ("hub", "192.0.2.1", 8443, "dropped"),
        ("out", "192.0.2.1", 8443, "dropped"),
        ("out", "192.0.2.1", 443, "dropped"),
        // out: the hub and the broker, DNS to the LAN's resolver
        ("appl", "198.51.100.2", 8443, "open"),
        ("appl", "198.51.100.2", 8883, "open"),
        ("appl", "192.0.2.254", 53, "open"),
        // out: nothing else, and the box's programs learn it at once
        ("appl", "198.51.100.2", 22, "rejected"),
        ("appl", "203.0.113.5", 443, "rejected"),
        ("appl", "203.0.113.5", 53, "rejected"),
        ("appl", "192.0.2.10", 8080, "rejected"),
    ];
    let mut wrong = Vec::new();
    for (from, to, port, want) in expect {
        let got = net.probe(from, to, port);
        if got != want {
            wrong.push(format!("{from} -> {to}:{port}: expected {want}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The drops were counted (and logged, rate-limited) by the final rule.
    let rules = String::from_utf8_lossy(
        &net.exec(
            "appl",
            &["nft", "list", "chain", "inet", "tsunagi", "input"],
        )
        .stdout,
    )
    .into_owned();
    let dropped: u64 = rules
        .lines()
        .filter(|l| l.contains("counter packets") && l.trim_end().ends_with("drop"))
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        dropped >= 4,
        "the input drop counter shows {dropped}: {rules}"
    );

    // The hub moves: the sets are replaced whole, so its old address is closed at once.
    sets(&["198.51.100.3:8443"]);
    assert_eq!(net.probe("appl", "198.51.100.2", 8443), "rejected");
    // A name that does not resolve fails the script (the probe's journal shows it) and opens nothing.
    let out = net.exec(
        "appl",
        &[
            image_file("netsets.sh").to_str().unwrap(),
            "--resolv-conf",
            resolv.path().to_str().unwrap(),
            "hub.invalid:8443",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("hub.invalid does not resolve"));
    assert_eq!(net.probe("appl", "198.51.100.2", 8883), "rejected");
}
