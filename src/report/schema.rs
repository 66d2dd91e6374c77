//! The run report's JSON Schema (version 1), generated from [`RunReport`] and committed as
//! `docs/report.schema.json`; [`validate`] checks a JSON value against it and [`parse`] reads a
//! report, naming the first field at fault. The tests validate every report they write.

use serde_json::Value;

use super::run::{RunReport, SCHEMA_VERSION};
use crate::error::{Error, Result};

/// The committed schema file, relative to the repository root.
pub const SCHEMA_FILE: &str = "docs/report.schema.json";

/// The JSON Schema of [`RunReport`], generated from the type.
pub fn json_schema() -> Value {
    schemars::schema_for!(RunReport).to_value()
}

/// The schema as committed: pretty JSON and a final newline.
pub fn json_schema_text() -> String {
    let text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    format!("{text}\n")
}

/// One way a JSON value breaks the schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A required field is absent.
    Missing { path: String },
    /// A field holds a value of the wrong kind (`expected` as the schema words it).
    WrongType {
        path: String,
        expected: String,
        found: String,
    },
    /// A number outside the schema's range.
    OutOfRange {
        path: String,
        value: f64,
        range: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { path } => write!(f, "{path}: missing"),
            Problem::WrongType {
                path,
                expected,
                found,
            } => write!(f, "{path}: expected {expected}, found {found}"),
            Problem::OutOfRange { path, value, range } => {
                write!(f, "{path}: {value} is not in {range}")
            }
        }
    }
}

/// Every violation of the schema (in document order), or an empty list.
pub fn problems(report: &Value) -> Vec<Problem> {
    let schema = json_schema();
    let mut out = Vec::new();
    Walker { root: &schema }.walk(&schema, report, "", &mut out);
    out
}

/// Every violation of the schema, one line each, or an empty list; a schema_version other than
/// 1 is one of them.
pub fn validate(report: &Value) -> Vec<String> {
    let mut errors: Vec<String> = problems(report).iter().map(|p| p.to_string()).collect();
    if report.get("schema_version").and_then(Value::as_u64) != Some(SCHEMA_VERSION.into()) {
        errors.push(format!("schema_version: expected {SCHEMA_VERSION}"));
    }
    errors
}

/// Reads a run report from JSON; anything that is not a version-1 report is [`Error::Data`]
/// naming `name` and the first field at fault (bad input, exit code 2).
pub fn parse(report: &Value, name: &str) -> Result<RunReport> {
    let bad = |reason: String| Error::Data {
        path: name.to_string(),
        reason,
    };
    if !report.is_object() {
        return Err(bad("not a compress report (expected a JSON object)".into()));
    }
    // The version decides how the rest is read, so it is checked first.
    let version = match report.get("schema_version") {
        None | Some(Value::Null) => {
            return Err(bad("missing field 'schema_version' in report".into()));
        }
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("schema_version is not a non-negative integer".into()))?,
    };
    if version != u64::from(SCHEMA_VERSION) {
        return Err(bad(format!(
            "unsupported report schema_version {version} (this compress reads version {SCHEMA_VERSION})"
        )));
    }
    if let Some(p) = problems(report).into_iter().next() {
        return Err(bad(match p {
            Problem::Missing { path } => format!("missing field '{path}' in report"),
            Problem::WrongType {
                path,
                expected,
                found,
            } => {
                let kind = match expected.as_str() {
                    "number" | "integer" => "a number".to_string(),
                    other => other.to_string(),
                };
                format!("field '{path}' is not {kind}: {found}")
            }
            other => other.to_string(),
        }));
    }
    serde_json::from_value(report.clone()).map_err(|e| bad(format!("not a run report: {e}")))
}

/// Walks a value along a schema as schemars writes it: `$ref` into `$defs`, `type`,
/// `properties` / `required`, `items`, `enum` / `const`, `anyOf` / `oneOf` / `allOf`, and
/// `minimum` / `maximum`. A `null` where an object is required reads as an empty object, so
/// that each field it lacks is named.
struct Walker<'a> {
    root: &'a Value,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value of JSON kind `kind` satisfies schema type `t` (an integer is a number).
fn kind_fits(t: &str, kind: &str) -> bool {
    t == kind || (t == "number" && kind == "integer")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Walker<'a> {
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/")
                .map(|p| {
                    p.split('/')
                        .try_fold(self.root, |s, k| s.get(k))
                        .unwrap_or(&Value::Null)
                })
                .map_or(schema, |target| self.resolve(target)),
            None => schema,
        }
    }

    /// The schema's types, empty when it names none.
    fn types(schema: &Value) -> Vec<&str> {
        match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    fn walk(&self, schema: &'a Value, v: &Value, path: &str, out: &mut Vec<Problem>) {
        let schema = self.resolve(schema);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.walk(s, v, path, out);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = schema.get(key).and_then(Value::as_array) {
                self.alternatives(alts, v, path, out);
            }
        }
        let types = Self::types(schema);
        let kind = kind_of(v);
        let empty = Value::Object(Default::default());
        let v = if kind == "null" && types == ["object"] {
            &empty
        } else {
            v
        };
        if !types.is_empty() && !types.iter().any(|t| kind_fits(t, kind_of(v))) {
            out.push(Problem::WrongType {
                path: path.to_string(),
                expected: types.join(" or "),
                found: v.to_string(),
            });
            return;
        }
        let allowed = match (schema.get("enum"), schema.get("const")) {
            (Some(Value::Array(values)), _) => Some(values.clone()),
            (_, Some(c)) => Some(vec![c.clone()]),
            _ => None,
        };
        if let Some(values) = allowed
            && !values.contains(v)
        {
            let names: Vec<String> = values.iter().map(Value::to_string).collect();
            out.push(Problem::WrongType {
                path: path.to_string(),
                expected: format!("one of {}", names.join(", ")),
                found: v.to_string(),
            });
        }
        match v {
            Value::Object(map) => {
                let required = schema.get("required").and_then(Value::as_array);
                for key in required.into_iter().flatten().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        out.push(Problem::Missing {
                            path: join(path, key),
                        });
                    }
                }
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (key, sub) in props {
                        if let Some(x) = map.get(key) {
                            self.walk(sub, x, &join(path, key), out);
                        }
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, x) in items.iter().enumerate() {
                        self.walk(item, x, &format!("{path}[{i}]"), out);
                    }
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                let min = schema.get("minimum").and_then(Value::as_f64);
                let max = schema.get("maximum").and_then(Value::as_f64);
                if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                    let show = |b: Option<f64>| b.map_or_else(String::new, |b| b.to_string());
                    out.push(Problem::OutOfRange {
                        path: path.to_string(),
                        value: x,
                        range: format!("[{}, {}]", show(min), show(max)),
                    });
                }
            }
            _ => {}
        }
    }

    /// A value must match one alternative; when none matches, the problems reported are those
    /// of the first alternative of the value's own kind (e.g. the object in `T | null`).
    fn alternatives(&self, alts: &'a [Value], v: &Value, path: &str, out: &mut Vec<Problem>) {
        let mut first_of_kind = None;
        for alt in alts {
            let mut found = Vec::new();
            self.walk(alt, v, path, &mut found);
            if found.is_empty() {
                return;
            }
            let types = Self::types(self.resolve(alt));
            if first_of_kind.is_none() && types.iter().any(|t| kind_fits(t, kind_of(v))) {
                first_of_kind = Some(found);
            }
        }
        out.extend(first_of_kind.unwrap_or_else(|| {
            vec![Problem::WrongType {
                path: path.to_string(),
                expected: "a value of another kind".into(),
                found: v.to_string(),
            }]
        }));
    }
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

    /// The committed schema is the one the type generates.
    #[test]
    fn committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_FILE);
        let want = json_schema_text();
        if std::env::var_os("COMPRESS_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{SCHEMA_FILE} differs from the schema generated from RunReport; regenerate it with\n    \
             COMPRESS_UPDATE_SCHEMA=1 cargo test --lib report::schema::tests::committed_schema_is_current\n\
             and commit the result"
        );
    }
}
