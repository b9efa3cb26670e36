//! `ssmix2-gen`: writes a synthetic SS-MIX2 tree (standard and extended storage roots).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use tests::gen::{generate, Spec};

#[derive(Parser)]
#[command(about = "Write a deterministic synthetic SS-MIX2 tree: OUT/standard and OUT/extended")]
struct Args {
    #[arg(long)]
    out: PathBuf,
    /// A preset: clinic-year (about 2,000 patients) or hospital (about 50,000 patients).
    #[arg(long)]
    preset: Option<String>,
    #[arg(long)]
    patients: Option<u64>,
    #[arg(long)]
    days: Option<u64>,
    /// Average visits a patient makes over the period.
    #[arg(long)]
    visits: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// How many malformed files to add (each must end in quarantine).
    #[arg(long, default_value_t = 0)]
    malformed: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut spec = match a.preset.as_deref() {
        None | Some("clinic-year") => Spec::clinic_year(),
        Some("hospital") => Spec::hospital(),
        Some("small") => Spec::small(1),
        Some(other) => {
            anyhow::bail!("unknown preset {other:?}: use clinic-year, hospital or small")
        }
    };
    spec.patients = a.patients.unwrap_or(spec.patients);
    spec.days = a.days.unwrap_or(spec.days);
    spec.visits = a.visits.unwrap_or(spec.visits);
    spec.seed = a.seed.unwrap_or(spec.seed);
    spec.malformed = a.malformed;
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty: generate into a new or empty folder",
            a.out.display()
        );
    }
    let w = generate(&spec, &a.out);
    println!(
        "wrote {} files ({} bytes; {} superseded, {} deleted, {} documents, {} malformed) for {} patients to {}",
        w.files, w.bytes, w.superseded, w.deleted, w.documents, w.malformed, spec.patients, a.out.display()
    );
    Ok(())
}
