//! `copy verify|snapshot|list`: the facilities' failover copies, checked, snapshotted and
//! listed.

use std::path::Path;
use std::process::ExitCode;

use super::args::CopyCommand;
use super::hub_key;
use crate::{copy, db, key, snapshot, state};

fn open_copy(data: &Path, facility: &str) -> anyhow::Result<(rusqlite::Connection, key::Key)> {
    provisioning::token::check_facility(facility).map_err(anyhow::Error::msg)?;
    let path = state::copy_path(data, facility);
    if !path.exists() {
        anyhow::bail!(
            "there is no copy of facility {facility} in {} (has its appliance synced?)",
            data.display()
        );
    }
    let k = hub_key(data)?.derive(&format!("copy:{facility}"));
    Ok((db::open(&path, &k, shared::schema::MIGRATIONS)?, k))
}

pub(super) fn copy_command(data: &Path, command: CopyCommand) -> anyhow::Result<ExitCode> {
    match command {
        CopyCommand::Verify { facility, json } => {
            let (conn, k) = open_copy(data, &facility)?;
            let mut report = copy::verify(&conn)?;
            let snaps = snapshot::list(&state::snapshot_dir(data, &facility), &k);
            match &snaps {
                Ok(list) => {
                    for s in list {
                        let held: Option<Vec<u8>> =
                            rusqlite::OptionalExtension::optional(conn.query_row(
                                "SELECT hash FROM outbox WHERE seq = ?1",
                                [s.seq as i64],
                                |r| r.get(0),
                            ))?;
                        if held.is_some_and(|h| h[..] != s.hash[..]) {
                            report.problems.push(format!(
                                "snapshot {}: its position does not match segment {} of the chain",
                                s.seq, s.seq
                            ));
                        }
                    }
                }
                Err(e) => report.problems.push(format!("snapshots: {e:#}")),
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "copy of {facility}: segment {} ({})",
                    report.position.seq,
                    shared::chain::hex(&report.position.hash)
                );
                println!(
                    "archived segments: {} (from {:?})",
                    report.archived, report.first_archived
                );
                println!(
                    "snapshots: {}",
                    snaps
                        .as_ref()
                        .map(|s| s
                            .iter()
                            .map(|s| s.seq.to_string())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
                for p in &report.problems {
                    println!("PROBLEM: {p}");
                }
                if report.problems.is_empty() {
                    println!("ok");
                }
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        CopyCommand::Snapshot { facility } => {
            let (conn, k) = open_copy(data, &facility)?;
            match snapshot::take(&conn, &state::snapshot_dir(data, &facility), &k)? {
                Some(p) => println!("snapshot of {facility} at segment {}", p.seq),
                None => println!(
                    "a snapshot at the copy's position already exists (or the copy is empty)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        CopyCommand::List => {
            for f in state::facilities(data) {
                let (conn, k) = open_copy(data, &f)?;
                let p = copy::position(&conn)?;
                let snaps = snapshot::list(&state::snapshot_dir(data, &f), &k)?;
                println!(
                    "{f}  segment {:>8}  snapshots {}",
                    p.seq,
                    snaps
                        .iter()
                        .map(|s| s.seq.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
