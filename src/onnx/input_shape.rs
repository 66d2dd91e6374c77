//! `--input-shape [NAME=]DIMS`: sizes for a model's symbolic dims, so that shapes can be
//! folded, costs counted and data fed at one concrete size. The batch axis stays the batch.

use crate::error::{Error, Result};
use crate::ir::Dim;

/// A graph input's declared dim: a fixed size, or a symbolic one by name (empty: unnamed).
pub(crate) type Declared = std::result::Result<usize, String>;

/// One `--input-shape` value: `NAME=DIMS` for an input, or `DIM=SIZE` for a symbolic dim.
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
                    "expected [NAME=]DIMS with positive sizes, e.g. images=1x3x640x640 or \
                     sequence=128",
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

    /// Checks every value against the model's data inputs (name and declared dims each): a
    /// `NAME=` names an input (then DIMS size it whole) or else a symbolic dim (then one size
    /// binds that dim in every input that has it); no input or dim is sized twice, and a dim
    /// binding agrees with every whole-input value that sizes the same dim.
    pub(crate) fn check(&self, inputs: &[(&str, &[Declared])]) -> Result<()> {
        let names: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
        let dims = dim_names(inputs);
        let mut seen: Vec<&str> = Vec::new();
        let mut bound: Vec<&str> = Vec::new();
        for s in &self.0 {
            let target = match &s.name {
                Some(n) if names.contains(&n.as_str()) => n.as_str(),
                Some(n) if dims.contains(&n.as_str()) => {
                    if s.dims.len() != 1 {
                        return Err(usage(
                            &s.text,
                            format!("'{n}' is a symbolic dim: give it one size, e.g. {n}=128"),
                        ));
                    }
                    if bound.contains(&n.as_str()) {
                        return Err(usage(&s.text, format!("dim '{n}' is bound twice")));
                    }
                    bound.push(n);
                    continue;
                }
                Some(n) => {
                    let dims_text = if dims.is_empty() {
                        "no symbolic dims (every input size is fixed)".to_string()
                    } else {
                        format!("no symbolic dim of that name (dims: {})", dims.join(", "))
                    };
                    return Err(usage(
                        &s.text,
                        format!(
                            "the model has no input '{n}' (inputs: {}) and {dims_text}",
                            names.join(", ")
                        ),
                    ));
                }
                None if names.len() == 1 => names[0],
                None => {
                    return Err(usage(
                        &s.text,
                        format!(
                            "the model has {} inputs ({}): name one, NAME=DIMS, or a symbolic \
                             dim, DIM=SIZE",
                            names.len(),
                            names.join(", ")
                        ),
                    ));
                }
            };
            if seen.contains(&target) {
                return Err(usage(&s.text, format!("input '{target}' is sized twice")));
            }
            seen.push(target);
        }
        self.check_bindings_agree(inputs, &names)
    }

    /// A whole-input value that sizes a bound dim to another size is a conflict.
    fn check_bindings_agree(&self, inputs: &[(&str, &[Declared])], names: &[&str]) -> Result<()> {
        for (name, declared) in inputs {
            let Some(given) = self.for_input(name, names.len()) else {
                continue;
            };
            for (axis, d) in declared.iter().enumerate().skip(1) {
                let (Err(param), Some(&size)) = (d, given.dims.get(axis)) else {
                    continue;
                };
                if let Some(b) = self.binding(param, names)
                    && b.dims[0] != size
                {
                    return Err(usage(
                        &given.text,
                        format!(
                            "input '{name}' has symbolic dim '{param}' at axis {axis}, which \
                             --input-shape {} binds to {}, not {size}",
                            b.text, b.dims[0]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The value binding symbolic dim `dim` (a `NAME=` that names no input).
    fn binding(&self, dim: &str, inputs: &[&str]) -> Option<&InputShape> {
        if dim.is_empty() || inputs.contains(&dim) {
            return None;
        }
        self.0
            .iter()
            .find(|s| s.name.as_deref() == Some(dim) && s.dims.len() == 1)
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
        inputs: &[&str],
        declared: &[Declared],
    ) -> Result<Vec<Dim>> {
        let given = self.for_input(name, inputs.len());
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
            let size = given.map(|g| g.dims[axis]).or_else(|| match d {
                Err(param) => self.binding(param, inputs).map(|b| b.dims[0]),
                Ok(_) => None,
            });
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
                    let by_name = if param.is_empty() {
                        String::new()
                    } else {
                        format!(" (or --input-shape {param}=N for every input with that dim)")
                    };
                    return Err(Error::InvalidModel(format!(
                        "graph input '{name}' ({}) has {what} at axis {axis}; give its size with --input-shape {name}={}{by_name}",
                        declared_text(declared),
                        example.join("x")
                    )));
                }
            }
        }
        Ok(dims)
    }
}

/// The symbolic dim names of `inputs`, each once, in order (a batch axis's name too: binding
/// it is allowed and leaves the batch free, as a whole-input value does).
fn dim_names<'a>(inputs: &[(&str, &'a [Declared])]) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    for (_, declared) in inputs {
        for d in declared.iter() {
            if let Err(p) = d
                && !p.is_empty()
                && !names.contains(&p.as_str())
            {
                names.push(p);
            }
        }
    }
    names
}

fn declared_text(declared: &[Declared]) -> String {
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
        let dims = shapes.resolve("x", &["x"], &declared).unwrap();
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
            .resolve("x", &["x"], &declared)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'height' at axis 2") && e.contains("--input-shape x=1x3x<height>x<dim3>"),
            "{e}"
        );
        let e = InputShapes::parse(&["1x1x64x48"])
            .unwrap()
            .resolve("x", &["x"], &declared)
            .unwrap_err();
        assert!(e.to_string().contains("size 3 at axis 1, not 1"), "{e}");
        let e = InputShapes::parse(&["1x3x64"])
            .unwrap()
            .resolve("x", &["x"], &declared)
            .unwrap_err();
        assert!(e.to_string().contains("rank 4"), "{e}");
        let e = InputShapes::parse(&["y=1x3x64x48"])
            .unwrap()
            .check(&[("x", &declared)])
            .unwrap_err();
        assert!(e.to_string().contains("no input 'y'"), "{e}");
        let e = InputShapes::parse(&["1x3"])
            .unwrap()
            .check(&[("a", &declared), ("b", &declared)])
            .unwrap_err();
        assert!(e.to_string().contains("2 inputs"), "{e}");
    }

    #[test]
    fn binds_a_dim_by_name_in_every_input_that_has_it() {
        let ids = [Err("batch".to_string()), Err("sequence".to_string())];
        let fixed = [Ok(1), Ok(3)];
        let inputs = [("ids", &ids[..]), ("mask", &ids[..]), ("image", &fixed[..])];
        let names = ["ids", "mask", "image"];
        let shapes = InputShapes::parse(&["sequence=12"]).unwrap();
        shapes.check(&inputs).unwrap();
        for input in ["ids", "mask"] {
            let dims = shapes.resolve(input, &names, &ids).unwrap();
            let want = Dim::Sized {
                name: "sequence".into(),
                size: 12,
            };
            assert_eq!(dims[1], want);
        }
        assert_eq!(
            shapes.resolve("image", &names, &fixed).unwrap(),
            [Dim::Fixed(1), Dim::Fixed(3)]
        );
        let err = |values: &[&str], inputs: &[(&str, &[Declared])]| {
            InputShapes::parse(values)
                .unwrap()
                .check(inputs)
                .unwrap_err()
                .to_string()
        };
        let e = err(&["sequence=12", "mask=1x8"], &inputs);
        assert!(e.contains("binds to 12, not 8"), "{e}");
        let e = err(&["sequence=12", "sequence=12"], &inputs);
        assert!(e.contains("bound twice"), "{e}");
        let e = err(&["sequence=1x12"], &inputs);
        assert!(e.contains("give it one size"), "{e}");
        let e = err(&["height=4"], &inputs);
        assert!(e.contains("(dims: batch, sequence)"), "{e}");
        let e = err(&["sequence=4"], &[("image", &fixed[..])]);
        assert!(e.contains("every input size is fixed"), "{e}");
    }
}
