//! Times the fused BatchNorm kernels (`exec::batch_norm`) on their own, per BatchNorm shape of
//! ResNet-20 at batch 128 (1x28x28 input), with a per-example gate, and the separate gate
//! multiply (`exec::channel_scale`) for comparison: `bn_probe [repeats]`. Environment: COLD=0
//! for inputs warm in cache, RELU=1 for the kernels with a fused ReLU.
use burn::backend::Flex;
use burn::backend::Shape;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use compress::exec::batch_norm::FusedBatchNorm;
use compress::exec::channel_scale::ChannelScale;
use std::time::Instant;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn tensor(len: usize, seed: u32, shape: Vec<usize>) -> FlexTensor {
    let v = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect::<Vec<f32>>();
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// Median milliseconds of `f` over `repeats` runs.
fn time(repeats: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..repeats)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    let cold = std::env::var("COLD").map_or(true, |v| v != "0");
    // RELU=1: the kernels with a ReLU after the gate.
    let relu = std::env::var("RELU").is_ok_and(|v| v == "1");
    compress::exec::resident::keep_freed_memory();
    // The last two: a separate gate multiply (channel_scale) forward and backward, which the
    // gated BatchNorm kernels replace.
    let names = [
        "stats",
        "apply",
        "sums",
        "input_grad",
        "gate_mul",
        "gate_mul_back",
    ];
    let mut total = [0.0f64; 6];
    // (channels, spatial positions, BatchNorms of this shape in ResNet-20)
    for (c, s, count) in [(16usize, 784usize, 7usize), (32, 196, 6), (64, 49, 6)] {
        let n = 128;
        let shape = vec![n, c, s];
        // Several inputs taken in turn, over 48 MiB together: each call reads its input from
        // memory, not from the 32 MiB L3 (COLD=0 times one input, warm in cache).
        let copies = if cold {
            (48 << 20) / (n * c * s * 4) + 1
        } else {
            1
        };
        let xs: Vec<FlexTensor> = (0..copies)
            .map(|k| tensor(n * c * s, 1 + 2 * k as u32, shape.clone()))
            .collect();
        let dys: Vec<FlexTensor> = (0..copies)
            .map(|k| tensor(n * c * s, 2 + 2 * k as u32, shape.clone()))
            .collect();
        let mut turn = 0;
        let mut next = || {
            turn += 1;
            (xs[turn % copies].clone(), dys[turn % copies].clone())
        };
        let (x, dy) = next();
        let gamma = tensor(c, 3, vec![c]);
        let beta = tensor(c, 4, vec![c]);
        // A gate per example, as l0-hc draws them.
        let gate = tensor(n * c, 5, vec![n, c]);
        let stats = Flex::batch_norm_stats(x.clone());
        let sums = Flex::batch_norm_sums(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            gate.clone(),
            stats.clone(),
            dy.clone(),
            1e-5,
            relu,
        );
        let t = [
            time(repeats, || {
                Flex::batch_norm_stats(next().0);
            }),
            time(repeats, || {
                Flex::batch_norm_apply(
                    next().0,
                    gamma.clone(),
                    beta.clone(),
                    gate.clone(),
                    stats.clone(),
                    1e-5,
                    relu,
                );
            }),
            time(repeats, || {
                let (x, dy) = next();
                Flex::batch_norm_sums(
                    x,
                    gamma.clone(),
                    beta.clone(),
                    gate.clone(),
                    stats.clone(),
                    dy,
                    1e-5,
                    relu,
                );
            }),
            time(repeats, || {
                let (x, dy) = next();
                Flex::batch_norm_input_grad(
                    x,
                    gamma.clone(),
                    beta.clone(),
                    gate.clone(),
                    stats.clone(),
                    dy,
                    sums.clone(),
                    1e-5,
                    relu,
                );
            }),
            time(repeats, || {
                let x4 = next().0.reshape(Shape::new([n, 1, c, s]));
                Flex::channel_scale(x4, gate.clone());
            }),
            time(repeats, || {
                let (x, dy) = next();
                let x4 = x.reshape(Shape::new([n, 1, c, s]));
                let dy4 = dy.reshape(Shape::new([n, 1, c, s]));
                Flex::channel_scale_gate_grad(x4, dy4.clone(), n);
                Flex::channel_scale(dy4, gate.clone());
            }),
        ];
        print!("[{n}, {c}, {s}] x{count}:");
        for ((name, ms), tot) in names.iter().zip(t).zip(&mut total) {
            print!(" {name} {ms:.3} ms");
            *tot += ms * count as f64;
        }
        println!();
    }
    print!("per step (19 BatchNorms):");
    for (name, ms) in names.iter().zip(total) {
        print!(" {name} {ms:.2} ms");
    }
    println!(" total {:.2} ms", total.iter().sum::<f64>());
}
