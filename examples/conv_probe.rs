//! Times (or, under callgrind, counts) one autodiff forward + backward of ResNet-20's conv shapes
//! at batch 128 with burn's conv2d or our training conv: `conv_probe burn|gemm [repeats]`.
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gemm = args.get(1).map(String::as_str) == Some("gemm");
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    // (c_in, c_out, size, stride, kernel, input needs grad)
    for (c, o, h, s, k, xg) in [
        (1usize, 16usize, 28usize, 1usize, 3usize, false),
        (16, 16, 28, 1, 3, true),
        (16, 32, 28, 2, 3, true),
        (16, 32, 28, 2, 1, true),
        (32, 32, 14, 1, 3, true),
        (64, 64, 7, 1, 3, true),
    ] {
        let n = 128;
        let oh = (h + 2 * (k / 2) - k) / s + 1;
        let x = Tensor::<4>::random([n, c, h, h], Distribution::Default, &dev);
        let w = Tensor::<4>::random([o, c, k, k], Distribution::Default, &dev);
        let dy = Tensor::<4>::random([n, o, oh, oh], Distribution::Default, &dev);
        let opts = ConvOptions::new([s, s], [k / 2, k / 2], [1, 1], 1);
        let mut times = vec![];
        for _ in 0..repeats {
            let start = Instant::now();
            let xa = Tensor::<4>::from_data(x.to_data(), &ad);
            let xa = if xg { xa.require_grad() } else { xa };
            let wa = Tensor::<4>::from_data(w.to_data(), &ad).require_grad();
            let da = Tensor::<4>::from_data(dy.to_data(), &ad);
            let y = if gemm {
                compress::exec::conv_grad::conv2d_train(xa.clone(), wa.clone(), None, opts.clone())
            } else {
                conv2d(xa.clone(), wa.clone(), None, opts.clone())
            };
            let g = (y * da).sum().backward();
            let _ = wa.grad(&g).unwrap().into_data();
            if xg {
                let _ = xa.grad(&g).unwrap().into_data();
            }
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "C{c} O{o} H{h} s{s} k{k}: median {:.2} ms",
            times[times.len() / 2]
        );
    }
}
