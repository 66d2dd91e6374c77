//! Benchmark: the YOLO-style detector (fixtures/detectors/yolo/model.onnx) at 640x640, end to
//! end through the release `compress` binary (it builds nothing: `/work/bin/build-bin` or
//! `cargo build --release` first; COMPRESS_BIN or `--bin PATH` names another one).
//!
//! Commands timed, each as a fresh process under GNU time (`/usr/bin/time`, wall seconds and
//! the child's max RSS):
//! - `inspect --input-shape 1x3x640x640`: import + channel analysis;
//! - `prune --input-shape 1x3x640x640 --random-keep 0.5 --seed 1 --latency-runs 0 -o ...`:
//!   import + analysis + prune + export + verify in tract (at 640x640, and the symbolic-dims
//!   check at a second size);
//! - the same with `--external-data`.
//!
//! Options: `--runs N` (default 5; the commands run round-robin, so load hits them alike),
//! `--bin PATH`. Writes bench-results/detector_prune.json with every run, the medians, and the
//! load average before and after (the machine may be shared).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const SHAPE: &str = "1x3x640x640";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `bin args` under GNU time; returns (wall seconds, max RSS in MB). Panics with the
/// command's stderr when it fails: a benchmark of a failing command means nothing.
fn timed(bin: &Path, args: &[String], scratch: &Path) -> (f64, f64) {
    let report = scratch.join("time.txt");
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M", "-o"])
        .arg(&report)
        .arg(bin)
        .args(args)
        .output()
        .expect("run /usr/bin/time (GNU time)");
    assert!(
        out.status.success(),
        "{} {}: {}",
        bin.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("read GNU time's report");
    let last = text.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let wall: f64 = it.next().and_then(|s| s.parse().ok()).expect("wall time");
    let kb: f64 = it.next().and_then(|s| s.parse().ok()).expect("max RSS");
    (wall, kb / 1024.0)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut runs = 5usize;
    let mut bin = std::env::var_os("COMPRESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/compress"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => {
                runs = args[i + 1].parse().expect("--runs N");
                i += 1;
            }
            "--bin" => {
                bin = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            _ => {} // `cargo bench` passes --bench
        }
        i += 1;
    }
    assert!(bin.is_file(), "no binary at {}", bin.display());
    let model = root.join("fixtures/detectors/yolo/model.onnx");
    let model = model.display().to_string();
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("yolo.onnx").display().to_string();
    let prune: Vec<String> = [
        "prune",
        &model,
        "--input-shape",
        SHAPE,
        "--random-keep",
        "0.5",
        "--seed",
        "1",
        "--latency-runs",
        "0",
        "--force",
        "-o",
        &out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut prune_external = prune.clone();
    prune_external.push("--external-data".into());
    let commands: Vec<(&str, Vec<String>)> = vec![
        (
            "inspect",
            ["inspect", &model, "--input-shape", SHAPE]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        ("prune", prune),
        ("prune --external-data", prune_external),
    ];

    let load_before = load_average();
    let mut walls = vec![Vec::new(); commands.len()];
    let mut rss = vec![Vec::new(); commands.len()];
    for run in 0..runs {
        for (k, (name, args)) in commands.iter().enumerate() {
            let (w, m) = timed(&bin, args, scratch.path());
            println!("run {run} {name}: {w:.2} s, {m:.1} MB");
            walls[k].push(w);
            rss[k].push(m);
        }
    }
    let load_after = load_average();
    let rows: Vec<Value> = commands
        .iter()
        .enumerate()
        .map(|(k, (name, args))| {
            let (w, m) = (median(walls[k].clone()), median(rss[k].clone()));
            println!("{name}: median {w:.2} s, median max RSS {m:.1} MB over {runs} runs");
            json!({
                "command": name,
                "args": args,
                "wall_s": walls[k],
                "max_rss_mb": rss[k],
                "median_wall_s": w,
                "median_max_rss_mb": m,
            })
        })
        .collect();
    let result = json!({
        "model": "fixtures/detectors/yolo/model.onnx",
        "input_shape": SHAPE,
        "runs": runs,
        "binary": bin.display().to_string(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": rows,
    });
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).expect("create bench-results/");
    let path = dir.join("detector_prune.json");
    let text = serde_json::to_string_pretty(&result).expect("serialise") + "\n";
    std::fs::write(&path, text).expect("write bench-results/detector_prune.json");
    println!(
        "wrote {} (load {load_before} -> {load_after})",
        path.display()
    );
}
