//! A light static shape inference over the forward graph.
//!
//! The backward rules work with run-time shapes (`Shape`, `Size`) wherever they must, so
//! nothing here is required for correctness. What it buys is smaller gradient graphs: when
//! both operands of a broadcasting `Mul`/`Add`/... are known to have the output's shape, no
//! reduction is emitted, and when one is known to be broadcast, the reduction axes are
//! constants. Unknown dimensions get fresh symbols, equal to nothing but themselves. An
//! attribute of the wrong type leaves the shape unknown; the rule that reads it reports it.

use std::collections::HashMap;

use engine::onnx::Dim;
use engine::onnx::proto::NodeProto;

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

/// Static shapes of the values whose shapes could be worked out.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    map: HashMap<String, Vec<SDim>>,
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

    /// Infers what it can, node by node.
    pub(crate) fn infer(nodes: &[NodeProto], consts: &Consts, x: &str, x_dims: &[Dim]) -> Self {
        let mut s = Shapes::default();
        let xs = s.symbolise(x_dims);
        s.map.insert(x.to_string(), xs);
        for (name, t) in consts {
            s.map
                .insert(name.clone(), t.dims.iter().map(|&d| SDim::Fixed(d)).collect());
        }
        for (index, n) in nodes.iter().enumerate() {
            let n = Node::new(n, index);
            if n.op_type == "Split" {
                s.split(n, consts);
                continue;
            }
            if let Some(out) = s.node(n, consts)
                && let Some(o) = n.output.first()
            {
                s.map.insert(o.clone(), out);
            }
        }
        s
    }

    fn node(&mut self, n: Node<'_>, consts: &Consts) -> Option<Vec<SDim>> {
        let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty());
        let shape = |s: &Self, i: usize| input(i).and_then(|v| s.map.get(v)).cloned();
        match n.op_type.as_str() {
            "Relu" | "Sigmoid" | "Tanh" | "Clip" | "HardSigmoid" | "HardSwish" | "LeakyRelu" | "Identity"
            | "Dropout" | "BatchNormalization" | "Softmax" | "LogSoftmax" | "Neg" | "Exp" | "Log" | "Sqrt" | "Abs"
            | "Reciprocal" | "Elu" | "Selu" | "Softplus" | "Erf" | "Cast" => shape(self, 0),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Where" => {
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
                let target = const_i64s(consts, input(1)?)?;
                let allowzero = attr::int_or(n, "allowzero", 0).ok()? != 0;
                let mut out: Vec<SDim> = target
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        0 if !allowzero => x.get(i).cloned().unwrap_or(SDim::Fixed(0)),
                        -1 => SDim::Fixed(-1),
                        d => SDim::Fixed(d),
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
