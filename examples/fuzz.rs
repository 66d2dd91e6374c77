//! Long fuzz runs (see `scripts/fuzz.sh`): `cargo run --release --example fuzz -- --kind
//! structured|bytes --seed S --start I --cases N --out DIR [--limit-secs T]`.
//!
//! Runs cases `I..I+N` of the run seeded `S`. Before each case its index is written to
//! `DIR/current`, so a driver that dies (an abort, the memory limit) can be restarted after it.
//! A failing case (panic, internal error, timeout) is saved as `DIR/failures/<kind>-<seed>-<index>.onnx`
//! with a `.txt` saying what was mutated and how it failed; a timeout ends the run (its thread
//! cannot be stopped), exit code 3. `--save-only 1` saves cases `I..I+N` as failures without
//! running them (what the script does for a case the driver died on). The counts go to `DIR/counts-<kind>-<seed>-<start>.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use compress::fuzz::{self, Kind, Outcome};

struct Args {
    kind: Kind,
    seed: u64,
    start: u64,
    cases: u64,
    out: PathBuf,
    limit: Duration,
    /// Save the cases without running them (for a case a driver died on).
    save_only: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        kind: Kind::Structured,
        seed: 1,
        start: 0,
        cases: 1000,
        out: PathBuf::from("fuzz-out"),
        limit: Duration::from_secs(30),
        save_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--kind" => {
                a.kind = match value.as_str() {
                    "structured" => Kind::Structured,
                    "bytes" => Kind::Bytes,
                    _ => return Err(format!("--kind {value}: expected structured or bytes")),
                }
            }
            "--seed" => a.seed = num()?,
            "--start" => a.start = num()?,
            "--cases" => a.cases = num()?,
            "--limit-secs" => a.limit = Duration::from_secs(num()?),
            "--out" => a.out = PathBuf::from(value),
            "--save-only" => a.save_only = num()? != 0,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let models = match fuzz::seed_models(&repo) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let failures = a.out.join("failures");
    std::fs::create_dir_all(&failures).expect("output directory");
    fuzz::case::prepare();
    let kind_name = match a.kind {
        Kind::Structured => "structured",
        Kind::Bytes => "bytes",
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    let mut code = 0;
    for index in a.start..a.start + a.cases {
        std::fs::write(
            a.out.join("current"),
            format!("{kind_name} {} {index}\n", a.seed),
        )
        .expect("progress file");
        let case = fuzz::generate(&models, a.kind, a.seed, index);
        let (outcome, message) = if a.save_only {
            (Outcome::Panic, "the driver died on this case".to_string())
        } else {
            fuzz::case::run(case.bytes.clone(), case.plan_seed, a.limit)
        };
        *counts.entry(format!("{outcome:?}")).or_default() += 1;
        if outcome.is_failure() {
            let stem = failures.join(format!("{kind_name}-{}-{index}", a.seed));
            std::fs::write(stem.with_extension("onnx"), &case.bytes).expect("save case");
            let text = format!(
                "model: {}\nmutations: {:?}\nplan seed: {}\noutcome: {outcome:?}\n{message}\n",
                models[case.model].0.display(),
                case.mutations,
                case.plan_seed
            );
            std::fs::write(stem.with_extension("txt"), text).expect("save case");
            eprintln!("case {index}: {outcome:?}: {message}");
            if outcome == Outcome::Timeout {
                code = 3;
                *counts.entry("stopped_at".into()).or_default() = index;
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "kind": kind_name, "seed": a.seed, "start": a.start, "counts": counts, "seconds": secs,
    });
    std::fs::write(
        a.out
            .join(format!("counts-{kind_name}-{}-{}.json", a.seed, a.start)),
        summary.to_string(),
    )
    .expect("counts file");
    println!("{summary}");
    std::process::ExitCode::from(code)
}
