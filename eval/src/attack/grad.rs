//! The transform: a forward classifier graph in, a graph with the input gradient out.
//!
//! The result has inputs [`PIXELS_INPUT`] (`[0, 1]` pixels, the model's input shape),
//! [`LABELS_INPUT`] and [`TARGETS_INPUT`] (int64 `[N]`) and [`LOSS_KIND_INPUT`] (int64 `[1]`,
//! which [`super::Loss`] to follow), and outputs [`LOGITS_OUTPUT`], [`LOSS_OUTPUT`] (the per-sample
//! loss, `[N]`) and [`GRAD_OUTPUT`], the gradient of the summed loss with respect to the
//! pixels. How it is made:
//!
//! 1. The normalisation `(pixels - mean) / std` is prepended; its result takes the name of
//!    the model's input, so the original nodes are copied unchanged.
//! 2. The logits are the model's output, or, when the graph ends in `Softmax` or
//!    `LogSoftmax` (possibly followed by `Identity`), that node's input: the cross-entropy of
//!    probabilities is then the cross-entropy of the logits that made them.
//! 3. A value is *active* when it depends on the input through float operators; shape and
//!    integer subgraphs (`Shape`, `Gather` of shapes, `Concat` of `Unsqueeze`d sizes feeding
//!    `Reshape`, comparisons, ...) are not, and are treated as constants.
//! 4. The selected loss seeds its closed-form gradient at the logits (`loss`; for the
//!    cross-entropy `softmax(logits) - onehot(labels)`), and every
//!    active node on the path to the logits, from last to first, adds the gradients of its
//!    active inputs, summed where a value feeds several nodes. Which rule runs, and what is
//!    checked first, is the rule table's business (`rules`); the graph is written through
//!    `ctx::Ctx`.
//! 5. The gradient at the model input is divided by `std`: the pixel gradient.

use std::collections::{HashMap, HashSet};

use engine::onnx::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto, type_proto};
use engine::onnx::{Dim, ElemType, GraphBuilder, MAX_OPSET, MIN_OPSET, dims_of};
use engine::preprocess::Layout;

use super::attr::{self, Node};
use super::consts::{Consts, constant_value};
use super::ctx::{Ctx, fresh_in};
use super::error::AttackError;
use super::loss;
use super::ops;
use super::rules;
use super::shape::Shapes;
use super::spec::GradientSpec;

/// The gradient graph's pixel input: `[0, 1]` values in the model's input shape.
pub const PIXELS_INPUT: &str = "pixels";
/// The gradient graph's label input: int64 `[N]`, one class index per image.
pub const LABELS_INPUT: &str = "labels";
/// The gradient graph's target input: int64 `[N]`, the target class of the targeted losses
/// (any valid class otherwise).
pub const TARGETS_INPUT: &str = "targets";
/// The gradient graph's loss selector: int64 `[1]`, a [`super::Loss::code`].
pub const LOSS_KIND_INPUT: &str = "loss_kind";
/// The logits output, `[N, classes]`.
pub const LOGITS_OUTPUT: &str = "logits";
/// The per-sample loss output (the one `loss_kind` selects), `[N]`.
pub const LOSS_OUTPUT: &str = "loss";
/// The gradient of the summed loss with respect to [`PIXELS_INPUT`].
pub const GRAD_OUTPUT: &str = "pixels_grad";

const RESERVED: [&str; 7] = [
    PIXELS_INPUT,
    LABELS_INPUT,
    TARGETS_INPUT,
    LOSS_KIND_INPUT,
    LOGITS_OUTPUT,
    LOSS_OUTPUT,
    GRAD_OUTPUT,
];

/// The lowest opset whose `ScatterElements` sums duplicate indices (the `MaxPool` rule).
const SCATTER_ADD_OPSET: i64 = 16;

/// Operators whose outputs carry no gradient (shapes, comparisons, indices, constants).
const NON_DIFFERENTIABLE: &[&str] = &[
    "Shape",
    "Size",
    "NonZero",
    "ArgMax",
    "ArgMin",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
    "ConstantOfShape",
    "Constant",
    "Range",
    "EyeLike",
    "RandomNormalLike",
    "RandomUniformLike",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
];

/// Adds the losses and the gradient of the selected one with respect to the pixel input to
/// `model` (see the module documentation for the graph's inputs and outputs).
///
/// The model must have one image input (float32, rank 4, in `spec.layout` with
/// `spec.channels` channels) besides any initializers, and its first output must be the
/// logits `[N, classes]` (or probabilities from a final `Softmax`). Its default-domain opset
/// must be 13 to 21; models at 13 to 15 are written at 16, the first opset whose
/// `ScatterElements` can add (used for `MaxPool`), which changes no operator they use.
///
/// Fails with [`AttackError::Unsupported`] naming the first operator on the input-to-logits
/// path that has no backward rule (or an attribute the rule does not handle), and with
/// [`AttackError::Model`] or [`AttackError::Shape`] when the model does not have that form.
pub fn add_input_gradient(model: &ModelProto, spec: &GradientSpec) -> Result<ModelProto, AttackError> {
    add_input_gradient_named(model, spec, None, None)
}

/// [`add_input_gradient`] with the input and output to use named (`None`: the only non-
/// initializer input, the first output), as a model's config may name them.
pub fn add_input_gradient_named(
    model: &ModelProto,
    spec: &GradientSpec,
    input_name: Option<&str>,
    output_name: Option<&str>,
) -> Result<ModelProto, AttackError> {
    spec.validate()?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| AttackError::Model("the model has no graph".into()))?;
    let opset = default_opset(model)?;
    let out_opset = opset.max(SCATTER_ADD_OPSET);

    // Rename original values that collide with the names the gradient graph uses.
    let renames = renames(graph);
    let rn = |name: &str| renames.get(name).cloned().unwrap_or_else(|| name.to_string());

    let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let image_inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !init_names.contains(i.name.as_str()))
        .collect();
    let input = match input_name {
        Some(name) => image_inputs.iter().find(|i| i.name == name).copied().ok_or_else(|| {
            AttackError::Model(format!(
                "input `{name}` is not an input of the model (inputs: {:?})",
                image_inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
            ))
        })?,
        None if image_inputs.len() == 1 => image_inputs[0],
        None => {
            return Err(AttackError::Model(format!(
                "the model has {} inputs {:?}; the transform needs exactly one image input",
                image_inputs.len(),
                image_inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
            )));
        }
    };
    if image_inputs.len() > 1 {
        return Err(AttackError::Model(format!(
            "the model has inputs {:?} besides `{}`; only the image input can be fed",
            image_inputs
                .iter()
                .filter(|i| i.name != input.name)
                .map(|i| &i.name)
                .collect::<Vec<_>>(),
            input.name
        )));
    }
    let in_dims =
        value_dims(input).ok_or_else(|| AttackError::Model(format!("input `{}` has no tensor type", input.name)))?;
    check_input(&input.name, input_elem(input), &in_dims, spec)?;
    let output = match output_name {
        Some(name) => graph.output.iter().find(|o| o.name == name).ok_or_else(|| {
            AttackError::Model(format!(
                "output `{name}` is not an output of the model (outputs: {:?})",
                graph.output.iter().map(|o| &o.name).collect::<Vec<_>>()
            ))
        })?,
        None => graph
            .output
            .first()
            .ok_or_else(|| AttackError::Model("the model has no outputs".into()))?,
    };
    let out_dims = value_dims(output).unwrap_or_default();
    if !out_dims.is_empty() && out_dims.len() != 2 {
        return Err(AttackError::Shape(format!(
            "output `{}` has shape {}; the transform needs logits [batch, classes]",
            output.name,
            Dim::format_shape(&out_dims)
        )));
    }

    // Nodes with names mapped; MaxPool nodes get an Indices output where they need one later.
    let mut nodes: Vec<NodeProto> = graph
        .node
        .iter()
        .map(|n| {
            let mut n = n.clone();
            for v in n.input.iter_mut().chain(n.output.iter_mut()) {
                if !v.is_empty() {
                    *v = rn(v);
                }
            }
            n
        })
        .collect();
    let x = rn(&input.name);
    let logits_value = logits_source(&nodes, &rn(&output.name));

    let mut consts = Consts::new();
    for t in &graph.initializer {
        let mut t = t.clone();
        t.name = rn(&t.name);
        consts.insert(t.name.clone(), t);
    }
    // Constant nodes, and Identity nodes of constants (torch.onnx shares equal initializers
    // between layers that way, e.g. every BatchNorm's scale of 1 at random weights).
    for n in &nodes {
        if n.op_type == "Constant"
            && let Some(t) = constant_value(n)
        {
            consts.insert(n.output[0].clone(), t);
        } else if n.op_type == "Identity"
            && let (Some(i), Some(o)) = (n.input.first(), n.output.first())
            && let Some(t) = consts.get(i)
        {
            let mut t = t.clone();
            t.name = o.clone();
            consts.insert(o.clone(), t);
        }
    }

    // Which values depend on the input, and which active nodes lead to the logits.
    let mut active: HashSet<String> = HashSet::from([x.clone()]);
    for (index, n) in nodes.iter().enumerate() {
        if NON_DIFFERENTIABLE.contains(&n.op_type.as_str()) {
            continue;
        }
        if n.op_type == "Cast" && attr::int_or(Node::new(n, index), "to", 0)? != i64::from(ElemType::Float32.to_onnx())
        {
            continue;
        }
        if n.input.iter().any(|i| active.contains(i)) {
            let outs = rules::differentiable_outputs(n);
            active.extend(n.output.iter().take(outs).filter(|o| !o.is_empty()).cloned());
        }
    }
    if !active.contains(&logits_value) {
        return Err(AttackError::Model(format!(
            "the logits `{logits_value}` do not depend on the input `{}`",
            input.name
        )));
    }
    // Static shapes (from the input's dims, the rules of `shape` and what the file declares),
    // and the integer values computed from them, which the rules then see as constants.
    let declared: HashMap<String, Vec<Dim>> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .filter_map(|v| Some((rn(&v.name), value_dims(v)?)))
        .collect();
    let shapes = Shapes::infer(&nodes, &consts, &x, &in_dims, &declared);
    for t in shapes.folded(&consts) {
        consts.insert(t.name.clone(), t);
    }
    let mut needed: HashSet<String> = HashSet::from([logits_value.clone()]);
    let mut on_path = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o)) && n.input.iter().any(|v| active.contains(v)) {
            on_path[i] = true;
            needed.extend(n.input.iter().filter(|v| active.contains(*v)).cloned());
        }
    }
    // Check every node on the path before writing anything, and give rules the optional
    // outputs they read (MaxPool's indices).
    let mut taken: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().chain(n.input.iter()).chain(std::iter::once(&n.name)))
        .chain(graph.initializer.iter().map(|t| &t.name))
        .chain(graph.input.iter().map(|i| &i.name))
        .map(|s| rn(s))
        .chain(RESERVED.iter().map(|s| s.to_string()))
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        if !on_path[i] {
            continue;
        }
        let rule = rules::check(Node::new(n, i), &active, &consts)?;
        if let Some((k, suffix)) = rule.reads_output
            && n.output.get(k).is_none_or(|o| o.is_empty())
        {
            let name = fresh_in(&mut taken, &format!("{}_{suffix}", n.output[0]));
            n.output.resize(k, String::new());
            n.output.push(name);
        }
    }

    let mut g = GraphBuilder::new(if graph.name.is_empty() {
        "model".to_string()
    } else {
        graph.name.clone()
    });
    g.doc_string(format!(
        "{}\n[hardy] with the gradient of a loss with respect to `{PIXELS_INPUT}` added",
        graph.doc_string
    ));
    for entry in &model.metadata_props {
        g.metadata(&entry.key, &entry.value);
    }
    for op in &model.opset_import {
        if !(op.domain.is_empty() || op.domain == "ai.onnx") {
            g.import_opset(&op.domain, op.version);
        }
    }
    let batch = in_dims.first().cloned().unwrap_or(Dim::Unknown);
    let pixels = g.input(PIXELS_INPUT, ElemType::Float32, &in_dims);
    let labels = g.input(LABELS_INPUT, ElemType::Int64, std::slice::from_ref(&batch));
    let targets = g.input(TARGETS_INPUT, ElemType::Int64, std::slice::from_ref(&batch));
    let kind = g.input(LOSS_KIND_INPUT, ElemType::Int64, &[Dim::Fixed(1)]);
    for t in &graph.initializer {
        let mut t = t.clone();
        t.name = rn(&t.name);
        g.initializer(t);
    }

    let mut ctx = Ctx::new(g, taken, consts, shapes, active);

    // 1. Normalisation.
    let bshape: Vec<i64> = match spec.layout {
        Layout::Nchw => vec![1, spec.channels as i64, 1, 1],
        Layout::Nhwc => vec![1, 1, 1, spec.channels as i64],
    };
    let mean = ctx.const_f32("mean", &bshape, spec.per_channel(&spec.mean));
    let std = ctx.const_f32("std", &bshape, spec.per_channel(&spec.std));
    let centred = ctx.op("Sub", &[&pixels, &mean], vec![]);
    ctx.emit("Div", &[&centred, &std], std::slice::from_ref(&x), vec![]);

    // 2. The forward graph.
    for n in &nodes {
        if n.op_type == "Sigmoid" && n.input.len() == 1 && n.output.len() == 1 {
            ctx.note_sigmoid(&n.output[0], &n.input[0]);
        }
        let n = ops::blocked_forward(&mut ctx, n);
        // The values on the input's path are float tensors; shape arithmetic is not declared.
        for o in &n.output {
            if ctx.is_active(o) {
                ctx.declare_like(o, o);
            }
        }
        ctx.g.node_proto(n);
    }
    let z = logits_value.clone();
    ctx.emit("Identity", &[&z], &[LOGITS_OUTPUT.to_string()], vec![]);

    // 3. The losses and the selected one's gradient at the logits.
    let dz = loss::write(&mut ctx, &z, &labels, &targets, &kind, LOSS_OUTPUT);
    ctx.add_grad(&z, dz);

    // 4. Backward, last node first.
    for (i, n) in nodes.iter().enumerate().rev() {
        if !on_path[i] {
            continue;
        }
        rules::backward(&mut ctx, Node::new(n, i))?;
    }

    // 5. Through the normalisation.
    let dx = ctx
        .grad_of(&x)
        .ok_or_else(|| AttackError::Model(format!("no gradient reached the input `{}`", input.name)))?;
    ctx.emit("Div", &[&dx, &std], &[GRAD_OUTPUT.to_string()], vec![]);

    let mut g = ctx.g;
    g.output(LOGITS_OUTPUT, ElemType::Float32, &out_dims);
    g.output(LOSS_OUTPUT, ElemType::Float32, std::slice::from_ref(&batch));
    g.output(GRAD_OUTPUT, ElemType::Float32, &in_dims);
    Ok(g.build(out_opset)?)
}

/// Original names that collide with the gradient graph's reserved names, mapped to new ones.
fn renames(graph: &GraphProto) -> HashMap<String, String> {
    let all: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().chain(n.input.iter()))
        .chain(graph.initializer.iter().map(|t| &t.name))
        .chain(graph.input.iter().map(|i| &i.name))
        .map(String::as_str)
        .collect();
    let mut out = HashMap::new();
    for r in RESERVED {
        if all.contains(r) {
            let mut k = 0;
            let mut candidate = format!("model/{r}");
            while all.contains(candidate.as_str()) {
                k += 1;
                candidate = format!("model/{r}_{k}");
            }
            out.insert(r.to_string(), candidate);
        }
    }
    out
}

/// The value that holds the logits: `output`, or the input of a final Softmax/LogSoftmax
/// (through any Identity nodes).
fn logits_source(nodes: &[NodeProto], output: &str) -> String {
    let mut value = output.to_string();
    loop {
        let Some(producer) = nodes.iter().find(|n| n.output.first().is_some_and(|o| *o == value)) else {
            return output.to_string();
        };
        match producer.op_type.as_str() {
            "Identity" => value = producer.input[0].clone(),
            "Softmax" | "LogSoftmax" => {
                tracing::info!(
                    node = %producer.name,
                    "the model ends in {}; its input is taken as the logits",
                    producer.op_type
                );
                return producer.input[0].clone();
            }
            _ => return output.to_string(),
        }
    }
}

fn default_opset(model: &ModelProto) -> Result<i64, AttackError> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| AttackError::Model("the model imports no default-domain opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(AttackError::Model(format!(
            "the model uses opset {opset}; the gradient transform handles opsets {MIN_OPSET} to {MAX_OPSET}"
        )));
    }
    Ok(opset)
}

fn input_elem(info: &ValueInfoProto) -> i32 {
    match info.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type,
        _ => 0,
    }
}

/// The dims of a value's declared tensor type.
pub(crate) fn value_dims(info: &ValueInfoProto) -> Option<Vec<Dim>> {
    match info.type_.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(dims_of(t.shape.as_ref()?)),
        _ => None,
    }
}

fn check_input(name: &str, elem: i32, dims: &[Dim], spec: &GradientSpec) -> Result<(), AttackError> {
    if elem != ElemType::Float32.to_onnx() {
        return Err(AttackError::Model(format!(
            "input `{name}` is {}, the transform needs float32",
            ElemType::from_onnx(elem)
        )));
    }
    if dims.len() != 4 {
        return Err(AttackError::Shape(format!(
            "input `{name}` has shape {}; an image input has rank 4",
            Dim::format_shape(dims)
        )));
    }
    let c = match spec.layout {
        Layout::Nchw => &dims[1],
        Layout::Nhwc => &dims[3],
    };
    if let Dim::Fixed(c) = c
        && *c != spec.channels as i64
    {
        return Err(AttackError::Shape(format!(
            "input `{name}` has shape {} ({:?}), which has {c} channel(s), but the spec has {}",
            Dim::format_shape(dims),
            spec.layout,
            spec.channels
        )));
    }
    Ok(())
}

/// The forward part of a gradient graph made by [`add_input_gradient`]: `pixels` in, `logits`
/// out (the normalisation and the model, nothing of the losses or the backward pass), for
/// attacks that only query scores (Square) and for checks.
pub(crate) fn logits_only(gradient_graph: &ModelProto) -> ModelProto {
    let mut model = gradient_graph.clone();
    let Some(graph) = model.graph.as_mut() else {
        return model;
    };
    let mut needed: HashSet<String> = HashSet::from([LOGITS_OUTPUT.to_string()]);
    let mut keep = vec![false; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(n.input.iter().filter(|v| !v.is_empty()).cloned());
        }
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(n, _)| n)
        .collect();
    graph.initializer.retain(|t| needed.contains(&t.name));
    graph.input.retain(|i| i.name == PIXELS_INPUT);
    graph.output.retain(|o| o.name == LOGITS_OUTPUT);
    model
}
