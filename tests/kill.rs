//! Crash safety of long runs: a checkpointed fine-tuning run of models/lenet5 is SIGKILLed at
//! several points (during a step, while a checkpoint is being written, during export and
//! verification, while the outputs are being written). After each kill every file present is
//! complete (the model decodes, the report parses, every checkpoint loads, nothing half-written
//! sits at a final name); rerunning with `--resume` then ends with the same model bytes and the
//! same report figures as a run that was never interrupted.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compress::rng::{RngExt, seeded};

/// Train and test samples cut from the shipped subset: small, so that a run takes seconds.
const TRAIN: usize = 640;
const TEST: usize = 200;
/// 576 training samples (10% held out) in batches of 64: 9 steps an epoch. The step budget
/// ends the run in epoch 3 of 4, so a resume must also know that the run had stopped.
const RUN: [&str; 10] = [
    "--epochs",
    "4",
    "--batch-size",
    "64",
    "--max-steps",
    "24",
    "--seed",
    "7",
    "--latency-runs",
    "0",
];

fn small_data(dir: &Path) -> PathBuf {
    let src = common::repo().join("fixtures/data/fashion-mnist-subset");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (split, n) in [("train", TRAIN), ("t10k", TEST)] {
        for kind in ["images-idx3", "labels-idx1"] {
            let name = format!("{split}-{kind}-ubyte");
            common::cut_idx(
                &src.join(format!("{name}.gz")),
                &data.join(&name),
                n,
                |_| {},
            );
        }
    }
    data
}

/// One run's places: its checkpoint directory and its output model (reports beside it).
struct Run {
    ck: PathBuf,
    out: PathBuf,
}

impl Run {
    fn new(root: &Path, name: &str) -> Run {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        Run {
            ck: dir.join("ck"),
            out: dir.join("out/model.onnx"),
        }
    }

    fn command(&self, data: &Path, resume: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_compress"));
        c.arg("run")
            .arg(common::repo().join("models/lenet5/model.onnx"))
            .args(["--method", "l0-hc", "--quiet", "--force"])
            .args(RUN)
            .arg("--data")
            .arg(data)
            .arg("--checkpoint-dir")
            .arg(&self.ck)
            .arg("-o")
            .arg(&self.out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    }

    fn spawn(&self, data: &Path) -> Child {
        self.command(data, false).spawn().unwrap()
    }

    /// Finishes the run: resumes when a checkpoint survived the kill, starts over otherwise.
    fn finish(&self, data: &Path) {
        let resume = !compress::train::checkpoint::epochs(&self.ck)
            .unwrap()
            .is_empty();
        let o = self.command(data, resume).output().unwrap();
        assert!(
            o.status.success(),
            "rerun (resume {resume}) failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn outputs(&self) -> [PathBuf; 4] {
        let name = |ext: &str| self.out.with_file_name(format!("model{ext}"));
        [
            self.out.clone(),
            name(".report.json"),
            name(".report.md"),
            name(".svg"),
        ]
    }
}

/// Waits (polling as fast as it can) until `ready` holds or the child exits; then SIGKILLs it.
/// Returns whether `ready` held while the child was still running.
fn kill_when(child: &mut Child, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not reach the kill point"
        );
        std::thread::yield_now();
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file a killed run left is whole: outputs at their final names decode, every complete
/// checkpoint loads, and anything else is a temp file that no reader takes for an output.
fn assert_nothing_partial(run: &Run, when: &str) {
    let [model, json, md, svg] = run.outputs();
    if model.exists() {
        let bytes = std::fs::read(&model).unwrap();
        compress::onnx::import(&bytes)
            .unwrap_or_else(|e| panic!("{when}: {} does not decode: {e}", model.display()));
    }
    if json.exists() {
        let text = std::fs::read_to_string(&json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{when}: {} does not parse: {e}", json.display()));
        assert!(v.get("pruned").is_some(), "{when}: {text}");
    }
    if md.exists() {
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.starts_with("# compress") && text.ends_with('\n'),
            "{when}: {text}"
        );
    }
    if svg.exists() {
        let text = std::fs::read_to_string(&svg).unwrap();
        roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{when}: {} does not parse: {e}", svg.display()));
    }
    let finals: Vec<String> = run
        .outputs()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in names(run.out.parent().unwrap()) {
        assert!(
            finals.contains(&name) || name.starts_with(".tmp"),
            "{when}: unexpected file {name} among the outputs"
        );
    }
    for name in names(&run.ck) {
        let Some(k) = name.strip_prefix("epoch-") else {
            assert!(
                name.starts_with(".epoch-") && name.ends_with(".tmp"),
                "{when}: unexpected {name} in the checkpoint directory"
            );
            continue;
        };
        let loaded = compress::train::checkpoint::load(&run.ck.join(&name))
            .unwrap_or_else(|e| panic!("{when}: checkpoint {name} does not load: {e}"));
        assert_eq!(loaded.state.epoch.to_string(), k, "{when}");
    }
}

/// The report without what legitimately differs between runs: wall times and the resume flag.
fn figures(json: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("timings");
    let settings = v["settings"].as_object_mut().unwrap();
    settings.remove("resume");
    settings.remove("checkpoint_dir");
    v.as_object_mut().unwrap().remove("output");
    for epoch in v["history"].as_array_mut().unwrap() {
        epoch.as_object_mut().unwrap().remove("seconds");
    }
    v
}

fn checkpoint_tmp(run: &Run) -> bool {
    names(&run.ck).iter().any(|n| n.ends_with(".tmp"))
}

fn has_epoch(run: &Run, k: usize) -> bool {
    run.ck.join(format!("epoch-{k}")).is_dir()
}

fn output_tmp(run: &Run) -> bool {
    names(run.out.parent().unwrap())
        .iter()
        .any(|n| n.starts_with(".tmp"))
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result_and_leave_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let data = small_data(root.path());
    let reference = Run::new(root.path(), "reference");
    let t0 = Instant::now();
    reference.finish(&data);
    let full_s = t0.elapsed().as_secs_f64();
    let want_model = std::fs::read(&reference.out).unwrap();
    let want = figures(&reference.outputs()[1]);
    assert_eq!(want["history"].as_array().unwrap().len(), 3, "{want}");

    // Kill times within an epoch come from a seeded generator, so a failure replays.
    let mut rng = seeded(20261130);
    let epoch_s = full_s / 4.0;
    let mut delay = || Duration::from_secs_f64(epoch_s * rng.random::<f64>());
    type Point<'a> = (&'a str, Box<dyn Fn(&Run, Instant) -> bool + 'a>);
    let after = |k: usize, d: Duration| {
        move |r: &Run, since: Instant| has_epoch(r, k) && since.elapsed() >= d
    };
    let points: Vec<Point> = vec![
        ("during a step of epoch 1", {
            let d = delay();
            Box::new(move |_: &Run, since: Instant| since.elapsed() >= d)
        }),
        ("during a step of epoch 2", Box::new(after(1, delay()))),
        (
            "while checkpoint 2 is written",
            Box::new(|r: &Run, _| has_epoch(r, 1) && checkpoint_tmp(r)),
        ),
        (
            "while checkpoint 3 is written",
            Box::new(|r: &Run, _| has_epoch(r, 2) && checkpoint_tmp(r)),
        ),
        (
            "during export and verification",
            Box::new(|r: &Run, _| has_epoch(r, 3)),
        ),
        (
            "while the outputs are written",
            Box::new(|r: &Run, _| output_tmp(r)),
        ),
        (
            "after the model, before the reports",
            Box::new(|r: &Run, _| r.out.exists()),
        ),
    ];
    let mut killed = 0;
    for (i, (when, ready)) in points.iter().enumerate() {
        let run = Run::new(root.path(), &format!("kill-{i}"));
        let mut child = run.spawn(&data);
        let since = Instant::now();
        let hit = kill_when(&mut child, || ready(&run, since));
        if hit {
            killed += 1;
            assert_nothing_partial(&run, when);
        } else {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            eprintln!("{when}: the run ended before the kill point ({err})");
        }
        run.finish(&data);
        assert_nothing_partial(&run, &format!("{when}, resumed"));
        assert_eq!(
            std::fs::read(&run.out).unwrap(),
            want_model,
            "{when}: the resumed run's model differs"
        );
        assert_eq!(
            figures(&run.outputs()[1]),
            want,
            "{when}: the resumed run's report differs"
        );
    }
    assert!(killed >= points.len() - 2, "only {killed} kills landed");
}

/// The kill points above hit windows of milliseconds; these runs show that the windows are
/// real: a checkpoint being written is a `.epoch-K.tmp` directory until it is complete.
#[test]
fn a_checkpoint_is_complete_once_its_final_name_appears() {
    let root = tempfile::tempdir().unwrap();
    let data = small_data(root.path());
    let run = Run::new(root.path(), "watch");
    let mut child = run.spawn(&data);
    let mut seen = Vec::new();
    while child.try_wait().unwrap().is_none() {
        for name in names(&run.ck) {
            let path = run.ck.join(&name);
            if name.starts_with("epoch-") && !seen.contains(&name) {
                match compress::train::checkpoint::load(&path) {
                    Ok(_) => seen.push(name),
                    // Old epochs are renamed away (atomically) before they are deleted.
                    Err(_) if !path.exists() => {}
                    Err(e) => panic!("{name} appeared incomplete: {e}"),
                }
            }
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(seen, ["epoch-1", "epoch-2", "epoch-3"]);
}
