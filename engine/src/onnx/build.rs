//! Writing ONNX graphs in Rust: [`GraphBuilder`], [`Attr`] and tensor constructors.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

use super::{Dim, ElemType, OnnxError};

/// The lowest default-domain opset [`GraphBuilder::build`] writes.
pub const MIN_OPSET: i64 = 13;
/// The highest default-domain opset [`GraphBuilder::build`] writes.
pub const MAX_OPSET: i64 = 21;

/// How many errors [`GraphBuilder::build`] lists before summarising the rest.
const MAX_LISTED_ERRORS: usize = 10;

/// The IR version that goes with a default-domain opset, for the opsets Hardy writes:
/// 13 to 17 need IR 8, 18 to 20 IR 9, 21 IR 10. `None` outside [`MIN_OPSET`]..=[`MAX_OPSET`].
pub fn ir_version_for_opset(opset: i64) -> Option<i64> {
    match opset {
        13..=17 => Some(8),
        18..=20 => Some(9),
        21 => Some(10),
        _ => None,
    }
}

/// The number of elements of a tensor with these dimensions (1 for a scalar).
fn element_count(dims: &[i64]) -> Result<usize, String> {
    dims.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d).map_err(|_| format!("dimension {d} in {dims:?} is negative"))?;
        n.checked_mul(d)
            .ok_or_else(|| format!("shape {dims:?} has too many elements"))
    })
}

fn tensor_raw(
    name: &str,
    dims: &[i64],
    data_type: DataType,
    len: usize,
    raw: impl Iterator<Item = u8>,
) -> Result<TensorProto, OnnxError> {
    let expected = element_count(dims).map_err(|reason| OnnxError::Build(format!("tensor `{name}`: {reason}")))?;
    if expected != len {
        return Err(OnnxError::Build(format!(
            "tensor `{name}` has shape {dims:?} ({expected} elements) but {len} values"
        )));
    }
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = data_type as i32;
    t.raw_data = raw.collect();
    Ok(t)
}

/// A `float32` tensor stored as little-endian `raw_data`. Fails if `data.len()` is not the
/// product of `dims` (an empty `dims` is a scalar: one value).
pub fn tensor_f32(name: &str, dims: &[i64], data: Vec<f32>) -> Result<TensorProto, OnnxError> {
    tensor_raw(
        name,
        dims,
        DataType::FLOAT,
        data.len(),
        data.iter().flat_map(|v| v.to_le_bytes()),
    )
}

/// An `int64` tensor (Reshape shapes, Slice bounds, ...) stored as little-endian `raw_data`.
/// Fails if `data.len()` is not the product of `dims`.
pub fn tensor_i64(name: &str, dims: &[i64], data: Vec<i64>) -> Result<TensorProto, OnnxError> {
    tensor_raw(
        name,
        dims,
        DataType::INT64,
        data.len(),
        data.iter().flat_map(|v| v.to_le_bytes()),
    )
}

/// A node attribute: `Attr::ints("pads", &[1, 1, 1, 1])`, `Attr::float("alpha", 0.1)`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct Attr(AttributeProto);

impl Attr {
    fn proto(name: &str, kind: AttributeType) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.to_string();
        a.type_ = EnumOrUnknown::new(kind);
        a
    }

    /// An integer attribute (`axis`, `group`, `transB`, ...).
    pub fn int(name: &str, value: i64) -> Self {
        let mut a = Self::proto(name, AttributeType::INT);
        a.i = value;
        Self(a)
    }

    /// A list of integers (`kernel_shape`, `strides`, `pads`, `perm`, ...).
    pub fn ints(name: &str, values: &[i64]) -> Self {
        let mut a = Self::proto(name, AttributeType::INTS);
        a.ints = values.to_vec();
        Self(a)
    }

    /// A float attribute (`alpha`, `epsilon`, ...).
    pub fn float(name: &str, value: f32) -> Self {
        let mut a = Self::proto(name, AttributeType::FLOAT);
        a.f = value;
        Self(a)
    }

    /// A list of floats.
    pub fn floats(name: &str, values: &[f32]) -> Self {
        let mut a = Self::proto(name, AttributeType::FLOATS);
        a.floats = values.to_vec();
        Self(a)
    }

    /// A string attribute (`mode`, `auto_pad`, ...).
    pub fn string(name: &str, value: &str) -> Self {
        let mut a = Self::proto(name, AttributeType::STRING);
        a.s = value.as_bytes().to_vec();
        Self(a)
    }

    /// A list of strings.
    pub fn strings(name: &str, values: &[&str]) -> Self {
        let mut a = Self::proto(name, AttributeType::STRINGS);
        a.strings = values.iter().map(|s| s.as_bytes().to_vec()).collect();
        Self(a)
    }

    /// A tensor attribute, such as `Constant`'s `value` (see [`tensor_f32`], [`tensor_i64`]).
    pub fn tensor(name: &str, value: TensorProto) -> Self {
        let mut a = Self::proto(name, AttributeType::TENSOR);
        a.t = MessageField::some(value);
        Self(a)
    }

    /// The attribute's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The protobuf message.
    pub fn into_proto(self) -> AttributeProto {
        self.0
    }
}

impl From<Attr> for AttributeProto {
    fn from(attr: Attr) -> Self {
        attr.0
    }
}

/// Builds an ONNX model one node at a time.
///
/// Methods that define a value return its name, so a network reads as a chain of calls.
/// Mistakes are not reported where they happen: they are collected and [`build`] reports them
/// all, so network code needs no `?` until the end. [`op`] names each node and its output
/// after the operator (`conv_0`, `relu_1`, ...); use [`node`] to choose output names.
///
/// ```
/// use engine::onnx::{Attr, Dim, ElemType, GraphBuilder, ModelInfo};
///
/// let mut g = GraphBuilder::new("tiny_cnn");
/// let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 32, 32]));
/// let w = g.initializer_f32("conv.weight", &[8, 3, 3, 3], vec![0.01; 8 * 3 * 3 * 3]);
/// let b = g.initializer_f32("conv.bias", &[8], vec![0.0; 8]);
/// let conv = g.op("Conv", &[&x, &w, &b], vec![
///     Attr::ints("kernel_shape", &[3, 3]),
///     Attr::ints("pads", &[1, 1, 1, 1]),
/// ]);
/// let relu = g.op("Relu", &[&conv], vec![]);
/// let pooled = g.op("GlobalAveragePool", &[&relu], vec![]);
/// let flat = g.op("Flatten", &[&pooled], vec![Attr::int("axis", 1)]);
/// let fc_w = g.initializer_f32("fc.weight", &[10, 8], vec![0.1; 80]);
/// let fc_b = g.initializer_f32("fc.bias", &[10], vec![0.0; 10]);
/// g.node("Gemm", &[&flat, &fc_w, &fc_b], &["logits"], vec![Attr::int("transB", 1)]);
/// g.output("logits", ElemType::Float32, &Dim::batched(&[10]));
/// g.metadata("labels", "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck");
///
/// let model = g.build(17)?;
/// let info = ModelInfo::from_model(&model);
/// assert_eq!(info.parameter_count, 8 * 27 + 8 + 80 + 10);
/// assert_eq!(info.op_counts["Conv"], 1);
/// # Ok::<(), engine::onnx::OnnxError>(())
/// ```
///
/// [`build`]: GraphBuilder::build
/// [`op`]: GraphBuilder::op
/// [`node`]: GraphBuilder::node
#[derive(Debug, Clone, Default)]
pub struct GraphBuilder {
    name: String,
    doc: String,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    /// Declared shapes of intermediate values (`value_info`).
    value_infos: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
    metadata: Vec<(String, String)>,
    extra_opsets: Vec<(String, i64)>,
    /// Every name handed out or used so far, so that [`GraphBuilder::fresh`] avoids them.
    taken: HashSet<String>,
    counters: HashMap<String, usize>,
    errors: Vec<String>,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the graph's documentation string.
    pub fn doc_string(&mut self, doc: impl Into<String>) -> &mut Self {
        self.doc = doc.into();
        self
    }

    /// Declares a graph input and returns its name. Use [`Dim::batched`] for `[batch, ...]`.
    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> String {
        let info = self.make_value_info(name, elem, dims);
        self.inputs.push(info);
        self.take(name)
    }

    /// Declares a graph output: `name` must be a graph input, an initializer or a node output.
    pub fn output(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> &mut Self {
        let info = self.make_value_info(name, elem, dims);
        self.outputs.push(info);
        self
    }

    /// Declares the type and shape of an intermediate value (the graph's `value_info`), for
    /// a runtime whose own shape inference cannot work it out: ONNX Runtime, for one, loses a
    /// symbolic batch size at a `Reshape` to a computed shape, and then cannot prove two
    /// tensors the same shape.
    pub fn value_info(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> &mut Self {
        let info = self.make_value_info(name, elem, dims);
        self.value_infos.push(info);
        self
    }

    /// Adds a `float32` initializer (weights) and returns its name. A `data` length that does
    /// not match `dims` is reported by [`GraphBuilder::build`].
    pub fn initializer_f32(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> String {
        let tensor = tensor_f32(name, dims, data);
        self.add_initializer(name, tensor)
    }

    /// Adds an `int64` initializer (a Reshape shape, Slice bounds, ...) and returns its name.
    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], data: Vec<i64>) -> String {
        let tensor = tensor_i64(name, dims, data);
        self.add_initializer(name, tensor)
    }

    /// Adds an initializer of any type, named by `tensor.name`, and returns that name.
    pub fn initializer(&mut self, tensor: TensorProto) -> String {
        let name = tensor.name.clone();
        self.add_initializer(&name, Ok(tensor))
    }

    fn add_initializer(&mut self, name: &str, tensor: Result<TensorProto, OnnxError>) -> String {
        match tensor {
            Ok(t) => self.initializers.push(t),
            Err(OnnxError::Build(reason)) => self.errors.push(reason),
            Err(other) => self.errors.push(other.to_string()),
        }
        self.take(name)
    }

    /// A name starting with `prefix` that is not used yet: `conv_0`, `conv_1`, ...
    pub fn fresh(&mut self, prefix: &str) -> String {
        let counter = self.counters.entry(prefix.to_string()).or_insert(0);
        loop {
            let candidate = format!("{prefix}_{counter}");
            *counter += 1;
            if self.taken.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    /// Adds a node with one output, named (like the node) after the operator, and returns the
    /// output's name: `g.op("Relu", &[&x], vec![])` returns `relu_0`.
    pub fn op(&mut self, op_type: &str, inputs: &[impl AsRef<str>], attrs: Vec<Attr>) -> String {
        let name = self.fresh(&snake_case(op_type));
        self.push_node(op_type, name.clone(), inputs, &[name.as_str()], attrs);
        name
    }

    /// Adds a node with `outputs` generated outputs (`split_0_out0`, `split_0_out1`, ...) and
    /// returns their names.
    pub fn op_multi(
        &mut self,
        op_type: &str,
        inputs: &[impl AsRef<str>],
        outputs: usize,
        attrs: Vec<Attr>,
    ) -> Vec<String> {
        let name = self.fresh(&snake_case(op_type));
        let outs: Vec<String> = (0..outputs)
            .map(|i| {
                let wanted = format!("{name}_out{i}");
                if self.taken.insert(wanted.clone()) {
                    wanted
                } else {
                    self.fresh(&wanted)
                }
            })
            .collect();
        self.push_node(op_type, name, inputs, &outs, attrs);
        outs
    }

    /// Adds a node whose outputs have the names given (an empty string skips an optional
    /// output). An empty string among the inputs skips an optional input.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[impl AsRef<str>],
        outputs: &[impl AsRef<str>],
        attrs: Vec<Attr>,
    ) -> &mut Self {
        let name = self.fresh(&snake_case(op_type));
        for out in outputs {
            self.take(out.as_ref());
        }
        self.push_node(op_type, name, inputs, outputs, attrs);
        self
    }

    /// Adds a node as it is (for other domains, node names of your own, doc strings). Its
    /// inputs and outputs are checked like any other node's. A node in another domain needs
    /// that domain in [`GraphBuilder::import_opset`].
    pub fn node_proto(&mut self, node: NodeProto) -> &mut Self {
        if !node.name.is_empty() {
            self.taken.insert(node.name.clone());
        }
        for out in &node.output {
            self.taken.insert(out.clone());
        }
        self.nodes.push(node);
        self
    }

    /// Imports an operator set of a domain other than the default one (e.g. `com.microsoft`).
    pub fn import_opset(&mut self, domain: &str, version: i64) -> &mut Self {
        self.extra_opsets.push((domain.to_string(), version));
        self
    }

    /// Sets a `metadata_props` entry (labels, preprocessing, provenance); a later value for
    /// the same key replaces the earlier one.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.metadata.push((key.to_string(), value.to_string())),
        }
        self
    }

    fn take(&mut self, name: &str) -> String {
        self.taken.insert(name.to_string());
        name.to_string()
    }

    fn push_node(
        &mut self,
        op_type: &str,
        name: String,
        inputs: &[impl AsRef<str>],
        outputs: &[impl AsRef<str>],
        attrs: Vec<Attr>,
    ) {
        let mut node = NodeProto::new();
        node.op_type = op_type.to_string();
        node.name = name;
        node.input = inputs.iter().map(|i| i.as_ref().to_string()).collect();
        node.output = outputs.iter().map(|o| o.as_ref().to_string()).collect();
        node.attribute = attrs.into_iter().map(Attr::into_proto).collect();
        self.nodes.push(node);
    }

    fn make_value_info(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> ValueInfoProto {
        let mut shape = TensorShapeProto::new();
        for d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = match d {
                Dim::Fixed(v) => {
                    if *v < 0 {
                        self.errors.push(format!("`{name}` has a negative dimension {v}"));
                    }
                    Some(tensor_shape_proto::dimension::Value::DimValue(*v))
                }
                Dim::Symbolic(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                Dim::Unknown => None,
            };
            shape.dim.push(dim);
        }
        let mut tensor = type_proto::Tensor::new();
        tensor.elem_type = elem.to_onnx();
        tensor.shape = MessageField::some(shape);
        let mut ty = TypeProto::new();
        ty.value = Some(type_proto::Value::TensorType(tensor));
        let mut info = ValueInfoProto::new();
        info.name = name.to_string();
        info.type_ = MessageField::some(ty);
        info
    }

    /// Checks the graph and returns the model, at default-domain `opset`
    /// ([`MIN_OPSET`]..=[`MAX_OPSET`], with the matching IR version), produced by `hardy`.
    ///
    /// Fails with [`OnnxError::Build`], listing every problem, if the opset is unsupported,
    /// a name is defined twice, a node reads a value that is not a graph input, an
    /// initializer or the output of an earlier node, an output is never produced, the graph
    /// has no outputs, or tensor data does not match its shape.
    pub fn build(self, opset: i64) -> Result<ModelProto, OnnxError> {
        let mut errors = self.errors;
        let ir_version = ir_version_for_opset(opset);
        if ir_version.is_none() {
            errors.push(format!(
                "opset {opset} is not supported (Hardy writes opsets {MIN_OPSET} to {MAX_OPSET})"
            ));
        }

        validate(
            &self.inputs,
            &self.initializers,
            &self.nodes,
            &self.outputs,
            &self.extra_opsets,
            &mut errors,
        );

        if !errors.is_empty() {
            let listed = errors.len().min(MAX_LISTED_ERRORS);
            let mut msg = format!("graph `{}`: {}", self.name, errors[..listed].join("; "));
            if errors.len() > listed {
                msg.push_str(&format!("; and {} more", errors.len() - listed));
            }
            return Err(OnnxError::Build(msg));
        }
        let ir_version = ir_version.unwrap_or_default();

        let mut graph = GraphProto::new();
        graph.name = self.name;
        graph.doc_string = self.doc;
        graph.input = self.inputs;
        graph.output = self.outputs;
        graph.value_info = self.value_infos;
        graph.initializer = self.initializers;
        graph.node = self.nodes;

        let mut model = ModelProto::new();
        model.ir_version = ir_version;
        model.producer_name = "hardy".to_string();
        model.producer_version = env!("CARGO_PKG_VERSION").to_string();
        let default = std::iter::once((String::new(), opset));
        model.opset_import = default
            .chain(self.extra_opsets)
            .map(|(domain, version)| {
                let mut o = OperatorSetIdProto::new();
                o.domain = domain;
                o.version = version;
                o
            })
            .collect();
        model.metadata_props = self
            .metadata
            .into_iter()
            .map(|(key, value)| {
                let mut e = StringStringEntryProto::new();
                e.key = key;
                e.value = value;
                e
            })
            .collect();
        model.graph = MessageField::some(graph);
        Ok(model)
    }
}

/// Records `name` as defined by `what`, or an error if it is empty or already defined.
fn define(known: &mut HashMap<String, String>, errors: &mut Vec<String>, name: &str, what: String) {
    if name.is_empty() {
        errors.push(format!("{what} has an empty name"));
    } else if let Some(earlier) = known.get(name) {
        errors.push(format!("`{name}` is defined twice: as {earlier} and as {what}"));
    } else {
        known.insert(name.to_string(), what);
    }
}

/// The checks of [`GraphBuilder::build`]: every value defined once, every node input defined
/// before the node, every output produced, node names unique, node domains imported.
fn validate(
    inputs: &[ValueInfoProto],
    initializers: &[TensorProto],
    nodes: &[NodeProto],
    outputs: &[ValueInfoProto],
    extra_opsets: &[(String, i64)],
    errors: &mut Vec<String>,
) {
    // Inputs, initializers and node outputs share one namespace.
    let mut known: HashMap<String, String> = HashMap::new();
    for input in inputs {
        define(&mut known, errors, &input.name, "a graph input".into());
    }
    for init in initializers {
        define(&mut known, errors, &init.name, "an initializer".into());
    }
    let mut node_names = HashSet::new();
    for (index, node) in nodes.iter().enumerate() {
        let label = if node.name.is_empty() {
            format!("node #{index} ({})", node.op_type)
        } else {
            format!("node `{}` ({})", node.name, node.op_type)
        };
        if node.op_type.is_empty() {
            errors.push(format!("{label} has no operator type"));
        }
        if !node.name.is_empty() && !node_names.insert(node.name.as_str()) {
            errors.push(format!("two nodes are named `{}`", node.name));
        }
        let domain = node.domain.as_str();
        if !(domain.is_empty() || domain == "ai.onnx" || extra_opsets.iter().any(|(d, _)| d == domain)) {
            errors.push(format!("{label} is in domain `{domain}`, which is not imported"));
        }
        for input in &node.input {
            if !input.is_empty() && !known.contains_key(input) {
                errors.push(format!(
                    "{label} reads `{input}`, which is not a graph input, an initializer \
                     or the output of an earlier node"
                ));
            }
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            define(&mut known, errors, output, format!("an output of {label}"));
        }
    }
    if outputs.is_empty() {
        errors.push("the graph has no outputs".into());
    }
    let mut seen = HashSet::new();
    for output in outputs {
        if !seen.insert(output.name.as_str()) {
            errors.push(format!("`{}` is declared as a graph output twice", output.name));
        } else if !known.contains_key(&output.name) {
            errors.push(format!(
                "graph output `{}` is not a graph input, an initializer or a node output",
                output.name
            ));
        }
    }
}

/// `GlobalAveragePool` -> `global_average_pool`, `LRN` -> `lrn`.
fn snake_case(op_type: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in op_type.chars() {
        if c.is_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_lowercase());
    }
    if out.is_empty() { "node".to_string() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_err(g: GraphBuilder, opset: i64) -> String {
        match g.build(opset) {
            Err(OnnxError::Build(msg)) => msg,
            other => panic!("expected a build error, got {other:?}"),
        }
    }

    /// x -> Relu -> y, valid.
    fn relu_graph() -> GraphBuilder {
        let mut g = GraphBuilder::new("relu");
        let x = g.input("x", ElemType::Float32, &Dim::batched(&[4]));
        g.node("Relu", &[&x], &["y"], vec![]);
        g.output("y", ElemType::Float32, &Dim::batched(&[4]));
        g
    }

    #[test]
    fn ir_version_follows_opset() {
        for (opset, ir) in [(13, 8), (15, 8), (17, 8), (18, 9), (20, 9), (21, 10)] {
            assert_eq!(ir_version_for_opset(opset), Some(ir));
            let model = relu_graph().build(opset).unwrap();
            assert_eq!(model.ir_version, ir);
            assert_eq!(model.opset_import.len(), 1);
            assert_eq!(model.opset_import[0].domain, "");
            assert_eq!(model.opset_import[0].version, opset);
            assert_eq!(model.producer_name, "hardy");
            assert_eq!(model.producer_version, env!("CARGO_PKG_VERSION"));
        }
    }

    #[test]
    fn unsupported_opsets_are_refused() {
        for opset in [0, 12, 22, -1] {
            let msg = build_err(relu_graph(), opset);
            assert!(msg.contains(&format!("opset {opset} is not supported")), "{msg}");
        }
    }

    #[test]
    fn undefined_inputs_are_reported_with_the_node() {
        let mut g = relu_graph();
        g.op("Add", &["y", "bias"], vec![]);
        let msg = build_err(g, 17);
        assert!(msg.contains("node `add_0` (Add) reads `bias`"), "{msg}");

        // A node may not read the output of a later node.
        let mut g = GraphBuilder::new("order");
        let x = g.input("x", ElemType::Float32, &[]);
        g.node("Relu", &["later"], &["early"], vec![]);
        g.node("Neg", &[&x], &["later"], vec![]);
        g.output("early", ElemType::Float32, &[]);
        let msg = build_err(g, 17);
        assert!(msg.contains("reads `later`"), "{msg}");

        // An empty name is an omitted optional input, and is fine.
        let mut g = GraphBuilder::new("optional");
        let x = g.input("x", ElemType::Float32, &Dim::fixed(&[2, 2]));
        let y = g.op("Clip", &[x.as_str(), "", ""], vec![]);
        g.output(&y, ElemType::Float32, &Dim::fixed(&[2, 2]));
        g.build(17).unwrap();
    }

    #[test]
    fn duplicate_names_are_reported() {
        let mut g = relu_graph();
        g.initializer_f32("x", &[1], vec![1.0]);
        let msg = build_err(g, 17);
        assert!(
            msg.contains("`x` is defined twice: as a graph input and as an initializer"),
            "{msg}"
        );

        let mut g = relu_graph();
        g.node("Neg", &["x"], &["y"], vec![]);
        let msg = build_err(g, 17);
        assert!(msg.contains("`y` is defined twice"), "{msg}");

        let mut g = relu_graph();
        g.output("y", ElemType::Float32, &[]);
        let msg = build_err(g, 17);
        assert!(msg.contains("`y` is declared as a graph output twice"), "{msg}");
    }

    #[test]
    fn data_length_must_match_dims() {
        let mut g = relu_graph();
        g.initializer_f32("w", &[2, 3], vec![0.0; 5]);
        let msg = build_err(g, 17);
        assert!(
            msg.contains("tensor `w` has shape [2, 3] (6 elements) but 5 values"),
            "{msg}"
        );

        let err = tensor_i64("shape", &[-1], vec![]).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        assert!(tensor_f32("s", &[], vec![1.0]).is_ok(), "a scalar has one element");
        assert!(tensor_f32("s", &[i64::MAX, i64::MAX], vec![]).is_err());
    }

    #[test]
    fn outputs_must_exist_and_be_produced() {
        let mut g = GraphBuilder::new("no_outputs");
        let x = g.input("x", ElemType::Float32, &[]);
        g.op("Relu", &[&x], vec![]);
        assert!(build_err(g, 17).contains("the graph has no outputs"));

        let mut g = relu_graph();
        g.output("z", ElemType::Float32, &[]);
        assert!(build_err(g, 17).contains("graph output `z` is not"));
    }

    #[test]
    fn all_errors_are_reported_together() {
        let mut g = GraphBuilder::new("broken");
        g.input("x", ElemType::Float32, &[Dim::Fixed(-3)]);
        g.initializer_f32("w", &[4], vec![0.0; 3]);
        g.op("Relu", &["nowhere"], vec![]);
        let msg = build_err(g, 99);
        for part in [
            "graph `broken`",
            "negative dimension -3",
            "4 elements",
            "reads `nowhere`",
            "opset 99",
            "no outputs",
        ] {
            assert!(msg.contains(part), "missing {part:?} in {msg}");
        }

        let mut g = relu_graph();
        for i in 0..25 {
            g.op("Neg", &[format!("missing{i}")], vec![]);
        }
        let msg = build_err(g, 17);
        assert!(msg.ends_with("; and 15 more"), "{msg}");
    }

    #[test]
    fn other_domains_must_be_imported() {
        let mut node = NodeProto::new();
        node.op_type = "FusedGemm".into();
        node.domain = "com.microsoft".into();
        node.input = vec!["y".into()];
        node.output = vec!["z".into()];
        let mut g = relu_graph();
        g.node_proto(node.clone());
        assert!(build_err(g, 17).contains("domain `com.microsoft`, which is not imported"));

        let mut g = relu_graph();
        g.node_proto(node).import_opset("com.microsoft", 1);
        let model = g.build(17).unwrap();
        assert_eq!(model.opset_import.len(), 2);
        assert_eq!(model.opset_import[1].domain, "com.microsoft");
    }

    #[test]
    fn generated_names_are_unique_and_readable() {
        let mut g = GraphBuilder::new("names");
        let x = g.input("relu_0", ElemType::Float32, &[]);
        let a = g.op("Relu", &[&x], vec![]);
        let b = g.op("Relu", &[&a], vec![]);
        let c = g.op("GlobalAveragePool", &[&b], vec![]);
        let parts = g.op_multi("Split", &[&c], 2, vec![Attr::int("axis", 0)]);
        assert_eq!(
            [a.as_str(), b.as_str(), c.as_str()],
            ["relu_1", "relu_2", "global_average_pool_0"]
        );
        assert_eq!(parts, ["split_0_out0", "split_0_out1"]);
        assert_eq!(g.fresh("conv"), "conv_0");
        assert_eq!(g.fresh("conv"), "conv_1");
        assert_eq!(snake_case("LRN"), "lrn");
        assert_eq!(snake_case("MatMul"), "mat_mul");
        assert_eq!(snake_case("QLinearConv"), "qlinear_conv");
        assert_eq!(snake_case(""), "node");
        g.output(&parts[0], ElemType::Float32, &[]);
        g.build(17).unwrap();
    }

    #[test]
    fn tensors_are_little_endian_raw_data() {
        let t = tensor_f32("w", &[2], vec![1.0, -2.5]).unwrap();
        assert_eq!(t.data_type, DataType::FLOAT as i32);
        assert_eq!(t.dims, [2]);
        assert_eq!(t.raw_data, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
        let t = tensor_i64("shape", &[2], vec![-1, 512]).unwrap();
        assert_eq!(t.data_type, DataType::INT64 as i32);
        assert_eq!(t.raw_data, [(-1i64).to_le_bytes(), 512i64.to_le_bytes()].concat());
    }

    #[test]
    fn attributes_and_metadata() {
        let t = tensor_i64("v", &[], vec![7]).unwrap();
        let attrs = [
            (Attr::int("a", 3), AttributeType::INT),
            (Attr::ints("b", &[1, 2]), AttributeType::INTS),
            (Attr::float("c", 0.5), AttributeType::FLOAT),
            (Attr::floats("d", &[0.5]), AttributeType::FLOATS),
            (Attr::string("e", "NOTSET"), AttributeType::STRING),
            (Attr::strings("f", &["x", "y"]), AttributeType::STRINGS),
            (Attr::tensor("value", t.clone()), AttributeType::TENSOR),
        ];
        for (attr, kind) in &attrs {
            assert_eq!(
                attr.clone().into_proto().type_.enum_value(),
                Ok(*kind),
                "{}",
                attr.name()
            );
        }
        let proto: AttributeProto = Attr::string("mode", "constant").into();
        assert_eq!(proto.s, b"constant");

        let mut g = GraphBuilder::new("constant");
        let c = g.op("Constant", &[] as &[&str], vec![Attr::tensor("value", t)]);
        g.output(&c, ElemType::Int64, &[]);
        g.metadata("k", "old").metadata("k", "new").metadata("z", "1");
        let model = g.build(21).unwrap();
        let meta: Vec<(&str, &str)> = model
            .metadata_props
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(meta, [("k", "new"), ("z", "1")]);
        assert_eq!(model.graph.node[0].attribute[0].t.raw_data, 7i64.to_le_bytes());
    }
}
