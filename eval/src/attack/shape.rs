//! A light static shape inference over the forward graph.
//!
//! The backward rules work with run-time shapes (`Shape`, `Size`) wherever they can, so
//! what this buys is mostly smaller gradient graphs: when both operands of a broadcasting
//! `Mul`/`Add`/... are known to have the output's shape, no reduction is emitted, and when
//! one is known to be broadcast, the reduction axes are constants. A few rules need a rank
//! (`Slice` with run-time bounds, `Gather`, `Transpose` without `perm`).
//!
//! Three sources, in this order of trust:
//! - the rules below, node by node, from the input's declared shape and the constants;
//! - the *values* of small integer tensors computed from shapes (`Shape` -> `Gather` ->
//!   `Unsqueeze` -> `Concat` -> `Reshape`, as exporters write `x.view(x.size(0), ...)`), kept
//!   symbolically, so a `Reshape` to a computed shape still has a known output shape;
//! - the shapes the file declares in `value_info` (what `onnx.shape_inference` writes), for
//!   the dimensions the rules leave unknown. A declared shape only fills gaps: it never
//!   overrides an inferred dimension, so a file that lies can make a gradient graph fail
//!   at run time in ONNX Runtime but cannot change a dimension worked out here.
//!
//! Integer values whose every entry is known ([`Shapes::folded`]) are handed to the rules as
//! constants: with a static image size, the pads, bounds and target shapes a model computes
//! from `Shape` are constants in all but name. Unknown dimensions get fresh symbols, equal to
//! nothing but themselves. An attribute of the wrong type leaves the shape unknown; the rule
//! that reads it reports it.

use std::collections::HashMap;

use engine::onnx::proto::tensor_proto::DataType;
use engine::onnx::proto::{NodeProto, TensorProto};
use engine::onnx::{Dim, tensor_i64};

use super::attr::{self, Node};
use super::consts::{Consts, const_f32s, const_i64s};

/// Whether string attribute `name` of `n` is absent or `default` (not when it is stored with
/// another type).
fn attr_str_is(n: Node<'_>, name: &str, default: &str) -> bool {
    attr::string(n, name).is_ok_and(|v| v.is_none_or(|v| v == default))
}

/// One dimension: a number or a symbol (`batch`, or `?k` for an unknown one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SDim {
    Fixed(i64),
    Sym(String),
}

/// The longest integer tensor whose values are tracked (shapes, pads, bounds).
const MAX_TRACKED_VALUES: usize = 64;

/// Static shapes of the values whose shapes could be worked out.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    map: HashMap<String, Vec<SDim>>,
    /// The entries of small int64 tensors (rank 0 or 1) computed from shapes and constants,
    /// in order; a scalar has one entry.
    values: HashMap<String, Vec<SDim>>,
    unknown: usize,
}

impl Shapes {
    pub(crate) fn get(&self, value: &str) -> Option<&[SDim]> {
        self.map.get(value).map(Vec::as_slice)
    }

    fn fresh(&mut self) -> SDim {
        self.unknown += 1;
        SDim::Sym(format!("?{}", self.unknown))
    }

    fn symbolise(&mut self, dims: &[Dim]) -> Vec<SDim> {
        dims.iter()
            .map(|d| match d {
                Dim::Fixed(v) => SDim::Fixed(*v),
                Dim::Symbolic(s) => SDim::Sym(s.clone()),
                Dim::Unknown => self.fresh(),
            })
            .collect()
    }

    /// Infers what it can, node by node, from the input's dims `x_dims`, the constants, and
    /// the shapes the file declares (`declared`: its `value_info` and outputs).
    pub(crate) fn infer(
        nodes: &[NodeProto],
        consts: &Consts,
        x: &str,
        x_dims: &[Dim],
        declared: &HashMap<String, Vec<Dim>>,
    ) -> Self {
        let mut s = Shapes::default();
        let xs = s.symbolise(x_dims);
        s.map.insert(x.to_string(), xs);
        for (name, t) in consts {
            s.map
                .insert(name.clone(), t.dims.iter().map(|&d| SDim::Fixed(d)).collect());
            if t.dims.len() <= 1
                && let Some(v) = const_i64s(consts, name).filter(|v| v.len() <= MAX_TRACKED_VALUES)
            {
                s.values.insert(name.clone(), v.into_iter().map(SDim::Fixed).collect());
            }
        }
        for (index, n) in nodes.iter().enumerate() {
            let n = Node::new(n, index);
            if n.op_type == "Split" {
                s.split(n, consts);
            } else if let Some(out) = s.node(n, consts)
                && let Some(o) = n.output.first()
            {
                s.map.insert(o.clone(), out);
            }
            if let Some(v) = s.value(n)
                && let Some(o) = n.output.first()
            {
                s.values.insert(o.clone(), v);
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if let Some(d) = declared.get(o) {
                    let d = s.symbolise(d);
                    let merged = match s.map.remove(o) {
                        Some(inferred) => fill_gaps(inferred, d),
                        None => d,
                    };
                    s.map.insert(o.clone(), merged);
                }
            }
        }
        s
    }

    /// The integer values whose every entry is known, as int64 constants (rank 0 or 1, as
    /// their shapes say), for the rules to read like the model's own constants. Values the
    /// model already holds as constants are left out.
    pub(crate) fn folded(&self, consts: &Consts) -> Vec<TensorProto> {
        let mut out = Vec::new();
        for (name, v) in &self.values {
            if consts.contains_key(name) {
                continue;
            }
            let Some(v) = v
                .iter()
                .map(|d| match d {
                    SDim::Fixed(v) => Some(*v),
                    SDim::Sym(_) => None,
                })
                .collect::<Option<Vec<i64>>>()
            else {
                continue;
            };
            let dims: Vec<i64> = match self.map.get(name).map(Vec::as_slice) {
                Some([]) if v.len() == 1 => vec![],
                Some([SDim::Fixed(k)]) if *k == v.len() as i64 => vec![*k],
                _ => continue,
            };
            if let Ok(t) = tensor_i64(name, &dims, v) {
                out.push(t);
            }
        }
        out
    }

    /// The entries of `n`'s first output, when it is a small integer tensor computed from
    /// shapes and constants that can be followed.
    fn value(&mut self, n: Node<'_>) -> Option<Vec<SDim>> {
        let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty());
        let val = |s: &Self, i: usize| input(i).and_then(|v| s.values.get(v)).cloned();
        let out = match n.op_type.as_str() {
            "Shape" => {
                let x = self.map.get(input(0)?)?.clone();
                let r = x.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let start = clamp(attr::int_or(n, "start", 0).ok()?);
                let end = clamp(attr::int_or(n, "end", r).ok()?);
                x.get(start..end.max(start))?.to_vec()
            }
            "Identity" | "Squeeze" | "Unsqueeze" | "Reshape" | "Flatten" => val(self, 0)?,
            "Cast" => {
                let to = attr::int_or(n, "to", 0).ok()?;
                if to != DataType::INT64 as i64 && to != DataType::INT32 as i64 {
                    return None;
                }
                val(self, 0)?
            }
            "Gather" => {
                let data = val(self, 0)?;
                if attr::int_or(n, "axis", 0).ok()? != 0 {
                    return None;
                }
                let len = data.len() as i64;
                let idx = val(self, 1)?;
                idx.iter()
                    .map(|i| match i {
                        SDim::Fixed(i) => {
                            let i = if *i < 0 { i + len } else { *i };
                            data.get(usize::try_from(i).ok()?).cloned()
                        }
                        SDim::Sym(_) => None,
                    })
                    .collect::<Option<Vec<_>>>()?
            }
            "Concat" => {
                let mut out = Vec::new();
                for i in 0..n.input.len() {
                    out.extend(val(self, i)?);
                }
                out
            }
            "Slice" => {
                let data = val(self, 0)?;
                let len = data.len() as i64;
                let one = |s: &Self, i: usize| match val(s, i).as_deref() {
                    Some([SDim::Fixed(v)]) => Some(*v),
                    _ => None,
                };
                if input(3).is_some() && one(self, 3).is_none_or(|a| a != 0 && a != -1) {
                    return None;
                }
                if input(4).is_some() && one(self, 4) != Some(1) {
                    return None;
                }
                let resolve = |v: i64| (if v < 0 { v.saturating_add(len) } else { v }).clamp(0, len) as usize;
                let (a, b) = (resolve(one(self, 1)?), resolve(one(self, 2)?));
                data.get(a..b.max(a))?.to_vec()
            }
            "Add" | "Sub" | "Mul" | "Div" | "Mod" => {
                let (a, b) = (val(self, 0)?, val(self, 1)?);
                let len = a.len().max(b.len());
                if !(a.len() == b.len() || a.len() == 1 || b.len() == 1) {
                    return None;
                }
                let at = |v: &[SDim], i: usize| if v.len() == 1 { v[0].clone() } else { v[i].clone() };
                let mut out = Vec::with_capacity(len);
                for i in 0..len {
                    out.push(self.arith(&n.op_type, at(&a, i), at(&b, i)));
                }
                out
            }
            _ => return None,
        };
        (out.len() <= MAX_TRACKED_VALUES).then_some(out)
    }

    /// One element of integer arithmetic on shape values: computed when both are known,
    /// the symbol itself for `s + 0`, `s - 0`, `s * 1`, `s / 1`, a fresh symbol otherwise.
    fn arith(&mut self, op: &str, a: SDim, b: SDim) -> SDim {
        match (op, &a, &b) {
            ("Add", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_add(*y).map_or_else(|| self.fresh(), SDim::Fixed),
            ("Sub", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_sub(*y).map_or_else(|| self.fresh(), SDim::Fixed),
            ("Mul", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_mul(*y).map_or_else(|| self.fresh(), SDim::Fixed),
            // ONNX integer Div truncates toward zero (C semantics), as Rust's `/` does.
            ("Div", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_div(*y).map_or_else(|| self.fresh(), SDim::Fixed),
            // Mod with fmod = 0 (the default) takes the divisor's sign, as Python's `%`.
            ("Mod", SDim::Fixed(x), SDim::Fixed(y)) if *y != 0 => x
                .checked_rem(*y)
                .map(|r| if r != 0 && (r < 0) != (*y < 0) { r + y } else { r })
                .map_or_else(|| self.fresh(), SDim::Fixed),
            ("Add" | "Sub", SDim::Sym(_), SDim::Fixed(0))
            | ("Mul" | "Div", SDim::Sym(_), SDim::Fixed(1))
            | ("Mul", SDim::Fixed(1), SDim::Sym(_)) => {
                if matches!(a, SDim::Sym(_)) {
                    a
                } else {
                    b
                }
            }
            ("Add", SDim::Fixed(0), SDim::Sym(_)) => b,
            _ => self.fresh(),
        }
    }

    fn node(&mut self, n: Node<'_>, consts: &Consts) -> Option<Vec<SDim>> {
        let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty());
        let shape = |s: &Self, i: usize| input(i).and_then(|v| s.map.get(v)).cloned();
        match n.op_type.as_str() {
            "Relu" | "Sigmoid" | "Tanh" | "Clip" | "HardSigmoid" | "HardSwish" | "LeakyRelu" | "Identity"
            | "Dropout" | "BatchNormalization" | "Softmax" | "LogSoftmax" | "Neg" | "Exp" | "Log" | "Sqrt" | "Abs"
            | "Reciprocal" | "Elu" | "Selu" | "Softplus" | "Erf" | "Cast" | "LayerNormalization" | "Gelu" | "Sign"
            | "Floor" | "Ceil" | "Round" | "Not" | "IsNaN" | "IsInf" => shape(self, 0),
            "Shape" => {
                let x = shape(self, 0)?;
                let r = x.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
                let start = clamp(attr::int_or(n, "start", 0).ok()?);
                let end = clamp(attr::int_or(n, "end", r).ok()?);
                Some(vec![SDim::Fixed((end - start).max(0))])
            }
            "Size" => Some(vec![]),
            "ConstantOfShape" => {
                let v = input(0).and_then(|v| self.values.get(v)).cloned()?;
                Some(v)
            }
            "Expand" => {
                let x = shape(self, 0)?;
                let target = input(1).and_then(|v| self.values.get(v)).cloned()?;
                Some(self.broadcast(&x, &target))
            }
            "Squeeze" | "Unsqueeze" => self.squeeze(n, consts),
            "Gather" => {
                let data = shape(self, 0)?;
                let idx = shape(self, 1)?;
                let axis = self.axis(attr::int_or(n, "axis", 0).ok()?, data.len())?;
                let mut out = data[..axis].to_vec();
                out.extend(idx);
                out.extend_from_slice(&data[axis + 1..]);
                Some(out)
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Where" | "Mod" | "Equal" | "Less"
            | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" => {
                let mut acc = shape(self, 0)?;
                for i in 1..n.input.len() {
                    acc = self.broadcast(&acc, &shape(self, i)?);
                }
                Some(acc)
            }
            "Conv" => {
                let x = shape(self, 0)?;
                let w = shape(self, 1)?;
                let SDim::Fixed(m) = w.first()? else { return None };
                let kernel: Vec<i64> = w[2..]
                    .iter()
                    .map(|d| match d {
                        SDim::Fixed(v) => Some(*v),
                        SDim::Sym(_) => None,
                    })
                    .collect::<Option<_>>()?;
                let mut out = vec![x.first()?.clone(), SDim::Fixed(*m)];
                out.extend(self.spatial(n, &x, &kernel, false)?);
                Some(out)
            }
            "MaxPool" | "AveragePool" => {
                let x = shape(self, 0)?;
                let kernel = attr::ints(n, "kernel_shape").ok()??;
                let mut out = x.get(..2)?.to_vec();
                out.extend(self.spatial(n, &x, &kernel, attr::int_or(n, "ceil_mode", 0).ok()? != 0)?);
                Some(out)
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = shape(self, 0)?;
                let mut out = x.get(..2)?.to_vec();
                out.extend(std::iter::repeat_n(SDim::Fixed(1), x.len().checked_sub(2)?));
                Some(out)
            }
            "Flatten" => {
                let x = shape(self, 0)?;
                let r = x.len() as i64;
                let mut axis = attr::int_or(n, "axis", 1).ok()?;
                if axis < 0 {
                    axis += r;
                }
                let axis = usize::try_from(axis).ok().filter(|&a| a <= x.len())?;
                let a = self.product(&x[..axis]);
                let b = self.product(&x[axis..]);
                Some(vec![a, b])
            }
            "Reshape" => {
                let x = shape(self, 0)?;
                let target: Vec<SDim> = match const_i64s(consts, input(1)?) {
                    Some(t) => t.into_iter().map(SDim::Fixed).collect(),
                    None => self.values.get(input(1)?).cloned()?,
                };
                let allowzero = attr::int_or(n, "allowzero", 0).ok()? != 0;
                let mut out: Vec<SDim> = target
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match d {
                        SDim::Fixed(0) if !allowzero => x.get(i).cloned().unwrap_or(SDim::Fixed(0)),
                        d => d.clone(),
                    })
                    .collect();
                if let Some(pos) = out.iter().position(|d| *d == SDim::Fixed(-1)) {
                    // Solvable only when everything is fixed, or the symbols cancel.
                    let total = self.product(&x);
                    let rest: Vec<SDim> = out.iter().filter(|d| **d != SDim::Fixed(-1)).cloned().collect();
                    let known = self.product(&rest);
                    out[pos] = match (total, known) {
                        (SDim::Fixed(t), SDim::Fixed(k)) if k != 0 => SDim::Fixed(t / k),
                        (t, k) if t == k => SDim::Fixed(1),
                        _ => {
                            // `[batch, -1]` of a `[batch, ...fixed]` tensor.
                            let xs_fixed = self.product(&x[1.min(x.len())..]);
                            let rest_tail = self.product(&rest[1.min(rest.len())..]);
                            match (x.first(), rest.first(), xs_fixed, rest_tail) {
                                (Some(a), Some(b), SDim::Fixed(t), SDim::Fixed(k)) if a == b && pos > 0 && k != 0 => {
                                    SDim::Fixed(t / k)
                                }
                                _ => self.fresh(),
                            }
                        }
                    };
                }
                Some(out)
            }
            "Gemm" => {
                let a = shape(self, 0)?;
                let b = shape(self, 1)?;
                let m = if attr::int_or(n, "transA", 0).ok()? != 0 {
                    a.get(1)?
                } else {
                    a.first()?
                };
                let k = if attr::int_or(n, "transB", 0).ok()? != 0 {
                    b.first()?
                } else {
                    b.get(1)?
                };
                Some(vec![m.clone(), k.clone()])
            }
            "MatMul" => {
                let a = shape(self, 0)?;
                let b = shape(self, 1)?;
                if a.len() < 2 || b.len() < 2 {
                    return None;
                }
                let batch = self.broadcast(&a[..a.len() - 2], &b[..b.len() - 2]);
                let mut out = batch;
                out.push(a[a.len() - 2].clone());
                out.push(b[b.len() - 1].clone());
                Some(out)
            }
            "Transpose" => {
                let x = shape(self, 0)?;
                let perm = attr::ints(n, "perm")
                    .ok()?
                    .unwrap_or_else(|| (0..x.len() as i64).rev().collect());
                perm.iter().map(|&p| x.get(usize::try_from(p).ok()?).cloned()).collect()
            }
            "Concat" => {
                let first = shape(self, 0)?;
                let r = first.len() as i64;
                let axis = usize::try_from(attr::int_or(n, "axis", 0).ok()?.rem_euclid(r.max(1))).ok()?;
                let mut total = 0i64;
                for i in 0..n.input.len() {
                    match shape(self, i)?.get(axis)? {
                        SDim::Fixed(v) => total += v,
                        SDim::Sym(_) => return Some(self.with_fresh(&first, axis)),
                    }
                }
                let mut out = first;
                out[axis] = SDim::Fixed(total);
                Some(out)
            }
            "Pad" => self.pad(n, consts),
            "Resize" => self.resize(n, consts),
            "Slice" => self.slice(n, consts),
            _ => None,
        }
    }

    /// Squeeze's and Unsqueeze's outputs, with the axes from the attribute (opsets below 13)
    /// or the constant input.
    fn squeeze(&mut self, n: Node<'_>, consts: &Consts) -> Option<Vec<SDim>> {
        let x = self.map.get(n.input.first()?)?.clone();
        let axes = match n.input.get(1).filter(|v| !v.is_empty()) {
            Some(a) => Some(const_i64s(consts, a).or_else(|| {
                self.values
                    .get(a)?
                    .iter()
                    .map(|d| match d {
                        SDim::Fixed(v) => Some(*v),
                        SDim::Sym(_) => None,
                    })
                    .collect()
            })?),
            None => attr::ints(n, "axes").ok()?,
        };
        if n.op_type == "Unsqueeze" {
            let axes = axes?;
            let rank = x.len() + axes.len();
            let mut at: Vec<usize> = axes.iter().map(|&a| self.axis(a, rank)).collect::<Option<_>>()?;
            at.sort_unstable();
            let mut out = Vec::with_capacity(rank);
            let mut rest = x.into_iter();
            for i in 0..rank {
                if at.binary_search(&i).is_ok() {
                    out.push(SDim::Fixed(1));
                } else {
                    out.push(rest.next()?);
                }
            }
            return Some(out);
        }
        let at: Vec<usize> = match axes {
            Some(axes) => axes.iter().map(|&a| self.axis(a, x.len())).collect::<Option<_>>()?,
            // No axes: every axis of size 1, which needs every axis known.
            None if x.iter().all(|d| matches!(d, SDim::Fixed(_))) => {
                (0..x.len()).filter(|&i| x[i] == SDim::Fixed(1)).collect()
            }
            None => return None,
        };
        Some(
            x.into_iter()
                .enumerate()
                .filter(|(i, _)| !at.contains(i))
                .map(|(_, d)| d)
                .collect(),
        )
    }

    /// Pad's output: each padded axis grows by its two widths.
    fn pad(&mut self, n: Node<'_>, consts: &Consts) -> Option<Vec<SDim>> {
        let x = self.map.get(n.input.first()?)?.clone();
        let pads = attr::ints(n, "pads")
            .ok()?
            .or_else(|| const_i64s(consts, n.input.get(1)?))?;
        let k = pads.len() / 2;
        let axes = match n.input.get(3).filter(|v| !v.is_empty()) {
            Some(a) => const_i64s(consts, a)?,
            None => (0..k as i64).collect(),
        };
        if axes.len() != k || pads.len() != 2 * k {
            return None;
        }
        let mut out = x.clone();
        for (i, &axis) in axes.iter().enumerate() {
            let a = self.axis(axis, x.len())?;
            let grow = pads[i] + pads[i + k];
            out[a] = match &x[a] {
                SDim::Fixed(d) => SDim::Fixed(d + grow),
                s if grow == 0 => s.clone(),
                SDim::Sym(_) => self.fresh(),
            };
        }
        Some(out)
    }

    /// Resize's output, for constant sizes, or constant integer scales (where
    /// `floor(size * scale)` is exact).
    fn resize(&mut self, n: Node<'_>, consts: &Consts) -> Option<Vec<SDim>> {
        let x = self.map.get(n.input.first()?)?.clone();
        let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty());
        if attr::ints(n, "axes").ok()?.is_some()
            || attr::string(n, "coordinate_transformation_mode")
                .ok()?
                .is_some_and(|m| m == "tf_crop_and_resize")
        {
            return None;
        }
        if let Some(scales) = input(2).and_then(|s| const_f32s(consts, s)) {
            if scales.len() != x.len() || scales.iter().any(|s| !(s.fract() == 0.0 && *s >= 1.0)) {
                return None;
            }
            let mut out = Vec::with_capacity(x.len());
            for (d, &s) in x.iter().zip(&scales) {
                out.push(match d {
                    SDim::Fixed(v) => SDim::Fixed(v * s as i64),
                    d if s == 1.0 => d.clone(),
                    SDim::Sym(_) => self.fresh(),
                });
            }
            return Some(out);
        }
        let sizes = const_i64s(consts, input(3)?)?;
        (sizes.len() == x.len() && attr_str_is(n, "keep_aspect_ratio_policy", "stretch"))
            .then(|| sizes.into_iter().map(SDim::Fixed).collect())
    }

    /// Slice's output (step 1 only): sliced axes of known size with constant bounds get
    /// their length, other sliced axes a fresh symbol.
    fn slice(&mut self, n: Node<'_>, consts: &Consts) -> Option<Vec<SDim>> {
        let x = self.map.get(n.input.first()?)?.clone();
        let get = |i: usize| {
            n.input
                .get(i)
                .filter(|v| !v.is_empty())
                .and_then(|v| const_i64s(consts, v))
        };
        let given = |i: usize| n.input.get(i).is_some_and(|v| !v.is_empty());
        if given(4) && get(4)?.iter().any(|&s| s != 1) {
            return None;
        }
        let (starts, ends) = (get(1), get(2));
        let axes = match get(3) {
            Some(a) => a,
            None if given(3) => return None,
            None => (0..starts.as_ref()?.len() as i64).collect(),
        };
        let mut out = x.clone();
        for (i, &axis) in axes.iter().enumerate() {
            let a = self.axis(axis, x.len())?;
            let bounds = starts
                .as_ref()
                .zip(ends.as_ref())
                .and_then(|(s, e)| Some((*s.get(i)?, *e.get(i)?)));
            out[a] = match (&x[a], bounds) {
                (SDim::Fixed(d), Some((s, e))) => {
                    let resolve = |v: i64| if v < 0 { (v + d).max(0) } else { v.min(*d) };
                    SDim::Fixed((resolve(e) - resolve(s)).max(0))
                }
                _ => self.fresh(),
            };
        }
        Some(out)
    }

    /// `axis` of a rank-`rank` tensor, negative ones counted from the end.
    fn axis(&self, axis: i64, rank: usize) -> Option<usize> {
        usize::try_from(if axis < 0 { axis + rank as i64 } else { axis })
            .ok()
            .filter(|&a| a < rank)
    }

    /// Split's outputs, when the sizes are constants (or even) and the axis size is known.
    fn split(&mut self, n: Node<'_>, consts: &Consts) {
        let Some(x) = n.input.first().and_then(|v| self.map.get(v)).cloned() else {
            return;
        };
        let r = x.len() as i64;
        let Some(axis) = attr::int_or(n, "axis", 0)
            .ok()
            .and_then(|a| usize::try_from(a.rem_euclid(r.max(1))).ok())
        else {
            return;
        };
        let sizes = match n.input.get(1).filter(|v| !v.is_empty()) {
            Some(v) => const_i64s(consts, v),
            None => match x.get(axis) {
                Some(SDim::Fixed(d)) if !n.output.is_empty() && d % n.output.len() as i64 == 0 => {
                    Some(vec![d / n.output.len() as i64; n.output.len()])
                }
                _ => None,
            },
        };
        let Some(sizes) = sizes.filter(|s| s.len() == n.output.len()) else {
            return;
        };
        for (o, size) in n.output.iter().zip(sizes) {
            let mut dims = x.clone();
            dims[axis] = SDim::Fixed(size);
            self.map.insert(o.clone(), dims);
        }
    }

    fn with_fresh(&mut self, dims: &[SDim], axis: usize) -> Vec<SDim> {
        let mut out = dims.to_vec();
        out[axis] = self.fresh();
        out
    }

    /// Output spatial dims of a convolution or pooling of `x` with `kernel`.
    fn spatial(&mut self, n: Node<'_>, x: &[SDim], kernel: &[i64], ceil: bool) -> Option<Vec<SDim>> {
        let sp = kernel.len();
        if x.len() != sp + 2 {
            return None;
        }
        let auto_pad = attr::string(n, "auto_pad").ok()?.unwrap_or_default();
        if !(auto_pad.is_empty() || auto_pad == "NOTSET") {
            return None;
        }
        let strides = attr::ints(n, "strides").ok()?.unwrap_or_else(|| vec![1; sp]);
        let dil = attr::ints(n, "dilations").ok()?.unwrap_or_else(|| vec![1; sp]);
        let pads = attr::ints(n, "pads").ok()?.unwrap_or_else(|| vec![0; 2 * sp]);
        if strides.len() != sp || dil.len() != sp || pads.len() != 2 * sp {
            return None;
        }
        let mut out = Vec::with_capacity(sp);
        for i in 0..sp {
            out.push(match &x[i + 2] {
                SDim::Fixed(h) => {
                    let eff = dil[i] * (kernel[i] - 1) + 1;
                    let span = h + pads[i] + pads[i + sp] - eff;
                    let mut o = if ceil {
                        (span + strides[i] - 1).div_euclid(strides[i]) + 1
                    } else {
                        span.div_euclid(strides[i]) + 1
                    };
                    // The last window must start inside the input or its left padding.
                    if ceil && (o - 1) * strides[i] >= h + pads[i] {
                        o -= 1;
                    }
                    SDim::Fixed(o)
                }
                SDim::Sym(_) => self.fresh(),
            });
        }
        Some(out)
    }

    fn product(&mut self, dims: &[SDim]) -> SDim {
        let mut p = 1i64;
        let mut sym: Option<SDim> = None;
        for d in dims {
            match d {
                SDim::Fixed(v) => p *= v,
                s @ SDim::Sym(_) => {
                    if sym.is_some() {
                        return self.fresh();
                    }
                    sym = Some(s.clone());
                }
            }
        }
        match sym {
            None => SDim::Fixed(p),
            Some(s) if p == 1 => s,
            Some(_) => self.fresh(),
        }
    }

    /// NumPy broadcasting of two static shapes.
    fn broadcast(&mut self, a: &[SDim], b: &[SDim]) -> Vec<SDim> {
        let r = a.len().max(b.len());
        let get = |v: &[SDim], i: usize| {
            let off = r - v.len();
            if i < off { SDim::Fixed(1) } else { v[i - off].clone() }
        };
        (0..r)
            .map(|i| {
                let (x, y) = (get(a, i), get(b, i));
                match (&x, &y) {
                    _ if x == y => x,
                    (SDim::Fixed(1), _) => y,
                    (_, SDim::Fixed(1)) => x,
                    (SDim::Sym(_), SDim::Fixed(_)) => y,
                    (SDim::Fixed(_), SDim::Sym(_)) => x,
                    _ => self.fresh(),
                }
            })
            .collect()
    }
}

/// `inferred` with its unknown dimensions (fresh `?k` symbols) replaced by what the file
/// declares, when both have the same rank; otherwise `inferred` unchanged.
fn fill_gaps(inferred: Vec<SDim>, declared: Vec<SDim>) -> Vec<SDim> {
    if inferred.len() != declared.len() {
        return inferred;
    }
    inferred
        .into_iter()
        .zip(declared)
        .map(|(i, d)| match (&i, &d) {
            (SDim::Sym(s), SDim::Fixed(_)) if s.starts_with('?') => d,
            (SDim::Sym(s), SDim::Sym(t)) if s.starts_with('?') && !t.starts_with('?') => d,
            _ => i,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n
    }

    #[test]
    fn integer_arithmetic_on_shape_values_follows_onnx() {
        let mut s = Shapes::default();
        let f = SDim::Fixed;
        // Div truncates toward zero; Mod (fmod = 0) takes the divisor's sign, as Python.
        assert_eq!(s.arith("Div", f(-7), f(2)), f(-3));
        assert_eq!(s.arith("Mod", f(-7), f(3)), f(2));
        assert_eq!(s.arith("Mod", f(7), f(-3)), f(-2));
        assert_eq!(s.arith("Mod", f(6), f(3)), f(0));
        let b = SDim::Sym("batch".into());
        assert_eq!(s.arith("Mul", b.clone(), f(1)), b);
        assert_eq!(s.arith("Add", f(0), b.clone()), b);
        // Unknowable: a fresh symbol, equal to nothing else; overflow and division by zero too.
        let u = s.arith("Mul", b.clone(), f(2));
        assert!(matches!(&u, SDim::Sym(n) if n.starts_with('?')));
        assert_ne!(s.arith("Mul", b.clone(), f(2)), u);
        assert!(matches!(s.arith("Div", f(1), f(0)), SDim::Sym(_)));
        assert!(matches!(s.arith("Mul", f(i64::MAX), f(2)), SDim::Sym(_)));
    }

    #[test]
    fn shape_values_fold_to_constants_only_when_every_entry_is_known() {
        // x: [batch, 8, 6, 6]; hw = Shape(x)[2:4] is fixed, nc = Shape(x)[0:2] is not.
        let mut consts = Consts::new();
        for (name, v) in [
            ("two", vec![2]),
            ("four", vec![4]),
            ("zero", vec![0]),
            ("halve", vec![2]),
        ] {
            let t = tensor_i64(name, &[1], v).unwrap();
            consts.insert(name.into(), t);
        }
        let nodes = vec![
            node("Shape", &["x"], "s"),
            node("Slice", &["s", "two", "four", "zero"], "hw"),
            node("Slice", &["s", "zero", "two"], "nc"),
            node("Div", &["hw", "halve"], "half_hw"),
            node("Concat", &["nc", "half_hw"], "target"),
            node("Reshape", &["y", "target"], "r"),
        ];
        let x = [
            Dim::Symbolic("batch".into()),
            Dim::Fixed(8),
            Dim::Fixed(6),
            Dim::Fixed(6),
        ];
        let s = Shapes::infer(&nodes, &consts, "x", &x, &HashMap::new());
        let folded: HashMap<String, Vec<i64>> = s
            .folded(&consts)
            .into_iter()
            .map(|t| {
                let name = t.name.clone();
                let mut c = Consts::new();
                c.insert(name.clone(), t);
                let v = const_i64s(&c, &name).unwrap();
                (name, v)
            })
            .collect();
        assert_eq!(folded.get("hw"), Some(&vec![6, 6]));
        assert_eq!(folded.get("half_hw"), Some(&vec![3, 3]));
        assert!(!folded.contains_key("s") && !folded.contains_key("target") && !folded.contains_key("nc"));
        assert_eq!(
            s.values.get("target").map(Vec::as_slice),
            Some(
                &[
                    SDim::Sym("batch".into()),
                    SDim::Fixed(8),
                    SDim::Fixed(3),
                    SDim::Fixed(3)
                ][..]
            )
        );
    }
}
