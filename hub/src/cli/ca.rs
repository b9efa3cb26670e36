//! `ca init|fingerprint|list|rotate-issuing|withdraw-issuing`: the network's certificate
//! authority, kept in DATA/ca.

use std::path::Path;

use provisioning::Ca;

use super::args::CaCommand;
use super::serve::serve_lock;
use super::{ca_dir, registry, time};
use crate::{now, registry};

pub(super) fn ca_command(data: &Path, command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init {
            dir,
            network,
            lan_domain,
        } => {
            let dir = dir.unwrap_or_else(|| ca_dir(data));
            let mut ca = Ca::init(&dir, &network, now()).map_err(anyhow::Error::msg)?;
            ca.ensure_lan(&lan_domain, now())
                .map_err(anyhow::Error::msg)?;
            println!("created the {network} CA in {}", dir.display());
            println!("LAN issuing CA: constrained to {lan_domain} and private addresses");
            println!("root fingerprint (SHA-256): {}", ca.fingerprint());
        }
        CaCommand::Fingerprint => {
            println!(
                "{}",
                Ca::load(&ca_dir(data))
                    .map_err(anyhow::Error::msg)?
                    .fingerprint()
            );
        }
        CaCommand::List { json } => {
            let ca = Ca::load(&ca_dir(data)).map_err(anyhow::Error::msg)?;
            let conn = registry(data)?;
            let mut rows = Vec::new();
            for c in ca.issuing_cas() {
                let in_use = registry::in_use_from(&conn, &c.serial, now())?.len();
                rows.push((c, in_use));
            }
            if json {
                let list: Vec<_> = rows.iter().map(|(c, n)| serde_json::json!({"serial": c.serial, "subject": c.subject, "not_after": c.not_after, "current": c.current, "in_use": n})).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (c, n) in rows {
                    let state = if c.current { "current" } else { "previous" };
                    println!(
                        "{}  {state:<8}  until {}  {n} certificates in use  {}",
                        c.serial,
                        time(c.not_after),
                        c.subject
                    );
                }
            }
        }
        CaCommand::RotateIssuing => {
            let dir = ca_dir(data);
            let _lock = serve_lock(&dir).map_err(|e| anyhow::anyhow!("{e}: stop `tsunagi-hub serve` first; it signs with the issuing CA this replaces"))?;
            // Rows from before the registry kept issuers are the current CA's (there was only
            // ever one): marked before anything changes, so no crash can leave them unmarked.
            let conn = registry(data)?;
            let current = Ca::load(&dir)
                .map_err(anyhow::Error::msg)?
                .issuing_serial()
                .to_string();
            let assigned = registry::assign_issuer(&conn, &current)?;
            let (old, new) = Ca::rotate_issuing(&dir, now()).map_err(anyhow::Error::msg)?;
            let ca = Ca::load(&dir).map_err(anyhow::Error::msg)?;
            let (entries, number) = registry::crl_entries(&conn)?;
            ca.write_crl(&entries, number, now())
                .map_err(anyhow::Error::msg)?;
            let in_use = registry::in_use_from(&conn, &old, now())?.len();
            println!("new issuing CA: {new}");
            println!("replaced:       {old} (kept in {}; {in_use} certificates from it in use, {assigned} earlier rows marked as its)", dir.join("previous").display());
            println!("wrote the CRL, once signed by each");
            println!("next:");
            println!("  1. move {} offline again", dir.join("root.key").display());
            println!("  2. tsunagi-hub broker setup (same options as before), then restart Mosquitto: its certificate and the hub's client certificate come from the new CA");
            println!("  3. start the hub: its server certificate comes from the new CA; appliances get theirs at their next renewal (or the fleet page's renew)");
            println!("  4. when `tsunagi-hub ca list` shows none in use from {old}: tsunagi-hub ca withdraw-issuing --serial {old}");
        }
        CaCommand::WithdrawIssuing { serial, broker_dir } => {
            let dir = ca_dir(data);
            let _lock = serve_lock(&dir)
                .map_err(|e| anyhow::anyhow!("{e}: stop `tsunagi-hub serve` first"))?;
            let serial = serial.trim().to_ascii_lowercase();
            let broker_dir = broker_dir.unwrap_or_else(|| data.join("broker"));
            let conn = registry(data)?;
            let unknown = registry::unknown_issuer(&conn, now())?;
            if unknown > 0 {
                anyhow::bail!("{unknown} certificates in use have no issuer recorded (from before the registry kept one): run `tsunagi-hub ca rotate-issuing` to completion first, which records them");
            }
            let in_use = registry::in_use_from(&conn, &serial, now())?;
            if !in_use.is_empty() {
                let list: Vec<String> = in_use
                    .iter()
                    .take(10)
                    .map(|c| format!("{} {} {} ({})", c.facility, c.appliance, c.how, c.serial))
                    .collect();
                anyhow::bail!(
                    "{} certificates from {serial} are still in use, among them: {}. Have those appliances renew (`tsunagi-edge renew`, or the fleet page's renew), or revoke them (`tsunagi-hub cert revoke`), then withdraw",
                    in_use.len(),
                    list.join("; ")
                );
            }
            let ca = Ca::load(&dir).map_err(anyhow::Error::msg)?;
            let withdrawn = ca.issuing_cas().into_iter().find(|c| c.serial == serial);
            if let Some(w) = &withdrawn {
                if !broker_dir.join(crate::broker::SERVER_PEM).exists() {
                    eprintln!("no broker certificates in {}: if the broker's folder is elsewhere, give --broker-dir", broker_dir.display());
                }
                for file in [crate::broker::SERVER_PEM, crate::broker::HUB_CLIENT] {
                    let path = broker_dir.join(file);
                    if let Ok(pem) = std::fs::read(&path) {
                        if provisioning::cert::issued_by(&pem, &w.der) {
                            anyhow::bail!("{} is from {serial}: run `tsunagi-hub broker setup` again (and restart Mosquitto) first", path.display());
                        }
                    }
                }
            }
            Ca::withdraw_issuing(&dir, &serial).map_err(anyhow::Error::msg)?;
            let ca = Ca::load(&dir).map_err(anyhow::Error::msg)?;
            let (entries, number) = registry::crl_entries(&conn)?;
            ca.write_crl(&entries, number, now())
                .map_err(anyhow::Error::msg)?;
            println!("withdrew the issuing CA {serial}: the CRL no longer answers for it, so every certificate it issued is refused");
            if let Some(pid) = crate::broker::reload(&broker_dir) {
                println!("asked the MQTT broker (pid {pid}) to read the CRL again");
            }
            println!("restart Mosquitto to end sessions already open on such certificates (a reload refuses only new ones)");
        }
    }
    Ok(())
}
