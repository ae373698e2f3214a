//! What a model is: the report behind `hardy inspect MODEL.onnx`.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::Path,
};

use onnx_protobuf::{ModelProto, TensorShapeProto, ValueInfoProto, tensor_shape_proto, type_proto};

use super::{Dim, ElemType, OnnxError, read_model};

/// Metadata values longer than this many characters are shortened in the report.
const MAX_METADATA_CHARS: usize = 200;

/// A graph input or output: name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The value's name, as ONNX Runtime's session reports it.
    pub name: String,
    /// The element type; [`ElemType::Undefined`] for values that are not tensors (sequences,
    /// maps, optionals) or have no type.
    pub elem_type: ElemType,
    /// The dimensions; empty for a scalar or when the shape is not stated (see `has_shape`).
    pub dims: Vec<Dim>,
    /// Whether the model states a shape at all (a rank-0 scalar does, with no dimensions).
    pub has_shape: bool,
}

impl TensorInfo {
    /// Reads a `ValueInfoProto`. Never fails: missing parts become unknown.
    pub fn from_value_info(value: &ValueInfoProto) -> Self {
        let (elem_type, shape) = match value.type_.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => (ElemType::from_onnx(t.elem_type), t.shape.as_ref()),
            Some(type_proto::Value::SparseTensorType(t)) => (ElemType::from_onnx(t.elem_type), t.shape.as_ref()),
            _ => (ElemType::Undefined, None),
        };
        Self {
            name: value.name.clone(),
            elem_type,
            dims: shape.map(dims_of).unwrap_or_default(),
            has_shape: shape.is_some(),
        }
    }

    /// The shape as `[batch, 3, 224, 224]`, or `[unknown shape]`.
    pub fn shape(&self) -> String {
        if self.has_shape {
            Dim::format_shape(&self.dims)
        } else {
            "[unknown shape]".to_string()
        }
    }
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.name, self.elem_type, self.shape())
    }
}

/// The dimensions a `TensorShapeProto` states: fixed sizes, named (symbolic) ones, and
/// [`Dim::Unknown`] for the rest.
pub fn dims_of(shape: &TensorShapeProto) -> Vec<Dim> {
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Dim::Fixed(*v),
            Some(tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
            _ => Dim::Unknown,
        })
        .collect()
}

/// A summary of a model: versions, interface, operators, size and metadata.
///
/// Its `Display` is the report `hardy inspect` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The ONNX IR version.
    pub ir_version: i64,
    /// Imported operator sets: (domain, version); the domain `""` is the default `ai.onnx`.
    pub opsets: Vec<(String, i64)>,
    /// The producing tool's name and version, e.g. `pytorch 2.5.1`; empty if not recorded.
    pub producer: String,
    /// The main graph's name.
    pub graph_name: String,
    /// Graph inputs that must be fed (inputs that are also initializers are left out: older
    /// exporters list weights as inputs).
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Nodes of the main graph per operator; operators of other domains are prefixed with
    /// the domain, as in `com.microsoft.FusedConv`. Nodes inside subgraphs (If, Loop) are not
    /// counted.
    pub op_counts: BTreeMap<String, usize>,
    /// Nodes in the main graph.
    pub node_count: usize,
    /// Initializers (dense and sparse) in the main graph.
    pub initializer_count: usize,
    /// Elements across all initializers (sparse ones counted at their dense size).
    pub parameter_count: u64,
    /// The model's `metadata_props`.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Reads `path` and summarises it.
    pub fn from_file(path: &Path) -> Result<Self, OnnxError> {
        read_model(path).map(|m| Self::from_model(&m))
    }

    /// Summarises a decoded model. Never fails or panics: whatever is missing is left empty.
    pub fn from_model(model: &ModelProto) -> Self {
        let producer = format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string();
        let opsets = model
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect();
        let metadata = model
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let mut info = Self {
            ir_version: model.ir_version,
            opsets,
            producer,
            graph_name: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            op_counts: BTreeMap::new(),
            node_count: 0,
            initializer_count: 0,
            parameter_count: 0,
            metadata,
        };
        let Some(graph) = model.graph.as_ref() else {
            return info;
        };
        info.graph_name = graph.name.clone();
        let weights: HashSet<&str> = graph
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .chain(
                graph
                    .sparse_initializer
                    .iter()
                    .filter_map(|s| s.values.as_ref())
                    .map(|t| t.name.as_str()),
            )
            .collect();
        info.inputs = graph
            .input
            .iter()
            .filter(|i| !weights.contains(i.name.as_str()))
            .map(TensorInfo::from_value_info)
            .collect();
        info.outputs = graph.output.iter().map(TensorInfo::from_value_info).collect();
        for node in &graph.node {
            let key = match node.domain.as_str() {
                "" | "ai.onnx" => node.op_type.clone(),
                domain => format!("{domain}.{}", node.op_type),
            };
            *info.op_counts.entry(key).or_insert(0) += 1;
        }
        info.node_count = graph.node.len();
        info.initializer_count = graph.initializer.len() + graph.sparse_initializer.len();
        let dense = graph.initializer.iter().map(|t| elements(&t.dims));
        let sparse = graph.sparse_initializer.iter().map(|s| elements(&s.dims));
        info.parameter_count = dense.chain(sparse).fold(0u64, u64::saturating_add);
        info
    }

    /// Operator counts, most frequent first, ties by name.
    pub fn ops_by_count(&self) -> Vec<(&str, usize)> {
        let mut ops: Vec<(&str, usize)> = self.op_counts.iter().map(|(k, &v)| (k.as_str(), v)).collect();
        ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ops
    }
}

/// Elements of a tensor with these dimensions; negative dimensions (a corrupt file) count as 0.
fn elements(dims: &[i64]) -> u64 {
    dims.iter()
        .fold(1u64, |n, &d| n.saturating_mul(u64::try_from(d).unwrap_or(0)))
}

/// `1234567` -> `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A metadata value on one line: control characters escaped, long values shortened to
/// [`MAX_METADATA_CHARS`] characters with an ellipsis and the full length.
fn display_value(value: &str) -> String {
    let total = value.chars().count();
    let mut out = String::new();
    for c in value.chars().take(MAX_METADATA_CHARS) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if total > MAX_METADATA_CHARS {
        out.push_str(&format!("… ({} chars)", group_thousands(total as u64)));
    }
    out
}

fn write_tensors(f: &mut fmt::Formatter<'_>, title: &str, tensors: &[TensorInfo]) -> fmt::Result {
    if tensors.is_empty() {
        return writeln!(f, "{title:<12} (none)");
    }
    writeln!(f, "{title}")?;
    let name_width = tensors.iter().map(|t| t.name.chars().count()).max().unwrap_or(0);
    let type_width = tensors.iter().map(|t| t.elem_type.name().len()).max().unwrap_or(0);
    for t in tensors {
        writeln!(
            f,
            "  {:<name_width$}  {:<type_width$}  {}",
            t.name,
            t.elem_type.name(),
            t.shape()
        )?;
    }
    Ok(())
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |s: &str| {
            if s.is_empty() {
                "(not recorded)".to_string()
            } else {
                s.to_string()
            }
        };
        writeln!(f, "{:<12} {}", "graph", or_none(&self.graph_name))?;
        writeln!(f, "{:<12} {}", "IR version", self.ir_version)?;
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|(domain, v)| format!("{} {v}", if domain.is_empty() { "ai.onnx" } else { domain }))
            .collect();
        writeln!(
            f,
            "{:<12} {}",
            "opsets",
            if opsets.is_empty() {
                "(none)".into()
            } else {
                opsets.join(", ")
            }
        )?;
        writeln!(f, "{:<12} {}", "producer", or_none(&self.producer))?;
        write_tensors(f, "inputs", &self.inputs)?;
        write_tensors(f, "outputs", &self.outputs)?;
        let ops = self.ops_by_count();
        writeln!(
            f,
            "{:<12} {} nodes, {} operator types",
            "operators",
            self.node_count,
            ops.len()
        )?;
        let op_width = ops.iter().map(|(op, _)| op.chars().count()).max().unwrap_or(0);
        for (op, count) in &ops {
            writeln!(f, "  {op:<op_width$}  {count:>6}")?;
        }
        writeln!(
            f,
            "{:<12} {} in {} initializers",
            "parameters",
            group_thousands(self.parameter_count),
            self.initializer_count
        )?;
        if self.metadata.is_empty() {
            writeln!(f, "{:<12} (none)", "metadata")?;
        } else {
            writeln!(f, "metadata")?;
            for (key, value) in &self.metadata {
                writeln!(f, "  {} = {}", display_value(key), display_value(value))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{GraphProto, SparseTensorProto, TensorProto};
    use crate::onnx::{Attr, GraphBuilder, model_to_bytes, parse_model, write_model};

    const OPSETS: [(i64, i64); 4] = [(13, 8), (17, 8), (18, 9), (21, 10)];

    /// Conv(3->4, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->10).
    fn tiny_cnn(opset: i64) -> ModelProto {
        let mut g = GraphBuilder::new("tiny_cnn");
        let x = g.input("image", ElemType::Float32, &Dim::batched(&[3, 16, 16]));
        let w = g.initializer_f32("conv.weight", &[4, 3, 3, 3], vec![0.01; 108]);
        let b = g.initializer_f32("conv.bias", &[4], vec![0.0; 4]);
        let conv = g.op(
            "Conv",
            &[&x, &w, &b],
            vec![Attr::ints("kernel_shape", &[3, 3]), Attr::ints("pads", &[1, 1, 1, 1])],
        );
        let relu = g.op("Relu", &[&conv], vec![]);
        let gap = g.op("GlobalAveragePool", &[&relu], vec![]);
        let flat = g.op("Flatten", &[&gap], vec![Attr::int("axis", 1)]);
        let fc_w = g.initializer_f32("fc.weight", &[10, 4], vec![0.1; 40]);
        let fc_b = g.initializer_f32("fc.bias", &[10], vec![0.0; 10]);
        g.node(
            "Gemm",
            &[&flat, &fc_w, &fc_b],
            &["logits"],
            vec![Attr::int("transB", 1)],
        );
        g.output("logits", ElemType::Float32, &Dim::batched(&[10]));
        g.metadata("labels", "0,1,2,3,4,5,6,7,8,9")
            .metadata("mean", "0.5,0.5,0.5");
        g.build(opset).expect("tiny CNN builds")
    }

    /// One Gemm on a fixed-size uint8-free float input, with no metadata.
    fn gemm_only(opset: i64) -> ModelProto {
        let mut g = GraphBuilder::new("linear");
        let x = g.input("x", ElemType::Float32, &[Dim::Fixed(1), Dim::Fixed(784)]);
        let w = g.initializer_f32("w", &[784, 10], vec![0.0; 7840]);
        let b = g.initializer_f32("b", &[10], vec![0.0; 10]);
        let y = g.op("Gemm", &[&x, &w, &b], vec![]);
        g.output(&y, ElemType::Float32, &Dim::fixed(&[1, 10]));
        g.build(opset).expect("Gemm model builds")
    }

    fn round_trip(model: &ModelProto) -> ModelInfo {
        let bytes = model_to_bytes(model).unwrap();
        ModelInfo::from_model(&parse_model(&bytes).unwrap())
    }

    #[test]
    fn tiny_cnn_info_at_every_supported_opset() {
        for (opset, ir) in OPSETS {
            let info = round_trip(&tiny_cnn(opset));
            assert_eq!(info.ir_version, ir, "opset {opset}");
            assert_eq!(info.opsets, vec![(String::new(), opset)]);
            assert_eq!(info.producer, format!("hardy {}", env!("CARGO_PKG_VERSION")));
            assert_eq!(info.graph_name, "tiny_cnn");
            assert_eq!(info.inputs.len(), 1);
            assert_eq!(info.inputs[0].name, "image");
            assert_eq!(info.inputs[0].elem_type, ElemType::Float32);
            assert_eq!(info.inputs[0].dims, Dim::batched(&[3, 16, 16]));
            assert_eq!(info.inputs[0].to_string(), "image: float32 [batch, 3, 16, 16]");
            assert_eq!(info.outputs.len(), 1);
            assert_eq!(info.outputs[0].name, "logits");
            assert_eq!(info.outputs[0].shape(), "[batch, 10]");
            let ops: Vec<(&str, usize)> = info.op_counts.iter().map(|(k, &v)| (k.as_str(), v)).collect();
            assert_eq!(
                ops,
                [
                    ("Conv", 1),
                    ("Flatten", 1),
                    ("Gemm", 1),
                    ("GlobalAveragePool", 1),
                    ("Relu", 1)
                ]
            );
            assert_eq!(info.node_count, 5);
            assert_eq!(info.initializer_count, 4);
            assert_eq!(info.parameter_count, 108 + 4 + 40 + 10);
            assert_eq!(info.metadata.len(), 2);
            assert_eq!(info.metadata["labels"], "0,1,2,3,4,5,6,7,8,9");
            assert_eq!(info.metadata["mean"], "0.5,0.5,0.5");
        }
    }

    #[test]
    fn gemm_only_info_at_every_supported_opset() {
        for (opset, ir) in OPSETS {
            let info = round_trip(&gemm_only(opset));
            assert_eq!(info.ir_version, ir);
            assert_eq!(info.opsets, vec![(String::new(), opset)]);
            assert_eq!(info.inputs[0].dims, Dim::fixed(&[1, 784]));
            assert_eq!(info.outputs[0].name, "gemm_0");
            assert_eq!(info.outputs[0].dims, Dim::fixed(&[1, 10]));
            assert_eq!(info.op_counts.len(), 1);
            assert_eq!(info.op_counts["Gemm"], 1);
            assert_eq!(info.parameter_count, 7850);
            assert!(info.metadata.is_empty());
        }
    }

    #[test]
    fn from_file_reads_what_write_model_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cnn.onnx");
        write_model(&tiny_cnn(17), &path).unwrap();
        let info = ModelInfo::from_file(&path).unwrap();
        assert_eq!(info.node_count, 5);
        assert!(ModelInfo::from_file(&dir.path().join("missing.onnx")).is_err());
    }

    #[test]
    fn initializers_listed_as_inputs_are_not_inputs() {
        // Older exporters (IR < 4) declare every weight as a graph input too.
        let mut model = tiny_cnn(13);
        let graph = model.graph.as_mut().unwrap();
        let weight_inputs: Vec<ValueInfoProto> = graph
            .initializer
            .iter()
            .map(|t| {
                let mut v = ValueInfoProto::new();
                v.name = t.name.clone();
                v
            })
            .collect();
        graph.input.extend(weight_inputs);
        assert_eq!(graph.input.len(), 5);
        let info = ModelInfo::from_model(&model);
        let names: Vec<&str> = info.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["image"]);
    }

    #[test]
    fn other_domains_sparse_weights_and_missing_parts() {
        let mut model = gemm_only(17);
        let graph = model.graph.as_mut().unwrap();
        let mut fused = graph.node[0].clone();
        fused.domain = "com.microsoft".into();
        fused.op_type = "FusedGemm".into();
        graph.node.push(fused.clone());
        graph.node.push(fused);
        let mut sparse = SparseTensorProto::new();
        sparse.dims = vec![100, 100];
        let mut values = TensorProto::new();
        values.name = "sparse_w".into();
        sparse.values = protobuf::MessageField::some(values);
        graph.sparse_initializer.push(sparse);
        // A corrupt initializer with a negative dimension counts as empty.
        let mut bad = TensorProto::new();
        bad.dims = vec![-5, 3];
        graph.initializer.push(bad);
        // An output with no type at all.
        let mut untyped = ValueInfoProto::new();
        untyped.name = "mystery".into();
        graph.output.push(untyped);

        let info = ModelInfo::from_model(&model);
        assert_eq!(info.op_counts["com.microsoft.FusedGemm"], 2);
        assert_eq!(info.ops_by_count()[0], ("com.microsoft.FusedGemm", 2));
        assert_eq!(info.initializer_count, 4);
        assert_eq!(info.parameter_count, 7850 + 10_000);
        let mystery = &info.outputs[1];
        assert_eq!(mystery.elem_type, ElemType::Undefined);
        assert!(!mystery.has_shape);
        assert_eq!(mystery.shape(), "[unknown shape]");

        // A model with nothing in it still summarises (and prints) without panicking.
        let empty = ModelInfo::from_model(&ModelProto::new());
        assert_eq!(empty.node_count, 0);
        assert!(empty.to_string().contains("(not recorded)"));
        let mut graph_only = ModelProto::new();
        graph_only.graph = protobuf::MessageField::some(GraphProto::new());
        assert!(ModelInfo::from_model(&graph_only).inputs.is_empty());
    }

    #[test]
    fn report_lists_versions_interface_ops_parameters_and_metadata() {
        let mut g = GraphBuilder::new("report");
        let x = g.input("pixels", ElemType::Uint8, &Dim::batched(&[224, 224, 3]));
        let f = g.op("Cast", &[&x], vec![Attr::int("to", 1)]);
        let a = g.op("Relu", &[&f], vec![]);
        let b = g.op("Relu", &[&a], vec![]);
        let w = g.initializer_f32("big", &[1000, 1235], vec![0.0; 1_235_000]);
        let c = g.op("Add", &[&b, &w], vec![]);
        g.output(
            &c,
            ElemType::Float32,
            &[Dim::batch(), Dim::Unknown, "w".into(), 3.into()],
        );
        g.metadata("author", "hardy tests");
        g.metadata("labels", &"x".repeat(1000));
        g.metadata("note", "line one\nline two");
        let info = round_trip(&g.build(18).unwrap());
        let report = info.to_string();

        for expected in [
            "graph        report\n",
            "IR version   9\n",
            "opsets       ai.onnx 18\n",
            &format!("producer     hardy {}\n", env!("CARGO_PKG_VERSION")),
            "inputs\n  pixels  uint8  [batch, 224, 224, 3]\n",
            "outputs\n  add_0  float32  [batch, ?, w, 3]\n",
            "operators    4 nodes, 3 operator types\n  Relu       2\n  Add        1\n  Cast       1\n",
            "parameters   1,235,000 in 1 initializers\n",
            "metadata\n  author = hardy tests\n",
            "  note = line one\\nline two\n",
        ] {
            assert!(report.contains(expected), "missing {expected:?} in:\n{report}");
        }
        let labels_line = report.lines().find(|l| l.starts_with("  labels = ")).unwrap();
        assert!(labels_line.ends_with("… (1,000 chars)"), "{labels_line}");
        assert_eq!(labels_line.matches('x').count(), MAX_METADATA_CHARS);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(25_557_032), "25,557,032");
        assert_eq!(group_thousands(u64::MAX), "18,446,744,073,709,551,615");
    }
}
