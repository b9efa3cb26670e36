//! `token create` and `cert list|revoke|release-address`: the one-time enrolment tokens and the
//! certificates issued with them, in the registry.

use std::path::Path;

use provisioning::Ca;

use super::args::{CertCommand, TokenCommand};
use super::{ca_dir, registry, time};
use crate::{now, registry};

pub(super) fn token_command(data: &Path, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            facility,
            name,
            valid,
        } => {
            provisioning::token::check_facility(&facility).map_err(anyhow::Error::msg)?;
            let valid = shared::time::parse_duration(&valid).map_err(anyhow::Error::msg)?;
            let ca = Ca::load(&ca_dir(data)).map_err(anyhow::Error::msg)?;
            let token = provisioning::token::generate();
            let t = now();
            registry::create_token(
                &registry(data)?,
                &facility,
                &name,
                &provisioning::token::hash(&token),
                t,
                t + valid,
            )?;
            println!("token:       {token}");
            println!("facility:    {facility} {name}");
            println!("valid until: {}", time(t + valid));
            println!("fingerprint: {}", ca.fingerprint());
            println!("on the appliance: tsunagi-edge enroll --hub URL --token {token} --ca-fingerprint {}", ca.fingerprint());
        }
    }
    Ok(())
}

pub(super) fn cert_command(data: &Path, command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::List { facility, json } => {
            let certs = registry::certs(&registry(data)?, facility.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                for c in certs {
                    let state = match c.revoked_at {
                        Some(r) => format!("revoked {}", time(r)),
                        None if c.not_after < now() => "expired".into(),
                        None => "valid".into(),
                    };
                    println!(
                        "{}  {}  {:<16} {:<6} until {}  {state}",
                        c.serial,
                        c.facility,
                        c.appliance,
                        c.how,
                        time(c.not_after)
                    );
                }
            }
        }
        CertCommand::Revoke { serial, facility } => {
            let ca = Ca::load(&ca_dir(data)).map_err(anyhow::Error::msg)?;
            let conn = registry(data)?;
            let revoked = registry::revoke(&conn, serial.as_deref(), facility.as_deref(), now())?;
            if revoked.is_empty() {
                anyhow::bail!("no valid certificate matches; see `tsunagi-hub cert list`");
            }
            let (entries, number) = registry::crl_entries(&conn)?;
            let path = ca
                .write_crl(&entries, number, now())
                .map_err(anyhow::Error::msg)?;
            for s in &revoked {
                println!("revoked {s}");
            }
            println!("wrote the CRL ({} entries) to {}; the running hub refuses these certificates from now on", entries.len(), path.display());
            if let Some(pid) = crate::broker::reload(&data.join("broker")) {
                println!("asked the MQTT broker (pid {pid}) to read the CRL again");
            }
        }
        CertCommand::ReleaseAddress { address } => {
            if registry::release_lan_address(&registry(data)?, &address)? {
                println!("released {address}: the next facility to ask may be issued it");
            } else {
                anyhow::bail!("no facility holds {address}");
            }
        }
    }
    Ok(())
}
