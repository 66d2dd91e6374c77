//! Benchmark: the streaming input pipeline over an image folder of many small images.
//!
//! Builds a folder of `INPUT_PIPELINE_IMAGES` (default 100,000) 32x32 RGB PNGs (10 classes,
//! split layout: that many in train/, 1,000 in test/) in a temp dir, then measures:
//!
//! 1. the pipeline alone: one shuffled epoch of the train split read through `Loader` (workers
//!    decode, convert and normalise; batch 128), images per second, median of 3 epochs; also the
//!    training thread's share (the CIFAR augmentation applied to each batch) per batch; once as
//!    3x32x32 RGB (for models/resnet20_rgb) and once as 1x28x28 grey (resized, for
//!    models/lenet5, the fastest training step);
//! 2. the training step of each model at batch 128 on the same images (our l0-hc step: time of
//!    2 + N steps minus time of 2 steps), to give the ratio pipeline / step;
//! 3. a run's peak memory: `compress run models/resnet20_rgb/model.onnx --data FOLDER` (l0-hc,
//!    `INPUT_PIPELINE_RUN_STEPS` steps, default 20, then validation on its 10% hold-out, prune,
//!    verify, evaluation on test/) in a child process that reports its own VmHWM.
//!
//! Peak memory is VmHWM from /proc/self/status. Writes bench-results/input_pipeline.json.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use compress::data::loader::{Loader, Prefetch};
use compress::data::transform::{Augment, Normalize};
use compress::data::{self, Dataset, Split};
use compress::rng::SliceRandom;
use compress::train::{Method, TrainConfig};

const SIDE: u32 = 32;
const CLASSES: usize = 10;
const BATCH: usize = 128;
/// Set in the child process that runs `compress run` in-process: its arguments follow.
const CHILD: &str = "INPUT_PIPELINE_CHILD";

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` PNGs per split directory `dir`, `n / CLASSES` per class; pixels vary with the index so
/// that every file is a real, distinct image.
fn write_images(dir: &Path, n: usize) {
    for class in 0..CLASSES {
        std::fs::create_dir_all(dir.join(format!("class{class}"))).expect("class dir");
    }
    for i in 0..n {
        let class = i % CLASSES;
        let seed = i as u32;
        let img = image::RgbImage::from_fn(SIDE, SIDE, |x, y| {
            let v = x.wrapping_mul(7) ^ y.wrapping_mul(13) ^ seed.wrapping_mul(2_654_435_761);
            image::Rgb([
                (v & 0xff) as u8,
                ((v >> 8) & 0xff) as u8,
                (class as u32 * 25) as u8,
            ])
        });
        img.save(dir.join(format!("class{class}/{i:06}.png")))
            .expect("writes a PNG");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds of one shuffled epoch of `train` through the loader (and the consumer's
/// augmentation seconds, on the calling thread as in training).
fn epoch(train: &Dataset, seed: u64, augment: bool) -> (f64, f64) {
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut compress::rng::seeded(seed));
    let mut rng = compress::rng::seeded(seed);
    let (c, h, w) = (train.channels, train.height, train.width);
    let start = Instant::now();
    let mut aug_s = 0.0;
    let mut seen = 0;
    for (chunk, batch) in order.chunks(BATCH).zip(Loader::new(
        train,
        order.clone(),
        BATCH,
        Prefetch::for_data(train),
    )) {
        let mut batch = batch.expect("reads a batch");
        if augment {
            let t = Instant::now();
            Augment::CIFAR
                .apply(&mut batch, chunk.len(), c, h, w, &mut rng)
                .expect("augments");
            aug_s += t.elapsed().as_secs_f64();
        }
        seen += chunk.len();
        std::hint::black_box(&batch);
    }
    assert_eq!(seen, train.len());
    (start.elapsed().as_secs_f64(), aug_s)
}

/// Images per second of our l0-hc training step of `model` on `train` (the first 2,560
/// images, read into memory first so that only the step is timed).
fn step_ips(model: &Path, train: &Dataset) -> f64 {
    let graph = compress::onnx::import_file(model).expect("imports the model");
    let n = train.len().min(20 * BATCH);
    let small = train.gather(&(0..n).collect::<Vec<_>>());
    let pixels = small.images().expect("reads the images");
    let chw = (small.channels, small.height, small.width);
    let small = Dataset::from_f32(pixels, small.labels.clone(), chw).expect("dataset");
    let dev = compress::exec::default_device();
    let time = |steps: usize| {
        let mut cfg = TrainConfig::new(Method::L0Hc);
        cfg.epochs = 1;
        cfg.max_steps = Some(steps);
        cfg.quiet = true;
        let start = Instant::now();
        compress::pipeline::train(&graph, &small, 0.01, &cfg, &dev).expect("trains");
        start.elapsed().as_secs_f64()
    };
    let steps = 6;
    let s = (time(2 + steps) - time(2)) / steps as f64;
    BATCH as f64 / s
}

/// The child: `compress run ARGS` in this process, then its peak memory on stdout.
fn child(args: Vec<String>) {
    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        args: compress::app::run::RunArgs,
    }
    let run: Run = clap::Parser::parse_from(std::iter::once("compress".to_string()).chain(args));
    compress::app::run::run(run.args).expect("the run succeeds");
    println!("{{\"peak_rss_mib\": {}}}", peak_rss_mib());
}

/// Peak memory (MiB) of a `compress run` over `folder`, measured in a child process.
fn run_peak_mib(root: &Path, folder: &Path, out: &Path, steps: usize) -> f64 {
    let model = root.join("models/resnet20_rgb/model.onnx");
    let args: Vec<String> = vec![
        model.display().to_string(),
        "--data".into(),
        folder.display().to_string(),
        "--method".into(),
        "l0-hc".into(),
        "--epochs".into(),
        "1".into(),
        "--max-steps".into(),
        steps.to_string(),
        "--latency-runs".into(),
        "0".into(),
        "--quiet".into(),
        "--force".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    let o = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD, "1")
        .args(&args)
        .output()
        .expect("runs the child");
    assert!(
        o.status.success(),
        "the run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
    line["peak_rss_mib"].as_f64().expect("peak_rss_mib")
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        child(args);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = env_usize("INPUT_PIPELINE_IMAGES", 100_000);
    let run_steps = env_usize("INPUT_PIPELINE_RUN_STEPS", 20);
    let tmp = tempfile::tempdir().expect("temp dir");
    let folder: PathBuf = tmp.path().join("images");
    let t = Instant::now();
    write_images(&folder.join("train"), n);
    write_images(&folder.join("test"), 1000);
    eprintln!("wrote {n} + 1000 PNGs in {:.1}s", t.elapsed().as_secs_f64());

    let mut models = Vec::new();
    for (name, chw, norm) in [
        ("resnet20_rgb", (3, 32, 32), Normalize::cifar()),
        (
            "lenet5",
            (1, 28, 28),
            Normalize::new(vec![0.2860], vec![0.3530]).expect("stats"),
        ),
    ] {
        let t = Instant::now();
        let mut train = data::load(&folder, Split::Train, Some(chw)).expect("lists the folder");
        let index_s = t.elapsed().as_secs_f64();
        norm.apply_dataset(&mut train).expect("normalises");
        let mut rates = Vec::new();
        let mut aug_ms = Vec::new();
        for seed in 0..3 {
            let (s, aug_s) = epoch(&train, seed, true);
            rates.push(n as f64 / s);
            aug_ms.push(1000.0 * aug_s / n.div_ceil(BATCH) as f64);
            eprintln!("{name} epoch {seed}: {:.0} img/s", n as f64 / s);
        }
        models.push((name, train, index_s, rates, aug_ms));
    }
    // Nothing but the folder's writing and the pipeline has run in this process yet.
    let pipeline_peak = peak_rss_mib();
    eprintln!("pipeline alone: peak {pipeline_peak:.0} MiB");
    let models: Vec<serde_json::Value> = models
        .into_iter()
        .map(|(name, train, index_s, rates, aug_ms)| {
            let pipeline_ips = median(rates.clone());
            let step = step_ips(&root.join(format!("models/{name}/model.onnx")), &train);
            eprintln!("{name}: pipeline {pipeline_ips:.0} img/s, l0-hc step {step:.0} img/s");
            serde_json::json!({
                "model": name,
                "image_size": [train.channels, train.height, train.width],
                "workers": Prefetch::for_data(&train).workers,
                "index_s": index_s,
                "pipeline_images_per_s": pipeline_ips,
                "pipeline_images_per_s_epochs": rates,
                "augment_ms_per_batch_on_training_thread": median(aug_ms),
                "train_step_images_per_s": step,
                "pipeline_over_step": pipeline_ips / step,
            })
        })
        .collect();

    let run_peak = run_peak_mib(root, &folder, &tmp.path().join("out.onnx"), run_steps);
    eprintln!("compress run over {n} images: peak {run_peak:.0} MiB");

    let json = serde_json::json!({
        "images": n,
        "png_size": [3, SIDE, SIDE],
        "batch_size": BATCH,
        "models": models,
        "pipeline_peak_rss_mib": pipeline_peak,
        "run_model": "resnet20_rgb",
        "run_steps": run_steps,
        "run_peak_rss_mib": run_peak,
    });
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).expect("bench-results");
    let text = serde_json::to_string_pretty(&json).expect("json");
    std::fs::write(dir.join("input_pipeline.json"), text + "\n").expect("writes results");
    println!("{json}");
}
