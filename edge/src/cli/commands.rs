//! The smaller subcommands: `terminal code|list|forget` and `check`.

use std::process::ExitCode;

use super::{load_config, policy_context, ConfigArg, TerminalCommand};
use crate::config::Config;

pub(super) fn terminal(command: TerminalCommand) -> anyhow::Result<ExitCode> {
    let open = |c: &ConfigArg| -> anyhow::Result<crate::local::Local> {
        let cfg = load_config(&c.config)?;
        crate::local::Local::open(&cfg.state_dir, &crate::store::read_key(&cfg.key_file)?)
    };
    match command {
        TerminalCommand::Code {
            config,
            name,
            valid,
        } => {
            let secs = shared::time::parse_duration(&valid)
                .map_err(|e| anyhow::anyhow!("--valid: {e}"))?;
            let now = shared::time::now();
            let code = open(&config)?.terminal_code(&name, now, now + secs)?;
            println!("code: {code}");
            println!(
                "valid until {}; on the terminal, open https://<this appliance>{} and enter it",
                shared::time::rfc3339(now + secs),
                crate::proxy::ENROL_PATH
            );
        }
        TerminalCommand::List(config) => {
            for (name, at) in open(&config)?.terminals()? {
                println!("{name}\tenrolled {}", shared::time::rfc3339(at));
            }
        }
        TerminalCommand::Forget { config, name } => {
            let n = open(&config)?.forget_terminal(&name)?;
            println!("forgot {n} terminal(s) named {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn check(cfg: &Config, json: bool, no_run: bool) -> anyhow::Result<ExitCode> {
    let key = crate::store::read_key(&cfg.key_file)?;
    let local = crate::local::Local::open(&cfg.state_dir, &key)?;
    let now = shared::time::now();
    let p = if no_run {
        crate::policy::current(&local, now, &cfg.policy)?
    } else {
        crate::policy::run_due(&policy_context(cfg), &local, now, true)?.0
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "appliance posture: {} ({})",
            p.state.label(),
            p.state.code()
        );
        for c in &p.checks {
            println!(
                "  {:<16} {:<14} {}",
                c.check,
                c.state.code(),
                c.outcome.summary
            );
            if (c.state != crate::policy::State::Compliant
                || c.outcome.status == crate::policy::Status::Warn)
                && !c.outcome.remediation.is_empty()
            {
                println!("  {:<16} {:<14} → {}", "", "", c.outcome.remediation);
            }
        }
        println!("terminals: {}", p.terminals.len());
        for t in &p.terminals {
            println!(
                "  {:<16} {:<14} {}",
                t.name,
                if t.known { t.state.code() } else { "unknown" },
                t.summary
            );
        }
        let events = local.recent_events(5)?;
        if !events.is_empty() {
            println!("recent changes:");
            for e in events {
                println!(
                    "  {} {} {} → {}: {}",
                    shared::time::rfc3339(e.at),
                    e.subject,
                    e.from.map(|s| s.code()).unwrap_or("-"),
                    e.to.code(),
                    e.summary
                );
            }
        }
    }
    Ok(ExitCode::from(match p.state {
        crate::policy::State::Compliant | crate::policy::State::InGrace => 0,
        crate::policy::State::NonCompliant => 1,
        crate::policy::State::Error => 2,
    }))
}
