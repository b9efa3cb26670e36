//! `broker setup`: Mosquitto's configuration, ACL and certificates, written into a folder.

use std::path::Path;

use provisioning::Ca;

use super::args::BrokerCommand;
use super::ca_dir;
use crate::now;

pub(super) fn broker_command(data: &Path, command: BrokerCommand) -> anyhow::Result<()> {
    match command {
        BrokerCommand::Setup {
            dir,
            listen,
            names,
            user,
        } => {
            let ca = Ca::load(&ca_dir(data)).map_err(anyhow::Error::msg)?;
            let dir = std::path::absolute(dir.unwrap_or_else(|| data.join("broker")))?;
            // Run again (after `ca rotate-issuing`, say), it keeps what the folder had.
            let (was_listen, was_names) = crate::broker::current(&dir);
            let listen = listen
                .or(was_listen)
                .unwrap_or_else(|| "127.0.0.1:8883".into());
            let names = if !names.is_empty() {
                names
            } else if !was_names.is_empty() {
                was_names
            } else {
                vec!["localhost".into(), "127.0.0.1".into()]
            };
            let user = user
                .or_else(|| {
                    nix::unistd::User::from_uid(nix::unistd::getuid())
                        .ok()
                        .flatten()
                        .map(|u| u.name)
                })
                .unwrap_or_else(|| "mosquitto".into());
            crate::broker::setup(
                &ca,
                &crate::broker::Setup {
                    dir: dir.clone(),
                    listen: listen.clone(),
                    names,
                    user,
                },
                now(),
            )?;
            println!("wrote {}", dir.join(crate::broker::CONF).display());
            println!(
                "start the broker with: mosquitto -c {}",
                dir.join(crate::broker::CONF).display()
            );
            println!(
                "then serve with: tsunagi-hub serve --broker mqtts://{listen} --broker-dir {}",
                dir.display()
            );
        }
    }
    Ok(())
}
