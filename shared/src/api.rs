//! The JSON bodies of the hub's appliance API (`/v1/…`), written once for both sides: the
//! appliance builds and reads exactly what the hub reads and builds. The binary bodies (segment
//! batches, restore streams) are in `wire`.
//!
//! Versions: `PROTOCOL` numbers these bodies and the binary formats, `schema::VERSION` the
//! clinical schema. An appliance says both when it enrols; a hub older than either refuses it
//! and says what to upgrade. The hub says both back, and the restore plan says the schema of the
//! copy, so a restoring appliance older than the copy refuses before anything is written.

use serde::{Deserialize, Serialize};

/// The version of the API's bodies and of the binary formats. 1: the first that says it;
/// 2: every segment says the schema it was written at (batches `TSB2`, restore streams `TSR2`).
pub const PROTOCOL: u32 = 2;

/// `POST /v1/enroll`: a one-time token for a certificate. The appliance's key never leaves it:
/// it sends certificate signing requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub csr: String,
    pub appliance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<LanRequest>,
    /// The LAN proxy's own key, for its portal-only certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRequest>,
    /// The appliance's `PROTOCOL` (0: an appliance from before versions were said).
    #[serde(default)]
    pub protocol: u32,
    /// The appliance's `schema::VERSION` (0: not said).
    #[serde(default)]
    pub schema: u32,
}

/// `POST /v1/renew`, on the appliance's current certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<LanRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRequest>,
    /// As in `EnrollRequest`: an appliance upgraded since it enrolled says so at renewal.
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub schema: u32,
}

/// The versions a request body states, read before the body is held to its type: a newer
/// appliance whose body has fields this hub does not know is told to upgrade the hub, not that
/// its body is malformed.
#[derive(Debug, Default, Deserialize)]
pub struct Versions {
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub schema: u32,
}

/// The key and names of the appliance's LAN listener, for its server certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanRequest {
    pub csr: String,
    pub names: Vec<String>,
}

/// The LAN proxy's key, for its portal-only client certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRequest {
    pub csr: String,
}

/// What the hub answers to an enrolment or a renewal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// The appliance's certificate, then the issuing CA.
    pub chain_pem: String,
    pub root_pem: String,
    pub facility: String,
    pub facility_name: String,
    pub appliance: String,
    pub serial: String,
    pub not_after: i64,
    /// The LAN server certificate and the LAN issuing CA, when the request asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_chain_pem: Option<String>,
    /// The LAN proxy's portal-only client certificate, when the request asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_chain_pem: Option<String>,
    /// The hub's `PROTOCOL` and `schema::VERSION` (0: a hub from before versions were said).
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub schema: u32,
}

/// The snapshot a restore starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSnapshot {
    pub seq: u64,
    /// When the segment it ends with was captured on the appliance.
    pub captured_at: Option<String>,
    pub bytes: u64,
}

/// A position in a facility's chain: a segment's number and hash (hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanHead {
    pub seq: u64,
    pub hash: String,
}

/// `GET /v1/restore/plan`: what a restore to the asked point will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub snapshot: Option<PlanSnapshot>,
    pub base_seq: u64,
    /// Segments applied after the snapshot: count, first number, compressed bytes.
    pub segments: u64,
    pub first_segment: Option<u64>,
    pub segment_bytes: u64,
    pub to_seq: u64,
    pub to_hash: String,
    pub to_captured_at: Option<String>,
    /// The copy's head.
    pub head: PlanHead,
    /// What exists in the copy after the target and will not be in the restored store.
    pub lost_segments: u64,
    pub lost_files: u64,
    pub lost_from: Option<String>,
    pub lost_to: Option<String>,
    /// The copy's synced-tables version (`schema::VERSION`; 0: a hub from before versions were
    /// said, which is 1).
    #[serde(default)]
    pub schema: u32,
}

/// What `tsunagi-edge restore --dry-run` prints.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.snapshot {
            Some(s) => writeln!(
                f,
                "snapshot:  segment {} (captured {}), {} bytes",
                s.seq,
                s.captured_at.as_deref().unwrap_or("?"),
                s.bytes
            )?,
            None => writeln!(f, "snapshot:  none; starting from an empty store")?,
        }
        match self.first_segment {
            Some(first) => writeln!(
                f,
                "segments:  {first}..{} ({} segments, {} bytes)",
                self.to_seq, self.segments, self.segment_bytes
            )?,
            None => writeln!(f, "segments:  none after the snapshot")?,
        }
        writeln!(
            f,
            "restores:  segment {} ({}), captured {}",
            self.to_seq,
            self.to_hash,
            self.to_captured_at.as_deref().unwrap_or("?")
        )?;
        if self.lost_segments == 0 {
            writeln!(
                f,
                "left out:  nothing; this is the copy's newest point (segment {})",
                self.head.seq
            )
        } else {
            writeln!(
                f,
                "left out:  {} segments after it ({} files), captured {} to {}; the copy reaches segment {}",
                self.lost_segments,
                self.lost_files,
                self.lost_from.as_deref().unwrap_or("?"),
                self.lost_to.as_deref().unwrap_or("?"),
                self.head.seq
            )
        }
    }
}

/// Every refusal of the API: a code to branch on and a sentence for a person. A refused batch
/// also says where the copy stands (`seq`, `hash`) and what it expects next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
}

/// Whether a hub that knows `PROTOCOL` and `schema` can take an appliance that says
/// `protocol` and `schema`: `Err` says what to upgrade.
pub fn hub_takes(appliance_protocol: u32, appliance_schema: u32) -> Result<(), String> {
    if appliance_protocol > PROTOCOL {
        return Err(format!(
            "this appliance speaks protocol {appliance_protocol}, and this hub knows up to {PROTOCOL}: upgrade the hub before enrolling appliances of this version"
        ));
    }
    if appliance_schema > crate::schema::VERSION {
        return Err(format!(
            "this appliance's synced tables are at version {appliance_schema}, and this hub knows up to {}: upgrade the hub before enrolling appliances of this version",
            crate::schema::VERSION
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_takes_appliances_of_its_version_or_older() {
        assert!(hub_takes(PROTOCOL, crate::schema::VERSION).is_ok());
        assert!(
            hub_takes(0, 0).is_ok(),
            "an appliance from before versions were said"
        );
        let e = hub_takes(PROTOCOL + 1, 1).unwrap_err();
        assert!(e.contains("upgrade the hub"), "{e}");
        let e = hub_takes(PROTOCOL, crate::schema::VERSION + 1).unwrap_err();
        assert!(
            e.contains("synced tables are at version") && e.contains("upgrade the hub"),
            "{e}"
        );
    }

    #[test]
    fn bodies_read_what_older_peers_write_and_refuse_what_nobody_wrote() {
        // An enrolment from before versions were said.
        let old: EnrollRequest = serde_json::from_str(
            r#"{"token":"t","csr":"c","appliance":"box-1","proxy":{"csr":"p"}}"#,
        )
        .unwrap();
        assert_eq!((old.protocol, old.schema, old.lan.is_none()), (0, 0, true));
        // A field nobody defined is refused, not dropped.
        let e = serde_json::from_str::<EnrollRequest>(
            r#"{"token":"t","csr":"c","appliance":"box-1","admin":true}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `admin`"), "{e}");
        let plan: Plan = serde_json::from_str(
            r#"{"snapshot":null,"base_seq":0,"segments":0,"first_segment":null,"segment_bytes":0,"to_seq":0,"to_hash":"00","to_captured_at":null,"head":{"seq":0,"hash":"00"},"lost_segments":0,"lost_files":0,"lost_from":null,"lost_to":null}"#,
        )
        .unwrap();
        assert_eq!(plan.schema, 0);
        let e = ErrorBody {
            error: "gap".into(),
            message: "m".into(),
            seq: Some(4),
            hash: None,
            expected: Some(5),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"error":"gap","message":"m","seq":4,"expected":5}"#
        );
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), e);
    }
}
