//! Validation (`GatedNet::forward_eval`) runs off autodiff: nothing is recorded that burn-autodiff
//! would keep until the next backward, and the logits equal the autodiff device's.

use burn::prelude::*;
use compress::exec::value::host_f32;
use compress::exec::{Val, default_device};
use compress::train::net::GatedNet;

#[test]
fn evaluation_runs_on_the_inner_backend_with_the_same_logits() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for model in ["lenet5", "resnet20"] {
        let graph = compress::onnx::import_file(&root.join(format!("models/{model}/model.onnx")))
            .expect("model");
        let analysis = compress::groups::analyse_layouts(&graph).expect("analysis");
        let ids: Vec<usize> = analysis
            .groups
            .iter()
            .filter(|g| g.prunable)
            .map(|g| g.id)
            .collect();
        let device = default_device().autodiff();
        let net = GatedNet::new(&graph, analysis.clone(), &ids, &device).expect("net");
        // Open gates: the gated network computes the graph itself.
        let gates: Vec<Tensor<2>> = ids
            .iter()
            .map(|&id| {
                let width = analysis.groups[id].width;
                net.tensor2(vec![1.0; width], 1, width)
            })
            .collect();
        let x = compress::verify::pseudo_random(&graph.inputs[0].shape(6), 3);
        let input = || Val::from_f32(x.to_f32_vec(), &x.shape, &device);
        let logits = net.forward_eval(vec![input()], &gates).expect("eval");
        assert!(
            !logits.is_autodiff(),
            "{model}: validation logits carry autodiff"
        );
        let reference = net.net.forward(vec![input()]).expect("forward").remove(0);
        assert!(
            reference.t.is_autodiff(),
            "{model}: the reference runs on autodiff"
        );
        let (got, want) = (host_f32(logits), host_f32(reference.t));
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale,
            "{model}: logits differ by {diff:e} (scale {scale})"
        );
    }
}
