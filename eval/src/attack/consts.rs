//! The model's constant tensors (initializers and `Constant` outputs) and their values.
//!
//! The checks, the rules and the shape inference all need to know whether an input is a
//! constant (weights, pads, axes, scales) and what it holds; this is the one place that
//! reads the tensors, whatever form the exporter stored them in (raw bytes or typed fields).

use std::collections::HashMap;

use engine::onnx::proto::{NodeProto, TensorProto, tensor_proto::DataType};

/// The constant tensors of a model, by value name.
pub(crate) type Consts = HashMap<String, TensorProto>;

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
pub(crate) fn const_i64s(consts: &Consts, name: &str) -> Option<Vec<i64>> {
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
pub(crate) fn const_f32s(consts: &Consts, name: &str) -> Option<Vec<f32>> {
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
