//! The rule table: one row per differentiable ONNX operator, with what the transform checks
//! before it writes anything and the backward rule it then runs.
//!
//! The supported list ([`SUPPORTED`], public as `SUPPORTED_OPS`), the validation ([`check`])
//! and the dispatch ([`backward`]) are all read off [`RULES`], so an operator cannot be
//! listed without a rule, nor validated by one list and differentiated by another. The rows
//! point at the rule functions in `ops` and `resample`; neither of those knows the table or
//! the transform (`grad`), which only drives it.
//!
//! Some rules handle only part of an operator; their checks say which:
//!
//! - `Pad`: constant mode on any axis, and reflect mode (numpy's `reflect`: the edge is not
//!   repeated) on the last two axes with widths below the axis size;
//! - `Resize`: nearest mode with `coordinate_transformation_mode = asymmetric` and
//!   `nearest_mode = floor` (pixel repetition) by constant integer factors on the last two
//!   axes, given as `scales`, or as `sizes` that are integer multiples of a static input shape;
//! - `Slice`: step 1, constant axes; starts and ends constants or values computed from
//!   shapes (`Shape` of another tensor, say);
//! - `Conv`, pooling: explicit pads (`auto_pad` NOTSET or VALID);
//! - `BatchNormalization`, `Dropout`: inference mode;
//! - `LayerNormalization`: constant scale and bias; `Gather`, `Expand`: indices and target
//!   shape that do not depend on the image (constants or computed from shapes).
//!
//! Inputs the checks want constant may also be integer values the shape inference worked
//! out (`shape`: pads, bounds and target shapes a model computes from `Shape`).
//!
//! `Shape` and the other shape, index and comparison operators have no row: their outputs
//! carry no gradient, so they may read image-dependent values freely.

use std::collections::HashSet;

use engine::onnx::proto::NodeProto;

use super::attr::Node;
use super::consts::Consts;
use super::ctx::Ctx;
use super::error::AttackError;
use super::{ops, resample};

/// A row's check: whether the rule handles this node's attributes and constant inputs.
pub(crate) type Check = fn(Node<'_>, &Consts) -> Result<(), AttackError>;

/// A row's backward rule.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backward {
    /// Given `dy`, the gradient at the node's first output, adds the gradients of its active
    /// inputs. Nodes whose first output got no gradient are skipped.
    First(fn(&mut Ctx, Node<'_>, &str) -> Result<(), AttackError>),
    /// Reads the gradients of all the node's outputs itself (`Split`, whose parts each may
    /// or may not have one).
    Outputs(fn(&mut Ctx, Node<'_>) -> Result<(), AttackError>),
}

/// One row of the table: an operator of the default ONNX domain and how it is differentiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    /// The operator type, e.g. `Conv`.
    pub(crate) op: &'static str,
    /// What the rule needs of the node's attributes and constant inputs, checked before
    /// anything is written.
    pub(crate) check: Check,
    /// The rule.
    pub(crate) backward: Backward,
    /// Inputs that must not depend on the image (weights, shapes, bounds, exponents): the
    /// rule treats them as constants.
    pub(crate) constant_inputs: &'static [usize],
    /// Only the first output carries a gradient (`MaxPool`'s indices, `Dropout`'s mask,
    /// `BatchNormalization`'s running statistics do not).
    pub(crate) first_output_only: bool,
    /// An optional output the rule reads, `(index, suffix)`: the transform adds it where the
    /// model leaves it out, named after the first output with the suffix (`MaxPool`'s
    /// `Indices`).
    pub(crate) reads_output: Option<(usize, &'static str)>,
}

impl Rule {
    /// A row with no check beyond the table's own, no constant inputs, and a gradient
    /// through every output.
    const fn new(op: &'static str, backward: Backward) -> Self {
        Self {
            op,
            check: no_check,
            backward,
            constant_inputs: &[],
            first_output_only: false,
            reads_output: None,
        }
    }

    /// A row whose rule takes `dy` at the first output.
    const fn first(op: &'static str, rule: fn(&mut Ctx, Node<'_>, &str) -> Result<(), AttackError>) -> Self {
        Self::new(op, Backward::First(rule))
    }

    /// The row with `check`.
    const fn check(self, check: Check) -> Self {
        Self { check, ..self }
    }

    /// The row with inputs `inputs` required not to depend on the image.
    const fn constant_inputs(self, inputs: &'static [usize]) -> Self {
        Self {
            constant_inputs: inputs,
            ..self
        }
    }

    /// The row with a gradient through the first output only.
    const fn first_output_only(self) -> Self {
        Self {
            first_output_only: true,
            ..self
        }
    }

    /// The row with output `index` read by the rule and added, as `{first output}_{suffix}`,
    /// where the model leaves it out.
    const fn reads_output(self, index: usize, suffix: &'static str) -> Self {
        Self {
            reads_output: Some((index, suffix)),
            ..self
        }
    }
}

/// The check of rows whose rule handles every form of the operator.
fn no_check(_: Node<'_>, _: &Consts) -> Result<(), AttackError> {
    Ok(())
}

/// Inputs 1 to 3: the bounds of `Clip`; the pads, value and axes of `Pad`; the shapes or
/// axes of `Reshape`, `Squeeze`, `Unsqueeze` and the reductions; `Dropout`'s ratio and mode;
/// `Resize`'s roi, scales and sizes.
const INPUTS_1_TO_3: &[usize] = &[1, 2, 3];
/// Inputs 1 to 4: `Conv`'s weights and bias; `BatchNormalization`'s scale, bias and
/// statistics; `Slice`'s starts, ends, axes and steps.
const INPUTS_1_TO_4: &[usize] = &[1, 2, 3, 4];

/// The table: every operator with a backward rule, one row each.
pub(crate) const RULES: &[Rule] = &[
    Rule::first("Conv", ops::conv)
        .check(ops::check_conv)
        .constant_inputs(INPUTS_1_TO_4),
    Rule::first("BatchNormalization", ops::batch_norm)
        .check(ops::check_batch_norm)
        .constant_inputs(INPUTS_1_TO_4)
        .first_output_only(),
    Rule::first("Relu", ops::relu),
    Rule::first("LeakyRelu", ops::leaky_relu),
    Rule::first("Clip", ops::clip).constant_inputs(INPUTS_1_TO_3),
    Rule::first("Sigmoid", ops::sigmoid),
    Rule::first("Tanh", ops::tanh),
    Rule::first("HardSigmoid", ops::hard_sigmoid),
    Rule::first("HardSwish", ops::hard_swish),
    Rule::first("Exp", ops::exp),
    Rule::first("Log", ops::log),
    Rule::first("Sqrt", ops::sqrt),
    Rule::first("Neg", ops::neg),
    Rule::first("Reciprocal", ops::reciprocal),
    Rule::first("Abs", ops::abs),
    Rule::first("Erf", ops::erf),
    Rule::first("Mul", ops::mul),
    Rule::first("Add", ops::add),
    Rule::first("Sub", ops::sub),
    Rule::first("Div", ops::div),
    Rule::first("Sum", ops::add),
    Rule::first("MaxPool", ops::max_pool)
        .check(ops::check_max_pool)
        .first_output_only()
        .reads_output(1, "indices"),
    Rule::first("AveragePool", ops::average_pool).check(ops::check_average_pool),
    Rule::first("GlobalAveragePool", ops::global_average_pool),
    Rule::first("GlobalMaxPool", ops::global_max_pool),
    Rule::first("ReduceMean", ops::reduce)
        .check(ops::check_reduce)
        .constant_inputs(INPUTS_1_TO_3),
    Rule::first("ReduceSum", ops::reduce)
        .check(ops::check_reduce)
        .constant_inputs(INPUTS_1_TO_3),
    Rule::first("Flatten", ops::reshape),
    Rule::first("Reshape", ops::reshape).constant_inputs(INPUTS_1_TO_3),
    Rule::first("Squeeze", ops::reshape).constant_inputs(INPUTS_1_TO_3),
    Rule::first("Unsqueeze", ops::reshape).constant_inputs(INPUTS_1_TO_3),
    Rule::first("Transpose", ops::transpose),
    Rule::first("Gemm", ops::gemm),
    Rule::first("MatMul", ops::matmul),
    Rule::first("Concat", ops::concat),
    Rule::first("Pad", resample::pad)
        .check(resample::check_pad)
        .constant_inputs(INPUTS_1_TO_3),
    Rule::first("Expand", ops::expand).constant_inputs(&[1]),
    Rule::first("Gather", ops::gather).constant_inputs(&[1]),
    Rule::first("LayerNormalization", ops::layer_norm)
        .constant_inputs(&[1, 2])
        .first_output_only(),
    Rule::first("Softmax", ops::softmax),
    Rule::first("LogSoftmax", ops::log_softmax),
    Rule::first("Identity", ops::identity),
    Rule::first("Dropout", ops::identity)
        .check(ops::check_dropout)
        .constant_inputs(INPUTS_1_TO_3)
        .first_output_only(),
    Rule::first("Cast", ops::identity),
    Rule::first("Where", ops::where_),
    Rule::first("Max", ops::max_min),
    Rule::first("Min", ops::max_min),
    Rule::first("Pow", ops::pow).constant_inputs(&[1]),
    Rule::first("Slice", ops::slice)
        .check(ops::check_slice)
        .constant_inputs(INPUTS_1_TO_4),
    Rule::new("Split", Backward::Outputs(ops::split)).constant_inputs(&[1]),
    Rule::first("Resize", resample::resize)
        .check(resample::check_resize)
        .constant_inputs(INPUTS_1_TO_3),
];

/// The operators with a backward rule: the table's operator names, in its order.
pub(crate) const SUPPORTED: &[&str] = &names();

/// The operator names of [`RULES`], computed at compile time.
const fn names() -> [&'static str; RULES.len()] {
    let mut out = [""; RULES.len()];
    let mut i = 0;
    while i < RULES.len() {
        out[i] = RULES[i].op;
        i += 1;
    }
    out
}

// Two rows for one operator would make the second dead: refused at compile time.
const _: () = assert!(unique_ops(), "two rows of RULES name the same operator");

/// Whether every row of [`RULES`] names a different operator.
const fn unique_ops() -> bool {
    let mut i = 0;
    while i < RULES.len() {
        let mut j = i + 1;
        while j < RULES.len() {
            if same(RULES[i].op, RULES[j].op) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// `a == b`, in a `const fn`.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The row of operator `op`, if it has one.
pub(crate) fn rule(op: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.op == op)
}

/// How many leading outputs of `n` carry a gradient: all of them, but for rows marked
/// [`Rule::first_output_only`].
pub(crate) fn differentiable_outputs(n: &NodeProto) -> usize {
    match rule(&n.op_type) {
        Some(r) if r.first_output_only => 1,
        _ => n.output.len(),
    }
}

/// Checks, before anything is written, that node `n` (active, on the path to the logits)
/// has a row, that its constant inputs do not depend on the image, and that the row's check
/// accepts it. Returns the row.
pub(crate) fn check(n: Node<'_>, active: &HashSet<String>, consts: &Consts) -> Result<&'static Rule, AttackError> {
    if !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return Err(n.unsupported(format!("operators of domain `{}` have no backward rule", n.domain)));
    }
    let row = rule(&n.op_type).ok_or_else(|| n.unsupported("no backward rule for this operator"))?;
    if let Some(&i) = row
        .constant_inputs
        .iter()
        .find(|&&i| n.input.get(i).is_some_and(|v| active.contains(v)))
    {
        return Err(n.unsupported(format!(
            "input {i} (`{}`) depends on the image; only input 0 may",
            n.input[i]
        )));
    }
    (row.check)(n, consts)?;
    Ok(row)
}

/// Runs the backward rule of node `n`, which [`check`] accepted.
pub(crate) fn backward(ctx: &mut Ctx, n: Node<'_>) -> Result<(), AttackError> {
    let row = rule(&n.op_type).ok_or_else(|| n.unsupported("no backward rule for this operator"))?;
    match row.backward {
        Backward::First(rule) => match ctx.grad_of(&n.output[0]) {
            Some(dy) => rule(ctx, n, &dy),
            None => Ok(()),
        },
        Backward::Outputs(rule) => rule(ctx, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_a_different_operator_and_the_supported_list_is_the_table() {
        let mut seen = HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.op), "{} has two rows", r.op);
            assert!(!r.op.is_empty());
        }
        assert!(unique_ops());
        let names: Vec<&str> = RULES.iter().map(|r| r.op).collect();
        assert_eq!(SUPPORTED, names.as_slice());
        assert_eq!(super::super::SUPPORTED_OPS, names.as_slice());
        for op in SUPPORTED {
            assert_eq!(rule(op).map(|r| r.op), Some(*op));
        }
        assert!(rule("Einsum").is_none() && rule("Shape").is_none());
        assert!(!same("Max", "MaxPool") && same("Min", "Min"));
    }

    #[test]
    fn the_table_drives_the_checks() {
        let node = |op: &str, inputs: &[&str]| {
            let mut n = NodeProto::new();
            n.op_type = op.into();
            n.input = inputs.iter().map(|s| s.to_string()).collect();
            n.output = vec!["y".into(), "mask".into()];
            n
        };
        let active = HashSet::from(["x".to_string(), "w".to_string()]);
        let consts = Consts::new();
        // A constant input that depends on the image.
        let pow = node("Pow", &["x", "w"]);
        let msg = check(Node::new(&pow, 3), &active, &consts).unwrap_err().to_string();
        assert!(msg.contains("input 1 (`w`)") && msg.contains("`#3`"), "{msg}");
        // Other inputs may: Mul has no constant inputs.
        let mul = node("Mul", &["x", "w"]);
        assert_eq!(check(Node::new(&mul, 0), &active, &consts).unwrap().op, "Mul");
        // No row, another domain.
        let einsum = node("Einsum", &["x"]);
        let msg = check(Node::new(&einsum, 0), &active, &consts).unwrap_err().to_string();
        assert!(msg.contains("no backward rule"), "{msg}");
        let mut custom = node("Relu", &["x"]);
        custom.domain = "com.example".into();
        assert!(check(Node::new(&custom, 0), &active, &consts).is_err());
        // The row's check runs, with the typed attributes.
        let mut max_pool = node("MaxPool", &["x"]);
        max_pool.attribute = vec![engine::onnx::Attr::float("storage_order", 1.0).into_proto()];
        match check(Node::new(&max_pool, 5), &active, &consts) {
            Err(AttackError::Attribute { node, attribute, .. }) => {
                assert_eq!((node.as_str(), attribute.as_str()), ("#5", "storage_order"));
            }
            other => panic!("expected an Attribute error, got {:?}", other.map(|r| r.op)),
        }
        // Which outputs carry a gradient.
        assert_eq!(differentiable_outputs(&node("Dropout", &["x"])), 1);
        assert_eq!(differentiable_outputs(&node("Split", &["x"])), 2);
        assert_eq!(differentiable_outputs(&node("Einsum", &["x"])), 2);
    }
}
