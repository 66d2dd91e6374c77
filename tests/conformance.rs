//! ONNX operator conformance: every case of Debian's libonnx-testdata whose ops are all in the
//! supported set is imported, run in burn and compared with the expected outputs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use compress::exec::{Network, default_device};
use compress::ir::op::{FOLDED_OPS, SUPPORTED_OPS};
use compress::onnx::pb;
use prost::Message;

const ROOT: &str = "/usr/share/libonnx-testdata/data";

fn cases(suite: &str) -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join(suite);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (install Debian's libonnx-testdata: scripts/test.sh does)",
                dir.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    v
}

/// Does every node use an op we claim?
fn in_scope(model: &pb::ModelProto) -> bool {
    let Some(g) = &model.graph else { return false };
    g.node.iter().all(|n| {
        (n.domain.is_empty() || n.domain == "ai.onnx")
            && (SUPPORTED_OPS.contains(&n.op_type.as_str())
                || FOLDED_OPS.contains(&n.op_type.as_str()))
    })
}

/// Input positions that carry attributes rather than data (shape, bounds, pads, axes...).
fn attribute_like(op: &str, position: usize) -> bool {
    match op {
        "Reshape" | "Unsqueeze" | "Squeeze" | "ReduceMean" => position == 1,
        "Clip" | "Pad" | "Slice" => position >= 1,
        _ => false,
    }
}

/// The test cases feed some attribute-like values (Reshape's shape, Clip's bounds...) as graph
/// inputs. Our importer needs them constant, so bake this data set's values in as initializers.
/// Returns the model bytes and the positions of the graph inputs that remain data inputs.
fn bake_attribute_inputs(
    model: &pb::ModelProto,
    inputs: &[compress::ir::Tensor],
) -> (Vec<u8>, Vec<usize>) {
    let mut m = model.clone();
    let g = m.graph.as_mut().expect("in_scope checked");
    let inits: Vec<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let declared: Vec<pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !inits.contains(&i.name))
        .cloned()
        .collect();
    let mut keep = Vec::new();
    let mut remaining = Vec::new();
    for (k, info) in declared.iter().enumerate() {
        let uses: Vec<(String, usize)> = g
            .node
            .iter()
            .flat_map(|n| {
                n.input
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| **i == info.name)
                    .map(|(p, _)| (n.op_type.clone(), p))
                    .collect::<Vec<_>>()
            })
            .collect();
        let baked = !uses.is_empty() && uses.iter().all(|(op, p)| attribute_like(op, *p));
        match (baked, inputs.get(k)) {
            (true, Some(t)) => g
                .initializer
                .push(compress::onnx::tensor::to_proto(&info.name, t)),
            _ => {
                keep.push(k);
                remaining.push(info.clone());
            }
        }
    }
    g.input
        .retain(|i| inits.contains(&i.name) || remaining.iter().any(|r| r.name == i.name));
    (m.encode_to_vec(), keep)
}

enum Outcome {
    Passed,
    /// Import refused a variant we do not support (clear error, not a wrong answer).
    Refused(String),
    Failed(String),
}

fn run_case(dir: &Path) -> Option<Outcome> {
    let bytes = std::fs::read(dir.join("model.onnx")).ok()?;
    let model = pb::ModelProto::decode(&bytes[..]).ok()?;
    if !in_scope(&model) {
        return None;
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        // Data of element types we do not compute in (uint16, bool...) puts the case out of scope.
        let (all_inputs, expected) = common::try_load_data_set(&set).ok()?;
        let (bytes, keep) = bake_attribute_inputs(&model, &all_inputs);
        let inputs: Vec<_> = keep
            .iter()
            .filter_map(|&k| all_inputs.get(k).cloned())
            .collect();
        let graph = match compress::onnx::import_bytes(&bytes, &dir.display().to_string()) {
            Ok(g) => g,
            Err(e) => return Some(Outcome::Refused(e.to_string())),
        };
        let net = match Network::new(&graph, &default_device()) {
            Ok(n) => n,
            Err(e) => return Some(Outcome::Refused(e.to_string())),
        };
        let outputs =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.run(&inputs))) {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => return Some(Outcome::Failed(format!("run failed: {e}"))),
                Err(_) => return Some(Outcome::Failed("panicked while running".into())),
            };
        if outputs.len() != expected.len() || expected.is_empty() {
            return Some(Outcome::Failed(format!(
                "{} outputs, {} expected",
                outputs.len(),
                expected.len()
            )));
        }
        for (k, (got, want)) in outputs.iter().zip(&expected).enumerate() {
            if got.shape != want.shape {
                return Some(Outcome::Failed(format!(
                    "output {k}: shape {:?}, expected {:?}",
                    got.shape, want.shape
                )));
            }
            let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                // ONNX backend-test tolerances: rtol 1e-3, atol 1e-7 (we allow atol 1e-5 for f32 sums).
                if !((a - b).abs() <= 1e-5 + 1e-3 * b.abs() || (a.is_nan() && b.is_nan()) || a == b)
                {
                    return Some(Outcome::Failed(format!(
                        "output {k}[{i}]: {a} vs expected {b}"
                    )));
                }
            }
        }
    }
    Some(Outcome::Passed)
}

#[test]
fn libonnx_testdata_conformance() {
    let mut failures = Vec::new();
    let mut summary = BTreeMap::new();
    for suite in ["node", "pytorch-converted", "pytorch-operator"] {
        let (mut attempted, mut passed, mut refused) = (0, 0, Vec::new());
        for case in cases(suite) {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            match run_case(&case) {
                None => {}
                Some(Outcome::Passed) => {
                    attempted += 1;
                    passed += 1;
                }
                Some(Outcome::Refused(why)) => {
                    attempted += 1;
                    refused.push(format!("{name}: {why}"));
                }
                Some(Outcome::Failed(why)) => {
                    attempted += 1;
                    failures.push(format!("{suite}/{name}: {why}"));
                }
            }
        }
        println!(
            "{suite}: attempted {attempted}, passed {passed}, refused {}",
            refused.len()
        );
        for r in &refused {
            println!("  refused {r}");
        }
        summary.insert(suite, (attempted, passed));
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(
        failures.is_empty(),
        "{} conformance cases gave wrong results",
        failures.len()
    );
    // Guard against a silently empty run (e.g. the scope filter broke).
    assert!(
        summary["node"].1 >= 100,
        "too few node cases passed: {:?}",
        summary["node"]
    );
    assert!(
        summary["pytorch-converted"].1 >= 30,
        "too few pytorch-converted cases passed: {:?}",
        summary["pytorch-converted"]
    );
}
