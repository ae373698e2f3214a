//! Bytes and files to [`ModelProto`] and back, with errors that say what the bytes are.

use std::{fs, path::Path};

use onnx_protobuf::{Message, ModelProto};

use super::{OnnxError, io_err};

/// Reads and decodes the ONNX model at `path`.
///
/// Fails with [`OnnxError::Io`] if the file cannot be read, [`OnnxError::Parse`] if it is not
/// protobuf, and [`OnnxError::NotAModel`] if it is protobuf but lacks a graph, an IR version
/// or an opset import (empty files, text files and other protobuf messages end up here).
pub fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    decode(&bytes, Some(path))
}

/// Decodes an ONNX model from memory; the errors are those of [`read_model`], without a path.
pub fn parse_model(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    decode(bytes, None)
}

/// Encodes `model` as the bytes of an `.onnx` file.
pub fn model_to_bytes(model: &ModelProto) -> Result<Vec<u8>, OnnxError> {
    model.write_to_bytes().map_err(|e| OnnxError::Encode(e.to_string()))
}

/// Writes `model` to `path`. The bytes go to a temporary file next to `path` that is then
/// renamed, so a reader never sees half a model.
pub fn write_model(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    let bytes = model_to_bytes(model)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        OnnxError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn decode(bytes: &[u8], path: Option<&Path>) -> Result<ModelProto, OnnxError> {
    let path = || path.map(Path::to_path_buf);
    if bytes.is_empty() {
        return Err(OnnxError::NotAModel {
            path: path(),
            reason: "it is empty (0 bytes)".into(),
        });
    }
    let hint = if looks_like_text(bytes) {
        "; it looks like a text file"
    } else {
        ""
    };
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Parse {
        path: path(),
        reason: format!(
            "the {} bytes do not decode as an ONNX ModelProto (protobuf: {e}){hint}",
            bytes.len()
        ),
    })?;
    let mut missing = Vec::new();
    if model.graph.is_none() {
        missing.push("no graph");
    }
    if model.ir_version <= 0 {
        missing.push("no IR version");
    }
    if model.opset_import.is_empty() {
        missing.push("no opset import");
    }
    if !missing.is_empty() {
        return Err(OnnxError::NotAModel {
            path: path(),
            reason: format!(
                "the {} bytes decode as a ModelProto but have {}{hint}",
                bytes.len(),
                missing.join(", ")
            ),
        });
    }
    Ok(model)
}

/// Whether the start of `bytes` is printable UTF-8 text (a README, JSON, an HTML error page
/// saved in place of a download).
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // A multi-byte character cut at the 512-byte boundary is still text.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !text.is_empty() && text.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{GraphProto, OperatorSetIdProto};
    use crate::onnx::{ElemType, GraphBuilder, tensor_f32};

    fn tiny_model() -> ModelProto {
        let mut g = GraphBuilder::new("tiny");
        let x = g.input("x", ElemType::Float32, &[2.into()]);
        let y = g.op("Relu", &[&x], vec![]);
        g.output(&y, ElemType::Float32, &[2.into()]);
        g.build(17).expect("tiny model builds")
    }

    #[test]
    fn bytes_round_trip() {
        let model = tiny_model();
        let bytes = model_to_bytes(&model).unwrap();
        assert_eq!(parse_model(&bytes).unwrap(), model);
    }

    #[test]
    fn files_round_trip_and_missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let model = tiny_model();
        write_model(&model, &path).unwrap();
        assert_eq!(read_model(&path).unwrap(), model);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let missing = dir.path().join("nope.onnx");
        let err = read_model(&missing).unwrap_err();
        assert!(
            matches!(err, OnnxError::Io { ref path, .. } if path == &missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope.onnx"), "{err}");
    }

    #[test]
    fn empty_input_is_not_a_model() {
        let err = parse_model(&[]).unwrap_err();
        assert!(matches!(err, OnnxError::NotAModel { path: None, .. }), "{err:?}");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn garbage_bytes_are_rejected_without_panicking() {
        // Deterministic pseudo-random buffers of many lengths: every one must be an error.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 1..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            let err = parse_model(&bytes).expect_err("random bytes are not a model");
            assert!(
                matches!(err, OnnxError::Parse { .. } | OnnxError::NotAModel { .. }),
                "{err:?}"
            );
        }
        // An invalid wire type is a decode error, not an empty model.
        let err = parse_model(&[0x0f, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, OnnxError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("do not decode as an ONNX ModelProto"), "{err}");
    }

    #[test]
    fn text_files_are_rejected_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("readme.onnx", "This is not a model.\nIt is a README.\n"),
            ("page.onnx", "<!DOCTYPE html><html><body>404 Not Found</body></html>"),
            ("labels.onnx", "tench\ngoldfish\ngreat white shark\n"),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            let err = read_model(&path).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, OnnxError::Parse { .. } | OnnxError::NotAModel { .. }),
                "{err:?}"
            );
            assert!(msg.contains(name), "{msg}");
            assert!(msg.contains("looks like a text file"), "{msg}");
        }
    }

    #[test]
    fn other_protobuf_messages_are_not_models() {
        let tensor = tensor_f32("w", &[2, 3], vec![0.5; 6]).unwrap();
        // Depending on field numbers and wire types this fails to decode or decodes empty.
        let err = parse_model(&tensor.write_to_bytes().unwrap()).unwrap_err();
        assert!(
            matches!(err, OnnxError::Parse { .. } | OnnxError::NotAModel { .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("not an ONNX model: "), "{err}");

        let mut no_graph = tiny_model();
        no_graph.graph.clear();
        let err = parse_model(&no_graph.write_to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, OnnxError::NotAModel { .. }), "{err:?}");
        assert!(err.to_string().contains("no graph"), "{err}");

        let mut no_ir = tiny_model();
        no_ir.ir_version = 0;
        let err = parse_model(&no_ir.write_to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no IR version"), "{err}");

        let mut no_opset = tiny_model();
        no_opset.opset_import.clear();
        let err = parse_model(&no_opset.write_to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no opset import"), "{err}");

        // A bare graph (what some tools save by mistake) is not a model either.
        let graph: GraphProto = tiny_model().graph.unwrap();
        let err = parse_model(&graph.write_to_bytes().unwrap()).unwrap_err();
        assert!(
            matches!(err, OnnxError::Parse { .. } | OnnxError::NotAModel { .. }),
            "{err:?}"
        );

        let mut opset = OperatorSetIdProto::new();
        opset.version = 17;
        let err = parse_model(&opset.write_to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, OnnxError::NotAModel { .. }), "{err:?}");
    }

    #[test]
    fn text_detection() {
        assert!(looks_like_text(b"hello\nworld\t!"));
        assert!(looks_like_text("größe".as_bytes()));
        assert!(!looks_like_text(&[0x08, 0x08, 0x12]));
        assert!(!looks_like_text(&[0xff, 0xfe, 0x00]));
    }
}
