//! ONNX model files: read them, describe them, and build graphs in code.
//!
//! Hardy serves whatever `.onnx` file it is given, so it needs one careful place that turns
//! bytes into a [`ModelProto`] and says clearly what is wrong when they are not a model (a
//! text file, a truncated download, some other protobuf). On top of that sit:
//!
//! - [`ModelInfo`]: what `hardy inspect MODEL.onnx` prints (IR and opset versions, inputs and
//!   outputs with their shapes, operator counts, parameter count, metadata).
//! - [`GraphBuilder`]: writing whole networks in Rust. Tests use it to make small models on
//!   the fly instead of checking binaries in; the trainer's exporter and the
//!   adversarial-gradient transform build their graphs with it too. Names are generated for
//!   you ([`GraphBuilder::fresh`], [`GraphBuilder::op`]) and mistakes (an input defined
//!   nowhere, a duplicate name, weights of the wrong length) are collected and reported all at
//!   once by [`GraphBuilder::build`], so network code reads straight through without `?` on
//!   every line.
//!
//! The protobuf types come from the `onnx-protobuf` crate, re-exported here as [`proto`] so
//! callers need no dependency of their own.

mod build;
mod info;
mod read;

use std::{
    fmt,
    path::{Path, PathBuf},
};

pub use build::{Attr, GraphBuilder, MAX_OPSET, MIN_OPSET, ir_version_for_opset, tensor_f32, tensor_i64};
pub use info::{ModelInfo, TensorInfo, dims_of, group_thousands};
/// The ONNX protobuf messages (`ModelProto`, `GraphProto`, `NodeProto`, ...) and `Message`.
pub use onnx_protobuf as proto;
pub use onnx_protobuf::ModelProto;
pub use read::{model_to_bytes, parse_model, read_model, write_model};

/// Why an ONNX file could not be read or written, or a graph could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes are not a protobuf message at all.
    #[error("{}not an ONNX model: {reason}", at(.path))]
    Parse {
        /// The file, if the bytes came from one.
        path: Option<PathBuf>,
        /// What the protobuf decoder reported.
        reason: String,
    },
    /// The bytes decode as protobuf, but not as an ONNX model (no graph, IR version or opset).
    #[error("{}not an ONNX model: {reason}", at(.path))]
    NotAModel {
        /// The file, if the bytes came from one.
        path: Option<PathBuf>,
        /// What is missing.
        reason: String,
    },
    /// A model could not be encoded (for instance, it is over protobuf's 2 GiB limit).
    #[error("cannot encode the ONNX model: {0}")]
    Encode(String),
    /// A graph builder was used wrongly: duplicate names, an input defined nowhere, weights
    /// whose length does not match their shape, an unsupported opset.
    #[error("cannot build ONNX graph: {0}")]
    Build(String),
}

/// `"PATH: "`, or nothing when the bytes did not come from a file.
fn at(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OnnxError + '_ {
    move |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The element type of a tensor (ONNX `TensorProto.DataType`), named as in NumPy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// `float32` (ONNX `FLOAT`).
    Float32,
    /// `float16`.
    Float16,
    /// `bfloat16`.
    BFloat16,
    /// `float64` (ONNX `DOUBLE`).
    Float64,
    /// `uint8`: raw image bytes.
    Uint8,
    /// `int8`.
    Int8,
    /// `uint16`.
    Uint16,
    /// `int16`.
    Int16,
    /// `int32`.
    Int32,
    /// `int64`: shapes, indices, labels.
    Int64,
    /// `uint32`.
    Uint32,
    /// `uint64`.
    Uint64,
    /// `bool`.
    Bool,
    /// `string`.
    String,
    /// Not a tensor, or no type given (ONNX `UNDEFINED`).
    Undefined,
    /// Any other ONNX data type code (complex, 4- and 8-bit floats and integers, ...).
    Other(i32),
}

impl ElemType {
    /// The type for an ONNX `DataType` code.
    pub fn from_onnx(code: i32) -> Self {
        match code {
            0 => Self::Undefined,
            1 => Self::Float32,
            2 => Self::Uint8,
            3 => Self::Int8,
            4 => Self::Uint16,
            5 => Self::Int16,
            6 => Self::Int32,
            7 => Self::Int64,
            8 => Self::String,
            9 => Self::Bool,
            10 => Self::Float16,
            11 => Self::Float64,
            12 => Self::Uint32,
            13 => Self::Uint64,
            16 => Self::BFloat16,
            other => Self::Other(other),
        }
    }

    /// The ONNX `DataType` code.
    pub fn to_onnx(self) -> i32 {
        match self {
            Self::Undefined => 0,
            Self::Float32 => 1,
            Self::Uint8 => 2,
            Self::Int8 => 3,
            Self::Uint16 => 4,
            Self::Int16 => 5,
            Self::Int32 => 6,
            Self::Int64 => 7,
            Self::String => 8,
            Self::Bool => 9,
            Self::Float16 => 10,
            Self::Float64 => 11,
            Self::Uint32 => 12,
            Self::Uint64 => 13,
            Self::BFloat16 => 16,
            Self::Other(code) => code,
        }
    }

    /// The NumPy-style name: `float32`, `uint8`, ...
    pub fn name(self) -> String {
        let known = match self {
            Self::Float32 => "float32",
            Self::Float16 => "float16",
            Self::BFloat16 => "bfloat16",
            Self::Float64 => "float64",
            Self::Uint8 => "uint8",
            Self::Int8 => "int8",
            Self::Uint16 => "uint16",
            Self::Int16 => "int16",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::Uint32 => "uint32",
            Self::Uint64 => "uint64",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Undefined => "undefined",
            Self::Other(14) => "complex64",
            Self::Other(15) => "complex128",
            Self::Other(17) => "float8e4m3fn",
            Self::Other(18) => "float8e4m3fnuz",
            Self::Other(19) => "float8e5m2",
            Self::Other(20) => "float8e5m2fnuz",
            Self::Other(21) => "uint4",
            Self::Other(22) => "int4",
            Self::Other(23) => "float4e2m1",
            Self::Other(code) => return format!("onnx-type-{code}"),
        };
        known.to_string()
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One dimension of a tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known size.
    Fixed(i64),
    /// A named size fixed only at run time, such as `batch`.
    Symbolic(String),
    /// A size the model does not state.
    Unknown,
}

impl Dim {
    /// The symbolic batch dimension, `batch`.
    pub fn batch() -> Self {
        Self::Symbolic("batch".to_string())
    }

    /// Fixed dimensions: `Dim::fixed(&[1, 1000])` is `[1, 1000]`.
    pub fn fixed(dims: &[i64]) -> Vec<Dim> {
        dims.iter().map(|&d| Self::Fixed(d)).collect()
    }

    /// A batch dimension followed by fixed ones: `Dim::batched(&[3, 224, 224])` is
    /// `[batch, 3, 224, 224]`.
    pub fn batched(rest: &[i64]) -> Vec<Dim> {
        std::iter::once(Self::batch())
            .chain(rest.iter().map(|&d| Self::Fixed(d)))
            .collect()
    }

    /// `[batch, 3, 224, 224]`.
    pub fn format_shape(dims: &[Dim]) -> String {
        let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
        format!("[{}]", parts.join(", "))
    }
}

impl From<i64> for Dim {
    fn from(d: i64) -> Self {
        Self::Fixed(d)
    }
}

impl From<&str> for Dim {
    fn from(name: &str) -> Self {
        Self::Symbolic(name.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(d) => write!(f, "{d}"),
            Self::Symbolic(name) => f.write_str(name),
            Self::Unknown => f.write_str("?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elem_type_codes_round_trip() {
        for code in 0..=25 {
            assert_eq!(ElemType::from_onnx(code).to_onnx(), code);
        }
        assert_eq!(ElemType::from_onnx(1), ElemType::Float32);
        assert_eq!(ElemType::Uint8.to_string(), "uint8");
        assert_eq!(ElemType::from_onnx(14).to_string(), "complex64");
        assert_eq!(ElemType::from_onnx(99).to_string(), "onnx-type-99");
    }

    #[test]
    fn dims_display_like_python_shapes() {
        assert_eq!(Dim::format_shape(&Dim::batched(&[3, 224, 224])), "[batch, 3, 224, 224]");
        assert_eq!(Dim::format_shape(&[Dim::Unknown, "n".into(), 5.into()]), "[?, n, 5]");
        assert_eq!(Dim::format_shape(&[]), "[]");
        assert_eq!(Dim::fixed(&[1, 2]), vec![Dim::Fixed(1), Dim::Fixed(2)]);
    }

    #[test]
    fn errors_name_the_file_or_the_bytes() {
        let e = OnnxError::Parse {
            path: Some("m.onnx".into()),
            reason: "x".into(),
        };
        assert_eq!(e.to_string(), "m.onnx: not an ONNX model: x");
        let e = OnnxError::NotAModel {
            path: None,
            reason: "no graph".into(),
        };
        assert_eq!(e.to_string(), "not an ONNX model: no graph");
    }
}
