//! The run report's schema (version 1), as code: `validate` checks a JSON value against it.
//! The README documents the same fields; tests validate every report they write.

use serde_json::Value;

/// (path, expected kind); kinds: "int", "number", "string", "object", "array", "bool",
/// "number|null", "object|null". `[]` in a path means every element of an array.
pub const FIELDS: &[(&str, &str)] = &[
    ("schema_version", "int"),
    ("model", "string"),
    ("output", "string"),
    ("method", "string"),
    ("settings", "object"),
    ("settings.seed", "int"),
    ("settings.method", "string"),
    ("settings.data", "string"),
    ("settings.epochs", "int"),
    ("settings.lambda", "number"),
    ("dense", "object"),
    ("pruned", "object"),
    ("macs_ratio", "number"),
    ("params_ratio", "number"),
    ("accuracy_drop_points", "number"),
    ("widths_before", "string"),
    ("widths_after", "string"),
    ("layers", "array"),
    ("layers[].name", "string"),
    ("layers[].width_before", "int"),
    ("layers[].width_after", "int"),
    ("history", "array"),
    ("history[].epoch", "int"),
    ("history[].loss", "number"),
    ("history[].accuracy", "number"),
    ("history[].expected_macs", "number"),
    ("history[].deterministic_macs", "number"),
    ("history[].open_gates", "array"),
    ("history[].lambda", "number"),
    ("verification", "object"),
    ("verification.runtime", "string"),
    ("verification.max_abs_diff", "number"),
    ("verification.tolerance", "number"),
    ("verification.also", "array"),
    ("verification.also[].runtime", "string"),
    ("verification.also[].max_abs_diff", "number"),
    ("verification.also[].tolerance", "number"),
    ("timings", "object"),
    ("timings.total_s", "number"),
    ("timings.train_s", "number"),
    ("notes", "array"),
];

/// Fields of `dense` and `pruned`.
pub const MODEL_FIELDS: &[(&str, &str)] = &[
    ("accuracy", "number"),
    ("correct", "int"),
    ("samples", "int"),
    ("params", "int"),
    ("macs", "int"),
    ("file_bytes", "int"),
    ("latency_ms", "object|null"),
];

fn kind_ok(v: &Value, kind: &str) -> bool {
    kind.split('|').any(|k| match k {
        "int" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "bool" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    })
}

fn check_path(v: &Value, path: &str, kind: &str, errors: &mut Vec<String>, shown: &str) {
    match path.split_once('.') {
        Some((head, rest)) if head.ends_with("[]") => {
            let key = &head[..head.len() - 2];
            if let Some(items) = v.get(key).and_then(Value::as_array) {
                for (i, item) in items.iter().enumerate() {
                    check_path(item, rest, kind, errors, &format!("{shown}{key}[{i}]."));
                }
            }
        }
        Some((head, rest)) => match v.get(head) {
            Some(inner) => check_path(inner, rest, kind, errors, &format!("{shown}{head}.")),
            None => errors.push(format!("{shown}{head}: missing")),
        },
        None => match v.get(path) {
            Some(x) if kind_ok(x, kind) => {}
            Some(x) => errors.push(format!("{shown}{path}: expected {kind}, found {x}")),
            None => errors.push(format!("{shown}{path}: missing")),
        },
    }
}

/// Every violation of the schema, or an empty list.
pub fn validate(report: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for (path, kind) in FIELDS {
        check_path(report, path, kind, &mut errors, "");
    }
    for side in ["dense", "pruned"] {
        for (path, kind) in MODEL_FIELDS {
            if let Some(v) = report.get(side) {
                check_path(v, path, kind, &mut errors, &format!("{side}."));
            }
        }
    }
    if report.get("schema_version").and_then(Value::as_u64) != Some(1) {
        errors.push("schema_version: expected 1".into());
    }
    for side in ["dense", "pruned"] {
        if let Some(a) = report
            .pointer(&format!("/{side}/accuracy"))
            .and_then(Value::as_f64)
            && !(0.0..=1.0).contains(&a)
        {
            errors.push(format!("{side}.accuracy: {a} is not a fraction in [0, 1]"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_mistyped_fields_are_reported() {
        let v = serde_json::json!({"schema_version": 1, "model": 3, "layers": [{"name": "a"}]});
        let errors = validate(&v);
        assert!(
            errors
                .iter()
                .any(|e| e == "model: expected string, found 3"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e == "layers[0].width_before: missing"),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e == "dense: missing"), "{errors:?}");
    }
}
