//! [`Ctx`]: the gradient graph being written, with what the backward rules need to know
//! about the forward one (constants, static shapes, which values depend on the input) and
//! the gradients gathered so far.
//!
//! It sits below both the rules and the transform: the rules (`ops`, `resample`) write
//! through it, and the transform (`grad`) makes it and drives the rules, so no rule module
//! depends on the transform.

use std::collections::{HashMap, HashSet};

use engine::onnx::proto::NodeProto;
use engine::onnx::{Attr, Dim, ElemType, GraphBuilder, tensor_f32, tensor_i64};

use super::consts::Consts;
use super::error::AttackError;
use super::shape::{SDim, Shapes, unknown};

/// A name `grad/{hint}_{k}` not in `taken`, with the smallest such `k`; added to `taken`.
pub(crate) fn fresh_in(taken: &mut HashSet<String>, hint: &str) -> String {
    let mut k = 0;
    loop {
        let candidate = format!("grad/{hint}_{k}");
        if taken.insert(candidate.clone()) {
            return candidate;
        }
        k += 1;
    }
}

/// The graph being written, with what the backward rules need to know.
pub(crate) struct Ctx {
    /// The gradient graph.
    pub(crate) g: GraphBuilder,
    /// Every name in use, so that new values get fresh ones.
    taken: HashSet<String>,
    /// Initializers and Constant outputs of the model.
    pub(crate) consts: Consts,
    /// Static shapes of the forward graph's values, where known.
    shapes: Shapes,
    /// The values that depend on the input.
    active: HashSet<String>,
    /// The gradient contributions of each value so far.
    grads: HashMap<String, Vec<String>>,
    /// Shared constants and `Shape` nodes, by what they hold.
    cache: HashMap<String, String>,
    /// The values whose shapes have been declared in the graph's `value_info`.
    declared: HashSet<String>,
    /// The forward graph's `Sigmoid` outputs, each with its input.
    sigmoids: HashMap<String, String>,
}

impl Ctx {
    /// A context writing into `g`: `taken` holds every name the graph already uses,
    /// `consts` the model's constants, `shapes` its static shapes and `active` the values
    /// that depend on the input.
    pub(crate) fn new(
        g: GraphBuilder,
        taken: HashSet<String>,
        consts: Consts,
        shapes: Shapes,
        active: HashSet<String>,
    ) -> Self {
        Self {
            g,
            taken,
            consts,
            shapes,
            active,
            grads: HashMap::new(),
            cache: HashMap::new(),
            declared: HashSet::new(),
            sigmoids: HashMap::new(),
        }
    }

    /// A new value name.
    pub(crate) fn fresh(&mut self, hint: &str) -> String {
        fresh_in(&mut self.taken, hint)
    }

    /// Adds a node with the given outputs.
    pub(crate) fn emit(&mut self, op: &str, inputs: &[&str], outputs: &[String], attrs: Vec<Attr>) {
        let mut node = NodeProto::new();
        node.op_type = op.to_string();
        node.name = self.fresh(&format!("{}_node", op.to_lowercase()));
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = outputs.to_vec();
        node.attribute = attrs.into_iter().map(Attr::into_proto).collect();
        self.g.node_proto(node);
    }

    /// Adds a node with one new output and returns its name.
    pub(crate) fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.emit(op, inputs, std::slice::from_ref(&out), attrs);
        out
    }

    /// Adds a node with `n` new outputs.
    pub(crate) fn op_multi(&mut self, op: &str, inputs: &[&str], n: usize, attrs: Vec<Attr>) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(&op.to_lowercase())).collect();
        self.emit(op, inputs, &outs, attrs);
        outs
    }

    /// A float32 initializer.
    pub(crate) fn const_f32(&mut self, hint: &str, dims: &[i64], data: Vec<f32>) -> String {
        let name = self.fresh(hint);
        match tensor_f32(&name, dims, data) {
            Ok(t) => self.g.initializer(t),
            // Reported by build() as a missing value; cannot happen with the callers' data.
            Err(_) => name,
        }
    }

    /// An int64 initializer.
    pub(crate) fn const_i64(&mut self, hint: &str, dims: &[i64], data: Vec<i64>) -> String {
        let name = self.fresh(hint);
        match tensor_i64(&name, dims, data) {
            Ok(t) => self.g.initializer(t),
            Err(_) => name,
        }
    }

    /// A float32 tensor of the run-time shape `shape` (an int64 value) holding `value`
    /// everywhere (`ConstantOfShape`).
    pub(crate) fn filled(&mut self, shape: &str, value: f32) -> Result<String, AttackError> {
        let fill = tensor_f32("fill", &[1], vec![value])?;
        Ok(self.op("ConstantOfShape", &[shape], vec![Attr::tensor("value", fill)]))
    }

    /// The value `make` writes, written once per `key` and shared after that.
    pub(crate) fn memo(&mut self, key: String, make: impl FnOnce(&mut Self) -> String) -> String {
        if let Some(n) = self.cache.get(&key) {
            return n.clone();
        }
        let n = make(self);
        self.cache.insert(key, n.clone());
        n
    }

    /// Declares `name` (a float tensor) in the graph's `value_info` with the static shape of
    /// `like`, if that is known and `name` is not declared yet. ONNX Runtime keeps a tensor
    /// in its blocked `NCHWc` layout through `Add`, `Sum` and `Mul` only when it can prove
    /// the operands' shapes equal, and its own inference loses the batch size in the
    /// backward graph (at every `Reshape` to a `Shape` taken at run time).
    pub(crate) fn declare_like(&mut self, name: &str, like: &str) {
        let Some(shape) = self.shapes.get(like) else {
            return;
        };
        if !self.declared.insert(name.to_string()) {
            return;
        }
        let dims: Vec<Dim> = shape
            .iter()
            .map(|d| match d {
                SDim::Fixed(v) => Dim::Fixed(*v),
                SDim::Sym(s) if unknown(s) => Dim::Unknown,
                SDim::Sym(s) => Dim::Symbolic(s.clone()),
            })
            .collect();
        self.g.value_info(name, ElemType::Float32, &dims);
    }

    /// Records that the forward graph's `output` is `Sigmoid(input)`.
    pub(crate) fn note_sigmoid(&mut self, output: &str, input: &str) {
        self.sigmoids.insert(output.to_string(), input.to_string());
    }

    /// The input `x` of the forward `Sigmoid` whose output is `s`.
    pub(crate) fn sigmoid_input(&self, s: &str) -> Option<&str> {
        self.sigmoids.get(s).map(String::as_str)
    }

    /// A shared float32 scalar.
    pub(crate) fn scalar_f32(&mut self, v: f32) -> String {
        let key = format!("f32:{}", v.to_bits());
        if let Some(n) = self.cache.get(&key) {
            return n.clone();
        }
        let n = self.const_f32("scalar", &[], vec![v]);
        self.cache.insert(key, n.clone());
        n
    }

    /// A shared int64 scalar.
    pub(crate) fn scalar_i64(&mut self, v: i64) -> String {
        let key = format!("i64:{v}");
        if let Some(n) = self.cache.get(&key) {
            return n.clone();
        }
        let n = self.const_i64("scalar", &[], vec![v]);
        self.cache.insert(key, n.clone());
        n
    }

    /// A shared int64 vector.
    pub(crate) fn vec_i64(&mut self, v: &[i64]) -> String {
        let key = format!("i64v:{v:?}");
        if let Some(n) = self.cache.get(&key) {
            return n.clone();
        }
        let n = self.const_i64("ints", &[v.len() as i64], v.to_vec());
        self.cache.insert(key, n.clone());
        n
    }

    /// `Shape(value)`, emitted once per value.
    pub(crate) fn shape_of(&mut self, value: &str) -> String {
        let key = format!("shape:{value}");
        if let Some(n) = self.cache.get(&key) {
            return n.clone();
        }
        let n = self.op("Shape", &[value], vec![]);
        self.cache.insert(key, n.clone());
        n
    }

    /// Whether `value` depends on the input.
    pub(crate) fn is_active(&self, value: &str) -> bool {
        !value.is_empty() && self.active.contains(value)
    }

    /// Records `grad` as one contribution to the gradient of `value` (of `value`'s shape).
    pub(crate) fn add_grad(&mut self, value: &str, grad: String) {
        self.declare_like(&grad, value);
        self.grads.entry(value.to_string()).or_default().push(grad);
    }

    /// The gradient of `value`: its contributions summed, or `None` if it has none.
    pub(crate) fn grad_of(&mut self, value: &str) -> Option<String> {
        let parts = self.grads.remove(value)?;
        let sum = match parts.len() {
            0 => return None,
            1 => parts[0].clone(),
            _ => {
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                let sum = self.op("Sum", &refs, vec![]);
                self.declare_like(&sum, value);
                sum
            }
        };
        self.grads.insert(value.to_string(), vec![sum.clone()]);
        Some(sum)
    }

    /// The static shape of `value`, if known.
    pub(crate) fn static_shape(&self, value: &str) -> Option<&[SDim]> {
        self.shapes.get(value)
    }

    /// Adds `g` as the gradient of `x` if `x` is active.
    pub(crate) fn pass(&mut self, x: &str, g: String) {
        if self.is_active(x) {
            self.add_grad(x, g);
        }
    }

    /// The gradient `g` (shaped like the broadcast output `out`) summed back to the shape of
    /// `operand`: over the leading axes `operand` lacks and the axes where it has size 1.
    pub(crate) fn reduce_to(&mut self, g: &str, operand: &str, out: &str) -> String {
        if let (Some(a), Some(b)) = (self.static_shape(operand), self.static_shape(out)) {
            if a == b {
                return g.to_string();
            }
            if a.len() <= b.len() {
                let lead = b.len() - a.len();
                let mut axes: Vec<i64> = (0..lead as i64).collect();
                let mut ok = true;
                for (i, d) in a.iter().enumerate() {
                    let o = &b[lead + i];
                    if d == o {
                        continue;
                    }
                    if *d == SDim::Fixed(1) {
                        axes.push((lead + i) as i64);
                    } else {
                        ok = false;
                    }
                }
                if ok {
                    if axes.is_empty() {
                        return g.to_string();
                    }
                    let ax = self.vec_i64(&axes);
                    let r = self.op("ReduceSum", &[g, &ax], vec![Attr::int("keepdims", 1)]);
                    if lead == 0 {
                        return r;
                    }
                    let s = self.shape_of(operand);
                    return self.op("Reshape", &[&r, &s], vec![]);
                }
            }
        }
        // Run-time version: pad the operand's shape with leading ones to the gradient's rank and
        // sum over every axis where it is 1.
        let sx = self.shape_of(operand);
        let sg = self.op("Shape", &[g], vec![]);
        let rx = self.op("Size", &[&sx], vec![]);
        let rg = self.op("Size", &[&sg], vec![]);
        let diff = self.op("Sub", &[&rg, &rx], vec![]);
        let one = self.vec_i64(&[1]);
        let diff1 = self.op("Reshape", &[&diff, &one], vec![]);
        let ones = self.op(
            "ConstantOfShape",
            &[&diff1],
            vec![Attr::tensor(
                "value",
                tensor_i64("one", &[1], vec![1]).unwrap_or_default(),
            )],
        );
        let padded = self.op("Concat", &[&ones, &sx], vec![Attr::int("axis", 0)]);
        let one_s = self.scalar_i64(1);
        let mask = self.op("Equal", &[&padded, &one_s], vec![]);
        let nz = self.op("NonZero", &[&mask], vec![]);
        let flat = self.vec_i64(&[-1]);
        let axes = self.op("Reshape", &[&nz, &flat], vec![]);
        let r = self.op(
            "ReduceSum",
            &[g, &axes],
            vec![Attr::int("keepdims", 1), Attr::int("noop_with_empty_axes", 1)],
        );
        self.op("Reshape", &[&r, &sx], vec![])
    }
}
