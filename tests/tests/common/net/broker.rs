//! A real Mosquitto configured by `tsunagi-hub broker setup`, and `mosquitto_pub` with a client
//! certificate to play an intruder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{free_port, ok, wait_for, Hub};

/// A real Mosquitto configured by `tsunagi-hub broker setup`, on a free port of 127.0.0.1.
pub struct Broker {
    pub dir: PathBuf,
    pub addr: String,
    child: Option<Child>,
}

impl Broker {
    pub fn start(hub: &Hub) -> Broker {
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = hub.data().join("broker");
        ok(hub
            .cmd("broker")
            .args(["setup", "--listen", &addr])
            .output()
            .unwrap());
        let mut b = Broker {
            dir,
            addr,
            child: None,
        };
        b.run();
        b
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        self.child = Some(
            Command::new("mosquitto")
                .arg("-c")
                .arg(self.dir.join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("mosquitto (the Debian package) is installed by scripts/setup.sh"),
        );
        wait_for(10, "mosquitto to listen", || {
            std::net::TcpStream::connect(&self.addr).is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("mqtts://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// `mosquitto_pub` with a client certificate and key (PEM files).
    pub fn publish(&self, cert: &Path, key: &Path, topic: &str, message: &str) -> Output {
        self.publish_as(cert, key, "intruder", topic, message)
    }

    /// `mosquitto_pub` asking for the client ID `id`.
    pub fn publish_as(
        &self,
        cert: &Path,
        key: &Path,
        id: &str,
        topic: &str,
        message: &str,
    ) -> Output {
        let (host, port) = self.addr.rsplit_once(':').unwrap();
        Command::new("mosquitto_pub")
            .args([
                "-h", host, "-p", port, "-q", "1", "-t", topic, "-m", message, "-i", id,
            ])
            .arg("--cafile")
            .arg(self.dir.join("ca.pem"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
