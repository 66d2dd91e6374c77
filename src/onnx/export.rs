//! ir::Graph -> ModelProto bytes, in the form the graph's opset expects.

use prost::Message;

use super::pb::{
    self, AttributeProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_shape_proto, type_proto,
};
use super::tensor::to_proto;
use crate::ir::{Activation, Dim, Graph, Op, Tensor, ValueInfo, Window};

pub const PRODUCER: &str = "compress";

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn ints(name: &str, v: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.into_iter().collect(),
        ..Default::default()
    }
}

fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn usizes(v: &[usize]) -> impl Iterator<Item = i64> + '_ {
    v.iter().map(|&x| x as i64)
}

fn value_info(v: &ValueInfo) -> ValueInfoProto {
    let dim = v
        .dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Batch(name) => tensor_shape_proto::dimension::Value::DimParam(name.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Collects the extra constant inputs that attribute-like values become in newer opsets.
struct Consts<'a> {
    node: &'a str,
    out: Vec<(String, Tensor)>,
}

impl Consts<'_> {
    fn add(&mut self, what: &str, t: Tensor) -> String {
        let name = format!("{}__{what}", self.node);
        self.out.push((name.clone(), t));
        name
    }
}

fn window_attrs(w: &Window, attrs: &mut Vec<AttributeProto>, with_dilations: bool) {
    attrs.push(ints("kernel_shape", usizes(&w.kernel)));
    attrs.push(ints("strides", usizes(&w.strides)));
    attrs.push(ints("pads", usizes(&w.pads)));
    if with_dilations {
        attrs.push(ints("dilations", usizes(&w.dilations)));
    }
}

/// Builds the NodeProto for one IR node, adding constant inputs where the opset wants them.
fn node_proto(n: &crate::ir::Node, opset: i64, consts: &mut Consts) -> NodeProto {
    let mut attrs = Vec::new();
    let mut inputs = n.inputs.clone();
    match &n.op {
        Op::Conv { window, group } => {
            window_attrs(window, &mut attrs, true);
            attrs.push(int("group", *group as i64));
        }
        Op::BatchNorm { epsilon } => {
            attrs.push(float("epsilon", *epsilon));
            if opset < 7 {
                attrs.push(int("is_test", 1));
            }
        }
        Op::Binary(_) if opset < 7 => attrs.push(int("broadcast", 1)),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            if opset < 7 && n.inputs.len() > 2 {
                attrs.push(int("broadcast", 1));
            }
            attrs.push(float("alpha", *alpha));
            attrs.push(float("beta", *beta));
            attrs.push(int("transA", *trans_a as i64));
            attrs.push(int("transB", *trans_b as i64));
        }
        Op::MatMul | Op::Binary(_) | Op::GlobalAveragePool | Op::Identity => {}
        Op::Activation(act) => match *act {
            Activation::LeakyRelu { alpha } => attrs.push(float("alpha", alpha)),
            Activation::HardSigmoid { alpha, beta } => {
                attrs.push(float("alpha", alpha));
                attrs.push(float("beta", beta));
            }
            Activation::Clip { min, max } if opset < 11 => {
                attrs.push(float("min", min));
                attrs.push(float("max", max));
            }
            Activation::Clip { min, max } => {
                let mut bound = |what: &str, v: f32| {
                    if v.is_finite() {
                        consts.add(what, Tensor::f32(vec![], vec![v]))
                    } else {
                        String::new()
                    }
                };
                let (lo, hi) = (bound("min", min), bound("max", max));
                inputs.push(lo);
                inputs.push(hi);
                while inputs.last().is_some_and(|s| s.is_empty()) {
                    inputs.pop();
                }
            }
            _ => {}
        },
        Op::Softmax { axis, .. } => attrs.push(int("axis", *axis)),
        Op::MaxPool { window, ceil_mode } => {
            window_attrs(window, &mut attrs, opset >= 10);
            if opset >= 10 {
                attrs.push(int("ceil_mode", *ceil_mode as i64));
            }
        }
        Op::AveragePool {
            window,
            ceil_mode,
            count_include_pad,
        } => {
            window_attrs(window, &mut attrs, false);
            if opset >= 10 {
                attrs.push(int("ceil_mode", *ceil_mode as i64));
            }
            attrs.push(int("count_include_pad", *count_include_pad as i64));
        }
        Op::ReduceMean { axes, keepdims } => {
            attrs.push(int("keepdims", *keepdims as i64));
            if !axes.is_empty() {
                if opset < 18 {
                    attrs.push(ints("axes", axes.iter().copied()));
                } else {
                    inputs.push(consts.add("axes", Tensor::i64(vec![axes.len()], axes.clone())));
                }
            }
        }
        Op::Flatten { axis } => attrs.push(int("axis", *axis)),
        Op::Reshape { shape } if opset < 5 => attrs.push(ints("shape", shape.iter().copied())),
        Op::Reshape { shape } => {
            inputs.push(consts.add("shape", Tensor::i64(vec![shape.len()], shape.clone())));
        }
        Op::Transpose { perm } => attrs.push(ints("perm", usizes(perm))),
        Op::Concat { axis } => attrs.push(int("axis", *axis)),
        Op::Pad { pads, mode, value } => {
            attrs.push(string("mode", mode.onnx_name()));
            if opset < 11 {
                attrs.push(ints("pads", pads.iter().copied()));
                attrs.push(float("value", *value));
            } else {
                inputs.push(consts.add("pads", Tensor::i64(vec![pads.len()], pads.clone())));
                inputs.push(consts.add("value", Tensor::f32(vec![], vec![*value])));
            }
        }
    }
    NodeProto {
        input: inputs,
        output: n.outputs.clone(),
        name: n.name.clone(),
        op_type: n.op.onnx_type().into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// Builds the ModelProto. Metadata and opset are kept; the producer becomes compress.
pub fn to_model_proto(g: &Graph) -> pb::ModelProto {
    let opset = g.meta.opset();
    let mut nodes = Vec::with_capacity(g.nodes.len());
    let mut extra = Vec::new();
    for n in &g.nodes {
        let mut consts = Consts {
            node: &n.name,
            out: Vec::new(),
        };
        nodes.push(node_proto(n, opset, &mut consts));
        extra.extend(consts.out);
    }
    let initializer = g
        .initializers
        .iter()
        .map(|(name, t)| to_proto(name, t))
        .chain(extra.iter().map(|(name, t)| to_proto(name, t)))
        .collect();
    let graph = pb::GraphProto {
        node: nodes,
        name: if g.name.is_empty() {
            "compress".into()
        } else {
            g.name.clone()
        },
        initializer,
        input: g.inputs.iter().map(value_info).collect(),
        output: g.outputs.iter().map(value_info).collect(),
        ..Default::default()
    };
    let m = &g.meta;
    pb::ModelProto {
        // IR version 8 is the lowest that current ONNX Runtime reads for opsets up to 18.
        ir_version: m.ir_version.max(7),
        opset_import: m
            .opset_imports
            .iter()
            .map(|(domain, version)| pb::OperatorSetIdProto {
                domain: domain.clone(),
                version: *version,
            })
            .collect(),
        producer_name: PRODUCER.into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        doc_string: m.doc_string.clone(),
        graph: Some(graph),
        metadata_props: m
            .metadata_props
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn export(g: &Graph) -> Vec<u8> {
    to_model_proto(g).encode_to_vec()
}
