//! The writer of one tree: file names and folders as SS-MIX2 lays them out, ISO-2022-JP bytes with
//! the line endings gateways use, and the MSH and PID segments every message starts with.

use std::path::PathBuf;

use encoding_rs::ISO_2022_JP;

use super::{Patient, Rng, Written};

pub(super) struct Writer {
    pub(super) standard: PathBuf,
    pub(super) extended: PathBuf,
    pub(super) out: Written,
    pub(super) rng: Rng,
    pub(super) counter: u64,
}

const MSH_TAIL: &str =
    "P|2.5||||||~ISO IR87||ISO2022-1994|SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO";

impl Writer {
    pub(super) fn encode(&mut self, segments: &[String]) -> Vec<u8> {
        let text = segments.join("\r") + "\r";
        let (bytes, _, unmappable) = ISO_2022_JP.encode(&text);
        assert!(!unmappable, "generator text outside JIS X 0208");
        let mut b = bytes.into_owned();
        // Gateways differ: most end with CR, the NHO tool adds 0x1C, some write LF.
        match self.rng.below(20) {
            0 => b.push(0x1C),
            1 => {
                for x in b.iter_mut() {
                    if *x == b'\r' {
                        *x = b'\n';
                    }
                }
            }
            _ => {}
        }
        b
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one SS-MIX2 file's path and body"
    )]
    pub(super) fn write(
        &mut self,
        pid: &str,
        date: &str,
        kind: &str,
        order: &str,
        time: &str,
        dept: &str,
        flag: u8,
        bytes: &[u8],
    ) -> PathBuf {
        let dir = self
            .standard
            .join(&pid[..3])
            .join(&pid[3..6])
            .join(pid)
            .join(date)
            .join(kind);
        std::fs::create_dir_all(&dir).expect("create folder");
        let p = dir.join(format!("{pid}_{date}_{kind}_{order}_{time}_{dept}_{flag}"));
        std::fs::write(&p, bytes).expect("write file");
        self.out.files += 1;
        self.out.bytes += bytes.len() as u64;
        p
    }

    pub(super) fn order_no(&mut self) -> String {
        self.counter += 1;
        format!("{:015}", self.counter)
    }

    pub(super) fn stamp(&mut self, date: &str, hour: u64) -> (String, String) {
        let m = self.rng.below(60);
        let s = self.rng.below(60);
        let ms = self.rng.below(1000);
        (
            format!("{date}{hour:02}{m:02}{s:02}{ms:03}"),
            format!("{date}{hour:02}{m:02}{s:02}.{ms:03}"),
        )
    }
}

pub(super) fn pid_seg(p: &Patient) -> String {
    format!(
        "PID|0001||{}^^^^PI||{}^{}^^^^^L^I~{}^{}^^^^^L^P||{}|{}",
        p.pid, p.family.0, p.given.0, p.family.1, p.given.1, p.birth, p.sex
    )
}

pub(super) fn msh(kind: &str, ts: &str, id: u64) -> String {
    format!("MSH|^~\\&|HIS|TSUNAGI|GW|RCV|{ts}||{kind}|{id:012}|{MSH_TAIL}")
}
