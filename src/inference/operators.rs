//! The ONNX operators the gateway runs: the set that docs/models.md ("Exporting a
//! compatible model") has promised bundles since the model contract was written,
//! now also the set the gateway registers with tract.
//!
//! `tract_onnx::onnx()` registers every operator tract implements (convolutions,
//! recurrent layers, attention, quantisation, resizing, FFTs, ...). A gateway scores
//! small dense models on feature vectors, and each registered operator is code in the
//! binary whether a bundle uses it or not: registering the whole set cost 1.4 MB of
//! the shipped file (docs/PERFORMANCE.md, "Under 20 MB"). A bundle that uses any other
//! operator is refused before tract parses it, with an error that names the
//! operators it lacks and lists the ones it has ([`unsupported`]).
//!
//! Most builders are one line over tract-hir's public operators. tract-onnx keeps
//! the others in private modules, so the few with opset-dependent attributes (Clip,
//! Gemm, Pow, the reductions, Squeeze, Unsqueeze, TopK, Cast) are copied below from
//! tract-onnx 0.23.9 (`src/ops/`, MIT or Apache-2.0, like tract), shortened where a
//! case cannot occur in a bundle (string inputs, opsets before 10). Adding an
//! operator: one line in [`register`], its name in [`SUPPORTED`], a bundle that
//! uses it in the tests, and the list in docs/models.md.

use tract_onnx::model::{optional_inputs, OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir;
use tract_onnx::Onnx;

use tract_hir::internal::*;
use tract_hir::ops;
use tract_hir::ops::binary::Nary;

/// The operators a bundle may use, in the order docs/models.md lists them.
#[rustfmt::skip]
pub const SUPPORTED: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Pow", "Exp", "Log",
    "Reciprocal", "Min", "Max", "Clip", "Sum", "Mean",
    "MatMul", "Gemm",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceProd",
    "ArgMax", "ArgMin", "TopK",
    "Relu", "Sigmoid", "Tanh", "Softmax", "LeakyRelu", "Elu",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Transpose", "Slice",
    "Gather", "Cast", "Identity", "Constant",
    "Greater", "Less", "Equal", "Where", "Not", "And", "Or",
];

/// The ONNX front end of tract with the gateway's operators only.
pub fn onnx() -> Onnx {
    let mut reg = OnnxOpRegister::default();
    register(&mut reg);
    Onnx {
        op_register: reg,
        ..Onnx::default()
    }
}

/// The operators of `nodes` (ONNX op types, with their domain) that the gateway does
/// not run, sorted, each once. Operators of another domain than ONNX's own (custom
/// or ONNX-ML) are never run.
pub fn unsupported<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut missing: Vec<String> = nodes
        .into_iter()
        .filter(|(domain, op)| {
            !(domain.is_empty() || *domain == "ai.onnx") || !SUPPORTED.contains(op)
        })
        .map(|(domain, op)| {
            if domain.is_empty() || domain == "ai.onnx" {
                op.to_string()
            } else {
                format!("{domain}.{op}")
            }
        })
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Add", |_, _| Ok((ops::math::Add.into_hir(), vec![])));
    reg.insert("Sub", |_, _| Ok((ops::math::Sub.into_hir(), vec![])));
    reg.insert("Mul", |_, _| Ok((ops::math::Mul.into_hir(), vec![])));
    reg.insert("Div", |_, _| Ok((ops::math::Div.into_hir(), vec![])));
    reg.insert("Neg", |_, _| Ok((ops::math::neg().into_hir(), vec![])));
    reg.insert("Abs", |_, _| Ok((ops::math::abs().into_hir(), vec![])));
    reg.insert("Sqrt", |_, _| Ok((ops::math::sqrt().into_hir(), vec![])));
    reg.insert("Pow", |_, _| Ok((expand(Pow), vec![])));
    reg.insert("Exp", |_, _| Ok((ops::math::exp().into_hir(), vec![])));
    reg.insert("Log", |_, _| Ok((ops::math::ln().into_hir(), vec![])));
    reg.insert("Reciprocal", |_, _| {
        Ok((ops::math::recip().into_hir(), vec![]))
    });
    reg.insert("Min", |_, _| {
        Ok((Box::new(Nary(Box::new(ops::math::Min), false)), vec![]))
    });
    reg.insert("Max", |_, _| {
        Ok((Box::new(Nary(Box::new(ops::math::Max), false)), vec![]))
    });
    reg.insert("Clip", clip);
    reg.insert("Sum", |_, _| {
        Ok((Box::new(Nary(Box::new(ops::math::Add), false)), vec![]))
    });
    reg.insert("Mean", |_, _| {
        Ok((Box::new(Nary(Box::new(ops::math::Add), true)), vec![]))
    });

    reg.insert("MatMul", |_, _| {
        Ok((expand(ops::matmul::MatMulInference::default()), vec![]))
    });
    reg.insert("Gemm", gemm);

    use ops::nn::Reducer;
    reg.insert("ReduceSum", |c, n| reduce(c, n, Reducer::Sum));
    reg.insert("ReduceMean", |c, n| reduce(c, n, Reducer::Mean));
    reg.insert("ReduceMax", |c, n| reduce(c, n, Reducer::Max));
    reg.insert("ReduceMin", |c, n| reduce(c, n, Reducer::Min));
    reg.insert("ReduceSumSquare", |c, n| reduce(c, n, Reducer::SumSquare));
    reg.insert("ReduceProd", |c, n| reduce(c, n, Reducer::Prod));
    reg.insert("ArgMax", arg_max_min);
    reg.insert("ArgMin", arg_max_min);
    reg.insert("TopK", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(-1i64);
        let largest = node.get_attr_opt("largest")?.unwrap_or(1i64) == 1;
        Ok((expand(Topk { axis, largest }), vec![]))
    });

    reg.insert("Relu", |_, _| {
        Ok((expand(ops::activations::Clip::new(Some(0.0), None)), vec![]))
    });
    reg.insert("Sigmoid", |_, _| {
        Ok((ops::nn::sigmoid().into_hir(), vec![]))
    });
    reg.insert("Tanh", |_, _| Ok((ops::math::tanh().into_hir(), vec![])));
    reg.insert("Softmax", |ctx, node| {
        let axis = node.get_attr_opt("axis")?;
        if ctx.onnx_operator_set_version < 13 {
            Ok((
                expand(ops::nn::LayerSoftmax::new(axis.unwrap_or(1), true)),
                vec![],
            ))
        } else {
            Ok((expand(ops::nn::Softmax::new(axis.unwrap_or(-1))), vec![]))
        }
    });
    reg.insert("LeakyRelu", |_, node| {
        let alpha = node.get_attr_opt("alpha")?.unwrap_or(0.01);
        Ok((expand(ops::activations::LeakyRelu(alpha)), vec![]))
    });
    reg.insert("Elu", |_, node| {
        let alpha = node.get_attr_opt("alpha")?.unwrap_or(1.);
        Ok((expand(ops::activations::Elu(alpha)), vec![]))
    });

    reg.insert("Reshape", |_, node| {
        let allowzero = node.get_attr_opt::<i64>("allowzero")?.unwrap_or(0) != 0;
        Ok((expand(ops::array::Reshape::new(allowzero)), vec![]))
    });
    reg.insert("Flatten", |_, node| {
        let axis: i64 = node.get_attr_opt("axis")?.unwrap_or(1);
        Ok((expand(ops::array::Flatten::new(axis)), vec![]))
    });
    reg.insert("Squeeze", squeeze);
    reg.insert("Unsqueeze", unsqueeze);
    reg.insert("Concat", |_, node| {
        Ok((
            expand(ops::array::Concat::new(node.get_attr("axis")?)),
            vec![],
        ))
    });
    reg.insert("Transpose", |_, node| {
        let perm = node.get_attr_opt_vec("perm")?;
        Ok((
            expand(ops::array::PermuteAxes::new(perm.map(|t| t.into()))),
            vec![],
        ))
    });
    reg.insert("Slice", slice);
    reg.insert("Gather", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(0);
        Ok((expand(ops::array::Gather::new(axis)), vec![]))
    });
    reg.insert("Cast", |_, node| {
        let mut to = node.get_attr::<DatumType>("to")?;
        if to == i64::datum_type() {
            to = TDim::datum_type();
        }
        Ok((expand(Cast { to }), vec![]))
    });
    reg.insert("Identity", |_, _| {
        Ok((Box::<ops::identity::Identity>::default(), vec![]))
    });
    reg.insert("Constant", constant);

    reg.insert("Greater", |_, _| {
        Ok((ops::logic::CompGT.into_hir(), vec![]))
    });
    reg.insert("Less", |_, _| Ok((ops::logic::CompLT.into_hir(), vec![])));
    reg.insert("Equal", |_, _| Ok((ops::logic::CompEq.into_hir(), vec![])));
    reg.insert("Where", |_, _| Ok((expand(ops::logic::Iff), vec![])));
    reg.insert("Not", |_, _| Ok((ops::logic::not().into_hir(), vec![])));
    reg.insert("And", |_, _| Ok((ops::logic::And.into_hir(), vec![])));
    reg.insert("Or", |_, _| Ok((ops::logic::Or.into_hir(), vec![])));
}

fn constant(ctx: &ParsingContext, node: &NodeProto) -> Built {
    let value = if let Some(v) = node.get_attr_opt("value")? {
        ctx.load_tensor(v)?
    } else if let Some(i) = node.get_attr_opt::<i64>("value_int")? {
        tensor0(i)
    } else if let Some(v) = node.get_attr_opt::<f32>("value_float")? {
        tensor0(v)
    } else if let Some(ints) = node.get_attr_opt_slice::<i64>("value_ints")? {
        tensor1(ints)
    } else if let Some(floats) = node.get_attr_opt_slice::<f32>("value_floats")? {
        tensor1(floats)
    } else {
        bail!("Constant: no value, value_int(s) or value_float(s) attribute")
    };
    Ok((
        Box::new(ops::konst::Const::new(value.into_arc_tensor())?),
        vec![],
    ))
}

fn arg_max_min(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let axis = node.get_attr_opt("axis")?.unwrap_or(0);
    let keepdims = node.get_attr_opt("keepdims")?.unwrap_or(true);
    let take_last = node.get_attr_opt("select_last_index")?.unwrap_or(false);
    let red = if node.op_type == "ArgMax" {
        ops::nn::Reducer::ArgMax(take_last)
    } else {
        ops::nn::Reducer::ArgMin(take_last)
    };
    Ok((
        expand(ops::nn::Reduce::new(Some(vec![axis]), keepdims, red)),
        vec![],
    ))
}

fn slice(ctx: &ParsingContext, node: &NodeProto) -> Built {
    if ctx.onnx_operator_set_version < 10 {
        bail!("Slice before opset 10 (starts and ends as attributes) is not supported: export with opset 13 to 17")
    }
    let mut optional = optional_inputs(node).skip(3);
    Ok((
        Box::new(ops::array::StridedSlice {
            begin_mask: 0,
            end_mask: 0,
            shrink_axis_mask: 0,
            optional_axes_input: optional.next().flatten(),
            optional_steps_input: optional.next().flatten(),
        }),
        vec![],
    ))
}

// ---------------------------------------------------------------------------------
// Copied from tract-onnx 0.23.9 (src/ops/math/{clip,gemm,pow}.rs, src/ops/nn/reduce.rs,
// src/ops/array/{squeeze,unsqueeze,topk}.rs, src/ops/cast.rs), where they are private.

fn clip(ctx: &ParsingContext, node: &NodeProto) -> Built {
    if ctx.onnx_operator_set_version < 11 {
        let min: Option<f32> = node.get_attr_opt("min")?;
        let max: Option<f32> = node.get_attr_opt("max")?;
        return Ok((expand(ops::activations::Clip::new(min, max)), vec![]));
    }
    let mut bounds = optional_inputs(node).skip(1);
    let op = Clip11 {
        input_min: bounds.next().flatten(),
        input_max: bounds.next().flatten(),
    };
    Ok((expand(op), vec![]))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Clip11 {
    input_min: Option<usize>,
    input_max: Option<usize>,
}

impl Expansion for Clip11 {
    fn name(&self) -> StaticName {
        "Clip".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(
            inputs,
            1 + self.input_min.is_some() as usize + self.input_max.is_some() as usize,
        )?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        let mut wire = inputs[0];
        for (bound, op, suffix) in [
            (self.input_min, ops::math::max(), "min"),
            (self.input_max, ops::math::min(), "max"),
        ] {
            let Some(ix) = bound else { continue };
            let mut b = inputs[ix];
            if model.outlet_fact(b)?.datum_type != dt {
                b = model.wire_node(
                    format!("{name}.{suffix}.cast"),
                    tract_hir::tract_core::ops::cast::cast(dt),
                    &[b],
                )?[0];
            }
            wire = ops::logic::wire_with_rank_broadcast(
                format!("{name}.{suffix}"),
                model,
                op,
                &[wire, b],
            )?[0];
        }
        Ok(tvec!(wire))
    }
}

fn gemm(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    Ok((
        expand(Gemm {
            alpha: node.get_attr_opt("alpha")?.unwrap_or(1.),
            beta: node.get_attr_opt("beta")?.unwrap_or(1.),
            trans_a: node.get_attr_opt("transA")?.unwrap_or(false),
            trans_b: node.get_attr_opt("transB")?.unwrap_or(false),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone)]
struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

impl Expansion for Gemm {
    fn name(&self) -> StaticName {
        "Gemm".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        if inputs.len() < 2 {
            bail!(
                "Wrong input number. Rules expect at least 2, node has {}.",
                inputs.len()
            );
        }
        if inputs.len() == 3 {
            s.equals(&inputs[2].datum_type, &outputs[0].datum_type)?;
        }
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&inputs[1].rank, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, &outputs[0].datum_type)?;
        let (ca, ra) = if self.trans_a { (0, 1) } else { (1, 0) };
        let (cb, rb) = if self.trans_b { (0, 1) } else { (1, 0) };
        s.equals(&inputs[0].shape[ra], &outputs[0].shape[0])?;
        s.equals(&inputs[0].shape[ca], &inputs[1].shape[rb])?;
        s.equals(&inputs[1].shape[cb], &outputs[0].shape[1])?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (a, b, c) = (inputs[0], inputs[1], inputs.get(2));
        let axes = AxesMapping::for_numpy_matmul(2, self.trans_a, self.trans_b, false)?;
        let mut wire = model.wire_node(
            format!("{name}.ab"),
            tract_hir::tract_core::ops::einsum::EinSum::new(axes, model.outlet_fact(a)?.datum_type),
            [a, b].as_ref(),
        )?[0];
        if self.alpha != 1.0 {
            let alpha = tensor0(self.alpha).broadcast_into_rank(model.outlet_fact(wire)?.rank())?;
            let alpha = model.add_const(format!("{name}.alpha_ab.cst"), alpha)?;
            wire =
                model.wire_node(format!("{name}.alpha_ab"), ops::math::mul(), &[alpha, wire])?[0];
        }
        if self.beta != 0.0f32 {
            if let Some(&c) = c {
                let mut c = c;
                while model.outlet_fact(wire)?.rank() > model.outlet_fact(c)?.rank() {
                    c = model.wire_node(
                        format!("{}.c_add_axis_{}", name, model.outlet_fact(c)?.rank()),
                        tract_hir::tract_core::ops::change_axes::AxisOp::Add(0),
                        &[c],
                    )?[0];
                }
                let beta =
                    tensor0(self.beta).broadcast_into_rank(model.outlet_fact(wire)?.rank())?;
                let beta = model.add_const(format!("{name}.beta_c.cst"), beta)?;
                let beta_c =
                    model.wire_node(format!("{name}.beta_c"), ops::math::mul(), &[beta, c])?[0];
                wire = model.wire_node(name, ops::math::add(), &[wire, beta_c])?[0];
            }
        }
        Ok(tvec!(wire))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Pow;

impl Expansion for Pow {
    fn name(&self) -> StaticName {
        "Pow".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.with(&inputs[0].shape, move |s, a_shape| {
            s.with(&inputs[1].shape, move |s, b_shape| {
                if let Ok(Some(c_shape)) =
                    tract_hir::infer::helpers::infer_shape_broadcasting(&[&a_shape, &b_shape])
                {
                    s.equals(&outputs[0].shape, c_shape)?;
                }
                Ok(())
            })
        })?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let dta = model.outlet_fact(inputs[0])?.datum_type;
        let dtb = model.outlet_fact(inputs[1])?.datum_type;
        let mut wires = ops::binary::wire_rank_broadcast(name, model, inputs)?;
        if dta.is_integer() != dtb.is_integer() {
            wires = ops::binary::wire_cast(name, model, &wires, DatumType::F64)?;
            wires = model.wire_node(format!("{name}.pow"), ops::math::pow(), &wires)?;
            model.wire_node(name, ops::cast::cast(dta), &wires)
        } else {
            let dt = dta
                .common_super_type(dtb)
                .with_context(|| format!("Pow of {dta:?} by {dtb:?}"))?;
            wires = ops::binary::wire_cast(name, model, &wires, dt)?;
            model.wire_node(name, ops::math::pow(), &wires)
        }
    }
}

/// ReduceSum from opset 13 and every other reduction from opset 18 take their axes
/// as an input; before, as an attribute.
fn reduce(ctx: &ParsingContext, node: &NodeProto, reducer: ops::nn::Reducer) -> Built {
    if (ctx.onnx_operator_set_version >= 13 && node.op_type == "ReduceSum")
        || ctx.onnx_operator_set_version >= 18
    {
        let op = Reduce13 {
            have_axis_input: node.input.len() == 2,
            keep_dims: node.get_attr_opt("keepdims")?.unwrap_or(1i64) == 1,
            noop_with_empty_axes: node.get_attr_opt("noop_with_empty_axes")?.unwrap_or(0i64) == 1,
            reducer,
        };
        Ok((expand(op), vec![]))
    } else {
        let axes = node.get_attr_opt_vec("axes")?;
        let keep_dims = node.get_attr_opt("keepdims")?.unwrap_or(1i64) == 1;
        Ok((
            expand(ops::nn::Reduce::new(axes, keep_dims, reducer)),
            vec![],
        ))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Reduce13 {
    have_axis_input: bool,
    keep_dims: bool,
    noop_with_empty_axes: bool,
    reducer: ops::nn::Reducer,
}

impl Reduce13 {
    fn axes(&self, given: Vec<i64>, rank: usize) -> Vec<i64> {
        if !given.is_empty() || self.noop_with_empty_axes {
            given
        } else {
            (0..rank as i64).collect()
        }
    }

    fn shape_rules<'r>(
        &self,
        s: &mut Solver<'r>,
        input: &'r TensorProxy,
        output: &'r TensorProxy,
        axes: Vec<i64>,
    ) -> InferenceResult {
        let n = axes.len() as i64;
        let op = ops::nn::Reduce::new(Some(axes), self.keep_dims, self.reducer);
        if self.keep_dims {
            s.equals(&input.rank, &output.rank)?;
        } else {
            s.equals(input.rank.bex() - n, &output.rank)?;
        }
        s.given(&input.shape, move |s, shape| {
            s.equals(&output.shape, op.output_shape(&shape))
        })
    }
}

impl Expansion for Reduce13 {
    fn name(&self) -> StaticName {
        "Reduce13".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1 + self.have_axis_input as usize)?;
        check_output_arity(outputs, 1)?;
        if let ops::nn::Reducer::ArgMax(_) | ops::nn::Reducer::ArgMin(_) = self.reducer {
            s.equals(&outputs[0].datum_type, DatumType::I64)?;
        } else {
            s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        }
        if self.have_axis_input {
            s.given_2(&inputs[0].rank, &inputs[1].value, move |s, rank, axes| {
                let given = axes
                    .cast_to::<i64>()?
                    .try_as_plain_ram()?
                    .as_slice::<i64>()?
                    .to_vec();
                self.shape_rules(s, &inputs[0], &outputs[0], self.axes(given, rank as usize))
            })
        } else {
            s.given(&inputs[0].rank, move |s, rank| {
                self.shape_rules(s, &inputs[0], &outputs[0], self.axes(vec![], rank as usize))
            })
        }
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let given: Vec<i64> = if self.have_axis_input {
            model
                .outlet_fact(inputs[1])?
                .konst
                .as_ref()
                .context("expected axes as a constant")?
                .try_as_plain_ram()?
                .as_slice::<i64>()?
                .to_vec()
        } else {
            vec![]
        };
        let axes = self.axes(given, model.outlet_fact(inputs[0])?.rank());
        ops::nn::Reduce::new(Some(axes), self.keep_dims, self.reducer).wire(
            prefix,
            model,
            &inputs[0..1],
        )
    }
}

fn squeeze(ctx: &ParsingContext, node: &NodeProto) -> Built {
    if ctx.onnx_operator_set_version < 13 {
        let axes = node
            .get_attr_vec::<i64>("axes")?
            .into_iter()
            .map(|x| x as isize)
            .collect();
        Ok((expand(ops::array::Squeeze::new(Some(axes))), vec![]))
    } else {
        Ok((expand(Squeeze13), vec![]))
    }
}

/// The axes of a constant axes tensor.
fn const_axes(t: &Tensor) -> TractResult<Vec<isize>> {
    Ok(t.cast_to::<i64>()?
        .try_as_plain_ram()?
        .as_slice::<i64>()?
        .iter()
        .map(|i| *i as isize)
        .collect())
}

/// Without an axes input, every axis of size 1.
fn unit_axes(shape: &[TDim]) -> Vec<isize> {
    shape
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_one())
        .map(|(i, _)| i as isize)
        .collect()
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Squeeze13;

impl Expansion for Squeeze13 {
    fn name(&self) -> StaticName {
        "Squeeze13".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        if inputs.is_empty() {
            bail!("Wrong input number. Rules expect at least 1, node has 0.");
        }
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        if inputs.len() == 2 {
            s.given_2(&inputs[0].shape, &inputs[1].value, move |s, shape, axes| {
                let op = ops::array::Squeeze::new(Some(const_axes(&axes)?));
                s.equals(&outputs[0].shape, op.output_shape(&shape)?)
            })
        } else {
            s.given(&inputs[0].shape, move |s, shape| {
                let op = ops::array::Squeeze::new(Some(unit_axes(&shape)));
                s.equals(&outputs[0].shape, op.output_shape(&shape)?)
            })
        }
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let axes = if inputs.len() == 2 {
            let axes = model
                .outlet_fact(inputs[1])?
                .konst
                .clone()
                .context("Need axes to be a constant")?;
            const_axes(&axes)?
        } else {
            unit_axes(&model.outlet_fact(inputs[0])?.shape.to_tvec())
        };
        ops::array::Squeeze::new(Some(axes)).wire(prefix, model, &inputs[0..1])
    }
}

fn unsqueeze(ctx: &ParsingContext, node: &NodeProto) -> Built {
    if ctx.onnx_operator_set_version < 13 {
        let axes = node
            .get_attr_vec::<i64>("axes")?
            .into_iter()
            .map(|x| x as isize)
            .collect();
        Ok((expand(ops::array::AddDims::new(axes)), vec![]))
    } else {
        Ok((expand(Unsqueeze13), vec![]))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Unsqueeze13;

impl Expansion for Unsqueeze13 {
    fn name(&self) -> StaticName {
        "Unsqueeze13".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[1].value, move |s, shape, axes| {
            let op = ops::array::AddDims::new(const_axes(&axes)?);
            s.equals(&outputs[0].shape, op.output_shape(&shape))
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let axes = model
            .outlet_fact(inputs[1])?
            .konst
            .clone()
            .context("Need axes to be a constant")?;
        ops::array::AddDims::new(const_axes(&axes)?).wire(prefix, model, &inputs[0..1])
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Topk {
    axis: i64,
    largest: bool,
}

impl Expansion for Topk {
    fn name(&self) -> StaticName {
        "Topk".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        solver: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 2)?;
        solver.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        solver.equals(&outputs[1].datum_type, i64::datum_type())?;
        solver.equals(&inputs[0].rank, &outputs[0].rank)?;
        solver.equals(&inputs[0].rank, &outputs[1].rank)?;
        solver.equals(&inputs[1].rank, 1)?;
        solver.equals(&inputs[1].shape[0], 1.to_dim())?;
        solver.given(&inputs[0].rank, move |s, rank| {
            let axis = if self.axis >= 0 {
                self.axis
            } else {
                self.axis + rank
            } as usize;
            for ix in 0..rank as usize {
                if ix != axis {
                    s.equals(&inputs[0].shape[ix], &outputs[0].shape[ix])?;
                    s.equals(&inputs[0].shape[ix], &outputs[1].shape[ix])?;
                } else {
                    s.given(&inputs[1].value, move |s, k| {
                        if let Ok(k) = k
                            .cast_to::<TDim>()
                            .and_then(|t| t.try_as_plain_ram()?.to_scalar::<TDim>().cloned())
                        {
                            s.equals(&outputs[0].shape[ix], k.clone())?;
                            s.equals(&outputs[1].shape[ix], k)?;
                        }
                        Ok(())
                    })?;
                }
            }
            Ok(())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank() as i64;
        let axis = if self.axis >= 0 {
            self.axis
        } else {
            self.axis + rank
        } as usize;
        let fallback_k = model.symbols.new_with_prefix("k").into();
        model.wire_node(
            prefix,
            tract_hir::tract_core::ops::array::Topk {
                axis,
                fallback_k,
                largest: self.largest,
            },
            &[inputs[0], inputs[1]],
        )
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }
}

/// Cast between numeric types (a bundle is float32 throughout; strings are not parsed).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Cast {
    to: DatumType,
}

impl Expansion for Cast {
    fn name(&self) -> StaticName {
        "onnx.Cast".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.to.bex())?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(
            prefix,
            tract_hir::tract_core::ops::cast::cast(self.to),
            &[inputs[0]],
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
