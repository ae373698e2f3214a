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

    /// An unknown integer that may be negative (arithmetic on shape values), unlike the
    /// dimensions, which are never below zero.
    fn fresh_int(&mut self) -> SDim {
        self.unknown += 1;
        SDim::Sym(format!("#{}", self.unknown))
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
            if t.dims.len() <= 2
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
            let (Some(v), Some(dims)) = (all_fixed(v), self.map.get(name).and_then(|d| all_fixed(d))) else {
                continue;
            };
            if dims.iter().product::<i64>() != v.len() as i64 {
                continue;
            }
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
                let x = self.map.get(input(0)?)?;
                x.get(shape_range(n, x.len())?)?.to_vec()
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
            "Slice" => return self.slice_value(n),
            "Transpose" => {
                // A [rows, cols] matrix of values (torch.onnx's reordering of Pad's pads).
                let data = val(self, 0)?;
                let Some([SDim::Fixed(r), SDim::Fixed(c)]) = input(0).and_then(|v| self.map.get(v)).map(Vec::as_slice)
                else {
                    return None;
                };
                let (r, c) = (usize::try_from(*r).ok()?, usize::try_from(*c).ok()?);
                if attr::ints(n, "perm").ok()?.is_some_and(|p| p != [1, 0]) || r.checked_mul(c)? != data.len() {
                    return None;
                }
                self.map.insert(
                    n.output.first()?.clone(),
                    vec![SDim::Fixed(c as i64), SDim::Fixed(r as i64)],
                );
                (0..c)
                    .flat_map(|j| (0..r).map(move |i| (i, j)))
                    .map(|(i, j)| data[i * c + j].clone())
                    .collect()
            }
            "Range" => {
                let one = |i: usize| match val(self, i).as_deref() {
                    Some([SDim::Fixed(v)]) => Some(*v),
                    _ => None,
                };
                let (start, delta) = (one(0)?, one(2)?);
                let Some([SDim::Fixed(len)]) = self.map.get(n.output.first()?).map(Vec::as_slice) else {
                    return None;
                };
                if *len > MAX_TRACKED_VALUES as i64 {
                    return None;
                }
                (0..*len)
                    .map(|i| i.checked_mul(delta).and_then(|d| d.checked_add(start)).map(SDim::Fixed))
                    .collect::<Option<Vec<_>>>()?
            }
            "ConstantOfShape" => {
                let len = match val(self, 0)?.as_slice() {
                    [SDim::Fixed(len)] => usize::try_from(*len).ok().filter(|&l| l <= MAX_TRACKED_VALUES)?,
                    _ => return None,
                };
                let a = n.attribute.iter().find(|a| a.name == "value")?;
                let t = a.t.as_ref()?;
                let mut c = Consts::new();
                c.insert(String::new(), t.clone());
                let v = *const_i64s(&c, "")?.first()?;
                vec![SDim::Fixed(v); len]
            }
            "Equal" => {
                let (a, b) = (val(self, 0)?, val(self, 1)?);
                self.elementwise(&a, &b, |s, x, y| match (x, y) {
                    (SDim::Fixed(x), SDim::Fixed(y)) => SDim::Fixed(i64::from(x == y)),
                    _ if x == y => SDim::Fixed(1),
                    // A dimension is never negative.
                    (SDim::Sym(d), SDim::Fixed(v)) | (SDim::Fixed(v), SDim::Sym(d))
                        if *v < 0 && !d.starts_with('#') =>
                    {
                        SDim::Fixed(0)
                    }
                    _ => s.fresh_int(),
                })?
            }
            "Where" => {
                let (c, a, b) = (val(self, 0)?, val(self, 1)?, val(self, 2)?);
                let len = c.len().max(a.len()).max(b.len());
                let at = |v: &[SDim], i: usize| v.get(if v.len() == 1 { 0 } else { i }).cloned();
                let mut out = Vec::with_capacity(len);
                for i in 0..len {
                    out.push(match at(&c, i)? {
                        SDim::Fixed(0) => at(&b, i)?,
                        SDim::Fixed(_) => at(&a, i)?,
                        SDim::Sym(_) => self.fresh_int(),
                    });
                }
                out
            }
            "Add" | "Sub" | "Mul" | "Div" | "Mod" => {
                let (a, b) = (val(self, 0)?, val(self, 1)?);
                let op = n.op_type.clone();
                self.elementwise(&a, &b, |s, x, y| s.arith(&op, x.clone(), y.clone()))?
            }
            _ => return None,
        };
        (out.len() <= MAX_TRACKED_VALUES).then_some(out)
    }

    /// The values of an int64 tensor: a constant of the model, or a value worked out here
    /// with every entry known.
    fn known_ints(&self, consts: &Consts, name: &str) -> Option<Vec<i64>> {
        const_i64s(consts, name).or_else(|| all_fixed(self.values.get(name)?))
    }

    /// `f` over two value lists of the same length, or one of length 1 (broadcast).
    fn elementwise(
        &mut self,
        a: &[SDim],
        b: &[SDim],
        mut f: impl FnMut(&mut Self, &SDim, &SDim) -> SDim,
    ) -> Option<Vec<SDim>> {
        if !(a.len() == b.len() || a.len() == 1 || b.len() == 1) {
            return None;
        }
        let len = a.len().max(b.len());
        let at = |v: &[SDim], i: usize| if v.len() == 1 { v[0].clone() } else { v[i].clone() };
        Some((0..len).map(|i| f(self, &at(a, i), &at(b, i))).collect())
    }

    /// A `Slice` of a tracked value along its first axis (rows of a matrix, or entries of a
    /// list), with step 1 or -1 (torch.onnx's `flip`), bounds resolved as ONNX does. Sets
    /// the output's shape.
    fn slice_value(&mut self, n: Node<'_>) -> Option<Vec<SDim>> {
        let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty());
        let one = |s: &Self, i: usize| match input(i).and_then(|v| s.values.get(v)).map(Vec::as_slice) {
            Some([SDim::Fixed(v)]) => Some(*v),
            _ => None,
        };
        let data = self.values.get(input(0)?)?.clone();
        let shape = self.map.get(input(0)?)?.clone();
        let rank = shape.len().max(1);
        let rows = match shape.first() {
            None => return None,
            Some(SDim::Fixed(r)) => usize::try_from(*r).ok()?,
            Some(SDim::Sym(_)) => return None,
        };
        if rows == 0 || data.len() % rows != 0 {
            return None;
        }
        let width = data.len() / rows;
        if input(3).is_some() && one(self, 3).is_none_or(|a| a != 0 && a != -(rank as i64)) {
            return None;
        }
        let step = if input(4).is_some() { one(self, 4)? } else { 1 };
        let d = rows as i64;
        let (start, end) = (one(self, 1)?, one(self, 2)?);
        let picked: Vec<usize> = match step {
            1 => {
                let resolve = |v: i64| (if v < 0 { v.saturating_add(d) } else { v }).clamp(0, d);
                let (a, b) = (resolve(start), resolve(end));
                (a..b.max(a)).map(|i| i as usize).collect()
            }
            -1 => {
                let resolve = |v: i64, lo: i64| (if v < 0 { v.saturating_add(d) } else { v }).clamp(lo, d - 1);
                let (a, b) = (resolve(start, 0), resolve(end, -1));
                ((b + 1)..=a).rev().map(|i| i as usize).collect()
            }
            _ => return None,
        };
        let mut dims = shape;
        if dims.is_empty() {
            return None;
        }
        dims[0] = SDim::Fixed(picked.len() as i64);
        self.map.insert(n.output.first()?.clone(), dims);
        Some(
            picked
                .iter()
                .flat_map(|&r| data[r * width..(r + 1) * width].iter().cloned())
                .collect(),
        )
    }

    /// One element of integer arithmetic on shape values: computed when both are known,
    /// the symbol itself for `s + 0`, `s - 0`, `s * 1`, `s / 1`, a fresh symbol otherwise.
    fn arith(&mut self, op: &str, a: SDim, b: SDim) -> SDim {
        match (op, &a, &b) {
            ("Add", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_add(*y).map_or_else(|| self.fresh_int(), SDim::Fixed),
            ("Sub", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_sub(*y).map_or_else(|| self.fresh_int(), SDim::Fixed),
            ("Mul", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_mul(*y).map_or_else(|| self.fresh_int(), SDim::Fixed),
            // ONNX integer Div truncates toward zero (C semantics), as Rust's `/` does.
            ("Div", SDim::Fixed(x), SDim::Fixed(y)) => x.checked_div(*y).map_or_else(|| self.fresh_int(), SDim::Fixed),
            // Mod with fmod = 0 (the default) takes the divisor's sign, as Python's `%`.
            ("Mod", SDim::Fixed(x), SDim::Fixed(y)) if *y != 0 => x
                .checked_rem(*y)
                .map(|r| if r != 0 && (r < 0) != (*y < 0) { r + y } else { r })
                .map_or_else(|| self.fresh_int(), SDim::Fixed),
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
            _ => self.fresh_int(),
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
                let rank = shape(self, 0)?.len();
                Some(vec![SDim::Fixed(shape_range(n, rank)?.len() as i64)])
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
            "ScatterND" | "ScatterElements" => shape(self, 0),
            "Range" => {
                let one = |s: &Self, i: usize| match input(i).and_then(|v| s.known_ints(consts, v)).as_deref() {
                    Some([v]) => Some(*v),
                    _ => None,
                };
                match (one(self, 0), one(self, 1), one(self, 2)) {
                    (Some(start), Some(limit), Some(delta)) if delta != 0 => {
                        let span = limit.checked_sub(start)?;
                        // ceil(span / delta), at least 0.
                        let len = (span / delta + i64::from(span % delta != 0 && (span < 0) == (delta < 0))).max(0);
                        Some(vec![SDim::Fixed(len)])
                    }
                    _ => Some(vec![self.fresh()]),
                }
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" | "ReduceProd" => {
                let x = shape(self, 0)?;
                let axes = match input(1) {
                    Some(a) => Some(self.known_ints(consts, a)?),
                    None => attr::ints(n, "axes").ok()?,
                };
                let keep = attr::int_or(n, "keepdims", 1).ok()? != 0;
                let all = axes.as_ref().is_none_or(Vec::is_empty);
                if all && attr::int_or(n, "noop_with_empty_axes", 0).ok()? != 0 {
                    return Some(x);
                }
                let at: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
                    Some(a) => a.iter().map(|&a| self.axis(a, x.len())).collect::<Option<_>>()?,
                    None => (0..x.len()).collect(),
                };
                Some(
                    x.into_iter()
                        .enumerate()
                        .filter_map(|(i, d)| match (at.contains(&i), keep) {
                            (false, _) => Some(d),
                            (true, true) => Some(SDim::Fixed(1)),
                            (true, false) => None,
                        })
                        .collect(),
                )
            }
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
                let kernel = all_fixed(w.get(2..)?)?;
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
                let target: Vec<SDim> = match self.known_ints(consts, input(1)?) {
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
            Some(a) => Some(self.known_ints(consts, a)?),
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
            .or_else(|| self.known_ints(consts, n.input.get(1)?))?;
        let k = pads.len() / 2;
        let axes = match n.input.get(3).filter(|v| !v.is_empty()) {
            Some(a) => self.known_ints(consts, a)?,
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
        let sizes = self.known_ints(consts, input(3)?)?;
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
                .and_then(|v| self.known_ints(consts, v))
        };
        let given = |i: usize| n.input.get(i).is_some_and(|v| !v.is_empty());
        let steps = if given(4) { Some(get(4)?) } else { None };
        if steps.as_ref().is_some_and(|s| s.iter().any(|&s| s < 1)) {
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
            let step = steps.as_ref().map_or(Some(1), |s| s.get(i).copied())?;
            out[a] = match (&x[a], bounds) {
                (SDim::Fixed(d), Some((s, e))) => SDim::Fixed(slice_span(s, e, step, *d)?.1),
                _ => self.fresh(),
            };
        }
        Some(out)
    }

    /// `axis` of a rank-`rank` tensor ([`axis_index`]).
    fn axis(&self, axis: i64, rank: usize) -> Option<usize> {
        axis_index(axis, rank)
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
            Some(v) => self.known_ints(consts, v),
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

/// The dimensions a `Shape` node of a rank-`rank` input returns: its `start` and `end`
/// attributes (opset 15), negative ones counted from the end, clamped to `[0, rank]`.
fn shape_range(n: Node<'_>, rank: usize) -> Option<std::ops::Range<usize>> {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(attr::int_or(n, "start", 0).ok()?);
    let end = clamp(attr::int_or(n, "end", r).ok()?);
    Some(start..end.max(start))
}

/// `axis` of a rank-`rank` tensor as an index, negative ones counted from the end; `None`
/// when out of range.
pub(crate) fn axis_index(axis: i64, rank: usize) -> Option<usize> {
    usize::try_from(if axis < 0 { axis + rank as i64 } else { axis })
        .ok()
        .filter(|&a| a < rank)
}

/// Where a `Slice` with a positive `step` of an axis of size `dim` starts and how many values
/// it takes, with ONNX's resolution of `start` and `end` (negative ones count from the end,
/// then both are clamped to `[0, dim]`). `None` for a step below 1.
pub(crate) fn slice_span(start: i64, end: i64, step: i64, dim: i64) -> Option<(i64, i64)> {
    if step < 1 || dim < 0 {
        return None;
    }
    // Adding a non-negative size to a negative value cannot overflow.
    let resolve = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
    let (s, e) = (resolve(start), resolve(end));
    let span = (e - s).max(0);
    Some((s, span / step + i64::from(span % step != 0)))
}

/// The numbers of `dims`, if every one is known.
fn all_fixed(dims: &[SDim]) -> Option<Vec<i64>> {
    dims.iter()
        .map(|d| match d {
            SDim::Fixed(v) => Some(*v),
            SDim::Sym(_) => None,
        })
        .collect()
}

/// Whether symbol `s` is one of ours for an unknown (`?k`, `#k`), not a name.
pub(crate) fn unknown(s: &str) -> bool {
    s.starts_with('?') || s.starts_with('#')
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
            (SDim::Sym(s), SDim::Fixed(_)) if unknown(s) => d,
            (SDim::Sym(s), SDim::Sym(t)) if unknown(s) && !unknown(t) => d,
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
        assert!(matches!(&u, SDim::Sym(n) if n.starts_with('#')));
        assert_ne!(s.arith("Mul", b.clone(), f(2)), u);
        assert!(matches!(s.arith("Div", f(1), f(0)), SDim::Sym(_)));
        assert!(matches!(s.arith("Mul", f(i64::MAX), f(2)), SDim::Sym(_)));
    }

    #[test]
    fn torch_onnx_expand_and_pad_patterns_are_followed() {
        let mut consts = Consts::new();
        let mut add = |name: &str, dims: &[i64], v: Vec<i64>| {
            consts.insert(name.into(), tensor_i64(name, dims, v).unwrap());
        };
        add("zero", &[], vec![0]);
        add("ax", &[1], vec![0]);
        add("minus", &[2], vec![-1, -1]);
        add("pairs", &[2], vec![-1, 2]);
        add("last", &[1], vec![-1]);
        add("flip_end", &[1], vec![i64::MIN + 1]);
        add("flip_step", &[1], vec![-1]);
        add("tail", &[4], vec![0, 0, 1, 3]);
        add("r0", &[], vec![2]);
        add("r1", &[], vec![11]);
        add("r3", &[], vec![3]);
        add("minus_one", &[1], vec![-1]);
        let mut fill = node("ConstantOfShape", &["three"], "ones");
        fill.attribute =
            vec![engine::onnx::Attr::tensor("value", tensor_i64("v", &[1], vec![1]).unwrap()).into_proto()];
        let nodes = vec![
            // expand(n, -1, -1): Where(Equal(sizes, -1), ones, sizes), sizes = [batch, -1, -1].
            node("Shape", &["x"], "s"),
            node("Gather", &["s", "zero"], "n"),
            node("Unsqueeze", &["n", "ax"], "n1"),
            node("Concat", &["n1", "minus"], "sizes"),
            node("Shape", &["sizes"], "three"),
            fill,
            node("Equal", &["sizes", "minus_one"], "is_minus"),
            node("Where", &["is_minus", "ones", "sizes"], "target"),
            node("Expand", &["token", "target"], "expanded"),
            // F.pad's pads: [0, 0, 1, 3] as [-1, 2] pairs, flipped, transposed, flattened.
            node("Reshape", &["tail", "pairs"], "p2"),
            node("Slice", &["p2", "last", "flip_end", "ax", "flip_step"], "flipped"),
            node("Transpose", &["flipped"], "pt"),
            node("Reshape", &["pt", "last"], "pads"),
            node("Range", &["r0", "r1", "r3"], "range"),
        ];
        consts.insert(
            "token".into(),
            engine::onnx::tensor_f32("token", &[1, 1, 4], vec![0.0; 4]).unwrap(),
        );
        let x = [Dim::Symbolic("batch".into()), Dim::Fixed(8)];
        let s = Shapes::infer(&nodes, &consts, "x", &x, &HashMap::new());
        let f = SDim::Fixed;
        let batch = SDim::Sym("batch".into());
        // A dimension is never -1, so the batch entry is not replaced.
        assert_eq!(s.values.get("is_minus").unwrap(), &vec![f(0), f(1), f(1)]);
        assert_eq!(s.values.get("target").unwrap(), &vec![batch.clone(), f(1), f(1)]);
        assert_eq!(s.get("expanded"), Some(&[batch, f(1), f(4)][..]));
        assert_eq!(s.values.get("pads").unwrap(), &vec![f(1), f(0), f(3), f(0)]);
        assert_eq!(s.get("pt"), Some(&[f(2), f(2)][..]));
        assert_eq!(s.values.get("range").unwrap(), &vec![f(2), f(5), f(8)]);
        assert_eq!(s.get("range"), Some(&[f(3)][..]));
        // Unknown integers (arithmetic) may be negative: Equal with -1 stays unknown.
        let mut t = Shapes::default();
        let u = t.arith("Sub", SDim::Sym("batch".into()), f(5));
        assert!(matches!(&u, SDim::Sym(n) if n.starts_with('#')));
    }

    #[test]
    fn strided_slices_count_as_onnx_does() {
        assert_eq!(slice_span(1, i64::MAX, 2, 7), Some((1, 3)));
        assert_eq!(slice_span(0, 4, 3, 4), Some((0, 2)));
        assert_eq!(slice_span(-3, -1, 1, 5), Some((2, 2)));
        assert_eq!(slice_span(i64::MIN, i64::MIN, 2, 5), Some((0, 0)));
        assert_eq!(slice_span(4, 1, 1, 5), Some((4, 0)));
        assert_eq!(slice_span(0, 5, 0, 5), None);
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
