//! Mutations of ONNX models: structured ones (valid protobuf, hostile contents) and byte-level
//! ones. Every mutation is drawn from the one seeded generator, so a case is reproduced from
//! its seed alone.

use crate::onnx::pb::{
    self, ModelProto, tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};
use crate::rng::{Rng, RngExt};

/// Integers that break code assuming small, positive values.
const HOSTILE_INTS: [i64; 12] = [
    0,
    -1,
    -2,
    1,
    2,
    3,
    1 << 16,
    1 << 31,
    -(1 << 31),
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// Floats that break arithmetic.
const HOSTILE_FLOATS: [f32; 7] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -1.0,
    1e30,
    f32::MIN_POSITIVE,
];

/// Op types a node may be swapped to (supported ones, a few that are not, and nonsense).
const OP_TYPES: [&str; 24] = [
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Relu",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Concat",
    "Transpose",
    "Softmax",
    "Slice",
    "Split",
    "Pad",
    "Resize",
    "ConvTranspose",
    "Squeeze",
    "Expand",
    "Loop",
    "NoSuchOp",
];

fn hostile_int(rng: &mut Rng) -> i64 {
    if rng.random_bool(0.8) {
        HOSTILE_INTS[rng.random_range(0..HOSTILE_INTS.len())]
    } else {
        rng.random_range(-8..64)
    }
}

fn pick<T>(rng: &mut Rng, v: &[T]) -> Option<usize> {
    (!v.is_empty()).then(|| rng.random_range(0..v.len()))
}

/// Every value name the graph defines or reads, in order.
fn value_names(g: &pb::GraphProto) -> Vec<String> {
    let mut names: Vec<String> = g.input.iter().map(|v| v.name.clone()).collect();
    names.extend(g.initializer.iter().map(|t| t.name.clone()));
    for n in &g.node {
        names.extend(n.output.iter().cloned());
    }
    names
}

/// Applies one to three structured mutations; returns what was done, in words.
pub fn structured(model: &mut ModelProto, rng: &mut Rng) -> Vec<String> {
    let count = rng.random_range(1..=3);
    (0..count).map(|_| structured_once(model, rng)).collect()
}

fn structured_once(model: &mut ModelProto, rng: &mut Rng) -> String {
    let kind = rng.random_range(0..20);
    if kind == 0 {
        let v = if rng.random_bool(0.5) {
            hostile_int(rng)
        } else {
            rng.random_range(0..30)
        };
        if let Some(i) = pick(rng, &model.opset_import) {
            model.opset_import[i].version = v;
        }
        return format!("opset -> {v}");
    }
    if kind == 1 {
        model.ir_version = hostile_int(rng);
        return format!("ir_version -> {}", model.ir_version);
    }
    let Some(g) = model.graph.as_mut() else {
        return "no graph".into();
    };
    let names = value_names(g);
    match kind {
        2..=4 => mutate_attribute(g, rng),
        5 => {
            let Some(t) = pick(rng, &g.initializer) else {
                return "no initializer".into();
            };
            let init = &mut g.initializer[t];
            match rng.random_range(0..4) {
                0 if !init.dims.is_empty() => {
                    let d = rng.random_range(0..init.dims.len());
                    init.dims[d] = hostile_int(rng);
                }
                1 => init.dims.push(hostile_int(rng)),
                2 => {
                    init.dims.pop();
                }
                _ => init.dims.iter_mut().for_each(|d| *d = d.saturating_add(1)),
            }
            format!("initializer '{}' dims -> {:?}", init.name, init.dims)
        }
        6 => {
            let Some(t) = pick(rng, &g.initializer) else {
                return "no initializer".into();
            };
            let dt = rng.random_range(0..20);
            g.initializer[t].data_type = dt;
            format!("initializer '{}' data type -> {dt}", g.initializer[t].name)
        }
        7 => {
            let Some(t) = pick(rng, &g.initializer) else {
                return "no initializer".into();
            };
            let init = &mut g.initializer[t];
            let x = HOSTILE_FLOATS[rng.random_range(0..HOSTILE_FLOATS.len())];
            let bytes = x.to_le_bytes();
            let len = init.raw_data.len() / 4;
            if len > 0 {
                for _ in 0..rng.random_range(1..=len.min(16)) {
                    let at = rng.random_range(0..len) * 4;
                    init.raw_data[at..at + 4].copy_from_slice(&bytes);
                }
            }
            init.float_data.iter_mut().for_each(|f| *f = x);
            format!("initializer '{}' values -> {x}", init.name)
        }
        8 | 9 => {
            let Some(n) = pick(rng, &g.node) else {
                return "no node".into();
            };
            let node = &mut g.node[n];
            let Some(i) = pick(rng, &node.input) else {
                return "node without inputs".into();
            };
            let to = match rng.random_range(0..4) {
                0 => "no_such_value".to_string(),
                1 => String::new(),
                2 => node.output.first().cloned().unwrap_or_default(),
                _ => names[rng.random_range(0..names.len())].clone(),
            };
            node.input[i] = to.clone();
            format!("node {n} input {i} -> '{to}'")
        }
        10 => {
            let Some(n) = pick(rng, &g.node) else {
                return "no node".into();
            };
            let node = &mut g.node[n];
            let keep = rng.random_range(0..=node.input.len());
            node.input.truncate(keep);
            format!("node {n} inputs truncated to {keep}")
        }
        11 => {
            let Some(n) = pick(rng, &g.node) else {
                return "no node".into();
            };
            let op = OP_TYPES[rng.random_range(0..OP_TYPES.len())];
            g.node[n].op_type = op.to_string();
            format!("node {n} op -> {op}")
        }
        12 => mutate_input_dims(g, rng),
        13 => {
            let Some(i) = pick(rng, &g.input) else {
                return "no input".into();
            };
            let et = rng.random_range(0..20);
            if let Some(type_proto::Value::TensorType(t)) =
                g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.elem_type = et;
            }
            format!("input {i} elem type -> {et}")
        }
        14 => {
            let Some(n) = pick(rng, &g.node) else {
                return "no node".into();
            };
            g.node.remove(n);
            format!("node {n} removed")
        }
        15 => {
            if g.node.len() < 2 {
                return "too few nodes".into();
            }
            let a = rng.random_range(0..g.node.len());
            let b = rng.random_range(0..g.node.len());
            g.node.swap(a, b);
            format!("nodes {a} and {b} swapped")
        }
        16 => {
            let Some(n) = pick(rng, &g.node) else {
                return "no node".into();
            };
            let extra = names[rng.random_range(0..names.len())].clone();
            g.node[n].input.push(extra.clone());
            format!("node {n} extra input '{extra}'")
        }
        17 => {
            let Some(t) = pick(rng, &g.initializer) else {
                return "no initializer".into();
            };
            let name = g.initializer.remove(t).name;
            format!("initializer '{name}' removed")
        }
        18 => {
            let Some(n) = pick(rng, &g.node) else {
                return "no node".into();
            };
            let node = &mut g.node[n];
            if rng.random_bool(0.5) {
                node.output.clear();
            } else {
                node.output.push(format!("extra_{n}"));
            }
            format!("node {n} outputs -> {:?}", node.output)
        }
        _ => {
            let Some(o) = pick(rng, &g.output) else {
                return "no output".into();
            };
            let to = names[rng.random_range(0..names.len())].clone();
            g.output[o].name = to.clone();
            format!("output {o} -> '{to}'")
        }
    }
}

fn mutate_attribute(g: &mut pb::GraphProto, rng: &mut Rng) -> String {
    let Some(n) = pick(rng, &g.node) else {
        return "no node".into();
    };
    let node = &mut g.node[n];
    let Some(a) = pick(rng, &node.attribute) else {
        return "node without attributes".into();
    };
    let attr = &mut node.attribute[a];
    match rng.random_range(0..6) {
        0 => attr.i = hostile_int(rng),
        1 if !attr.ints.is_empty() => {
            let k = rng.random_range(0..attr.ints.len());
            attr.ints[k] = hostile_int(rng);
        }
        2 => {
            let len = rng.random_range(0..8);
            attr.ints = (0..len).map(|_| hostile_int(rng)).collect();
        }
        3 => attr.f = HOSTILE_FLOATS[rng.random_range(0..HOSTILE_FLOATS.len())],
        4 => attr.r#type = rng.random_range(0..16),
        _ => {
            let name = attr.name.clone();
            node.attribute.remove(a);
            return format!("node {n} attribute '{name}' removed");
        }
    }
    let attr = &node.attribute[a];
    format!(
        "node {n} attribute '{}' -> i {} ints {:?} f {}",
        attr.name, attr.i, attr.ints, attr.f
    )
}

fn mutate_input_dims(g: &mut pb::GraphProto, rng: &mut Rng) -> String {
    let Some(i) = pick(rng, &g.input) else {
        return "no input".into();
    };
    let Some(type_proto::Value::TensorType(t)) =
        g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        return "input without tensor type".into();
    };
    let Some(shape) = t.shape.as_mut() else {
        return "input without shape".into();
    };
    match rng.random_range(0..4) {
        0 if !shape.dim.is_empty() => {
            let d = rng.random_range(0..shape.dim.len());
            shape.dim[d].value = Some(dimension::Value::DimValue(hostile_int(rng)));
        }
        1 if !shape.dim.is_empty() => {
            let d = rng.random_range(0..shape.dim.len());
            shape.dim[d].value = Some(dimension::Value::DimParam("n".into()));
        }
        2 => shape.dim.push(Dimension {
            denotation: String::new(),
            value: Some(dimension::Value::DimValue(hostile_int(rng))),
        }),
        _ => {
            shape.dim.pop();
        }
    }
    format!("input {i} dims -> {:?}", shape.dim)
}

/// Applies one to eight byte-level mutations (flips, overwrites, insertions, deletions,
/// truncation, duplicated chunks).
pub fn bytes(data: &mut Vec<u8>, rng: &mut Rng) -> Vec<String> {
    let count = rng.random_range(1..=8);
    let mut done = Vec::new();
    for _ in 0..count {
        if data.is_empty() {
            data.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..data.len());
        match rng.random_range(0..6) {
            0 => {
                let bit = rng.random_range(0..8);
                data[at] ^= 1 << bit;
                done.push(format!("flip bit {bit} at {at}"));
            }
            1 => {
                let v = [0u8, 0xff, 0x7f, 0x80, 0x01][rng.random_range(0..5)];
                data[at] = v;
                done.push(format!("byte {at} -> {v:#x}"));
            }
            2 => {
                let len = rng.random_range(1..=16).min(data.len() - at);
                data.drain(at..at + len);
                done.push(format!("delete {len} at {at}"));
            }
            3 => {
                let len = rng.random_range(1..=16);
                let fill: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                data.splice(at..at, fill);
                done.push(format!("insert {len} at {at}"));
            }
            4 => {
                data.truncate(at);
                done.push(format!("truncate at {at}"));
            }
            _ => {
                let len = rng.random_range(1..=64).min(data.len() - at);
                let chunk = data[at..at + len].to_vec();
                let to = rng.random_range(0..data.len());
                data.splice(to..to, chunk);
                done.push(format!("copy {len} from {at} to {to}"));
            }
        }
    }
    done
}
