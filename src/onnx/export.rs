//! ir::Graph -> ModelProto bytes, in the form the graph's opset expects.

use prost::Message;

use super::pb::{
    self, AttributeProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_shape_proto, type_proto,
};
use super::tensor::to_proto;
use crate::ir::{Dim, ElemType, Graph, Tensor, ValueInfo};

pub const PRODUCER: &str = "compress";

fn value_info(v: &ValueInfo, elem: ElemType) -> ValueInfoProto {
    let dim = v
        .dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Batch(name) | Dim::Sized { name, .. } => {
                    tensor_shape_proto::dimension::Value::DimParam(name.clone())
                }
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: match elem {
                    ElemType::F32 => pb::tensor_proto::DataType::Float,
                    ElemType::I64 => pb::tensor_proto::DataType::Int64,
                    ElemType::I32 => pb::tensor_proto::DataType::Int32,
                    ElemType::Bool => pb::tensor_proto::DataType::Bool,
                } as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What an op's export rule (in `crate::ops`) writes: attributes, and for attribute-like values
/// that newer opsets take as inputs, constant inputs.
pub struct ExportCx<'a> {
    /// Version of the default ONNX domain the node is written for.
    pub opset: i64,
    /// The node's inputs; rules append constant inputs here.
    pub inputs: Vec<String>,
    node: &'a str,
    attrs: Vec<AttributeProto>,
    consts: &'a mut Vec<(String, Tensor)>,
    /// Helper nodes written before the node (a target shape computed at run time).
    before: Vec<NodeProto>,
}

impl ExportCx<'_> {
    fn attr(&mut self, name: &str, kind: AttributeType, fill: impl FnOnce(&mut AttributeProto)) {
        let mut a = AttributeProto {
            name: name.into(),
            r#type: kind as i32,
            ..Default::default()
        };
        fill(&mut a);
        self.attrs.push(a);
    }

    pub fn int(&mut self, name: &str, i: i64) {
        self.attr(name, AttributeType::Int, |a| a.i = i);
    }

    pub fn float(&mut self, name: &str, f: f32) {
        self.attr(name, AttributeType::Float, |a| a.f = f);
    }

    pub fn ints(&mut self, name: &str, v: Vec<i64>) {
        self.attr(name, AttributeType::Ints, |a| a.ints = v);
    }

    pub fn string(&mut self, name: &str, s: &str) {
        self.attr(name, AttributeType::String, |a| a.s = s.as_bytes().to_vec());
    }

    /// Adds a constant initializer named after the node; returns its name.
    pub fn add_const(&mut self, what: &str, t: Tensor) -> String {
        let name = format!("{}__{what}", self.node);
        self.consts.push((name.clone(), t));
        name
    }

    /// Adds a helper node (named after the node) that runs before it, with integer
    /// attributes; returns its output's name.
    pub fn add_node(
        &mut self,
        what: &str,
        op_type: &str,
        inputs: Vec<String>,
        ints: &[(&str, i64)],
    ) -> String {
        let name = format!("{}__{what}", self.node);
        let attribute = ints
            .iter()
            .map(|&(a, i)| AttributeProto {
                name: a.into(),
                r#type: AttributeType::Int as i32,
                i,
                ..Default::default()
            })
            .collect();
        self.before.push(NodeProto {
            input: inputs,
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
        name
    }
}

/// Builds the NodeProto for one IR node, adding constant inputs where the opset wants them,
/// after the helper nodes its rule asks for.
fn node_protos(
    n: &crate::ir::Node,
    opset: i64,
    consts: &mut Vec<(String, Tensor)>,
    out: &mut Vec<NodeProto>,
) {
    let mut cx = ExportCx {
        opset,
        inputs: n.inputs.clone(),
        node: &n.name,
        attrs: Vec::new(),
        consts,
        before: Vec::new(),
    };
    crate::ops::with_rules(&n.op, |r| r.export(&mut cx));
    out.append(&mut cx.before);
    out.push(NodeProto {
        input: cx.inputs,
        output: n.outputs.clone(),
        name: n.name.clone(),
        op_type: n.op.onnx_type().into(),
        attribute: cx.attrs,
        ..Default::default()
    });
}

/// Builds the ModelProto. Metadata and opset are kept; the producer becomes compress.
pub fn to_model_proto(g: &Graph) -> pb::ModelProto {
    let opset = g.meta.opset();
    let mut nodes = Vec::with_capacity(g.nodes.len());
    let mut extra = Vec::new();
    for n in &g.nodes {
        node_protos(n, opset, &mut extra, &mut nodes);
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
        input: g
            .inputs
            .iter()
            .map(|v| value_info(v, g.input_type(&v.name)))
            .collect(),
        output: g
            .outputs
            .iter()
            .map(|v| value_info(v, ElemType::F32))
            .collect(),
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
