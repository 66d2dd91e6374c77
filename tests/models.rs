//! Every shipped model (models/) and structural fixture (fixtures/models/): burn matches
//! PyTorch's saved output and tract, the re-export matches the original in tract, and the cost
//! model agrees with PyTorch's parameter count and the card's MACs.

mod common;

use compress::exec::{Network, default_device};
use compress::verify::run_tract;

#[test]
fn shipped_models_run_identically_in_burn_tract_and_pytorch() {
    let dirs = common::model_dirs();
    assert!(
        dirs.len() >= 8,
        "expected 3 models and 5 fixtures, found {dirs:?}"
    );
    for dir in dirs {
        let name = dir
            .strip_prefix(common::repo())
            .unwrap()
            .display()
            .to_string();
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let graph = compress::onnx::import_bytes(&bytes, &name).unwrap_or_else(|e| panic!("{e}"));
        let (inputs, expected) = common::load_data_set(&dir.join("test_data_set_0"));
        assert!(
            !inputs.is_empty() && !expected.is_empty(),
            "{name}: no test data"
        );

        let net = Network::new(&graph, &default_device()).unwrap();
        let burn_out = net.run(&inputs).unwrap();
        let tract_out = run_tract(&bytes, &inputs).unwrap();
        let d_torch = common::max_diff(&burn_out[0], &expected[0]);
        let d_tract = common::max_diff(&burn_out[0], &tract_out[0]);

        let exported = compress::onnx::export(&graph);
        let tract_re = run_tract(&exported, &inputs).unwrap();
        let d_roundtrip = common::max_diff(&tract_re[0], &tract_out[0]);
        println!(
            "{name}: burn-pytorch {d_torch:.2e}, burn-tract {d_tract:.2e}, re-export {d_roundtrip:.2e}"
        );
        assert!(d_torch <= 1e-4, "{name}: burn vs PyTorch {d_torch}");
        assert!(d_tract <= 1e-4, "{name}: burn vs tract {d_tract}");
        assert!(
            d_roundtrip <= 1e-5,
            "{name}: re-exported vs original in tract {d_roundtrip}"
        );

        let card = common::card(&dir);
        let cost = compress::ir::cost::graph_cost(&graph, 1).unwrap();
        assert_eq!(
            cost.params,
            card["params"].as_u64().unwrap(),
            "{name}: params vs PyTorch"
        );
        assert_eq!(
            cost.macs,
            card["macs"].as_u64().unwrap(),
            "{name}: MACs vs card"
        );
    }
}

#[test]
fn export_keeps_names_opset_and_metadata_and_sets_producer() {
    let path = common::repo().join("models/lenet5/model.onnx");
    let graph = compress::onnx::import_file(&path).unwrap();
    let again =
        compress::onnx::import_bytes(&compress::onnx::export(&graph), "re-exported").unwrap();
    assert_eq!(again.inputs, graph.inputs);
    assert_eq!(again.outputs, graph.outputs);
    assert_eq!(again.meta.opset_imports, graph.meta.opset_imports);
    assert_eq!(again.meta.producer_name, compress::onnx::PRODUCER);
    assert_eq!(again.meta.producer_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(again.nodes, graph.nodes);
    assert_eq!(again.initializers, graph.initializers);
}

#[test]
fn batch_dimension_stays_symbolic() {
    let graph =
        compress::onnx::import_file(&common::repo().join("models/lenet5/model.onnx")).unwrap();
    let net = Network::new(&graph, &default_device()).unwrap();
    for batch in [1, 3, 64] {
        let x = compress::verify::pseudo_random(&graph.inputs[0].shape(batch), 1);
        let y = net.run(&[x]).unwrap();
        assert_eq!(y[0].shape, vec![batch, 10]);
    }
}
