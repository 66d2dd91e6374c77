//! The training kernels for max pooling over non-overlapping windows (`exec::max_pool`) and for
//! gates multiplying channels (`exec::channel_scale`) against burn's own ops and autodiff on
//! flex: outputs and gradients, including tied maxima and every gate broadcast the trainer uses.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use compress::exec::value::padded;
use compress::exec::{Val, channel_scale, max_pool};

/// Deterministic values in [-1, 1) (xorshift).
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
        diff <= 1e-5 * scale,
        "{what} differs by {diff:e} (scale {scale})"
    );
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], dev: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v, shape), dev)
}

#[test]
fn tiled_max_pool_matches_burns_pool_and_its_gradient() {
    let dev = Device::flex().autodiff();
    for (seed, shape, kernel, ties) in [
        (1, [4, 3, 8, 8], [2, 2], false),
        (2, [3, 5, 6, 9], [3, 3], false),
        (3, [2, 4, 9, 8], [2, 4], false),
        // Rounded values and ReLU zeros: many windows hold their maximum twice.
        (4, [4, 6, 12, 12], [2, 2], true),
        // A row and a column that no window covers: their gradient is zero.
        (5, [2, 3, 7, 9], [2, 2], false),
        (6, [3, 2, 11, 10], [3, 4], true),
    ] {
        let numel: usize = shape.iter().product();
        let mut v = values(numel, seed);
        if ties {
            v.iter_mut().for_each(|x| *x = (*x * 2.0).round().max(0.0));
        }
        let opts = MaxPoolOptions::new(kernel).with_stride(kernel);
        let x = tensor(v.clone(), shape, &dev);
        assert!(max_pool::applies(
            &x,
            kernel,
            kernel,
            [(0, 0); 2],
            [1, 1],
            false
        ));
        let out = [
            shape[0],
            shape[1],
            shape[2] / kernel[0],
            shape[3] / kernel[1],
        ];
        let r = tensor(values(out.iter().product(), seed + 50), out, &dev);

        let run = |ours: bool| {
            let x = tensor(v.clone(), shape, &dev).require_grad();
            let y = if ours {
                max_pool::tiled_max_pool(x.clone(), kernel)
            } else {
                max_pool2d(x.clone(), opts.clone())
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            (host(y), host(x.grad(&grads).expect("x grad")))
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        assert_eq!(y, y_ref, "{shape:?} {kernel:?}: output");
        assert_eq!(dx, dx_ref, "{shape:?} {kernel:?}: input gradient");

        // Eval (no autodiff) takes the same kernel.
        let plain = Device::flex();
        let xe = tensor(v.clone(), shape, &plain);
        assert!(max_pool::applies(
            &xe,
            kernel,
            kernel,
            [(0, 0); 2],
            [1, 1],
            false
        ));
        assert_eq!(host(max_pool::tiled_max_pool(xe, kernel)), y_ref);
    }
}

/// Signed zeros and NaNs: the first maximum wins (0.0 and -0.0 tie), a NaN wins; compared by
/// bits, so that the zero's sign and the NaN's position count.
#[test]
fn tiled_max_pool_keeps_burns_rule_for_signed_zeros_and_nans() {
    let dev = Device::flex().autodiff();
    let (shape, kernel) = ([2, 3, 6, 8], [2, 2]);
    let numel: usize = shape.iter().product();
    let v: Vec<f32> = values(numel, 9)
        .into_iter()
        .enumerate()
        .map(|(i, x)| match i % 7 {
            0 => 0.0,
            1 | 4 => -0.0,
            2 if i % 5 == 0 => f32::NAN,
            _ => x.min(0.0),
        })
        .collect();
    let out = [shape[0], shape[1], shape[2] / 2, shape[3] / 2];
    let r = tensor(values(out.iter().product(), 10), out, &dev);
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let run = |ours: bool| {
        let x = tensor(v.clone(), shape, &dev).require_grad();
        let y = if ours {
            max_pool::tiled_max_pool(x.clone(), kernel)
        } else {
            max_pool2d(x.clone(), MaxPoolOptions::new(kernel).with_stride(kernel))
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        (bits(host(y)), bits(host(x.grad(&grads).expect("x grad"))))
    };
    let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
    assert!(
        y.iter().any(|&b| f32::from_bits(b).is_nan()),
        "the case holds NaN windows"
    );
    assert_eq!(y, y_ref, "output bits");
    assert_eq!(dx, dx_ref, "input gradient bits");
}

#[test]
fn tiled_max_pool_refuses_overlapping_or_padded_windows() {
    let x = Tensor::<4>::zeros([1, 1, 7, 7], &Device::flex());
    assert!(!max_pool::applies(
        &x,
        [3, 3],
        [2, 2],
        [(0, 0); 2],
        [1, 1],
        false
    ));
    assert!(!max_pool::applies(
        &x,
        [2, 2],
        [2, 2],
        [(1, 0), (0, 0)],
        [1, 1],
        false
    ));
    assert!(!max_pool::applies(
        &x,
        [2, 2],
        [2, 2],
        [(0, 0); 2],
        [2, 1],
        false
    ));
    // ceil mode adds a partial window when 7 is not a multiple of 2.
    assert!(!max_pool::applies(
        &x,
        [2, 2],
        [2, 2],
        [(0, 0); 2],
        [1, 1],
        true
    ));
}

#[test]
fn channel_scale_matches_burns_broadcast_multiply_and_its_gradients() {
    let dev = Device::flex().autodiff();
    // (value shape, gate shape): per-example and shared gates on conv outputs, shared gates on
    // a linear layer's output, a last-axis (token) channel group.
    for (seed, x_shape, g_shape) in [
        (1u64, vec![6, 4, 5, 7], vec![6, 4, 1, 1]),
        (2, vec![6, 4, 5, 7], vec![1, 4, 1, 1]),
        (3, vec![9, 33], vec![1, 33]),
        (4, vec![5, 6, 8], vec![5, 1, 8]),
        (5, vec![3, 6, 8], vec![1, 1, 8]),
    ] {
        let xn: usize = x_shape.iter().product();
        let gn: usize = g_shape.iter().product();
        let (xv, gv, rv) = (
            values(xn, seed),
            values(gn, seed + 9),
            values(xn, seed + 19),
        );
        let t6 = |v: &[f32], s: &[usize]| {
            Tensor::<6>::from_data(TensorData::new(v.to_vec(), padded(s)), &dev).require_grad()
        };
        let run = |ours: bool| {
            let (x, g) = (t6(&xv, &x_shape), t6(&gv, &g_shape));
            let (xval, gval) = (
                Val::new(x.clone(), x_shape.len()),
                Val::new(g.clone(), g_shape.len()),
            );
            let y = if ours {
                channel_scale::scale(&xval, &gval).expect("the kernel applies")
            } else {
                Val::new(x.clone() * g.clone(), x_shape.len())
            };
            let r = Tensor::<6>::from_data(TensorData::new(rv.clone(), padded(&x_shape)), &dev);
            let grads = (y.t.clone() * r).sum().backward();
            (
                host(y.t),
                host(x.grad(&grads).expect("x grad")),
                host(g.grad(&grads).expect("gate grad")),
            )
        };
        let ((y, dx, dg), (y_ref, dx_ref, dg_ref)) = (run(true), run(false));
        let what = format!("{x_shape:?} x {g_shape:?}");
        assert_eq!(y, y_ref, "{what}: output");
        assert_eq!(dx, dx_ref, "{what}: input gradient");
        assert_close(&format!("{what}: gate gradient"), &dg, &dg_ref);
    }
}

#[test]
fn channel_scale_leaves_other_broadcasts_to_burn() {
    let dev = Device::flex().autodiff();
    let v = |s: &[usize]| Val::new(Tensor::<6>::ones(padded(s), &dev), s.len());
    // Two non-unit axes besides the batch, and a gate row count that is neither 1 nor N.
    assert!(channel_scale::scale(&v(&[4, 3, 5, 5]), &v(&[1, 3, 5, 1])).is_none());
    assert!(channel_scale::scale(&v(&[4, 3, 5, 5]), &v(&[2, 3, 1, 1])).is_none());
    // Not autodiff: the plain multiply.
    let plain = Device::flex();
    let p = |s: &[usize]| Val::new(Tensor::<6>::ones(padded(s), &plain), s.len());
    assert!(channel_scale::scale(&p(&[4, 3, 5, 5]), &p(&[1, 3, 1, 1])).is_none());
}
