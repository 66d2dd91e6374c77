//! `--input-shape [NAME=]DIMS`: sizes for a model's symbolic dims, so that shapes can be
//! folded, costs counted and data fed at one concrete size. The batch axis stays the batch.

use crate::error::{Error, Result};
use crate::ir::Dim;

/// One `--input-shape` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputShape {
    /// The input it sizes; `None` when the model has one input.
    pub name: Option<String>,
    pub dims: Vec<usize>,
    /// The value as given, for messages.
    pub text: String,
}

/// Every `--input-shape` value of a command (empty: the model's symbolic dims stay unsized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputShapes(pub Vec<InputShape>);

fn usage(text: &str, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("--input-shape {text}: {why}"))
}

impl InputShape {
    /// Parses `NAME=D1xD2x...` or `D1xD2x...` (positive integers).
    pub fn parse(text: &str) -> Result<Self> {
        let (name, dims_text) = match text.rsplit_once('=') {
            Some((n, d)) if !n.is_empty() => (Some(n.to_string()), d),
            Some(_) => return Err(usage(text, "the input name before '=' is empty")),
            None => (None, text),
        };
        let dims = dims_text
            .split(['x', 'X'])
            .map(|d| d.trim().parse::<usize>().ok().filter(|&n| n > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                usage(
                    text,
                    "expected [NAME=]DIMS with positive sizes, e.g. images=1x3x640x640",
                )
            })?;
        Ok(InputShape {
            name,
            dims,
            text: text.to_string(),
        })
    }
}

impl InputShapes {
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self> {
        let shapes = values
            .iter()
            .map(|v| InputShape::parse(v.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(InputShapes(shapes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks that every value names one of `inputs` (or that there is one input when a value
    /// has no name) and that no input is sized twice.
    pub(crate) fn check_names(&self, inputs: &[&str]) -> Result<()> {
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.0 {
            let target = match &s.name {
                Some(n) if inputs.contains(&n.as_str()) => n.as_str(),
                Some(n) => {
                    return Err(usage(
                        &s.text,
                        format!(
                            "the model has no input '{n}' (inputs: {})",
                            inputs.join(", ")
                        ),
                    ));
                }
                None if inputs.len() == 1 => inputs[0],
                None => {
                    return Err(usage(
                        &s.text,
                        format!(
                            "the model has {} inputs ({}): name one, NAME=DIMS",
                            inputs.len(),
                            inputs.join(", ")
                        ),
                    ));
                }
            };
            if seen.contains(&target) {
                return Err(usage(&s.text, format!("input '{target}' is sized twice")));
            }
            seen.push(target);
        }
        Ok(())
    }

    /// The value for input `name` of a model with `input_count` inputs.
    fn for_input(&self, name: &str, input_count: usize) -> Option<&InputShape> {
        self.0.iter().find(|s| match &s.name {
            Some(n) => n == name,
            None => input_count == 1,
        })
    }

    /// The dims of graph input `name`, its declared dims (`None`: unknown, `Some(param)`:
    /// symbolic, possibly unnamed) resolved: a fixed dim stays fixed (the value must agree),
    /// a symbolic axis 0 is the batch, any other symbolic dim takes the value's size.
    pub(crate) fn resolve(
        &self,
        name: &str,
        input_count: usize,
        declared: &[Result<usize, String>],
    ) -> Result<Vec<Dim>> {
        let given = self.for_input(name, input_count);
        if let Some(g) = given
            && g.dims.len() != declared.len()
        {
            return Err(usage(
                &g.text,
                format!(
                    "input '{name}' has rank {} ({}), not {}",
                    declared.len(),
                    declared_text(declared),
                    g.dims.len()
                ),
            ));
        }
        let mut dims = Vec::with_capacity(declared.len());
        for (axis, d) in declared.iter().enumerate() {
            let size = given.map(|g| g.dims[axis]);
            match (d, size) {
                (Ok(n), Some(s)) if *n != s => {
                    let text = given.map_or("", |g| g.text.as_str());
                    return Err(usage(
                        text,
                        format!("input '{name}' has size {n} at axis {axis}, not {s}"),
                    ));
                }
                (Ok(n), _) => dims.push(Dim::Fixed(*n)),
                (Err(param), _) if axis == 0 => dims.push(Dim::Batch(if param.is_empty() {
                    "batch".to_string()
                } else {
                    param.clone()
                })),
                (Err(param), Some(s)) => dims.push(Dim::Sized {
                    name: if param.is_empty() {
                        format!("{name}_dim{axis}")
                    } else {
                        param.clone()
                    },
                    size: s,
                }),
                (Err(param), None) => {
                    let example: Vec<String> = declared
                        .iter()
                        .enumerate()
                        .map(|(i, d)| match d {
                            Ok(n) => n.to_string(),
                            Err(_) if i == 0 => "1".into(),
                            Err(p) if p.is_empty() => format!("<dim{i}>"),
                            Err(p) => format!("<{p}>"),
                        })
                        .collect();
                    let what = if param.is_empty() {
                        "an unnamed symbolic dim".to_string()
                    } else {
                        format!("symbolic dim '{param}'")
                    };
                    return Err(Error::InvalidModel(format!(
                        "graph input '{name}' ({}) has {what} at axis {axis}; give its size with --input-shape {name}={}",
                        declared_text(declared),
                        example.join("x")
                    )));
                }
            }
        }
        Ok(dims)
    }
}

fn declared_text(declared: &[Result<usize, String>]) -> String {
    let parts: Vec<String> = declared
        .iter()
        .map(|d| match d {
            Ok(n) => n.to_string(),
            Err(p) if p.is_empty() => "?".into(),
            Err(p) => p.clone(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_unnamed_values() {
        let s = InputShape::parse("images=1x3x640x480").unwrap();
        assert_eq!(s.name.as_deref(), Some("images"));
        assert_eq!(s.dims, [1, 3, 640, 480]);
        assert_eq!(InputShape::parse("2x3").unwrap().name, None);
        for bad in ["images=", "=1x3", "1x0x3", "axb", "images=1x-3"] {
            assert!(InputShape::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_symbolic_dims_and_refuses_contradictions() {
        let declared = [
            Err("batch".to_string()),
            Ok(3),
            Err("height".to_string()),
            Err(String::new()),
        ];
        let shapes = InputShapes::parse(&["x=1x3x64x48"]).unwrap();
        let dims = shapes.resolve("x", 1, &declared).unwrap();
        assert_eq!(dims[0], Dim::Batch("batch".into()));
        assert_eq!(dims[1], Dim::Fixed(3));
        assert_eq!(
            dims[2],
            Dim::Sized {
                name: "height".into(),
                size: 64
            }
        );
        assert_eq!(
            dims[3],
            Dim::Sized {
                name: "x_dim3".into(),
                size: 48
            }
        );
        let e = InputShapes::default()
            .resolve("x", 1, &declared)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'height' at axis 2") && e.contains("--input-shape x=1x3x<height>x<dim3>"),
            "{e}"
        );
        let e = InputShapes::parse(&["1x1x64x48"])
            .unwrap()
            .resolve("x", 1, &declared)
            .unwrap_err();
        assert!(e.to_string().contains("size 3 at axis 1, not 1"), "{e}");
        let e = InputShapes::parse(&["1x3x64"])
            .unwrap()
            .resolve("x", 1, &declared)
            .unwrap_err();
        assert!(e.to_string().contains("rank 4"), "{e}");
        let e = InputShapes::parse(&["y=1x3x64x48"])
            .unwrap()
            .check_names(&["x"])
            .unwrap_err();
        assert!(e.to_string().contains("no input 'y'"), "{e}");
        let e = InputShapes::parse(&["1x3"])
            .unwrap()
            .check_names(&["a", "b"])
            .unwrap_err();
        assert!(e.to_string().contains("2 inputs"), "{e}");
    }
}
