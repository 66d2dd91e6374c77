//! The training convolution (`exec::conv_grad`: per-example gemm forward, input and weight
//! gradients) against burn's generic conv2d path on the same random values (hand-picked shape
//! kinds, and every convolution of the shipped models and fixtures), and against PyTorch's
//! outputs and gradients saved in tests/data/conv_grad_torch.json
//! (scripts/conv_grad_reference.py).

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use compress::exec::conv_grad::{conv2d_train, gemm_grad_applies};
use compress::ir::Op;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One convolution: input shape, weight shape, stride, pads (top, bottom, left, right),
/// dilation, groups.
struct Case {
    x: [usize; 4],
    w: [usize; 4],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
}

impl Case {
    fn options(&self) -> ConvOptions<2> {
        let p = self.pads;
        ConvOptions::new_with_padding(
            self.stride,
            [(p[0], p[1]), (p[2], p[3])],
            self.dilation,
            self.groups,
        )
    }
}

/// Output, input gradient, weight gradient, bias gradient of `sum(conv(x, w, b) * cotangent)`.
struct Results {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn run(
    case: &Case,
    values: [&[f32]; 3],
    cotangent: &[f32],
    conv: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
) -> Results {
    let dev = Device::flex().autodiff();
    let x =
        Tensor::<4>::from_data(TensorData::new(values[0].to_vec(), case.x), &dev).require_grad();
    let w =
        Tensor::<4>::from_data(TensorData::new(values[1].to_vec(), case.w), &dev).require_grad();
    let b = Tensor::<1>::from_data(TensorData::new(values[2].to_vec(), [case.w[0]]), &dev)
        .require_grad();
    let y = conv(x.clone(), w.clone(), Some(b.clone()), case.options());
    let cot = Tensor::<4>::from_data(TensorData::new(cotangent.to_vec(), y.dims()), &dev);
    let grads = (y.clone() * cot).sum().backward();
    Results {
        y: host(y),
        dx: host(x.grad(&grads).expect("input gradient")),
        dw: host(w.grad(&grads).expect("weight gradient")),
        db: host(b.grad(&grads).expect("bias gradient")),
    }
}

/// Largest difference relative to the largest magnitude of the reference.
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn assert_close(what: &str, got: &Results, want: &Results, tol: f32) {
    for (part, g, w) in [
        ("output", &got.y, &want.y),
        ("input gradient", &got.dx, &want.dx),
        ("weight gradient", &got.dw, &want.dw),
        ("bias gradient", &got.db, &want.db),
    ] {
        let d = rel_diff(g, w);
        assert!(d <= tol, "{what}: {part} differs by {d:e} (relative)");
    }
}

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn out_dims(c: &Case) -> [usize; 4] {
    let out = |i: usize, p0: usize, p1: usize| {
        let span = (c.w[2 + i] - 1) * c.dilation[i] + 1;
        (c.x[2 + i] + p0 + p1 - span) / c.stride[i] + 1
    };
    [
        c.x[0],
        c.w[0],
        out(0, c.pads[0], c.pads[1]),
        out(1, c.pads[2], c.pads[3]),
    ]
}

#[test]
fn the_gemm_path_is_taken_on_autodiff_flex_only() {
    assert!(gemm_grad_applies(&Device::flex().autodiff()));
    assert!(!gemm_grad_applies(&Device::flex()));
}

#[test]
fn matches_burns_generic_conv2d_on_every_shape_kind() {
    let cases = [
        // 1-channel stems: ResNet-20's 3x3 and LeNet-5's 5x5 (batch 16 as in training)
        (
            "stem 3x3",
            Case {
                x: [16, 1, 28, 28],
                w: [16, 1, 3, 3],
                stride: [1, 1],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "stem 5x5",
            Case {
                x: [8, 1, 28, 28],
                w: [20, 1, 5, 5],
                stride: [1, 1],
                pads: [0; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "3x3",
            Case {
                x: [4, 16, 14, 14],
                w: [32, 16, 3, 3],
                stride: [1, 1],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "3x3 stride 2",
            Case {
                x: [4, 16, 14, 14],
                w: [32, 16, 3, 3],
                stride: [2, 2],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "1x1 stride 2 (shortcut)",
            Case {
                x: [4, 16, 14, 14],
                w: [32, 16, 1, 1],
                stride: [2, 2],
                pads: [0; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "uneven pads, mixed strides",
            Case {
                x: [3, 5, 11, 9],
                w: [7, 5, 3, 2],
                stride: [2, 1],
                pads: [0, 2, 1, 0],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "dilated",
            Case {
                x: [3, 4, 12, 12],
                w: [6, 4, 3, 3],
                stride: [1, 1],
                pads: [2; 4],
                dilation: [2, 2],
                groups: 1,
            },
        ),
        (
            "dilated and strided",
            Case {
                x: [2, 3, 13, 11],
                w: [4, 3, 3, 3],
                stride: [2, 2],
                pads: [1, 2, 2, 1],
                dilation: [2, 3],
                groups: 1,
            },
        ),
        (
            "grouped",
            Case {
                x: [3, 8, 9, 9],
                w: [12, 2, 3, 3],
                stride: [1, 1],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 4,
            },
        ),
        (
            "depthwise",
            Case {
                x: [3, 8, 10, 10],
                w: [8, 1, 3, 3],
                stride: [2, 2],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 8,
            },
        ),
        (
            "depthwise multiplier 2",
            Case {
                x: [2, 4, 7, 7],
                w: [8, 1, 3, 3],
                stride: [1, 1],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 4,
            },
        ),
        (
            "3-channel stem",
            Case {
                x: [5, 3, 20, 20],
                w: [8, 3, 3, 3],
                stride: [1, 1],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "1x1 stride 1 (no im2col), batch of 37 (uneven weight-gradient parts)",
            Case {
                x: [37, 12, 6, 5],
                w: [10, 12, 1, 1],
                stride: [1, 1],
                pads: [0; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "grouped 1x1",
            Case {
                x: [3, 8, 5, 5],
                w: [6, 4, 1, 1],
                stride: [1, 1],
                pads: [0; 4],
                dilation: [1, 1],
                groups: 2,
            },
        ),
        (
            "im2col larger than the scratch a thread keeps (16 MiB)",
            Case {
                x: [2, 16, 192, 192],
                w: [4, 16, 3, 3],
                stride: [1, 1],
                pads: [1; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "stride 1, uneven pads, 2-wide kernel, 32 channels (padded-copy kernels each way)",
            Case {
                x: [3, 32, 9, 7],
                w: [32, 32, 3, 2],
                stride: [1, 1],
                pads: [0, 2, 1, 0],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "stride 1, pads wider than the kernel (padded-copy forward and weight gradient)",
            Case {
                x: [2, 16, 6, 5],
                w: [32, 16, 3, 3],
                stride: [1, 1],
                pads: [3, 2, 4, 3],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "'same' 5x5, 32 channels in and 48 out, batch of 19 (padded-copy kernels each way)",
            Case {
                x: [19, 32, 14, 14],
                w: [48, 32, 5, 5],
                stride: [1, 1],
                pads: [2; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "1-D (height 1)",
            Case {
                x: [4, 6, 1, 20],
                w: [5, 6, 1, 5],
                stride: [1, 2],
                pads: [0, 0, 2, 2],
                dilation: [1, 1],
                groups: 1,
            },
        ),
    ];
    for (seed, (name, case)) in cases.iter().enumerate() {
        compare_with_burn(name, case, seed as u64 * 4);
    }
}

/// Our training conv against burn's generic conv2d on random values.
fn compare_with_burn(name: &str, case: &Case, seed: u64) {
    let x = values(case.x.iter().product(), seed);
    let w = values(case.w.iter().product(), seed + 1);
    let b = values(case.w[0], seed + 2);
    let cot = values(out_dims(case).iter().product(), seed + 3);
    let ours = run(case, [&x, &w, &b], &cot, conv2d_train);
    let burns = run(case, [&x, &w, &b], &cot, conv2d);
    assert_eq!(ours.y.len(), burns.y.len(), "{name}: output size");
    assert_close(name, &ours, &burns, 1e-4);
}

/// Every model.onnx under `dir`, recursively.
fn model_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            model_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == "model.onnx") {
            out.push(path);
        }
    }
}

#[test]
fn matches_burns_generic_conv2d_on_every_conv_of_the_shipped_models() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "models",
        "fixtures/patterns",
        "fixtures/models",
        "fixtures/detectors",
    ] {
        model_files(&root.join(dir), &mut files);
    }
    // (input, weight, stride, pads (top, bottom, left, right), dilation, groups) at batch 2;
    // 1-D convs as height 1, as the interpreter runs them.
    let mut kinds = BTreeSet::new();
    for path in &files {
        // The detector fixtures have symbolic height and width: sized as tests/detectors.rs does.
        let graph = compress::onnx::import_file(path).unwrap_or_else(|_| {
            let sizes = compress::onnx::InputShapes::parse(&["1x3x64x64".to_string()]).unwrap();
            let bytes = std::fs::read(path).unwrap();
            compress::onnx::import_sized(&bytes, "model", &sizes)
                .unwrap()
                .graph
        });
        let shapes = graph.infer_shapes(2).unwrap();
        for n in &graph.nodes {
            let Op::Conv { window, group } = &n.op else {
                continue;
            };
            let (x, w) = (&shapes[&n.inputs[0]], &shapes[&n.inputs[1]]);
            let four = |d: &[usize]| match d.len() {
                3 => [d[0], d[1], 1, d[2]],
                _ => [d[0], d[1], d[2], d[3]],
            };
            let (stride, pads, dilation) = match window.kernel.len() {
                1 => (
                    [1, window.strides[0]],
                    [0, 0, window.pads[0], window.pads[1]],
                    [1, window.dilations[0]],
                ),
                _ => (
                    [window.strides[0], window.strides[1]],
                    [
                        window.pads[0],
                        window.pads[2],
                        window.pads[1],
                        window.pads[3],
                    ],
                    [window.dilations[0], window.dilations[1]],
                ),
            };
            kinds.insert((four(x), four(w), stride, pads, dilation, *group));
        }
    }
    assert!(
        kinds.len() >= 40,
        "{} conv shapes in {} models",
        kinds.len(),
        files.len()
    );
    println!("{} conv shapes in {} models", kinds.len(), files.len());
    for (seed, (x, w, stride, pads, dilation, groups)) in kinds.into_iter().enumerate() {
        let case = Case {
            x,
            w,
            stride,
            pads,
            dilation,
            groups,
        };
        let name = format!(
            "x {x:?} w {w:?} stride {stride:?} pads {pads:?} dilation {dilation:?} groups {groups}"
        );
        compare_with_burn(&name, &case, 1000 + seed as u64 * 4);
    }
}

#[test]
fn matches_pytorch_saved_outputs_and_gradients() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conv_grad_torch.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let dims = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8, "the reference covers eight shape kinds");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (x, w, s, p, d) = (
            dims(&c["x_shape"]),
            dims(&c["w_shape"]),
            dims(&c["stride"]),
            dims(&c["pads"]),
            dims(&c["dilation"]),
        );
        let case = Case {
            x: [x[0], x[1], x[2], x[3]],
            w: [w[0], w[1], w[2], w[3]],
            stride: [s[0], s[1]],
            pads: [p[0], p[1], p[2], p[3]],
            dilation: [d[0], d[1]],
            groups: c["groups"].as_u64().unwrap() as usize,
        };
        assert_eq!(
            out_dims(&case).to_vec(),
            dims(&c["y_shape"]),
            "{name}: output shape"
        );
        let ours = run(
            &case,
            [&floats(&c["x"]), &floats(&c["w"]), &floats(&c["b"])],
            &floats(&c["cotangent"]),
            conv2d_train,
        );
        let torch = Results {
            y: floats(&c["y"]),
            dx: floats(&c["dx"]),
            dw: floats(&c["dw"]),
            db: floats(&c["db"]),
        };
        assert_close(name, &ours, &torch, 1e-5);
    }
}
