//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use compress::ir::Tensor;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The BERT-style token fixtures: the TorchScript export, the dynamo export, and the dynamo
/// export with a boolean attention mask.
pub fn bert_dirs() -> Vec<PathBuf> {
    let root = repo().join("fixtures/transformers");
    ["bert_ts", "bert_dynamo", "bert_bool_dynamo"]
        .iter()
        .map(|d| root.join(d))
        .collect()
}

/// Every model directory that ships a model.onnx with a test_data_set_0.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in ["models", "fixtures/models"] {
        let Ok(entries) = std::fs::read_dir(repo().join(root)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().join("model.onnx").is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Inputs and expected outputs of one ONNX test data set directory.
pub fn load_data_set(dir: &Path) -> (Vec<Tensor>, Vec<Tensor>) {
    try_load_data_set(dir).unwrap_or_else(|e| panic!("{e}"))
}

/// Like `load_data_set`, but an unreadable tensor (e.g. an element type we do not support) is an error.
pub fn try_load_data_set(dir: &Path) -> compress::Result<(Vec<Tensor>, Vec<Tensor>)> {
    let read = |prefix: &str| -> compress::Result<Vec<Tensor>> {
        let mut v = Vec::new();
        for i in 0.. {
            let p = dir.join(format!("{prefix}_{i}.pb"));
            if !p.is_file() {
                break;
            }
            v.push(compress::onnx::read_tensor_file(&p)?);
        }
        Ok(v)
    };
    Ok((read("input")?, read("output")?))
}

/// Max |a - b| where shapes agree (after dropping size-1 dims, which exporters may differ on).
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if squeeze(&a.shape) != squeeze(&b.shape) {
        return f32::INFINITY;
    }
    compress::verify::max_abs_diff(
        &Tensor::f32(vec![a.len()], a.to_f32_vec()),
        &Tensor::f32(vec![b.len()], b.to_f32_vec()),
    )
}

pub fn card(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("card.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    serde_json::from_str(&text).expect("card.json is JSON")
}

/// The compress binary built for these tests.
pub fn compress() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("compress").unwrap()
}

/// Path of the shipped LeNet-5.
pub fn lenet5() -> String {
    repo()
        .join("models/lenet5/model.onnx")
        .display()
        .to_string()
}

/// The half-width torchvision ResNet-18 fixture (input 3x64x64).
pub fn resnet18() -> String {
    repo()
        .join("fixtures/models/resnet18/model.onnx")
        .display()
        .to_string()
}

/// An image folder `root/{train,test}/<class>/*.png` of 40x48 RGB images (not any fixture's
/// input size), each of 3 classes its own colour with some per-image noise.
pub fn rgb_folder(root: &Path, per_class: usize) {
    let colours = [[200u8, 30, 30], [30, 200, 30], [30, 30, 200]];
    for split in ["train", "test"] {
        for (class, base) in colours.iter().enumerate() {
            let dir = root.join(split).join(format!("class{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img = image::RgbImage::from_fn(40, 48, |x, y| {
                    let jitter = ((x * 7 + y * 13 + i as u32 * 31) % 40) as u8;
                    image::Rgb(base.map(|c| c.saturating_add(jitter)))
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// The first `n` items of one IDX file of the shipped subset, uncompressed; `patch` may edit
/// the payload.
pub fn cut_idx(from: &Path, to: &Path, n: usize, patch: impl Fn(&mut [u8])) {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(from).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let rank = bytes[3] as usize;
    let item: usize = (1..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .product();
    let header = 4 + 4 * rank;
    let mut out = bytes[..header].to_vec();
    out[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    let mut payload = bytes[header..header + n * item].to_vec();
    patch(&mut payload);
    out.extend_from_slice(&payload);
    std::fs::write(to, out).unwrap();
}

/// `compress run lenet5 --method swp` with each of `budgets` exits 2 before any work: one line
/// containing `says`, nothing written.
pub fn assert_swp_refuses(budgets: &[[&str; 2]], says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("swp.onnx");
    for budget in budgets {
        let o = compress()
            .arg(lenet5())
            .args(["--method", "swp", "-o"])
            .arg(&out)
            .args(budget)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{budget:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

/// Asserts that the training cost model prices plans keeping 1..=`heads` heads in every group
/// of `ids` at the MACs of the graph pruned to them (q, k, v columns, output rows, QK^T and AV
/// once per head).
pub fn assert_head_plans_priced_at_pruned_macs(
    name: &str,
    graph: &compress::ir::Graph,
    ids: &[usize],
    heads: usize,
) {
    use compress::prune::plan::{GroupKeep, KeepPlan};
    let analysis = compress::groups::analyse_layouts(graph).unwrap();
    let model = compress::methods::cost::CostModel::new(graph, &analysis, ids).unwrap();
    for kept in 1..=heads {
        let plan = KeepPlan {
            groups: ids
                .iter()
                .map(|&id| GroupKeep {
                    id,
                    keep: (heads - kept..heads).collect(),
                })
                .collect(),
        };
        let pruned = compress::prune::prune(graph, &plan, None).unwrap();
        let macs = compress::ir::cost::graph_cost(&pruned.graph, 1)
            .unwrap()
            .macs;
        let priced = model.deterministic(&vec![kept; ids.len()]);
        assert_eq!(priced, macs as f64, "{name}: {kept} heads");
    }
}

/// A pruned export computes its masked reference in tract (and ONNX Runtime with the `ort`
/// feature) within 1e-4 at batch 1 and 5, on the inputs `probes(reference, batch)`.
pub fn assert_pruned_matches_reference(
    pruned: &compress::prune::Pruned,
    what: &str,
    probes: impl Fn(&compress::ir::Graph, usize) -> Vec<Tensor>,
) {
    use compress::verify::run_tract;
    let ours = compress::onnx::export(&pruned.graph);
    let reference = compress::onnx::export(&pruned.reference);
    for batch in [1, 5] {
        let x = probes(&pruned.reference, batch);
        let a = run_tract(&ours, &x).unwrap();
        let b = run_tract(&reference, &x).unwrap();
        let d = max_diff(&a[0], &b[0]);
        assert!(
            d <= 1e-4,
            "{what} batch {batch}: tract, pruned vs reference {d}"
        );
        #[cfg(feature = "ort")]
        {
            use compress::verify::onnxruntime::run_ort;
            let a = run_ort(&ours, &x).unwrap();
            let b = run_ort(&reference, &x).unwrap();
            let d = max_diff(&a[0], &b[0]);
            assert!(
                d <= 1e-4,
                "{what} batch {batch}: ORT, pruned vs reference {d}"
            );
        }
    }
}
