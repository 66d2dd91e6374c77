//! Training settings that default by kind of network when their options are left out.
//!
//! A transformer (a graph whose LayerNorms normalise a token sequence's hidden width) gets a
//! cosine learning-rate schedule and distillation from the dense model; CNNs and MLPs keep a
//! constant rate and no distillation, as they were measured with. Why, on models/vit at
//! `--target-macs 0.5` in 3 epochs with L0-HC (BENCHMARKS.md, "L0-HC on the ViT"):
//! - at a constant rate the pruned ViT ends at a noisy point (it was trained with a one-cycle
//!   decay; CoFi trains with a linear decay): 0.55 / 1.82 / 0.86 points lost on seeds 0-2;
//! - cosine: 0.41 / 0.41 / 0.63;
//! - cosine and distillation (`T^2 KL` at T = 2, weight 0.25, i.e. one KL; CoFi's results rest
//!   on distillation from the dense model): 0.32 / 0.33 / 0.10. At weight 1 and T = 4 (16 KL)
//!   the gates no longer reached the budget and the export's completion cost 6 points.

use crate::groups::ChannelAnalysis;

use super::Schedule;

/// Distillation weight and temperature of a transformer when the options are left out.
pub const TRANSFORMER_DISTILL: (f64, f64) = (0.25, 2.0);

/// Distillation weight and temperature of other networks when the options are left out.
pub const OTHER_DISTILL: (f64, f64) = (0.0, 4.0);

/// The defaults of one network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkDefaults {
    pub schedule: Schedule,
    pub distill_weight: f64,
    pub distill_temperature: f64,
}

impl NetworkDefaults {
    pub fn for_network(analysis: &ChannelAnalysis) -> NetworkDefaults {
        let transformer = !analysis.norms.is_empty();
        let (schedule, (distill_weight, distill_temperature)) = if transformer {
            (Schedule::Cosine, TRANSFORMER_DISTILL)
        } else {
            (Schedule::Constant, OTHER_DISTILL)
        };
        NetworkDefaults {
            schedule,
            distill_weight,
            distill_temperature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(model: &str) -> NetworkDefaults {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let graph = crate::onnx::import_file(&root.join(model)).unwrap();
        NetworkDefaults::for_network(&crate::groups::analyse_layouts(&graph).unwrap())
    }

    /// Transformers (timm-style ViTs, `nn.TransformerEncoder`) default to cosine and
    /// distillation; CNNs and MLPs to a constant rate and none.
    #[test]
    fn transformers_default_to_cosine_and_distillation_cnns_to_neither() {
        for model in [
            "models/vit/model.onnx",
            "models/vit/model.dynamo.onnx",
            "fixtures/transformers/torch/model.onnx",
            "fixtures/transformers/timm/model.onnx",
        ] {
            let d = defaults(model);
            assert_eq!(d.schedule, Schedule::Cosine, "{model}");
            assert_eq!((d.distill_weight, d.distill_temperature), (0.25, 2.0));
        }
        for model in [
            "models/lenet5/model.onnx",
            "models/lenet300/model.onnx",
            "models/resnet20/model.onnx",
        ] {
            let d = defaults(model);
            assert_eq!(d.schedule, Schedule::Constant, "{model}");
            assert_eq!((d.distill_weight, d.distill_temperature), (0.0, 4.0));
        }
    }
}
