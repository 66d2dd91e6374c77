//! `--sweep lambda=A,B,...` or `--sweep target-macs=A,B,...`: one run per value, then the
//! sweep report with its Pareto front (`OUT.sweep.json`, `OUT.sweep.svg`).

use std::path::{Path, PathBuf};

use super::job::RunOutputs;
use crate::app::sibling;
use crate::error::{Error, Result};
use crate::report::plot::pareto_svg;
use crate::report::sweep::SweepReport;
use crate::train::TrainConfig;

/// The setting a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Lambda,
    TargetMacs,
    TargetParams,
}

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::Lambda => "lambda",
            Setting::TargetMacs => "target-macs",
            Setting::TargetParams => "target-params",
        }
    }
}

/// A parsed `--sweep`: the setting and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub setting: Setting,
    pub values: Vec<f64>,
}

/// One planned run: its label (empty outside a sweep), settings and output files.
pub struct Planned {
    pub label: String,
    pub cfg: TrainConfig,
    pub out: RunOutputs,
}

/// `lambda=a,b,c` or `target-macs=a,b`: finite, non-negative values.
pub fn parse(spec: &str) -> Result<Sweep> {
    let bad = || {
        Error::Usage(format!(
            "--sweep {spec}: expected lambda=A,B,..., target-macs=A,B,... or target-params=A,B,..."
        ))
    };
    let (name, values) = spec.split_once('=').ok_or_else(bad)?;
    let setting = match name {
        "lambda" => Setting::Lambda,
        "target-macs" => Setting::TargetMacs,
        "target-params" => Setting::TargetParams,
        _ => return Err(bad()),
    };
    let values: Vec<f64> = values
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if values.is_empty() || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(bad());
    }
    Ok(Sweep { setting, values })
}

/// The runs to do: one with `base` at `output`, or one per swept value beside it.
pub fn plan(base: &TrainConfig, sweep: Option<&Sweep>, output: &Path) -> Vec<Planned> {
    let Some(s) = sweep else {
        return vec![Planned {
            label: String::new(),
            cfg: base.clone(),
            out: RunOutputs::new(output.to_path_buf()),
        }];
    };
    let name = s.setting.name();
    s.values
        .iter()
        .map(|&v| {
            let mut cfg = base.clone();
            match s.setting {
                Setting::Lambda => cfg.lambda = v,
                Setting::TargetMacs => cfg.target_macs = Some(v),
                Setting::TargetParams => cfg.target_params = Some(v),
            }
            Planned {
                label: format!("{name}={v}"),
                cfg,
                out: RunOutputs::new(sibling(output, &format!(".{name}-{v}.onnx"))),
            }
        })
        .collect()
}

/// The sweep report's files: (JSON, SVG).
pub fn files(output: &Path) -> (PathBuf, PathBuf) {
    (
        sibling(output, ".sweep.json"),
        sibling(output, ".sweep.svg"),
    )
}

/// Writes the sweep report and its chart; prints the report (`json`) or one line per run.
pub fn write(
    sweep: &SweepReport,
    output: &Path,
    force: bool,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let (json_path, svg_path) = files(output);
    let text = crate::app::to_json(sweep)?;
    crate::fsutil::write_atomic(&json_path, text.as_bytes(), force)?;
    crate::fsutil::write_atomic(&svg_path, pareto_svg(sweep)?.as_bytes(), force)?;
    if json {
        println!("{text}");
    } else if !quiet {
        for run in &sweep.runs {
            let r = &run.report;
            let on = if sweep.on_front(&run.label) {
                "  (Pareto front)"
            } else {
                ""
            };
            println!(
                "{}: accuracy {:.4}, MACs {} ({:.1}% of dense){on}",
                run.label,
                r.pruned.accuracy,
                r.pruned.macs,
                100.0 * r.macs_ratio
            );
        }
        println!("wrote {}, {}", json_path.display(), svg_path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_specs() {
        let s = parse("lambda=0.5, 4").unwrap();
        assert_eq!(s.setting, Setting::Lambda);
        assert_eq!(s.values, [0.5, 4.0]);
        assert_eq!(
            parse("target-macs=0.3").unwrap().setting,
            Setting::TargetMacs
        );
        assert_eq!(
            parse("target-params=0.3").unwrap().setting,
            Setting::TargetParams
        );
        for bad in [
            "depth=1",
            "lambda",
            "lambda=",
            "lambda=-1",
            "lambda=a",
            "lambda=inf",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("--sweep {bad}")), "{e}");
        }
        let base = TrainConfig::new(crate::train::Method::L0Hc);
        let runs = plan(&base, Some(&s), Path::new("/tmp/m.onnx"));
        assert_eq!(runs[1].label, "lambda=4");
        assert_eq!(runs[1].cfg.lambda, 4.0);
        assert_eq!(runs[1].out.model, Path::new("/tmp/m.lambda-4.onnx"));
    }
}
