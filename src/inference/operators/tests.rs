//! Each builder copied from tract-onnx, and a few of the one-line ones, run on a small
//! graph through tract, against values worked out by hand; a graph with an operator
//! the gateway does not run is refused by name.

use super::*;
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::{Framework, InferenceModelExt};

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;

pub(crate) fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("n_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn float_attr(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 1,
        f,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 2,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: INT64,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of `nodes` from input `x` to output `y`, at `opset`.
pub(crate) fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            initializer,
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `proto` with the gateway's operators on `x` (shape `[1, x.len()]`): `y` as f32.
fn run(proto: &ModelProto, x: &[f32]) -> Vec<f32> {
    let plan = onnx()
        .model_for_proto_model(proto)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, x.len()]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| {
            panic!(
                "{:?}: {e:#}",
                proto.graph.as_ref().map(|g| &g.node[0].op_type)
            )
        });
    let input = Tensor::from_shape(&[1, x.len()], x).expect("input");
    let out = plan.run(tvec!(input.into_tvalue())).expect("runs");
    let out = out[0].cast_to::<f32>().expect("as f32").into_owned();
    out.to_plain_array_view::<f32>()
        .expect("f32")
        .iter()
        .copied()
        .collect()
}

const X: [f32; 4] = [1.0, -2.0, 3.0, -4.0];

#[test]
fn clip_takes_bounds_as_attributes_before_opset_11_and_as_inputs_after() {
    let attrs = vec![float_attr("min", -1.0), float_attr("max", 2.0)];
    let old = model(9, vec![node("Clip", &["x"], "y", attrs)], vec![]);
    assert_eq!(run(&old, &X), [1.0, -1.0, 2.0, -1.0]);
    let new = model(
        13,
        vec![node("Clip", &["x", "lo", "hi"], "y", vec![])],
        vec![floats("lo", &[], &[-1.0]), floats("hi", &[], &[2.0])],
    );
    assert_eq!(run(&new, &X), [1.0, -1.0, 2.0, -1.0]);
    let only_max = model(
        13,
        vec![node("Clip", &["x", "", "hi"], "y", vec![])],
        vec![floats("hi", &[], &[2.0])],
    );
    assert_eq!(run(&only_max, &X), [1.0, -2.0, 2.0, -4.0]);
}

#[test]
fn gemm_scales_transposes_and_adds_its_bias() {
    // y = 2 * x . B^T + 1 * C, B = [[1, 1, 0, 0], [0, 0, 1, 1]], C = [10, 20].
    let m = model(
        13,
        vec![node(
            "Gemm",
            &["x", "b", "c"],
            "y",
            vec![float_attr("alpha", 2.0), int_attr("transB", 1)],
        )],
        vec![
            floats("b", &[2, 4], &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
            floats("c", &[2], &[10.0, 20.0]),
        ],
    );
    // x . B^T = [1 - 2, 3 - 4] = [-1, -1].
    assert_eq!(run(&m, &X), [-2.0 + 10.0, -2.0 + 20.0]);
}

#[test]
fn pow_and_the_one_line_elementwise_operators() {
    let pow = model(
        13,
        vec![node("Pow", &["x", "two"], "y", vec![])],
        vec![floats("two", &[], &[2.0])],
    );
    assert_eq!(run(&pow, &X), [1.0, 4.0, 9.0, 16.0]);
    let chain = model(
        13,
        vec![
            node("Abs", &["x"], "a", vec![]),
            node("Sqrt", &["a"], "s", vec![]),
            node("Neg", &["s"], "n", vec![]),
            node("Relu", &["n"], "r", vec![]),
            node("Add", &["r", "s"], "y", vec![]),
        ],
        vec![],
    );
    let want: Vec<f32> = X.iter().map(|v| v.abs().sqrt()).collect();
    assert_eq!(run(&chain, &X), want);
    let lrelu = model(
        13,
        vec![node(
            "LeakyRelu",
            &["x"],
            "y",
            vec![float_attr("alpha", 0.5)],
        )],
        vec![],
    );
    assert_eq!(run(&lrelu, &X), [1.0, -1.0, 3.0, -2.0]);
}

#[test]
fn reductions_take_axes_as_attribute_or_input_by_opset() {
    // ReduceSum: axes an input from opset 13.
    let sum = model(
        13,
        vec![node("ReduceSum", &["x", "axes"], "y", vec![])],
        vec![ints("axes", &[1])],
    );
    assert_eq!(run(&sum, &X), [-2.0]);
    // Empty axes: every axis, unless noop_with_empty_axes.
    let all = model(
        13,
        vec![node(
            "ReduceSum",
            &["x"],
            "y",
            vec![int_attr("keepdims", 0)],
        )],
        vec![],
    );
    assert_eq!(run(&all, &X), [-2.0]);
    // ReduceMean: axes an attribute below opset 18, an input from 18.
    let mean = model(
        13,
        vec![node(
            "ReduceMean",
            &["x"],
            "y",
            vec![ints_attr("axes", &[1])],
        )],
        vec![],
    );
    assert_eq!(run(&mean, &X), [-0.5]);
    let max = model(
        18,
        vec![node("ReduceMax", &["x", "axes"], "y", vec![])],
        vec![ints("axes", &[1])],
    );
    assert_eq!(run(&max, &X), [3.0]);
    let sq = model(
        13,
        vec![node(
            "ReduceSumSquare",
            &["x"],
            "y",
            vec![ints_attr("axes", &[1])],
        )],
        vec![],
    );
    assert_eq!(run(&sq, &X), [30.0]);
}

#[test]
fn topk_argmax_and_cast() {
    let top = model(
        13,
        vec![NodeProto {
            output: vec!["y".into(), "idx".into()],
            ..node("TopK", &["x", "k"], "y", vec![int_attr("axis", 1)])
        }],
        vec![ints("k", &[2])],
    );
    assert_eq!(run(&top, &X), [3.0, 1.0]);
    let smallest = model(
        13,
        vec![NodeProto {
            output: vec!["y".into(), "idx".into()],
            ..node("TopK", &["x", "k"], "y", vec![int_attr("largest", 0)])
        }],
        vec![ints("k", &[1])],
    );
    assert_eq!(run(&smallest, &X), [-4.0]);
    let argmax = model(
        13,
        vec![
            node("ArgMax", &["x"], "i", vec![int_attr("axis", 1)]),
            node("Cast", &["i"], "y", vec![int_attr("to", i64::from(FLOAT))]),
        ],
        vec![],
    );
    assert_eq!(run(&argmax, &X), [2.0]);
    let truncate = model(
        13,
        vec![
            node("Cast", &["x"], "i", vec![int_attr("to", i64::from(INT32))]),
            node("Cast", &["i"], "y", vec![int_attr("to", i64::from(FLOAT))]),
        ],
        vec![],
    );
    assert_eq!(
        run(&truncate, &[1.7, -2.7, 0.2, 9.9]),
        [1.0, -2.0, 0.0, 9.0]
    );
}

#[test]
fn shapes_squeeze_unsqueeze_slice_gather_concat() {
    let round_trip = model(
        13,
        vec![
            node("Squeeze", &["x", "zero"], "s", vec![]),
            node("Unsqueeze", &["s", "zero"], "y", vec![]),
        ],
        vec![ints("zero", &[0])],
    );
    assert_eq!(run(&round_trip, &X), X);
    let old = model(
        11,
        vec![
            node("Squeeze", &["x"], "s", vec![ints_attr("axes", &[0])]),
            node("Unsqueeze", &["s"], "y", vec![ints_attr("axes", &[0])]),
        ],
        vec![],
    );
    assert_eq!(run(&old, &X), X);
    let slice = model(
        13,
        vec![node("Slice", &["x", "starts", "ends", "axes"], "y", vec![])],
        vec![ints("starts", &[1]), ints("ends", &[3]), ints("axes", &[1])],
    );
    assert_eq!(run(&slice, &X), [-2.0, 3.0]);
    let gather = model(
        13,
        vec![
            node("Gather", &["x", "idx"], "g", vec![int_attr("axis", 1)]),
            node("Concat", &["g", "x"], "y", vec![int_attr("axis", 1)]),
        ],
        vec![ints("idx", &[3, 0])],
    );
    assert_eq!(run(&gather, &X), [-4.0, 1.0, 1.0, -2.0, 3.0, -4.0]);
}

#[test]
fn only_the_listed_operators_are_registered() {
    let reg = onnx().op_register;
    let mut registered: Vec<&str> = reg.0.keys().map(String::as_str).collect();
    registered.sort_unstable();
    let mut listed = SUPPORTED.to_vec();
    listed.sort_unstable();
    assert_eq!(registered, listed);
}

#[test]
fn unsupported_operators_are_named_once_with_their_domain() {
    let nodes = [
        ("", "Conv"),
        ("", "MatMul"),
        ("ai.onnx", "Relu"),
        ("", "Conv"),
        ("ai.onnx.ml", "TreeEnsembleRegressor"),
        ("com.example", "Add"),
        ("ai.onnx", "LSTM"),
    ];
    assert_eq!(
        unsupported(nodes),
        [
            "Conv",
            "LSTM",
            "ai.onnx.ml.TreeEnsembleRegressor",
            "com.example.Add"
        ]
    );
    assert!(unsupported([("", "Add"), ("", "Sqrt")]).is_empty());
}
