//! ONNX operator conformance over Debian's libonnx-testdata, one test per case that passes today.
//!
//! `tests/conformance/allow.txt` lists those cases (`suite/case`, e.g. `node/test_relu`). Each
//! listed case is its own test, runnable by name
//! (`cargo test --release --test conformance -- --exact node/test_relu`): it is imported, run in
//! burn and compared with the expected outputs, and fails with the reason if it stops passing.
//! The test `unlisted_cases` runs every other case whose ops are all claimed supported and prints
//! its outcome, so a newly passing case shows up (it fails only on a wrong answer, never on a
//! refusal). `COMPRESS_CONFORMANCE_WRITE=1` rewrites the list from the current results.
//!
//! Runs with its own harness (`harness = false` in Cargo.toml) through libtest-mimic.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use compress::exec::{Network, default_device};
use compress::ir::Tensor;
use compress::onnx::pb;
use libtest_mimic::{Arguments, Failed, Trial};
use prost::Message;

const ROOT: &str = "/usr/share/libonnx-testdata/data";
const SUITES: [&str; 3] = ["node", "pytorch-converted", "pytorch-operator"];
const ALLOW_LIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/allow.txt");
const WRITE_ENV: &str = "COMPRESS_CONFORMANCE_WRITE";
/// Guards against a silently shrunken list (e.g. the scope filter broke before a rewrite).
const MINIMUM_ALLOWED: [(&str, usize); 2] = [("node", 100), ("pytorch-converted", 30)];

const HEADER: &str = "\
# Conformance allow-list: the cases of Debian's libonnx-testdata
# (/usr/share/libonnx-testdata/data/<suite>/<case>) that import, run in burn and match their
# expected outputs today. Each line is one test of tests/conformance.rs; a listed case that
# stops passing fails. Sorted, one `suite/case` per line; lines starting with # are comments.
#
# Run one case:  cargo test --release --test conformance -- --exact node/test_relu
# Regenerate (after adding an op), then review the diff:
#   COMPRESS_CONFORMANCE_WRITE=1 cargo test --release --test conformance
";

/// The ops the importer claims: the only place this test reads the op lists.
fn claimed_op(op_type: &str) -> bool {
    use compress::ir::op::{FOLDED_OPS, SUPPORTED_OPS};
    SUPPORTED_OPS.contains(&op_type) || FOLDED_OPS.contains(&op_type)
}

fn main() {
    let args = Arguments::from_args();
    let allowed = if std::env::var_os(WRITE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        rewrite_allow_list()
    } else {
        read_allow_list()
    };
    let trials = match allowed {
        Ok(allowed) => trials(Arc::new(allowed)),
        Err(e) => vec![Trial::test("allow_list", move || Err(e.into()))],
    };
    libtest_mimic::run(&args, trials).exit();
}

fn trials(allowed: Arc<Vec<String>>) -> Vec<Trial> {
    let mut trials: Vec<Trial> = allowed
        .iter()
        .map(|case| {
            let name = case.clone();
            Trial::test(case.clone(), move || check_allowed(&name))
        })
        .collect();
    let list = Arc::clone(&allowed);
    trials.push(Trial::test("allow_list_is_sane", move || {
        check_list_shape(&list)
    }));
    trials.push(Trial::test("unlisted_cases", move || {
        report_unlisted(&allowed)
    }));
    trials
}

// ---------------------------------------------------------------------------------------------
// The allow-list

fn read_allow_list() -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(ALLOW_LIST).map_err(|e| {
        format!("{ALLOW_LIST}: {e} (regenerate it with {WRITE_ENV}=1, see the file's header)")
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Runs every case, writes the passing ones as the new list and prints what changed.
fn rewrite_allow_list() -> Result<Vec<String>, String> {
    let old: BTreeSet<String> = read_allow_list().unwrap_or_default().into_iter().collect();
    let mut passing = Vec::new();
    for suite in SUITES {
        for case in suite_cases(suite)? {
            let name = format!("{suite}/{case}");
            if matches!(run_case(&case_dir(&name)), Outcome::Passed) {
                passing.push(name);
            }
        }
    }
    passing.sort();
    let new: BTreeSet<String> = passing.iter().cloned().collect();
    let mut text = String::from(HEADER);
    for case in &passing {
        text.push_str(case);
        text.push('\n');
    }
    std::fs::write(ALLOW_LIST, text).map_err(|e| format!("{ALLOW_LIST}: {e}"))?;
    println!("wrote {ALLOW_LIST}: {} cases", passing.len());
    for case in new.difference(&old) {
        println!("  added   {case}");
    }
    for case in old.difference(&new) {
        println!("  removed {case}");
    }
    Ok(passing)
}

/// Sorted, unique, known suites, and not suspiciously short.
fn check_list_shape(allowed: &[String]) -> Result<(), Failed> {
    let mut problems = Vec::new();
    for pair in allowed.windows(2) {
        if pair[0] >= pair[1] {
            problems.push(format!(
                "not sorted or duplicated: {} / {}",
                pair[0], pair[1]
            ));
        }
    }
    for case in allowed {
        match case.split_once('/') {
            Some((suite, name)) if SUITES.contains(&suite) && !name.is_empty() => {}
            _ => problems.push(format!("not a `suite/case` of {SUITES:?}: {case}")),
        }
    }
    for (suite, minimum) in MINIMUM_ALLOWED {
        let n = allowed
            .iter()
            .filter(|c| c.starts_with(&format!("{suite}/")))
            .count();
        if n < minimum {
            problems.push(format!(
                "only {n} {suite} cases listed (at least {minimum})"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{ALLOW_LIST}:\n  {}", problems.join("\n  ")).into())
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

fn check_allowed(case: &str) -> Result<(), Failed> {
    match run_case(&case_dir(case)) {
        Outcome::Passed => Ok(()),
        other => Err(format!(
            "{case} is on the allow-list but no longer passes: {other}\n\
             (fix the regression; if it is intended, regenerate the list with {WRITE_ENV}=1)"
        )
        .into()),
    }
}

/// Runs every case off the list and prints its outcome. A wrong answer fails (as it would for a
/// listed case); a refusal or a newly passing case is only reported.
fn report_unlisted(allowed: &[String]) -> Result<(), Failed> {
    let allowed: BTreeSet<&str> = allowed.iter().map(String::as_str).collect();
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for suite in SUITES {
        let cases = suite_cases(suite)?;
        let unlisted: Vec<String> = cases
            .iter()
            .map(|case| format!("{suite}/{case}"))
            .filter(|name| !allowed.contains(name.as_str()))
            .collect();
        let (mut out_of_scope, mut refused, mut passing, mut failed) = (0, 0, 0, 0);
        let mut lines = Vec::new();
        for name in &unlisted {
            match run_case(&case_dir(name)) {
                Outcome::OutOfScope(_) => out_of_scope += 1,
                Outcome::Passed => {
                    passing += 1;
                    lines.push(format!("  PASSES (not listed, add it) {name}"));
                }
                Outcome::Refused(why) => {
                    refused += 1;
                    lines.push(format!("  refused {name}: {why}"));
                }
                Outcome::Failed(why) => {
                    failed += 1;
                    lines.push(format!("  WRONG   {name}: {why}"));
                    wrong.push(format!("{name}: {why}"));
                }
            }
        }
        report.push(format!(
            "{suite}: {} listed; in scope but not listed: {passing} passing, {refused} refused, \
             {failed} wrong; {out_of_scope} out of scope",
            cases.len() - unlisted.len(),
        ));
        report.extend(lines);
    }
    println!("\n{}", report.join("\n"));
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} in-scope cases gave wrong results:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        )
        .into())
    }
}

// ---------------------------------------------------------------------------------------------
// Running one case

enum Outcome {
    Passed,
    /// An op we do not claim, or data of an element type we do not compute in (uint16, bool...).
    OutOfScope(String),
    /// Import refused a variant we do not support (clear error, not a wrong answer).
    Refused(String),
    /// Ran, but crashed or gave a wrong answer.
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => write!(f, "passed"),
            Outcome::OutOfScope(why) => write!(f, "out of scope: {why}"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Failed(why) => write!(f, "wrong result: {why}"),
        }
    }
}

fn case_dir(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}

/// Names of the cases (directories with a model.onnx) of one suite, sorted.
fn suite_cases(suite: &str) -> Result<Vec<String>, String> {
    let dir = Path::new(ROOT).join(suite);
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        format!(
            "{}: {e} (install Debian's libonnx-testdata: scripts/test.sh does)",
            dir.display()
        )
    })?;
    let mut v: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("model.onnx").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

fn run_case(dir: &Path) -> Outcome {
    let model = match std::fs::read(dir.join("model.onnx"))
        .map_err(|e| e.to_string())
        .and_then(|b| pb::ModelProto::decode(&b[..]).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => return Outcome::OutOfScope(format!("{}/model.onnx: {e}", dir.display())),
    };
    if let Err(why) = in_scope(&model) {
        return Outcome::OutOfScope(why);
    }
    let mut sets: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) => return Outcome::OutOfScope(format!("{}: {e}", dir.display())),
    };
    sets.sort();
    for set in sets {
        if let Err(outcome) = run_data_set(&model, &set) {
            return outcome;
        }
    }
    Outcome::Passed
}

/// Does every node use an op we claim? Names the first one that does not.
fn in_scope(model: &pb::ModelProto) -> Result<(), String> {
    let Some(g) = &model.graph else {
        return Err("no graph".into());
    };
    for n in &g.node {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!("op {} of domain {}", n.op_type, n.domain));
        }
        if !claimed_op(&n.op_type) {
            return Err(format!("op {} is not supported", n.op_type));
        }
    }
    Ok(())
}

fn run_data_set(model: &pb::ModelProto, set: &Path) -> Result<(), Outcome> {
    let set_name = set.file_name().unwrap_or_default().to_string_lossy();
    let (all_inputs, expected) = common::try_load_data_set(set)
        .map_err(|e| Outcome::OutOfScope(format!("{set_name}: {e}")))?;
    let (bytes, keep) = bake_attribute_inputs(model, &all_inputs);
    let inputs: Vec<_> = keep
        .iter()
        .filter_map(|&k| all_inputs.get(k).cloned())
        .collect();
    let graph = compress::onnx::import_bytes(&bytes, &set.display().to_string())
        .map_err(|e| Outcome::Refused(format!("import: {e}")))?;
    let net = Network::new(&graph, &default_device())
        .map_err(|e| Outcome::Refused(format!("network: {e}")))?;
    let outputs = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.run(&inputs)))
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(Outcome::Failed(format!("{set_name}: run failed: {e}"))),
        Err(_) => {
            return Err(Outcome::Failed(format!(
                "{set_name}: panicked while running"
            )));
        }
    };
    compare(&outputs, &expected).map_err(|why| Outcome::Failed(format!("{set_name}: {why}")))
}

/// Same count, same shapes, and every value within tolerance (NaN matches NaN).
fn compare(outputs: &[Tensor], expected: &[Tensor]) -> Result<(), String> {
    if outputs.len() != expected.len() || expected.is_empty() {
        return Err(format!(
            "{} outputs, {} expected",
            outputs.len(),
            expected.len()
        ));
    }
    for (k, (got, want)) in outputs.iter().zip(expected).enumerate() {
        if got.shape != want.shape {
            return Err(format!(
                "output {k}: shape {:?}, expected {:?}",
                got.shape, want.shape
            ));
        }
        let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
        let mut first = None;
        let (mut count, mut max_diff) = (0usize, 0f32);
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            // ONNX backend-test tolerances: rtol 1e-3, atol 1e-7 (we allow atol 1e-5 for f32 sums).
            if !((a - b).abs() <= 1e-5 + 1e-3 * b.abs() || (a.is_nan() && b.is_nan()) || a == b) {
                first.get_or_insert((i, *a, *b));
                count += 1;
                // A NaN difference sticks, so the message cannot understate it.
                let d = (a - b).abs();
                if d.is_nan() || d > max_diff {
                    max_diff = d;
                }
            }
        }
        if let Some((i, a, b)) = first {
            return Err(format!(
                "output {k}: {count} of {} values off (|got - expected| > 1e-5 + 1e-3 |expected|), \
                 max difference {max_diff:?}; first at [{i}]: {a:?} vs expected {b:?}",
                w.len()
            ));
        }
    }
    Ok(())
}

/// Input positions that carry attributes rather than data (shape, bounds, pads, axes...).
fn attribute_like(op: &str, position: usize) -> bool {
    match op {
        "Reshape" | "Unsqueeze" | "Squeeze" | "ReduceMean" => position == 1,
        "Clip" | "Pad" | "Slice" => position >= 1,
        _ => false,
    }
}

/// The test cases feed some attribute-like values (Reshape's shape, Clip's bounds...) as graph
/// inputs. Our importer needs them constant, so bake this data set's values in as initializers.
/// Returns the model bytes and the positions of the graph inputs that remain data inputs.
fn bake_attribute_inputs(model: &pb::ModelProto, inputs: &[Tensor]) -> (Vec<u8>, Vec<usize>) {
    let mut m = model.clone();
    let Some(g) = m.graph.as_mut() else {
        return (m.encode_to_vec(), (0..inputs.len()).collect());
    };
    let inits: Vec<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let declared: Vec<pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !inits.contains(&i.name))
        .cloned()
        .collect();
    let mut keep = Vec::new();
    let mut remaining = Vec::new();
    for (k, info) in declared.iter().enumerate() {
        let uses: Vec<(String, usize)> = g
            .node
            .iter()
            .flat_map(|n| {
                n.input
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| **i == info.name)
                    .map(|(p, _)| (n.op_type.clone(), p))
                    .collect::<Vec<_>>()
            })
            .collect();
        let baked = !uses.is_empty() && uses.iter().all(|(op, p)| attribute_like(op, *p));
        match (baked, inputs.get(k)) {
            (true, Some(t)) => g
                .initializer
                .push(compress::onnx::tensor::to_proto(&info.name, t)),
            _ => {
                keep.push(k);
                remaining.push(info.clone());
            }
        }
    }
    g.input
        .retain(|i| inits.contains(&i.name) || remaining.iter().any(|r| r.name == i.name));
    (m.encode_to_vec(), keep)
}
