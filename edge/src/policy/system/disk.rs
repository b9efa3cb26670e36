//! The disk-encryption check: the state folder and every writable mount on dm-crypt, from
//! `lsblk -J` and `findmnt`.

use crate::policy::{Context, Outcome, Status};

/// A mounted filesystem from `lsblk -J`, and whether it sits on dm-crypt.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    pub target: String,
    pub device: String,
    pub encrypted: bool,
    pub read_only: bool,
}

/// Every mount point in `lsblk -J -o NAME,TYPE,RO,MOUNTPOINTS` output (also `MOUNTPOINT`, from
/// older util-linux), with whether a `crypt` device lies on its path.
pub fn parse_lsblk(json: &str) -> Result<Vec<Mount>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("lsblk output is not JSON: {e}"))?;
    fn walk(node: &serde_json::Value, crypt: bool, out: &mut Vec<Mount>) {
        let ty = node.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let crypt = crypt || ty == "crypt";
        let ro = match node.get("ro") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "1",
            Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
            _ => false,
        };
        let name = node
            .get("name")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        let mut points: Vec<String> = Vec::new();
        if let Some(a) = node.get("mountpoints").and_then(|m| m.as_array()) {
            points.extend(a.iter().filter_map(|p| p.as_str().map(String::from)));
        }
        if let Some(p) = node.get("mountpoint").and_then(|m| m.as_str()) {
            points.push(p.to_string());
        }
        for p in points {
            out.push(Mount {
                target: p,
                device: name.clone(),
                encrypted: crypt,
                read_only: ro,
            });
        }
        if let Some(children) = node.get("children").and_then(|c| c.as_array()) {
            for c in children {
                walk(c, crypt, out);
            }
        }
    }
    let mut out = Vec::new();
    for d in v
        .get("blockdevices")
        .and_then(|b| b.as_array())
        .ok_or("lsblk output has no blockdevices")?
    {
        walk(d, false, &mut out);
    }
    Ok(out)
}

/// The mounts that must be encrypted: writable ones other than /boot and the EFI partition
/// (swap included: it holds memory pages).
pub fn must_be_encrypted(m: &Mount) -> bool {
    let boot = |dir: &str| m.target == dir || m.target.starts_with(&format!("{dir}/"));
    !m.read_only && !boot("/boot") && !boot("/efi")
}

/// The decision for the data partition, from the mounts and the mount point holding the state
/// folder (`findmnt -n -o TARGET -T <state_dir>`).
pub fn assess_disks(mounts: &[Mount], state_target: &str) -> Outcome {
    let plain: Vec<&Mount> = mounts
        .iter()
        .filter(|m| must_be_encrypted(m) && !m.encrypted)
        .collect();
    let state = mounts.iter().find(|m| m.target == state_target);
    let remediation = "データ領域が暗号化されていません。このアプライアンスを使い続けず、ネットワーク事務局に交換を依頼してください（盗難時に患者情報が読まれます）。";
    match state {
        None => Outcome::new(
            Status::Fail,
            format!(
                "the state folder is on {state_target}, which is not an encrypted block device"
            ),
            remediation,
        ),
        Some(m) if !m.encrypted => Outcome::new(
            Status::Fail,
            format!(
                "the state folder is on {} ({}), not encrypted",
                m.target, m.device
            ),
            remediation,
        ),
        Some(m) if !plain.is_empty() => Outcome::new(
            Status::Fail,
            format!(
                "the state folder is encrypted ({}), but {} is not",
                m.device,
                plain
                    .iter()
                    .map(|p| format!("{} ({})", p.target, p.device))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            remediation,
        ),
        Some(m) => Outcome::pass(format!(
            "the state folder and every writable mount are on dm-crypt ({} on {})",
            m.target, m.device
        )),
    }
    .with_details(
        mounts
            .iter()
            .map(|m| {
                format!(
                    "{} {} {}{}",
                    m.target,
                    m.device,
                    if m.encrypted { "encrypted" } else { "plain" },
                    if m.read_only { " read-only" } else { "" }
                )
            })
            .collect(),
    )
}

pub fn disk_encryption(ctx: &Context) -> Outcome {
    let lsblk = match ctx
        .probe
        .output("lsblk", &["lsblk", "-J", "-o", "NAME,TYPE,RO,MOUNTPOINTS"])
        .and_then(|t| parse_lsblk(&t))
    {
        Ok(m) => m,
        Err(e) => {
            return Outcome::error(
                format!("cannot list block devices: {e}"),
                "ディスクの状態を読めません。ネットワーク事務局に連絡してください。",
            )
        }
    };
    let dir = ctx.state_dir.display().to_string();
    let target = match ctx.probe.output(
        "findmnt-state",
        &["findmnt", "-n", "-o", "TARGET", "-T", &dir],
    ) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            return Outcome::error(
                format!("cannot find the mount of {dir}: {e}"),
                "ディスクの状態を読めません。ネットワーク事務局に連絡してください。",
            )
        }
    };
    assess_disks(&lsblk, &target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::system::fixture;

    #[test]
    fn disks_on_luks_pass_and_a_plain_data_partition_fails() {
        let m = parse_lsblk(&fixture("lsblk-luks.json")).unwrap();
        assert!(m.iter().any(|x| x.target == "/var" && x.encrypted));
        assert!(
            m.iter().any(|x| x.target == "/usr" && x.read_only),
            "dm-verity /usr is read-only, so it need not be encrypted"
        );
        assert_eq!(assess_disks(&m, "/var").status, Status::Pass);
        let m = parse_lsblk(&fixture("lsblk-plain.json")).unwrap();
        let o = assess_disks(&m, "/");
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.summary.contains("not encrypted"));
        assert!(!o.remediation.is_empty());
        let m = parse_lsblk(&fixture("lsblk-swap-plain.json")).unwrap();
        let o = assess_disks(&m, "/");
        assert_eq!(o.status, Status::Fail, "plain swap leaks memory: {o:?}");
        assert!(o.summary.contains("[SWAP]"));
        assert_eq!(
            assess_disks(&m, "/overlay").status,
            Status::Fail,
            "a folder not on a block device is not encrypted"
        );
    }
}
