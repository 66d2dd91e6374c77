//! From run options to a [`TrainConfig`]: defaults per method, the schedule, per-group lambdas
//! (`--lambda-config`) and augmentation.

use std::collections::BTreeMap;
use std::path::Path;

use super::args::RunArgs;
use crate::app::options::{DepChain, OptimizerName, PenaltyName};
use crate::error::{Error, Result};
use crate::groups::ChannelGroup;
use crate::ir::Graph;
use crate::train::defaults::NetworkDefaults;
use crate::train::{Method, Optimizer, Penalty, Schedule, TrainConfig};

/// The settings that need neither the model nor the data.
pub fn train_config(a: &RunArgs) -> TrainConfig {
    let method = a.method;
    let mut cfg = TrainConfig::new(method);
    cfg.epochs = a.epochs;
    cfg.batch_size = a.batch_size;
    cfg.lr = a.lr;
    cfg.gate_lr = a.gate_lr;
    cfg.lambda = a
        .lambda
        .unwrap_or(if method == Method::DepL0 { 0.5 } else { 1.0 });
    cfg.target_macs = a.target_macs;
    cfg.target_params = a.target_params;
    cfg.seed = a.seed;
    cfg.max_steps = a.max_steps;
    cfg.swp_kappa = a.swp_kappa;
    cfg.weight_decay = a
        .weight_decay
        .unwrap_or(if method == Method::Swp { 5e-4 } else { 0.0 });
    cfg.checkpoint_dir = a.checkpoint_dir.clone();
    cfg.resume = a.resume;
    cfg.quiet = !a.chatty();
    cfg.progress = true;
    cfg.gate_residual = a.gate_residual;
    cfg.dep_backward = a.dep_chain == DepChain::Backward;
    cfg.dep_n0 = a.dep_n0 as usize;
    cfg.optimizer = match a.optimizer {
        OptimizerName::Sgd => Optimizer::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        },
        OptimizerName::Adam => Optimizer::Adam,
    };
    cfg.finetune_epochs = a.finetune_epochs;
    cfg
}

/// Settings that need the model or the data: the schedule and distillation (their defaults
/// depend on the kind of network), per-group lambdas, augmentation.
pub fn finish_config(a: &RunArgs, graph: &Graph, cfg: &mut TrainConfig) -> Result<()> {
    let defaults = NetworkDefaults::for_network(&crate::groups::analyse_layouts(graph)?);
    cfg.schedule = match &a.schedule {
        Some(text) => Schedule::parse(text).ok_or_else(|| {
            Error::Usage(format!(
                "--schedule {text}: expected constant, cosine or step:M1,M2:GAMMA"
            ))
        })?,
        None => defaults.schedule,
    };
    cfg.distill_weight = a.distill_weight.unwrap_or(defaults.distill_weight);
    cfg.distill_temperature = a
        .distill_temperature
        .unwrap_or(defaults.distill_temperature);
    match (a.penalty, &a.lambda_config) {
        (PenaltyName::L0, config) => {
            let group_lambda = match config {
                Some(path) => lambda_config(path, &crate::groups::analyse(graph)?)?,
                None => BTreeMap::new(),
            };
            cfg.penalty = Penalty::L0 { group_lambda };
        }
        (PenaltyName::Macs, Some(_)) => {
            return Err(Error::Usage(
                "--lambda-config applies to --penalty l0".into(),
            ));
        }
        (PenaltyName::Macs, None) => {}
    }
    let cifar = a
        .data
        .as_ref()
        .is_some_and(|d| matches!(crate::data::detect(d), Ok(crate::data::Format::Cifar)));
    if (a.augment || cifar) && !a.no_augment {
        cfg.augment = Some(crate::data::transform::Augment::CIFAR);
    }
    Ok(())
}

/// Per-group lambdas from a JSON object `{"GROUP_ID or PRODUCER_NODE": lambda, ...}`.
pub fn lambda_config(path: &Path, groups: &[ChannelGroup]) -> Result<BTreeMap<usize, f64>> {
    let bad = |reason: String| Error::Data {
        path: path.display().to_string(),
        reason,
    };
    let v = crate::app::read_json(path)?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("expected a JSON object {group: lambda}".into()))?;
    let mut group_lambda = BTreeMap::new();
    for (key, value) in obj {
        let lambda = value
            .as_f64()
            .ok_or_else(|| bad(format!("'{key}': lambda must be a number")))?;
        // A negative weight would reward keeping the group's gates open.
        if lambda < 0.0 {
            return Err(bad(format!("'{key}': lambda {lambda} is negative")));
        }
        let id = key
            .parse::<usize>()
            .ok()
            .filter(|&i| i < groups.len())
            .or_else(|| {
                groups
                    .iter()
                    .find(|g| g.producers.iter().any(|p| p == key))
                    .map(|g| g.id)
            })
            .ok_or_else(|| {
                bad(format!(
                    "'{key}' is neither a group id nor a producer node (see compress inspect)"
                ))
            })?;
        group_lambda.insert(id, lambda);
    }
    Ok(group_lambda)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet5_groups() -> Vec<ChannelGroup> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let graph = crate::onnx::import_file(&root.join("models/lenet5/model.onnx")).unwrap();
        crate::groups::analyse(&graph).unwrap()
    }

    /// `--schedule` and `--distill-*` left out take the graph's defaults (cosine and
    /// distillation 0.25 at T = 2 for the ViT, constant and none for LeNet-5); given, they are
    /// used as they are.
    #[test]
    fn schedule_and_distillation_default_by_graph_unless_given() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (vit, lenet) = ("models/vit/model.onnx", "models/lenet5/model.onnx");
        let given = "--schedule=constant --distill-weight=0 --distill-temperature=3";
        for (model, options, want) in [
            (vit, "", (Schedule::Cosine, 0.25, 2.0)),
            (vit, given, (Schedule::Constant, 0.0, 3.0)),
            (vit, "--distill-weight=1", (Schedule::Cosine, 1.0, 2.0)),
            (lenet, "", (Schedule::Constant, 0.0, 4.0)),
            (lenet, "--schedule=cosine", (Schedule::Cosine, 0.0, 4.0)),
        ] {
            let path = root.join(model);
            let mut argv = vec!["compress".to_string(), path.display().to_string()];
            argv.extend(options.split_whitespace().map(String::from));
            let a = <Cli as clap::Parser>::try_parse_from(argv).unwrap().run;
            let graph = crate::onnx::import_file(&path).unwrap();
            let mut cfg = train_config(&a);
            finish_config(&a, &graph, &mut cfg).unwrap();
            let got = (cfg.schedule, cfg.distill_weight, cfg.distill_temperature);
            assert_eq!(got, want, "{model} {options}");
        }
    }

    #[test]
    fn lambda_config_by_group_id_or_producer_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lambdas.json");
        let groups = lenet5_groups();
        std::fs::write(&path, r#"{"0": 10, "/conv2/Conv": 0.5}"#).unwrap();
        let got = lambda_config(&path, &groups).unwrap();
        assert_eq!(got, BTreeMap::from([(0, 10.0), (1, 0.5)]));
        for (text, needle) in [
            (
                r#"{"/nope": 1}"#,
                "'/nope' is neither a group id nor a producer node",
            ),
            (r#"{"0": "x"}"#, "'0': lambda must be a number"),
            ("[1]", "expected a JSON object"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = lambda_config(&path, &groups).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
