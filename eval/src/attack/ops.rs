//! Backward rules, one per operator: given `dy`, the gradient at a node's first output, add
//! the gradients of its active inputs (see [`super::grad::Ctx::add_grad`]).
//!
//! Every rule is written in stock ONNX operators. Shapes are taken at run time (`Shape`,
//! `Size`) wherever the static ones are unknown, so the same gradient graph serves any batch
//! size. The conventions at non-differentiable points follow PyTorch: `Relu` has gradient 0
//! at 0, `Clip` passes the gradient strictly inside `(min, max)`, `MaxPool` routes it to the
//! first maximum of each window (ONNX Runtime's `Indices`).

use std::collections::{HashMap, HashSet};

use engine::onnx::Attr;
use engine::onnx::proto::{NodeProto, TensorProto, tensor_proto::DataType};

use super::grad::Ctx;
use super::shape::SDim;
use super::{AttackError, resample};

/// The operators with a backward rule. Some rules handle only part of an operator:
///
/// - `Pad`: constant mode on any axis, and reflect mode (numpy's `reflect`: the edge is not
///   repeated) on the last two axes with widths below the axis size;
/// - `Resize`: nearest mode with `coordinate_transformation_mode = asymmetric` and
///   `nearest_mode = floor` (pixel repetition) by constant integer factors on the last two
///   axes, given as `scales`, or as `sizes` that are integer multiples of a static input shape;
/// - `Slice`: step 1, constant axes; starts and ends constants or values computed from
///   shapes (`Shape` of another tensor, say);
/// - `Conv`, pooling: explicit pads (`auto_pad` NOTSET or VALID).
///
/// `Shape` and the other shape, index and comparison operators are not listed: their
/// outputs carry no gradient, so they may read image-dependent values freely.
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Reciprocal",
    "Abs",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Sum",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceSum",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Gemm",
    "MatMul",
    "Concat",
    "Pad",
    "Softmax",
    "LogSoftmax",
    "Identity",
    "Dropout",
    "Cast",
    "Where",
    "Max",
    "Min",
    "Pow",
    "Slice",
    "Split",
    "Resize",
];

pub(crate) const INT_MAX: i64 = i64::MAX;

// ----- attribute and constant helpers -----

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a engine::onnx::proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute, or `default`.
pub(crate) fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

/// A float attribute, or `default`.
pub(crate) fn attr_float(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}

/// An integer-list attribute.
pub(crate) fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// A string attribute.
pub(crate) fn attr_str(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The tensor a `Constant` node produces, as a `TensorProto` named after its output.
pub(crate) fn constant_value(n: &NodeProto) -> Option<TensorProto> {
    let out = n.output.first()?.clone();
    let a = n.attribute.first()?;
    let mut t = match a.name.as_str() {
        "value" => a.t.as_ref()?.clone(),
        "value_float" => engine::onnx::tensor_f32(&out, &[], vec![a.f]).ok()?,
        "value_floats" => engine::onnx::tensor_f32(&out, &[a.floats.len() as i64], a.floats.clone()).ok()?,
        "value_int" => engine::onnx::tensor_i64(&out, &[], vec![a.i]).ok()?,
        "value_ints" => engine::onnx::tensor_i64(&out, &[a.ints.len() as i64], a.ints.clone()).ok()?,
        _ => return None,
    };
    t.name = out;
    Some(t)
}

/// The values of an int64 (or int32) constant.
pub(crate) fn const_i64s(consts: &HashMap<String, TensorProto>, name: &str) -> Option<Vec<i64>> {
    let t = consts.get(name)?;
    if t.data_type == DataType::INT64 as i32 {
        if !t.raw_data.is_empty() {
            return Some(
                t.raw_data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            );
        }
        return Some(t.int64_data.clone());
    }
    if t.data_type == DataType::INT32 as i32 {
        if !t.raw_data.is_empty() {
            return Some(
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                    .collect(),
            );
        }
        return Some(t.int32_data.iter().map(|&v| i64::from(v)).collect());
    }
    None
}

/// The values of a float32 constant.
pub(crate) fn const_f32s(consts: &HashMap<String, TensorProto>, name: &str) -> Option<Vec<f32>> {
    let t = consts.get(name)?;
    if t.data_type != DataType::FLOAT as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

/// How many leading outputs of `n` carry a gradient (MaxPool's indices and Dropout's mask
/// do not).
pub(crate) fn differentiable_outputs(n: &NodeProto) -> usize {
    match n.op_type.as_str() {
        "MaxPool" | "Dropout" | "BatchNormalization" => 1,
        _ => n.output.len(),
    }
}

fn label(n: &NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("#{index}")
    } else {
        n.name.clone()
    }
}

/// The error for node `n` (the `index`-th of the graph) and why its rule cannot handle it.
pub(crate) fn unsupported(n: &NodeProto, index: usize, reason: impl Into<String>) -> AttackError {
    AttackError::Unsupported {
        op: n.op_type.clone(),
        node: label(n, index),
        reason: reason.into(),
    }
}

/// Checks, before anything is written, that node `n` (active, on the path to the logits)
/// has a rule and attributes the rule handles.
pub(crate) fn check(
    n: &NodeProto,
    index: usize,
    active: &HashSet<String>,
    consts: &HashMap<String, TensorProto>,
) -> Result<(), AttackError> {
    if !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return Err(unsupported(
            n,
            index,
            format!("operators of domain `{}` have no backward rule", n.domain),
        ));
    }
    if !SUPPORTED.contains(&n.op_type.as_str()) {
        return Err(unsupported(n, index, "no backward rule for this operator"));
    }
    let is_active = |i: usize| n.input.get(i).is_some_and(|v| active.contains(v));
    // Inputs that must not depend on the image (weights, shapes, bounds).
    let data_only: &[usize] = match n.op_type.as_str() {
        "Conv" | "BatchNormalization" => &[1, 2, 3, 4],
        "Clip" | "Pad" | "Reshape" | "Squeeze" | "Unsqueeze" | "ReduceMean" | "ReduceSum" | "Dropout" => &[1, 2, 3],
        "Slice" => &[1, 2, 3, 4],
        "Split" | "Pow" => &[1],
        "Resize" => &[1, 2, 3],
        _ => &[],
    };
    if let Some(&i) = data_only.iter().find(|&&i| is_active(i)) {
        return Err(unsupported(
            n,
            index,
            format!("input {i} (`{}`) depends on the image; only input 0 may", n.input[i]),
        ));
    }
    let auto_pad = attr_str(n, "auto_pad").unwrap_or_default();
    if !(auto_pad.is_empty() || auto_pad == "NOTSET" || auto_pad == "VALID") {
        return Err(unsupported(
            n,
            index,
            format!("auto_pad {auto_pad} is not handled; use explicit pads"),
        ));
    }
    match n.op_type.as_str() {
        "Conv" if attr_ints(n, "kernel_shape").is_none() && !consts.contains_key(&n.input[1]) => {
            return Err(unsupported(
                n,
                index,
                "no kernel_shape and the weights are not a constant",
            ));
        }
        "BatchNormalization" => {
            if attr_int(n, "training_mode", 0) != 0 {
                return Err(unsupported(
                    n,
                    index,
                    "training_mode=1 (only inference BatchNormalization)",
                ));
            }
            if !consts.contains_key(&n.input[1]) {
                return Err(unsupported(n, index, "the scale is not a constant"));
            }
        }
        "MaxPool" if attr_int(n, "storage_order", 0) != 0 => {
            return Err(unsupported(n, index, "storage_order=1"));
        }
        "AveragePool" if attr_ints(n, "kernel_shape").is_none() => {
            return Err(unsupported(n, index, "no kernel_shape"));
        }
        "Pad" => {
            let mode = attr_str(n, "mode").unwrap_or_else(|| "constant".into());
            if mode != "constant" && mode != "reflect" {
                return Err(unsupported(
                    n,
                    index,
                    format!("mode {mode} (only constant and reflect padding)"),
                ));
            }
            let pads = attr_ints(n, "pads").or_else(|| n.input.get(1).and_then(|p| const_i64s(consts, p)));
            match pads {
                None => return Err(unsupported(n, index, "the pads are not a constant")),
                Some(p) if p.iter().any(|&v| v < 0) => {
                    return Err(unsupported(n, index, format!("negative pads {p:?}")));
                }
                _ => {}
            }
            if let Some(axes) = n.input.get(3).filter(|a| !a.is_empty())
                && const_i64s(consts, axes).is_none()
            {
                return Err(unsupported(n, index, "the axes are not a constant"));
            }
            if mode == "reflect" && n.input.get(3).is_none_or(|a| a.is_empty()) {
                // Without an axes input the pads give the rank; with one, the rule checks the
                // axes against the input's static rank.
                resample::reflect_pads(n, index, consts, None)?;
            }
        }
        "Resize" => resample::check_resize(n, index, consts)?,
        "ReduceMean" | "ReduceSum" => {
            if let Some(axes) = n.input.get(1).filter(|a| !a.is_empty())
                && const_i64s(consts, axes).is_none()
            {
                return Err(unsupported(n, index, "the axes are not a constant"));
            }
        }
        "Dropout" if n.input.get(2).is_some_and(|t| !t.is_empty()) && !consts.contains_key(&n.input[2]) => {
            return Err(unsupported(n, index, "training_mode is not a constant"));
        }
        "Slice" => {
            // Starts and ends may be computed (from shapes: they cannot depend on the image's
            // values, see `data_only`); the axes and steps must be constants.
            for (i, what) in [(3, "axes"), (4, "steps")] {
                if let Some(v) = n.input.get(i).filter(|v| !v.is_empty())
                    && const_i64s(consts, v).is_none()
                {
                    return Err(unsupported(n, index, format!("the {what} are not a constant")));
                }
            }
            if n.input.get(3).is_none_or(|v| v.is_empty())
                && n.input.get(1).is_none_or(|v| const_i64s(consts, v).is_none())
            {
                return Err(unsupported(
                    n,
                    index,
                    "no axes and the starts are not a constant (the sliced axes are unknown)",
                ));
            }
            if let Some(steps) = n
                .input
                .get(4)
                .filter(|v| !v.is_empty())
                .and_then(|v| const_i64s(consts, v))
                && steps.iter().any(|&s| s != 1)
            {
                return Err(unsupported(n, index, format!("steps {steps:?} (only step 1)")));
            }
        }
        _ => {}
    }
    Ok(())
}

// ----- the rules -----

/// Adds the gradients of node `n`'s active inputs, given `dy` at its first output.
pub(crate) fn backward(ctx: &mut Ctx, n: &NodeProto, index: usize, dy: &str) -> Result<(), AttackError> {
    let x = n.input.first().cloned().unwrap_or_default();
    let y = n.output[0].clone();
    match n.op_type.as_str() {
        "Identity" | "Dropout" | "Cast" => pass(ctx, &x, dy.to_string()),
        "Neg" => {
            let g = ctx.op("Neg", &[dy], vec![]);
            pass(ctx, &x, g);
        }
        "Relu" => {
            let z = ctx.scalar_f32(0.0);
            let mask = ctx.op("Greater", &[&y, &z], vec![]);
            let g = ctx.op("Where", &[&mask, dy, &z], vec![]);
            pass(ctx, &x, g);
        }
        "LeakyRelu" => {
            let alpha = ctx.scalar_f32(attr_float(n, "alpha", 0.01));
            let z = ctx.scalar_f32(0.0);
            let mask = ctx.op("Greater", &[&x, &z], vec![]);
            let scaled = ctx.op("Mul", &[dy, &alpha], vec![]);
            let g = ctx.op("Where", &[&mask, dy, &scaled], vec![]);
            pass(ctx, &x, g);
        }
        "Clip" => {
            let (lo, hi) = if n.input.len() > 1 || attr(n, "min").is_none() && attr(n, "max").is_none() {
                (
                    n.input.get(1).filter(|v| !v.is_empty()).cloned(),
                    n.input.get(2).filter(|v| !v.is_empty()).cloned(),
                )
            } else {
                let lo = attr(n, "min").map(|a| a.f);
                let hi = attr(n, "max").map(|a| a.f);
                (lo.map(|v| ctx.scalar_f32(v)), hi.map(|v| ctx.scalar_f32(v)))
            };
            let mut g = dy.to_string();
            let z = ctx.scalar_f32(0.0);
            if let Some(lo) = lo {
                let m = ctx.op("Greater", &[&x, &lo], vec![]);
                g = ctx.op("Where", &[&m, &g, &z], vec![]);
            }
            if let Some(hi) = hi {
                let m = ctx.op("Less", &[&x, &hi], vec![]);
                g = ctx.op("Where", &[&m, &g, &z], vec![]);
            }
            pass(ctx, &x, g);
        }
        "Sigmoid" => {
            let one = ctx.scalar_f32(1.0);
            let om = ctx.op("Sub", &[&one, &y], vec![]);
            let d = ctx.op("Mul", &[&y, &om], vec![]);
            let g = ctx.op("Mul", &[dy, &d], vec![]);
            pass(ctx, &x, g);
        }
        "Tanh" => {
            let one = ctx.scalar_f32(1.0);
            let sq = ctx.op("Mul", &[&y, &y], vec![]);
            let d = ctx.op("Sub", &[&one, &sq], vec![]);
            let g = ctx.op("Mul", &[dy, &d], vec![]);
            pass(ctx, &x, g);
        }
        "HardSigmoid" => {
            let alpha = attr_float(n, "alpha", 0.2);
            let beta = attr_float(n, "beta", 0.5);
            let (a, b) = (ctx.scalar_f32(alpha), ctx.scalar_f32(beta));
            let t = ctx.op("Mul", &[&x, &a], vec![]);
            let t = ctx.op("Add", &[&t, &b], vec![]);
            let (z, one) = (ctx.scalar_f32(0.0), ctx.scalar_f32(1.0));
            let above = ctx.op("Greater", &[&t, &z], vec![]);
            let below = ctx.op("Less", &[&t, &one], vec![]);
            let inside = ctx.op("And", &[&above, &below], vec![]);
            let scaled = ctx.op("Mul", &[dy, &a], vec![]);
            let g = ctx.op("Where", &[&inside, &scaled, &z], vec![]);
            pass(ctx, &x, g);
        }
        "HardSwish" => {
            // d/dx x * relu6(x + 3) / 6: 0 below -3, 1 above 3, x / 3 + 1/2 between (PyTorch).
            let (three, m3, third, half) = (
                ctx.scalar_f32(3.0),
                ctx.scalar_f32(-3.0),
                ctx.scalar_f32(1.0 / 3.0),
                ctx.scalar_f32(0.5),
            );
            let (z, one) = (ctx.scalar_f32(0.0), ctx.scalar_f32(1.0));
            let d = ctx.op("Mul", &[&x, &third], vec![]);
            let d = ctx.op("Add", &[&d, &half], vec![]);
            let hi = ctx.op("Greater", &[&x, &three], vec![]);
            let d = ctx.op("Where", &[&hi, &one, &d], vec![]);
            let lo = ctx.op("Less", &[&x, &m3], vec![]);
            let d = ctx.op("Where", &[&lo, &z, &d], vec![]);
            let g = ctx.op("Mul", &[dy, &d], vec![]);
            pass(ctx, &x, g);
        }
        "Exp" => {
            let g = ctx.op("Mul", &[dy, &y], vec![]);
            pass(ctx, &x, g);
        }
        "Log" => {
            let g = ctx.op("Div", &[dy, &x], vec![]);
            pass(ctx, &x, g);
        }
        "Sqrt" => {
            let two = ctx.scalar_f32(2.0);
            let d = ctx.op("Mul", &[&y, &two], vec![]);
            let g = ctx.op("Div", &[dy, &d], vec![]);
            pass(ctx, &x, g);
        }
        "Reciprocal" => {
            let sq = ctx.op("Mul", &[&y, &y], vec![]);
            let g = ctx.op("Mul", &[dy, &sq], vec![]);
            let g = ctx.op("Neg", &[&g], vec![]);
            pass(ctx, &x, g);
        }
        "Abs" => {
            let s = ctx.op("Sign", &[&x], vec![]);
            let g = ctx.op("Mul", &[dy, &s], vec![]);
            pass(ctx, &x, g);
        }
        "Add" | "Sum" => {
            for v in n.input.iter() {
                if ctx.is_active(v) {
                    let g = reduce_to(ctx, dy, v, &y);
                    ctx.add_grad(v, g);
                }
            }
        }
        "Sub" => {
            let (a, b) = (&n.input[0], &n.input[1]);
            if ctx.is_active(a) {
                let g = reduce_to(ctx, dy, a, &y);
                ctx.add_grad(a, g);
            }
            if ctx.is_active(b) {
                let neg = ctx.op("Neg", &[dy], vec![]);
                let g = reduce_to(ctx, &neg, b, &y);
                ctx.add_grad(b, g);
            }
        }
        "Mul" => {
            let (a, b) = (n.input[0].clone(), n.input[1].clone());
            if ctx.is_active(&a) {
                let g = ctx.op("Mul", &[dy, &b], vec![]);
                let g = reduce_to(ctx, &g, &a, &y);
                ctx.add_grad(&a, g);
            }
            if ctx.is_active(&b) {
                let g = ctx.op("Mul", &[dy, &a], vec![]);
                let g = reduce_to(ctx, &g, &b, &y);
                ctx.add_grad(&b, g);
            }
        }
        "Div" => {
            let (a, b) = (n.input[0].clone(), n.input[1].clone());
            if ctx.is_active(&a) {
                let g = ctx.op("Div", &[dy, &b], vec![]);
                let g = reduce_to(ctx, &g, &a, &y);
                ctx.add_grad(&a, g);
            }
            if ctx.is_active(&b) {
                // d(a/b)/db = -y / b
                let q = ctx.op("Div", &[&y, &b], vec![]);
                let g = ctx.op("Mul", &[dy, &q], vec![]);
                let g = ctx.op("Neg", &[&g], vec![]);
                let g = reduce_to(ctx, &g, &b, &y);
                ctx.add_grad(&b, g);
            }
        }
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => {
            let s = ctx.shape_of(&x);
            let g = ctx.op("Reshape", &[dy, &s], vec![]);
            pass(ctx, &x, g);
        }
        "Transpose" => {
            let perm = match attr_ints(n, "perm") {
                Some(p) => p,
                None => {
                    let rank = ctx
                        .static_shape(&x)
                        .map(<[SDim]>::len)
                        .ok_or_else(|| unsupported(n, index, "no perm and the input's rank is unknown"))?;
                    (0..rank as i64).rev().collect()
                }
            };
            let mut inverse = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                let p = usize::try_from(p).ok().filter(|&p| p < perm.len());
                let p = p.ok_or_else(|| unsupported(n, index, format!("perm {perm:?} is not a permutation")))?;
                inverse[p] = i as i64;
            }
            let g = ctx.op("Transpose", &[dy], vec![Attr::ints("perm", &inverse)]);
            pass(ctx, &x, g);
        }
        "Softmax" => {
            let axis = attr_int(n, "axis", -1);
            let axes = ctx.vec_i64(&[axis]);
            let p = ctx.op("Mul", &[dy, &y], vec![]);
            let s = ctx.op("ReduceSum", &[&p, &axes], vec![Attr::int("keepdims", 1)]);
            let d = ctx.op("Sub", &[dy, &s], vec![]);
            let g = ctx.op("Mul", &[&y, &d], vec![]);
            pass(ctx, &x, g);
        }
        "LogSoftmax" => {
            let axis = attr_int(n, "axis", -1);
            let axes = ctx.vec_i64(&[axis]);
            let s = ctx.op("ReduceSum", &[dy, &axes], vec![Attr::int("keepdims", 1)]);
            let p = ctx.op("Exp", &[&y], vec![]);
            let ps = ctx.op("Mul", &[&p, &s], vec![]);
            let g = ctx.op("Sub", &[dy, &ps], vec![]);
            pass(ctx, &x, g);
        }
        "BatchNormalization" => {
            // Inference BN is affine: with mean = bias = 0 it is dy * scale / sqrt(var + eps).
            let scale = n.input[1].clone();
            let var = n.input[4].clone();
            let c = ctx
                .consts
                .get(&scale)
                .map(|t| t.dims.iter().product::<i64>())
                .ok_or_else(|| unsupported(n, index, "the scale is not a constant"))?;
            let zeros = ctx.const_f32("bn_zeros", &[c], vec![0.0; c as usize]);
            let eps = attr_float(n, "epsilon", 1e-5);
            let g = ctx.op(
                "BatchNormalization",
                &[dy, &scale, &zeros, &zeros, &var],
                vec![Attr::float("epsilon", eps)],
            );
            pass(ctx, &x, g);
        }
        "Conv" => conv(ctx, n, index, dy)?,
        "MaxPool" => {
            let indices = n.output[1].clone();
            let size = ctx.op("Size", &[&x], vec![]);
            let one = ctx.vec_i64(&[1]);
            let size1 = ctx.op("Reshape", &[&size, &one], vec![]);
            let zeros = ctx.op(
                "ConstantOfShape",
                &[&size1],
                vec![Attr::tensor(
                    "value",
                    engine::onnx::tensor_f32("zero", &[1], vec![0.0]).map_err(AttackError::from)?,
                )],
            );
            let flat = ctx.vec_i64(&[-1]);
            let idx = ctx.op("Reshape", &[&indices, &flat], vec![]);
            let upd = ctx.op("Reshape", &[dy, &flat], vec![]);
            let scattered = ctx.op(
                "ScatterElements",
                &[&zeros, &idx, &upd],
                vec![Attr::int("axis", 0), Attr::string("reduction", "add")],
            );
            let s = ctx.shape_of(&x);
            let g = ctx.op("Reshape", &[&scattered, &s], vec![]);
            pass(ctx, &x, g);
        }
        "AveragePool" => average_pool(ctx, n, dy)?,
        "GlobalAveragePool" => {
            let s = ctx.shape_of(&x);
            let e = ctx.op("Expand", &[dy, &s], vec![]);
            let scale = size_ratio(ctx, &y, &x);
            let g = ctx.op("Mul", &[&e, &scale], vec![]);
            pass(ctx, &x, g);
        }
        "GlobalMaxPool" => {
            // To every position equal to its channel's maximum (all of them on ties).
            let z = ctx.scalar_f32(0.0);
            let mask = ctx.op("Equal", &[&x, &y], vec![]);
            let g = ctx.op("Where", &[&mask, dy, &z], vec![]);
            pass(ctx, &x, g);
        }
        "ReduceMean" | "ReduceSum" => {
            let axes = match n.input.get(1).filter(|a| !a.is_empty()) {
                Some(a) => const_i64s(&ctx.consts, a),
                None => attr_ints(n, "axes"),
            };
            let keep = attr_int(n, "keepdims", 1) != 0;
            let noop = attr_int(n, "noop_with_empty_axes", 0) != 0;
            if noop && axes.as_ref().is_none_or(Vec::is_empty) {
                pass(ctx, &x, dy.to_string());
                return Ok(());
            }
            let mut g = dy.to_string();
            if let Some(axes) = axes.filter(|a| !a.is_empty())
                && !keep
            {
                let a = ctx.vec_i64(&axes);
                g = ctx.op("Unsqueeze", &[&g, &a], vec![]);
            }
            let s = ctx.shape_of(&x);
            g = ctx.op("Expand", &[&g, &s], vec![]);
            if n.op_type == "ReduceMean" {
                let scale = size_ratio(ctx, &y, &x);
                g = ctx.op("Mul", &[&g, &scale], vec![]);
            }
            pass(ctx, &x, g);
        }
        "Concat" => {
            let axis = attr_int(n, "axis", 0);
            let ax = ctx.vec_i64(&[axis]);
            let mut sizes = Vec::new();
            for v in &n.input {
                let s = ctx.shape_of(v);
                sizes.push(ctx.op("Gather", &[&s, &ax], vec![Attr::int("axis", 0)]));
            }
            let refs: Vec<&str> = sizes.iter().map(String::as_str).collect();
            let split = ctx.op("Concat", &refs, vec![Attr::int("axis", 0)]);
            let parts = ctx.op_multi("Split", &[dy, &split], n.input.len(), vec![Attr::int("axis", axis)]);
            for (v, part) in n.input.iter().zip(parts) {
                if ctx.is_active(v) {
                    ctx.add_grad(v, part);
                }
            }
        }
        "Pad" if attr_str(n, "mode").is_some_and(|m| m == "reflect") => {
            resample::reflect_pad_backward(ctx, n, index, dy)?;
        }
        "Resize" => resample::nearest_resize_backward(ctx, n, index, dy)?,
        "Pad" => {
            let pads = attr_ints(n, "pads")
                .or_else(|| n.input.get(1).and_then(|p| const_i64s(&ctx.consts, p)))
                .ok_or_else(|| unsupported(n, index, "the pads are not a constant"))?;
            let k = pads.len() / 2;
            let axes: Vec<i64> = match n.input.get(3).filter(|a| !a.is_empty()) {
                Some(a) => const_i64s(&ctx.consts, a).ok_or_else(|| unsupported(n, index, "axes not constant"))?,
                None => (0..k as i64).collect(),
            };
            let begin = ctx.vec_i64(&pads[..k]);
            let ax = ctx.vec_i64(&axes);
            let s = ctx.shape_of(&x);
            let dims = ctx.op("Gather", &[&s, &ax], vec![Attr::int("axis", 0)]);
            let end = ctx.op("Add", &[&begin, &dims], vec![]);
            let g = ctx.op("Slice", &[dy, &begin, &end, &ax], vec![]);
            pass(ctx, &x, g);
        }
        "Gemm" => gemm(ctx, n, dy),
        "Where" => {
            let (cond, a, b) = (n.input[0].clone(), n.input[1].clone(), n.input[2].clone());
            let z = ctx.scalar_f32(0.0);
            if ctx.is_active(&a) {
                let g = ctx.op("Where", &[&cond, dy, &z], vec![]);
                let g = reduce_to(ctx, &g, &a, &y);
                ctx.add_grad(&a, g);
            }
            if ctx.is_active(&b) {
                let g = ctx.op("Where", &[&cond, &z, dy], vec![]);
                let g = reduce_to(ctx, &g, &b, &y);
                ctx.add_grad(&b, g);
            }
        }
        "Max" | "Min" => {
            // The gradient goes to every input equal to the result (all of them on ties).
            let z = ctx.scalar_f32(0.0);
            for v in &n.input {
                if ctx.is_active(v) {
                    let mask = ctx.op("Equal", &[v, &y], vec![]);
                    let g = ctx.op("Where", &[&mask, dy, &z], vec![]);
                    let g = reduce_to(ctx, &g, v, &y);
                    ctx.add_grad(v, g);
                }
            }
        }
        "Pow" => {
            // d/dx x^p = p * x^(p - 1), the exponent a constant or at least not image-dependent.
            let p = n.input[1].clone();
            let one = ctx.scalar_f32(1.0);
            let pm1 = ctx.op("Sub", &[&p, &one], vec![]);
            let xp = ctx.op("Pow", &[&x, &pm1], vec![]);
            let d = ctx.op("Mul", &[&xp, &p], vec![]);
            let g = ctx.op("Mul", &[dy, &d], vec![]);
            let g = reduce_to(ctx, &g, &x, &y);
            pass(ctx, &x, g);
        }
        "Slice" => slice(ctx, n, index, dy)?,
        "MatMul" => matmul(ctx, n, index, dy)?,
        other => return Err(unsupported(n, index, format!("no backward rule for {other}"))),
    }
    Ok(())
}

/// Adds `g` as the gradient of `x` if `x` is active.
pub(crate) fn pass(ctx: &mut Ctx, x: &str, g: String) {
    if ctx.is_active(x) {
        ctx.add_grad(x, g);
    }
}

/// `Size(num) / Size(den)` as a float scalar.
fn size_ratio(ctx: &mut Ctx, num: &str, den: &str) -> String {
    let a = ctx.op("Size", &[num], vec![]);
    let b = ctx.op("Size", &[den], vec![]);
    let a = ctx.op("Cast", &[&a], vec![Attr::int("to", DataType::FLOAT as i64)]);
    let b = ctx.op("Cast", &[&b], vec![Attr::int("to", DataType::FLOAT as i64)]);
    ctx.op("Div", &[&a, &b], vec![])
}

/// The gradient `g` (shaped like the broadcast output `out`) summed back to the shape of
/// `operand`: over the leading axes `operand` lacks and the axes where it has size 1.
pub(crate) fn reduce_to(ctx: &mut Ctx, g: &str, operand: &str, out: &str) -> String {
    if let (Some(a), Some(b)) = (ctx.static_shape(operand), ctx.static_shape(out)) {
        if a == b {
            return g.to_string();
        }
        if a.len() <= b.len() {
            let lead = b.len() - a.len();
            let mut axes: Vec<i64> = (0..lead as i64).collect();
            let mut ok = true;
            for (i, d) in a.iter().enumerate() {
                let o = &b[lead + i];
                if d == o {
                    continue;
                }
                if *d == SDim::Fixed(1) {
                    axes.push((lead + i) as i64);
                } else {
                    ok = false;
                }
            }
            if ok {
                if axes.is_empty() {
                    return g.to_string();
                }
                let ax = ctx.vec_i64(&axes);
                let r = ctx.op("ReduceSum", &[g, &ax], vec![Attr::int("keepdims", 1)]);
                if lead == 0 {
                    return r;
                }
                let s = ctx.shape_of(operand);
                return ctx.op("Reshape", &[&r, &s], vec![]);
            }
        }
    }
    // Run-time version: pad the operand's shape with leading ones to the gradient's rank and
    // sum over every axis where it is 1.
    let sx = ctx.shape_of(operand);
    let sg = ctx.op("Shape", &[g], vec![]);
    let rx = ctx.op("Size", &[&sx], vec![]);
    let rg = ctx.op("Size", &[&sg], vec![]);
    let diff = ctx.op("Sub", &[&rg, &rx], vec![]);
    let one = ctx.vec_i64(&[1]);
    let diff1 = ctx.op("Reshape", &[&diff, &one], vec![]);
    let ones = ctx.op(
        "ConstantOfShape",
        &[&diff1],
        vec![Attr::tensor(
            "value",
            engine::onnx::tensor_i64("one", &[1], vec![1]).unwrap_or_default(),
        )],
    );
    let padded = ctx.op("Concat", &[&ones, &sx], vec![Attr::int("axis", 0)]);
    let one_s = ctx.scalar_i64(1);
    let mask = ctx.op("Equal", &[&padded, &one_s], vec![]);
    let nz = ctx.op("NonZero", &[&mask], vec![]);
    let flat = ctx.vec_i64(&[-1]);
    let axes = ctx.op("Reshape", &[&nz, &flat], vec![]);
    let r = ctx.op(
        "ReduceSum",
        &[g, &axes],
        vec![Attr::int("keepdims", 1), Attr::int("noop_with_empty_axes", 1)],
    );
    ctx.op("Reshape", &[&r, &sx], vec![])
}

struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    pads: Vec<i64>,
    dilations: Vec<i64>,
}

impl Window {
    fn of(n: &NodeProto, kernel: Vec<i64>) -> Self {
        let sp = kernel.len();
        let valid = attr_str(n, "auto_pad").is_some_and(|p| p == "VALID");
        Self {
            strides: attr_ints(n, "strides").unwrap_or_else(|| vec![1; sp]),
            pads: if valid {
                vec![0; 2 * sp]
            } else {
                attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * sp])
            },
            dilations: attr_ints(n, "dilations").unwrap_or_else(|| vec![1; sp]),
            kernel,
        }
    }

    fn output_padding(&self) -> Vec<i64> {
        self.strides.iter().map(|s| s - 1).collect()
    }

    fn strided(&self) -> bool {
        self.strides.iter().any(|&s| s > 1)
    }
}

/// Slices the spatial axes (2..) of `g` to the spatial size of `like`.
fn crop_spatial(ctx: &mut Ctx, g: &str, like: &str, sp: usize) -> String {
    let s = ctx.shape_of(like);
    let two = ctx.vec_i64(&[2]);
    let max = ctx.vec_i64(&[INT_MAX]);
    let ends = ctx.op("Slice", &[&s, &two, &max], vec![]);
    let starts = ctx.vec_i64(&vec![0; sp]);
    let axes = ctx.vec_i64(&(2..2 + sp as i64).collect::<Vec<_>>());
    ctx.op("Slice", &[g, &starts, &ends, &axes], vec![])
}

fn conv(ctx: &mut Ctx, n: &NodeProto, index: usize, dy: &str) -> Result<(), AttackError> {
    let x = n.input[0].clone();
    let w = n.input[1].clone();
    let kernel = match attr_ints(n, "kernel_shape") {
        Some(k) => k,
        None => ctx
            .consts
            .get(&w)
            .map(|t| t.dims[2..].to_vec())
            .ok_or_else(|| unsupported(n, index, "no kernel_shape and the weights are not a constant"))?,
    };
    let win = Window::of(n, kernel);
    let sp = win.kernel.len();
    let group = attr_int(n, "group", 1);
    let full = ctx.op(
        "ConvTranspose",
        &[dy, &w],
        vec![
            Attr::ints("kernel_shape", &win.kernel),
            Attr::ints("strides", &win.strides),
            Attr::ints("pads", &win.pads),
            Attr::ints("dilations", &win.dilations),
            Attr::ints("output_padding", &win.output_padding()),
            Attr::int("group", group),
        ],
    );
    let g = if win.strided() {
        crop_spatial(ctx, &full, &x, sp)
    } else {
        full
    };
    pass(ctx, &x, g);
    Ok(())
}

fn average_pool(ctx: &mut Ctx, n: &NodeProto, dy: &str) -> Result<(), AttackError> {
    let x = n.input[0].clone();
    let win = Window::of(n, attr_ints(n, "kernel_shape").unwrap_or_default());
    let sp = win.kernel.len();
    let ceil = attr_int(n, "ceil_mode", 0) != 0;
    let include_pad = attr_int(n, "count_include_pad", 0) != 0;
    let ones_kernel = {
        let mut dims = vec![1, 1];
        dims.extend(&win.kernel);
        let len = win.kernel.iter().product::<i64>() as usize;
        ctx.const_f32("pool_kernel", &dims, vec![1.0; len])
    };
    // dy as [N * C, 1, ...spatial], so one single-channel kernel serves every channel.
    let sdy = ctx.op("Shape", &[dy], vec![]);
    let two = ctx.vec_i64(&[2]);
    let max = ctx.vec_i64(&[INT_MAX]);
    let out_spatial = ctx.op("Slice", &[&sdy, &two, &max], vec![]);
    let lead = ctx.vec_i64(&[-1, 1]);
    let shape4 = ctx.op("Concat", &[&lead, &out_spatial], vec![Attr::int("axis", 0)]);
    let dy4 = ctx.op("Reshape", &[dy, &shape4], vec![]);

    // How many values each window averaged.
    let scaled = if include_pad && !ceil {
        let inv = ctx.scalar_f32(1.0 / win.kernel.iter().product::<i64>() as f32);
        ctx.op("Mul", &[&dy4, &inv], vec![])
    } else {
        let sx = ctx.shape_of(&x);
        let x_spatial = ctx.op("Slice", &[&sx, &two, &max], vec![]);
        let one_one = ctx.vec_i64(&[1, 1]);
        let ones_shape = ctx.op("Concat", &[&one_one, &x_spatial], vec![Attr::int("axis", 0)]);
        let mut ones = ctx.op(
            "ConstantOfShape",
            &[&ones_shape],
            vec![Attr::tensor("value", engine::onnx::tensor_f32("one", &[1], vec![1.0])?)],
        );
        let mut conv_pads = win.pads.clone();
        if include_pad {
            // The padded area counts: pad the ones with ones, then convolve without padding.
            let mut pads = vec![0, 0];
            pads.extend(&win.pads[..sp]);
            pads.extend([0, 0]);
            pads.extend(&win.pads[sp..]);
            let pads = ctx.vec_i64(&pads);
            let one = ctx.scalar_f32(1.0);
            ones = ctx.op("Pad", &[&ones, &pads, &one], vec![]);
            conv_pads = vec![0; 2 * sp];
        }
        if ceil {
            for i in 0..sp {
                conv_pads[sp + i] += win.strides[i] - 1;
            }
        }
        let counts = ctx.op(
            "Conv",
            &[&ones, &ones_kernel],
            vec![
                Attr::ints("kernel_shape", &win.kernel),
                Attr::ints("strides", &win.strides),
                Attr::ints("pads", &conv_pads),
                Attr::ints("dilations", &win.dilations),
            ],
        );
        let counts = crop_spatial(ctx, &counts, dy, sp);
        ctx.op("Div", &[&dy4, &counts], vec![])
    };
    let full = ctx.op(
        "ConvTranspose",
        &[&scaled, &ones_kernel],
        vec![
            Attr::ints("kernel_shape", &win.kernel),
            Attr::ints("strides", &win.strides),
            Attr::ints("pads", &win.pads),
            Attr::ints("dilations", &win.dilations),
            Attr::ints("output_padding", &win.output_padding()),
        ],
    );
    let g4 = crop_spatial(ctx, &full, &x, sp);
    let sx = ctx.shape_of(&x);
    let g = ctx.op("Reshape", &[&g4, &sx], vec![]);
    pass(ctx, &x, g);
    Ok(())
}

fn gemm(ctx: &mut Ctx, n: &NodeProto, dy: &str) {
    let (a, b) = (n.input[0].clone(), n.input[1].clone());
    let alpha = attr_float(n, "alpha", 1.0);
    let beta = attr_float(n, "beta", 1.0);
    let ta = attr_int(n, "transA", 0) != 0;
    let tb = attr_int(n, "transB", 0) != 0;
    let y = n.output[0].clone();
    if ctx.is_active(&a) {
        // d(op(A)) = alpha * dY * op(B)^T
        let g = ctx.op(
            "Gemm",
            &[dy, &b],
            vec![Attr::float("alpha", alpha), Attr::int("transB", i64::from(!tb))],
        );
        let g = if ta {
            ctx.op("Transpose", &[&g], vec![Attr::ints("perm", &[1, 0])])
        } else {
            g
        };
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        // d(op(B)) = alpha * op(A)^T * dY
        let g = ctx.op(
            "Gemm",
            &[&a, dy],
            vec![Attr::float("alpha", alpha), Attr::int("transA", i64::from(!ta))],
        );
        let g = if tb {
            ctx.op("Transpose", &[&g], vec![Attr::ints("perm", &[1, 0])])
        } else {
            g
        };
        ctx.add_grad(&b, g);
    }
    if let Some(c) = n.input.get(2).filter(|c| ctx.is_active(c)).cloned() {
        let bs = ctx.scalar_f32(beta);
        let g = ctx.op("Mul", &[dy, &bs], vec![]);
        let g = reduce_to(ctx, &g, &c, &y);
        ctx.add_grad(&c, g);
    }
}

fn matmul(ctx: &mut Ctx, n: &NodeProto, index: usize, dy: &str) -> Result<(), AttackError> {
    let (a, b) = (n.input[0].clone(), n.input[1].clone());
    let y = n.output[0].clone();
    let rank = |ctx: &Ctx, v: &str| ctx.static_shape(v).map(<[SDim]>::len);
    let swap = |r: usize| -> Vec<i64> {
        let mut p: Vec<i64> = (0..r as i64).collect();
        p.swap(r - 2, r - 1);
        p
    };
    let need = |what: &str| unsupported(n, index, format!("the rank of {what} is unknown or below 2"));
    if ctx.is_active(&a) {
        let rb = rank(ctx, &b)
            .filter(|&r| r >= 1)
            .ok_or_else(|| need("the second operand"))?;
        let ra = rank(ctx, &a);
        let g = if rb == 1 {
            let last = ctx.vec_i64(&[-1]);
            let u = ctx.op("Unsqueeze", &[dy, &last], vec![]);
            ctx.op("Mul", &[&u, &b], vec![])
        } else {
            let bt = ctx.op("Transpose", &[&b], vec![Attr::ints("perm", &swap(rb))]);
            if ra == Some(1) {
                return Err(need("the first operand"));
            }
            ctx.op("MatMul", &[dy, &bt], vec![])
        };
        let g = reduce_to(ctx, &g, &a, &y);
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        let ra = rank(ctx, &a)
            .filter(|&r| r >= 2)
            .ok_or_else(|| need("the first operand"))?;
        if rank(ctx, &b).is_none_or(|r| r < 2) {
            return Err(need("the second operand"));
        }
        let at = ctx.op("Transpose", &[&a], vec![Attr::ints("perm", &swap(ra))]);
        let g = ctx.op("MatMul", &[&at, dy], vec![]);
        let g = reduce_to(ctx, &g, &b, &y);
        ctx.add_grad(&b, g);
    }
    Ok(())
}

/// Slice with step 1: the gradient padded back with zeros. With constant starts and ends and
/// static sizes of the sliced axes, the pads are constants; otherwise (bounds computed from
/// shapes, or sizes unknown) they are worked out at run time, which needs the input's rank.
fn slice(ctx: &mut Ctx, n: &NodeProto, index: usize, dy: &str) -> Result<(), AttackError> {
    let x = n.input[0].clone();
    let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty()).cloned();
    let get = |ctx: &Ctx, i: usize| input(i).and_then(|v| const_i64s(&ctx.consts, &v));
    let shape = ctx
        .static_shape(&x)
        .map(<[SDim]>::to_vec)
        .ok_or_else(|| unsupported(n, index, "the input's rank is unknown"))?;
    let rank = shape.len();
    let (starts, ends) = (get(ctx, 1), get(ctx, 2));
    let axes = match (get(ctx, 3), &starts) {
        (Some(a), _) => a,
        (None, Some(s)) => (0..s.len() as i64).collect(),
        (None, None) => return Err(unsupported(n, index, "no axes and the starts are not a constant")),
    };
    let axes: Vec<usize> = axes
        .iter()
        .map(|&axis| {
            usize::try_from(if axis < 0 { axis + rank as i64 } else { axis })
                .ok()
                .filter(|&a| a < rank)
                .ok_or_else(|| unsupported(n, index, format!("axis {axis} out of range for rank {rank}")))
        })
        .collect::<Result<_, _>>()?;
    let fixed: Option<Vec<i64>> = axes
        .iter()
        .map(|&a| match shape[a] {
            SDim::Fixed(d) => Some(d),
            SDim::Sym(_) => None,
        })
        .collect();
    let g = if let (Some(starts), Some(ends), Some(dims)) = (&starts, &ends, fixed) {
        let mut pads = vec![0i64; 2 * rank];
        for (((&a, &start), &end), dim) in axes.iter().zip(starts).zip(ends).zip(dims) {
            let resolve = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
            let (s, e) = (resolve(start), resolve(end).max(resolve(start)));
            pads[a] = s;
            pads[a + rank] = dim - e;
        }
        let pads = ctx.vec_i64(&pads);
        ctx.op("Pad", &[dy, &pads], vec![])
    } else {
        let bound = |ctx: &mut Ctx, i: usize, what: &str| -> Result<String, AttackError> {
            match (get(ctx, i), input(i)) {
                (Some(v), _) => Ok(ctx.vec_i64(&v)),
                (None, Some(v)) => Ok(ctx.op("Cast", &[&v], vec![Attr::int("to", DataType::INT64 as i64)])),
                (None, None) => Err(unsupported(n, index, format!("no {what}"))),
            }
        };
        let starts = bound(ctx, 1, "starts")?;
        let ends = bound(ctx, 2, "ends")?;
        let pads = runtime_slice_pads(ctx, &x, &axes, rank, &starts, &ends);
        ctx.op("Pad", &[dy, &pads], vec![])
    };
    pass(ctx, &x, g);
    Ok(())
}

/// The `Pad` pads (`[begin..., end...]`, int64 `[2 * rank]`) that undo a step-1 `Slice` of
/// `x` on `axes` (non-negative) from run-time `starts` and `ends`, resolved as ONNX does:
/// negative values count from the end, then both are clamped to `[0, dim]`, and an end
/// before its start is the start.
fn runtime_slice_pads(ctx: &mut Ctx, x: &str, axes: &[usize], rank: usize, starts: &str, ends: &str) -> String {
    let axes_i: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    let sx = ctx.shape_of(x);
    let ax = ctx.vec_i64(&axes_i);
    let dims = ctx.op("Gather", &[&sx, &ax], vec![Attr::int("axis", 0)]);
    let zero = ctx.scalar_i64(0);
    let resolve = |ctx: &mut Ctx, v: &str| {
        // Clamp above first, so that adding the size to a negative value cannot overflow.
        let m = ctx.op("Min", &[v, &dims], vec![]);
        let neg = ctx.op("Less", &[&m, &zero], vec![]);
        let wrapped = ctx.op("Add", &[&m, &dims], vec![]);
        let r = ctx.op("Where", &[&neg, &wrapped, &m], vec![]);
        ctx.op("Max", &[&r, &zero], vec![])
    };
    let s = resolve(ctx, starts);
    let e = resolve(ctx, ends);
    let e = ctx.op("Max", &[&e, &s], vec![]);
    let after = ctx.op("Sub", &[&dims, &e], vec![]);
    let updates = ctx.op("Concat", &[&s, &after], vec![Attr::int("axis", 0)]);
    let mut positions = axes_i.clone();
    positions.extend(axes_i.iter().map(|a| a + rank as i64));
    let positions = ctx.vec_i64(&positions);
    let zeros = ctx.vec_i64(&vec![0; 2 * rank]);
    ctx.op(
        "ScatterElements",
        &[&zeros, &positions, &updates],
        vec![Attr::int("axis", 0)],
    )
}

/// Split: the gradients of the parts concatenated, zeros for parts without one.
pub(crate) fn split_backward(ctx: &mut Ctx, n: &NodeProto) -> Result<(), AttackError> {
    let x = n.input[0].clone();
    if !ctx.is_active(&x) {
        return Ok(());
    }
    let mut parts = Vec::new();
    let mut any = false;
    for o in &n.output {
        match ctx.grad_of(o) {
            Some(g) => {
                any = true;
                parts.push(g);
            }
            None => {
                let s = ctx.shape_of(o);
                let zeros = ctx.op(
                    "ConstantOfShape",
                    &[&s],
                    vec![Attr::tensor(
                        "value",
                        engine::onnx::tensor_f32("zero", &[1], vec![0.0])?,
                    )],
                );
                parts.push(zeros);
            }
        }
    }
    if any {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let g = ctx.op("Concat", &refs, vec![Attr::int("axis", attr_int(n, "axis", 0))]);
        ctx.add_grad(&x, g);
    }
    Ok(())
}
