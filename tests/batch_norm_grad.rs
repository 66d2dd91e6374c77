//! Training-mode BatchNormalization on autodiff flex (`exec::batch_norm`, fused kernels with
//! their own backward) against the same formula written with burn's tensor ops and burn's
//! autodiff: output, batch statistics and the gradients of x, scale and bias.

use burn::prelude::*;
use burn::tensor::TensorData;
use compress::exec::Val;
use compress::ops::norm::batch_norm_train;

/// Deterministic values in [-1, 1) (xorshift), offset by `shift`.
fn values(n: usize, seed: u64, shift: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + shift
        })
        .collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "{what} differs by {diff:e} (scale {scale})"
    );
}

#[test]
fn fused_batch_norm_matches_burns_ops_and_autodiff() {
    let dev = Device::flex().autodiff();
    let eps = 1e-5;
    // (N, C, H, W) after a conv, (N, C, L) after a 1-D conv, (N, C) after a linear layer, with
    // (offset of x, step of x's offset per example). The statistics are merged from per-example
    // blocks: a large offset (mean far above the spread) and means that differ between
    // examples check that merge.
    for (seed, (shape, offset, per_example)) in [
        (vec![8, 5, 6, 7], 0.7, 0.0),
        (vec![4, 3, 17], 0.7, 0.0),
        (vec![16, 6], 0.7, 0.0),
        (vec![3, 4, 40, 40], 0.7, 0.0),
        (vec![6, 4, 9, 9], 50.0, 0.0),
        (vec![7, 2, 5, 5], -1.0, 2.5),
        (vec![9, 3, 1, 1], 3.0, -0.5),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = seed as u64 * 8;
        let (n, c) = (shape[0], shape[1]);
        let numel: usize = shape.iter().product();
        let spatial = numel / (n * c);
        let xs: Vec<f32> = values(numel, seed, offset)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v + per_example * (k / (c * spatial)) as f32)
            .collect();
        let (gs, bs) = (values(c, seed + 1, 1.0), values(c, seed + 2, 0.0));
        let cot = values(numel, seed + 3, 0.2);
        let leaf = |v: &[f32], s: Vec<usize>| {
            Tensor::<3>::from_data(TensorData::new(v.to_vec(), s), &dev).require_grad()
        };
        let leaf1 = |v: &[f32]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [c]), &dev).require_grad()
        };

        // Ours, through the interpreter's entry point.
        let x = Val::from_f32(xs.clone(), &shape, &dev);
        let x_leaf = x.t.clone().require_grad();
        let x = Val::new(x_leaf.clone(), shape.len());
        let (g, b) = (leaf1(&gs), leaf1(&bs));
        let as_val = |t: &Tensor<1>| Val::new(t.clone().reshape([1, 1, 1, 1, 1, c]), 1);
        let mean_var = [
            Val::from_f32(vec![0.0; c], &[c], &dev),
            Val::from_f32(vec![1.0; c], &[c], &dev),
        ];
        let (y, stats) = batch_norm_train(
            vec![
                x,
                as_val(&g),
                as_val(&b),
                mean_var[0].clone(),
                mean_var[1].clone(),
            ],
            eps,
        );
        let y3 = y.t.clone().reshape([n, c, spatial]);
        let cot_t = Tensor::<3>::from_data(TensorData::new(cot.clone(), [n, c, spatial]), &dev);
        let grads = (y3.clone() * cot_t.clone()).sum().backward();
        let ours = [
            host(y3),
            host(x_leaf.grad(&grads).unwrap()),
            host(g.grad(&grads).unwrap()),
            host(b.grad(&grads).unwrap()),
            host(stats.mean),
            host(stats.var),
        ];

        // burn's ops: mean and biased variance over N and S.
        let xr = leaf(&xs, vec![n, c, spatial]);
        let (gr, br) = (leaf1(&gs), leaf1(&bs));
        let mean = xr.clone().mean_dim(2).mean_dim(0);
        let centered = xr.clone() - mean.clone();
        let var = (centered.clone() * centered.clone())
            .mean_dim(2)
            .mean_dim(0);
        let y = centered * (var.clone() + eps).sqrt().recip() * gr.clone().reshape([1, c, 1])
            + br.clone().reshape([1, c, 1]);
        let grads = (y.clone() * cot_t).sum().backward();
        let count = (n * spatial) as f32;
        let want = [
            host(y),
            host(xr.grad(&grads).unwrap()),
            host(gr.grad(&grads).unwrap()),
            host(br.grad(&grads).unwrap()),
            host(mean.reshape([c])),
            host(var.reshape([c]) * (count / (count - 1.0))),
        ];
        for (part, (o, w)) in [
            "output",
            "dx",
            "dscale",
            "dbias",
            "batch mean",
            "batch variance",
        ]
        .iter()
        .zip(ours.iter().zip(&want))
        {
            assert_close(&format!("{shape:?} {part}"), o, w);
        }
    }
}

/// A gate right after a BatchNorm (what `Frame::scales` puts on a BN output), and a ReLU after
/// that, are applied inside the fused kernels: output and the gradients of x, scale, bias and
/// the gate against burn's ops times the gate, then burn's ReLU; for a gate per example, one
/// shared by the batch, and none.
#[test]
fn gated_fused_batch_norm_matches_burns_ops_times_the_gate_then_relu() {
    use compress::exec::value::padded;
    use compress::ops::norm::{Applied, batch_norm_train_scaled};
    let dev = Device::flex().autodiff();
    let eps = 1e-5;
    // (shape, gate rows: per example (N), shared (1) or no gate (0), ReLU)
    let cases = [
        (vec![8, 5, 6, 7], 8, false),
        (vec![8, 5, 6, 7], 1, false),
        (vec![8, 5, 6, 7], 8, true),
        (vec![4, 3, 17], 4, true),
        (vec![16, 6], 16, false),
        (vec![16, 6], 1, true),
        (vec![3, 4, 40, 40], 1, true),
        (vec![5, 3, 9, 9], 0, true),
    ];
    for (seed, (shape, rows, relu)) in cases.into_iter().enumerate() {
        let seed = 100 + seed as u64 * 8;
        let (n, c) = (shape[0], shape[1]);
        let numel: usize = shape.iter().product();
        let spatial = numel / (n * c);
        let what = format!("{shape:?} gate rows {rows} relu {relu}");
        let xs = values(numel, seed, 0.7);
        let (gs, bs) = (values(c, seed + 1, 1.0), values(c, seed + 2, 0.0));
        // Gates in [0, 1], some exactly 0 (closed) and 1 (open), as hard concrete draws them.
        let zs: Vec<f32> = values(rows.max(1) * c, seed + 4, 0.5)
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect();
        let cot = values(numel, seed + 3, 0.2);
        let leaf1 = |v: &[f32]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [c]), &dev).require_grad()
        };
        let gate_leaf = || {
            Tensor::<2>::from_data(TensorData::new(zs.clone(), [rows.max(1), c]), &dev)
                .require_grad()
        };
        let cot_t = Tensor::<3>::from_data(TensorData::new(cot.clone(), [n, c, spatial]), &dev);

        // Ours: the gate as the interpreter passes it (x's rank, 1 but on the batch and
        // channel axes).
        let x = Val::from_f32(xs.clone(), &shape, &dev);
        let x_leaf = x.t.clone().require_grad();
        let x = Val::new(x_leaf.clone(), shape.len());
        let (g, b, z) = (leaf1(&gs), leaf1(&bs), gate_leaf());
        let as_val = |t: &Tensor<1>| Val::new(t.clone().reshape([1, 1, 1, 1, 1, c]), 1);
        let mut gate_shape = vec![1; shape.len()];
        gate_shape[0] = rows.max(1);
        gate_shape[1] = c;
        let scale = Val::new(z.clone().reshape(padded(&gate_shape)), shape.len());
        let ins = vec![
            x,
            as_val(&g),
            as_val(&b),
            Val::from_f32(vec![0.0; c], &[c], &dev),
            Val::from_f32(vec![1.0; c], &[c], &dev),
        ];
        // A scale that is not a channel gate is left to the caller, and so is the ReLU after it.
        let mut not_a_gate = gate_shape.clone();
        not_a_gate[1] = 1;
        let other = Val::new(
            Tensor::ones(padded(&not_a_gate), &dev).require_grad(),
            shape.len(),
        );
        let (_, _, applied) = batch_norm_train_scaled(ins.clone(), eps, Some(&other), relu);
        let none = Applied {
            scale: false,
            relu: false,
        };
        assert_eq!(applied, none, "{what}: a [N, 1, ..] scale is not a gate");
        let gate = (rows > 0).then_some(&scale);
        let (y, _, applied) = batch_norm_train_scaled(ins, eps, gate, relu);
        let want_applied = Applied {
            scale: rows > 0,
            relu,
        };
        assert_eq!(applied, want_applied, "{what}: what was applied");
        let y3 = y.t.reshape([n, c, spatial]);
        let grads = (y3.clone() * cot_t.clone()).sum().backward();
        let mut ours = vec![
            host(y3),
            host(x_leaf.grad(&grads).unwrap()),
            host(g.grad(&grads).unwrap()),
            host(b.grad(&grads).unwrap()),
        ];
        if rows > 0 {
            ours.push(host(z.grad(&grads).unwrap()));
        }

        // burn's ops, then the gate as a broadcast multiply, then burn's ReLU.
        let xr = Tensor::<3>::from_data(TensorData::new(xs.clone(), [n, c, spatial]), &dev)
            .require_grad();
        let (gr, br, zr) = (leaf1(&gs), leaf1(&bs), gate_leaf());
        let mean = xr.clone().mean_dim(2).mean_dim(0);
        let centered = xr.clone() - mean;
        let var = (centered.clone() * centered.clone())
            .mean_dim(2)
            .mean_dim(0);
        let mut y = centered * (var + eps).sqrt().recip() * gr.clone().reshape([1, c, 1])
            + br.clone().reshape([1, c, 1]);
        if rows > 0 {
            y = y * zr.clone().reshape([rows, c, 1]);
        }
        if relu {
            y = burn::tensor::activation::relu(y);
        }
        let grads = (y.clone() * cot_t).sum().backward();
        let mut want = vec![
            host(y),
            host(xr.grad(&grads).unwrap()),
            host(gr.grad(&grads).unwrap()),
            host(br.grad(&grads).unwrap()),
        ];
        if rows > 0 {
            want.push(host(zr.grad(&grads).unwrap()));
        }
        for (part, (o, w)) in ["output", "dx", "dscale", "dbias", "dgate"]
            .iter()
            .zip(ours.iter().zip(&want))
        {
            assert_close(&format!("{what} {part}"), o, w);
        }
    }
}
