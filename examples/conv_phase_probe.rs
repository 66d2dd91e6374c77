//! Times the three kernels of the training conv (forward, input gradient, weight gradient) on
//! their own, per conv shape of ResNet-20 and LeNet-5 at batch 128: `conv_phase_probe [repeats]`.
use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::ConvOptions;
use compress::exec::conv_grad::GemmGradConv;
use std::time::Instant;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    compress::exec::resident::keep_freed_memory();
    let dev = Device::flex();
    // (c_in, c_out, size, stride, kernel, pad, count in the model)
    let mut total = [0.0f64; 3];
    for (c, o, h, s, k, p, count) in [
        (1usize, 16usize, 28usize, 1usize, 3usize, 1usize, 1usize),
        (16, 16, 28, 1, 3, 1, 6),
        (16, 32, 28, 2, 3, 1, 1),
        (16, 32, 28, 2, 1, 0, 1),
        (32, 32, 14, 1, 3, 1, 5),
        (32, 64, 14, 2, 3, 1, 1),
        (32, 64, 14, 2, 1, 0, 1),
        (64, 64, 7, 1, 3, 1, 5),
        (1, 20, 28, 1, 5, 0, 0),
        (20, 50, 12, 1, 5, 0, 0),
    ] {
        let n = 128;
        let oh = (h + 2 * p - k) / s + 1;
        let x = Tensor::<4>::random([n, c, h, h], Distribution::Default, &dev);
        let w = Tensor::<4>::random([o, c, k, k], Distribution::Default, &dev);
        let dy = Tensor::<4>::random([n, o, oh, oh], Distribution::Default, &dev);
        let opts = ConvOptions::new([s, s], [p, p], [1, 1], 1);
        let mut t = [vec![], vec![], vec![]];
        for _ in 0..repeats {
            let start = Instant::now();
            let y = <Dispatch as GemmGradConv>::conv2d_gemm_grad(
                x.clone().into_dispatch(),
                w.clone().into_dispatch(),
                opts.clone(),
            );
            drop(y);
            t[0].push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            let dx = <Dispatch as GemmGradConv>::conv2d_input_grad(
                x.clone().into_dispatch(),
                w.clone().into_dispatch(),
                dy.clone().into_dispatch(),
                opts.clone(),
            );
            drop(dx);
            t[1].push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            let dw = <Dispatch as GemmGradConv>::conv2d_weight_grad(
                x.clone().into_dispatch(),
                w.clone().into_dispatch(),
                dy.clone().into_dispatch(),
                opts.clone(),
            );
            drop(dw);
            t[2].push(start.elapsed().as_secs_f64() * 1e3);
        }
        let m = t.map(median);
        for (a, v) in total.iter_mut().zip(m) {
            *a += v * count as f64;
        }
        println!(
            "C{c:<2} O{o:<2} H{h:<2} s{s} k{k} x{count}: fwd {:6.2}  dx {:6.2}  dw {:6.2} ms",
            m[0], m[1], m[2]
        );
    }
    println!(
        "ResNet-20 total (x count): fwd {:.1}  dx {:.1}  dw {:.1} ms",
        total[0], total[1], total[2]
    );
}
