//! The backward rules of the supported operators (but the resampling ones, in `resample`),
//! and the checks of those whose attributes or inputs a rule handles only in part. The rule
//! table (`rules`) says which function serves which operator.
//!
//! A rule gets `dy`, the gradient at the node's first output, and adds the gradients of the
//! node's active inputs through [`Ctx`]. Every rule is written in stock ONNX operators.
//! Shapes are taken at run time (`Shape`, `Size`) wherever the static ones are unknown, so
//! the same gradient graph serves any batch size. The conventions at non-differentiable
//! points follow PyTorch: `Relu` has gradient 0 at 0, `Clip` passes the gradient strictly
//! inside `(min, max)`, `MaxPool` routes it to the first maximum of each window (ONNX
//! Runtime's `Indices`).
//!
//! A check and its rule parse the attributes with the same functions ([`conv_window`],
//! [`pool_window`], [`reduce_axes`]), so whatever a check accepts, its rule differentiates.

use engine::onnx::Attr;
use engine::onnx::proto::NodeProto;
use engine::onnx::proto::tensor_proto::DataType;

use super::attr::{self, Node};
use super::consts::{Consts, const_f32s, const_i64s};
use super::ctx::Ctx;
use super::error::AttackError;
use super::shape::SDim;

/// What a backward rule returns: `Err` when the node has a form the rule does not handle.
type Done = Result<(), AttackError>;

/// `axis` of `n` on a rank-`rank` input, as an index; an error naming the node when out of
/// range.
fn axis_of(n: Node<'_>, axis: i64, rank: usize) -> Result<usize, AttackError> {
    super::shape::axis_index(axis, rank)
        .ok_or_else(|| n.unsupported(format!("axis {axis} out of range for rank {rank}")))
}

/// The first input (`x`) and the first output (`y`) of `n`.
fn xy(n: Node<'_>) -> (String, String) {
    (n.input.first().cloned().unwrap_or_default(), n.output[0].clone())
}

// ----- checks -----

/// Conv and pooling: explicit pads only (`auto_pad` NOTSET or VALID).
fn check_auto_pad(n: Node<'_>) -> Done {
    let auto_pad = attr::string(n, "auto_pad")?.unwrap_or_default();
    if !(auto_pad.is_empty() || auto_pad == "NOTSET" || auto_pad == "VALID") {
        return Err(n.unsupported(format!("auto_pad {auto_pad} is not handled; use explicit pads")));
    }
    Ok(())
}

/// `Conv`: explicit pads, and a kernel shape (given, or from constant weights).
pub(crate) fn check_conv(n: Node<'_>, consts: &Consts) -> Done {
    check_auto_pad(n)?;
    conv_window(n, consts)?;
    attr::int(n, "group")?;
    Ok(())
}

/// `BatchNormalization`: inference mode, constant scale.
pub(crate) fn check_batch_norm(n: Node<'_>, consts: &Consts) -> Done {
    if attr::int_or(n, "training_mode", 0)? != 0 {
        return Err(n.unsupported("training_mode=1 (only inference BatchNormalization)"));
    }
    if !consts.contains_key(&n.input[1]) {
        return Err(n.unsupported("the scale is not a constant"));
    }
    attr::float(n, "epsilon")?;
    Ok(())
}

/// `MaxPool`: explicit pads, row-major indices.
pub(crate) fn check_max_pool(n: Node<'_>, _: &Consts) -> Done {
    check_auto_pad(n)?;
    if attr::int_or(n, "storage_order", 0)? != 0 {
        return Err(n.unsupported("storage_order=1"));
    }
    Ok(())
}

/// `AveragePool`: explicit pads, a kernel shape.
pub(crate) fn check_average_pool(n: Node<'_>, _: &Consts) -> Done {
    check_auto_pad(n)?;
    pool_window(n)?;
    attr::int(n, "ceil_mode")?;
    attr::int(n, "count_include_pad")?;
    Ok(())
}

/// `ReduceMean`, `ReduceSum`: constant axes.
pub(crate) fn check_reduce(n: Node<'_>, consts: &Consts) -> Done {
    reduce_axes(n, consts)?;
    attr::int(n, "keepdims")?;
    attr::int(n, "noop_with_empty_axes")?;
    Ok(())
}

/// `Dropout`: a constant `training_mode` input, if any.
pub(crate) fn check_dropout(n: Node<'_>, consts: &Consts) -> Done {
    if n.given(2).is_some_and(|t| !consts.contains_key(t)) {
        return Err(n.unsupported("training_mode is not a constant"));
    }
    Ok(())
}

/// `Slice`: step 1, constant axes; starts and ends constants or values computed from shapes
/// (they cannot depend on the image's values: the table makes inputs 1 to 4 constant ones).
pub(crate) fn check_slice(n: Node<'_>, consts: &Consts) -> Done {
    for (i, what) in [(3, "axes"), (4, "steps")] {
        if let Some(v) = n.given(i)
            && const_i64s(consts, v).is_none()
        {
            return Err(n.unsupported(format!("the {what} are not a constant")));
        }
    }
    if n.given(3).is_none() && n.input.get(1).is_none_or(|v| const_i64s(consts, v).is_none()) {
        return Err(n.unsupported("no axes and the starts are not a constant (the sliced axes are unknown)"));
    }
    if let Some(steps) = n.given(4).and_then(|v| const_i64s(consts, v))
        && steps.iter().any(|&s| s < 1)
    {
        return Err(n.unsupported(format!("steps {steps:?} (only positive steps)")));
    }
    Ok(())
}

// ----- ONNX Runtime's blocked layout -----

/// The widest channel block of ONNX Runtime's CPU `NCHWc` layout (16 floats with AVX-512, 8
/// with AVX2; a multiple of 16 suits both).
const NCHWC_BLOCK: i64 = 16;

/// `(C, H, W)` of a 4-d value whose channels and spatial size are static and whose channel
/// count is a multiple of [`NCHWC_BLOCK`].
///
/// ONNX Runtime's CPU provider runs such convolutions in a blocked layout and keeps their
/// outputs in it through `Add`/`Sum`/`Mul` of equal shapes, `Sigmoid`, `Relu`, `Tanh`,
/// nearest `Resize` by constant integer scales, `GlobalAveragePool` and further `Conv`s;
/// any other operator gets its input converted back to `NCHW`, and the next `Conv` converts
/// again. The rules below write their backward of such values with those operators only
/// (an affine map per channel as a depthwise 1x1 `Conv`, a broadcast from `[N, C, 1, 1]` as
/// a nearest `Resize`), so the whole backward stays blocked: on the shipped EfficientNet the
/// conversions took a fifth of a step's time (benches/README.md, "Attack step").
fn blocked(ctx: &Ctx, v: &str) -> Option<(i64, i64, i64)> {
    match ctx.static_shape(v)? {
        [_, SDim::Fixed(c), SDim::Fixed(h), SDim::Fixed(w)] if *c > 0 && c % NCHWC_BLOCK == 0 => Some((*c, *h, *w)),
        _ => None,
    }
}

/// `a * v + b` per channel of the 4-d `v` with `c` channels, as a depthwise 1x1 `Conv`.
fn channel_affine(ctx: &mut Ctx, v: &str, c: i64, a: f32, b: f32) -> String {
    let w = ctx.const_f32("channel_scale", &[c, 1, 1, 1], vec![a; c as usize]);
    let mut inputs = vec![v.to_string(), w];
    if b != 0.0 {
        inputs.push(ctx.const_f32("channel_shift", &[c], vec![b; c as usize]));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    ctx.op("Conv", &refs, vec![Attr::int("group", c)])
}

/// Every value of `v` repeated `scales[i]` times along axis `i` (integer scales, one per
/// axis): a nearest `Resize`, which ONNX Runtime runs in its blocked layout.
fn repeat(ctx: &mut Ctx, v: &str, scales: &[i64]) -> String {
    let scales = ctx.const_f32(
        "repeat_scales",
        &[scales.len() as i64],
        scales.iter().map(|&s| s as f32).collect(),
    );
    ctx.op(
        "Resize",
        &[v, "", &scales],
        vec![
            Attr::string("mode", "nearest"),
            Attr::string("coordinate_transformation_mode", "asymmetric"),
            Attr::string("nearest_mode", "floor"),
        ],
    )
}

/// `v` (`[N, C, 1, 1]`) repeated over `h x w` positions, written once per value; declared
/// with the shape of `like` (`[N, C, h, w]`).
fn spread(ctx: &mut Ctx, v: &str, h: i64, w: i64, like: &str) -> String {
    ctx.memo(format!("spread:{v}:{h}x{w}"), |ctx| {
        let out = repeat(ctx, v, &[1, 1, h, w]);
        ctx.declare_like(&out, like);
        out
    })
}

/// The forward node `n` as the gradient graph runs it: a `Mul` by a squeeze-excite gate
/// ([`gate_of`]) gets the gate [`spread`] to the full size first, so that the product (and
/// the backward, which reuses the spread gate) stays in ONNX Runtime's blocked layout; the
/// values are the same. Any other node as it is.
pub(crate) fn blocked_forward(ctx: &mut Ctx, n: &NodeProto) -> NodeProto {
    let mut n = n.clone();
    if n.op_type == "Mul" && n.input.len() == 2 && n.output.len() == 1 {
        for i in 0..2 {
            if let Some((_, h, w)) = gate_of(ctx, &n.input[i], &n.output[0]) {
                n.input[i] = spread(ctx, &n.input[i].clone(), h, w, &n.output[0]);
            }
        }
    }
    n
}

/// `1 - sigmoid(x)`, given `y = sigmoid(x)`: as `Sigmoid(-x)` (a depthwise `Conv` that ONNX
/// Runtime fuses with the `Sigmoid`) where `x` is [`blocked`], else `1 - y`.
fn sigmoid_complement(ctx: &mut Ctx, x: &str, y: &str) -> String {
    match blocked(ctx, x) {
        Some((c, _, _)) => {
            let neg = channel_affine(ctx, x, c, -1.0, 0.0);
            ctx.op("Sigmoid", &[&neg], vec![])
        }
        None => {
            let one = ctx.scalar_f32(1.0);
            ctx.op("Sub", &[&one, y], vec![])
        }
    }
}

// ----- element-wise rules -----

/// `Identity`, `Dropout` (inference), `Cast` (to float): the gradient passes unchanged.
pub(crate) fn identity(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    ctx.pass(&x, dy.to_string());
    Ok(())
}

/// `Neg`: `-dy`.
pub(crate) fn neg(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let g = ctx.op("Neg", &[dy], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `dy` times a boolean mask cast to 0/1: ONNX Runtime's `Where` with a broadcast scalar is
/// several times slower than `Cast` and `Mul`. The same values as `Where(mask, dy, 0)` for
/// finite `dy` (an infinite or NaN `dy` outside the mask stays NaN instead of becoming 0).
fn masked(ctx: &mut Ctx, mask: &str, dy: &str) -> String {
    let m = ctx.op("Cast", &[mask], vec![Attr::int("to", DataType::FLOAT as i64)]);
    ctx.op("Mul", &[dy, &m], vec![])
}

/// The 0/1 mask `v > bound` (`above`) or `v < bound` of a [`blocked`] `v` with `c`
/// channels, as a depthwise `Conv` computing `±big * (v - bound)` and a `HardSigmoid`
/// clamping it to `[0, 1]`, which ONNX Runtime fuses into one blocked pass. `big` is a power
/// of two with `big * |bound|` below 2^126, so `big * v` and `big * bound` are exact and
/// their difference has the sign of `v - bound`; every normal float that is not `bound` is
/// at least 2^101 away after scaling, so the mask is exactly 0 or 1 but for subnormal `v`
/// against a bound of 0 (a fraction there). Overflow to infinity clamps the same way.
fn step_mask(ctx: &mut Ctx, v: &str, c: i64, bound: f32, above: bool) -> String {
    // The exponent of |bound| (0 for 0), so that big * |bound| < 2^126.
    let e = if bound == 0.0 {
        0
    } else {
        bound.abs().log2().floor() as i32
    };
    let big = 2f32.powi((125 - e).min(126));
    let (a, b) = if above {
        (big, -big * bound)
    } else {
        (-big, big * bound)
    };
    let scaled = channel_affine(ctx, v, c, a, b);
    ctx.op(
        "HardSigmoid",
        &[&scaled],
        vec![Attr::float("alpha", 1.0), Attr::float("beta", 0.0)],
    )
}

/// `Relu`: `dy` where the output is positive, 0 elsewhere (0 at 0, as PyTorch); the mask by
/// [`step_mask`] for a [`blocked`] output.
pub(crate) fn relu(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let g = match blocked(ctx, &y) {
        Some((c, _, _)) => {
            let m = step_mask(ctx, &y, c, 0.0, true);
            ctx.op("Mul", &[dy, &m], vec![])
        }
        None => {
            let z = ctx.scalar_f32(0.0);
            let mask = ctx.op("Greater", &[&y, &z], vec![]);
            masked(ctx, &mask, dy)
        }
    };
    ctx.pass(&x, g);
    Ok(())
}

/// `LeakyRelu`: `dy` where the input is positive, `alpha * dy` elsewhere.
pub(crate) fn leaky_relu(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let alpha = ctx.scalar_f32(attr::float_or(n, "alpha", 0.01)?);
    let z = ctx.scalar_f32(0.0);
    let mask = ctx.op("Greater", &[&x, &z], vec![]);
    let scaled = ctx.op("Mul", &[dy, &alpha], vec![]);
    let g = ctx.op("Where", &[&mask, dy, &scaled], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Clip`: `dy` strictly inside `(min, max)`, given as inputs (opset 11+) or attributes.
/// With constant bounds (`min < max`) and a [`blocked`] output, the masks by [`step_mask`]
/// on the output (inside the bounds exactly where the input is).
pub(crate) fn clip(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let (min, max) = (attr::float(n, "min")?, attr::float(n, "max")?);
    if let Some((c, _, _)) = blocked(ctx, &y) {
        let given = |i: usize| match n.given(i).and_then(|v| const_f32s(&ctx.consts, v)).as_deref() {
            Some(&[v]) => Some(v),
            _ => None,
        };
        let (lo, hi) = if n.input.len() > 1 {
            (given(1), given(2))
        } else {
            (min, max)
        };
        if let (Some(lo), Some(hi)) = (lo, hi)
            && lo < hi
        {
            let above = step_mask(ctx, &y, c, lo, true);
            let below = step_mask(ctx, &y, c, hi, false);
            let g = ctx.op("Mul", &[dy, &above], vec![]);
            let g = ctx.op("Mul", &[&g, &below], vec![]);
            ctx.pass(&x, g);
            return Ok(());
        }
    }
    let (lo, hi) = if n.input.len() > 1 || min.is_none() && max.is_none() {
        (n.given(1).map(str::to_string), n.given(2).map(str::to_string))
    } else {
        (min.map(|v| ctx.scalar_f32(v)), max.map(|v| ctx.scalar_f32(v)))
    };
    let above = lo.map(|lo| ctx.op("Greater", &[&x, &lo], vec![]));
    let below = hi.map(|hi| ctx.op("Less", &[&x, &hi], vec![]));
    let mask = match (above, below) {
        (Some(a), Some(b)) => Some(ctx.op("And", &[&a, &b], vec![])),
        (a, b) => a.or(b),
    };
    let g = match mask {
        Some(m) => masked(ctx, &m, dy),
        None => dy.to_string(),
    };
    ctx.pass(&x, g);
    Ok(())
}

/// `Sigmoid`: `dy * y * (1 - y)`.
pub(crate) fn sigmoid(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let om = sigmoid_complement(ctx, &x, &y);
    let d = ctx.op("Mul", &[&y, &om], vec![]);
    let g = ctx.op("Mul", &[dy, &d], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Tanh`: `dy * (1 - y^2)`.
pub(crate) fn tanh(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let one = ctx.scalar_f32(1.0);
    let sq = ctx.op("Mul", &[&y, &y], vec![]);
    let d = ctx.op("Sub", &[&one, &sq], vec![]);
    let g = ctx.op("Mul", &[dy, &d], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `HardSigmoid`: `alpha * dy` where `alpha * x + beta` is inside `(0, 1)`, 0 elsewhere.
pub(crate) fn hard_sigmoid(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let alpha = attr::float_or(n, "alpha", 0.2)?;
    let beta = attr::float_or(n, "beta", 0.5)?;
    let (a, b) = (ctx.scalar_f32(alpha), ctx.scalar_f32(beta));
    let t = ctx.op("Mul", &[&x, &a], vec![]);
    let t = ctx.op("Add", &[&t, &b], vec![]);
    let (z, one) = (ctx.scalar_f32(0.0), ctx.scalar_f32(1.0));
    let above = ctx.op("Greater", &[&t, &z], vec![]);
    let below = ctx.op("Less", &[&t, &one], vec![]);
    let inside = ctx.op("And", &[&above, &below], vec![]);
    let scaled = ctx.op("Mul", &[dy, &a], vec![]);
    let g = ctx.op("Where", &[&inside, &scaled, &z], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `HardSwish`: d/dx x * relu6(x + 3) / 6 is 0 below -3, 1 above 3, x / 3 + 1/2 between
/// (PyTorch).
pub(crate) fn hard_swish(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let (three, m3, third, half) = (
        ctx.scalar_f32(3.0),
        ctx.scalar_f32(-3.0),
        ctx.scalar_f32(1.0 / 3.0),
        ctx.scalar_f32(0.5),
    );
    let (z, one) = (ctx.scalar_f32(0.0), ctx.scalar_f32(1.0));
    let d = ctx.op("Mul", &[&x, &third], vec![]);
    let d = ctx.op("Add", &[&d, &half], vec![]);
    let hi = ctx.op("Greater", &[&x, &three], vec![]);
    let d = ctx.op("Where", &[&hi, &one, &d], vec![]);
    let lo = ctx.op("Less", &[&x, &m3], vec![]);
    let d = ctx.op("Where", &[&lo, &z, &d], vec![]);
    let g = ctx.op("Mul", &[dy, &d], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Exp`: `dy * y`.
pub(crate) fn exp(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let g = ctx.op("Mul", &[dy, &y], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Log`: `dy / x`.
pub(crate) fn log(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let g = ctx.op("Div", &[dy, &x], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Sqrt`: `dy / (2 y)`.
pub(crate) fn sqrt(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let two = ctx.scalar_f32(2.0);
    let d = ctx.op("Mul", &[&y, &two], vec![]);
    let g = ctx.op("Div", &[dy, &d], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Reciprocal`: `-dy * y^2`.
pub(crate) fn reciprocal(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let sq = ctx.op("Mul", &[&y, &y], vec![]);
    let g = ctx.op("Mul", &[dy, &sq], vec![]);
    let g = ctx.op("Neg", &[&g], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Abs`: `dy * sign(x)`.
pub(crate) fn abs(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let s = ctx.op("Sign", &[&x], vec![]);
    let g = ctx.op("Mul", &[dy, &s], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Erf`: `dy * 2 / sqrt(pi) * exp(-x^2)` (GELU as PyTorch exports it).
pub(crate) fn erf(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let sq = ctx.op("Mul", &[&x, &x], vec![]);
    let neg = ctx.op("Neg", &[&sq], vec![]);
    let e = ctx.op("Exp", &[&neg], vec![]);
    let k = ctx.scalar_f32(std::f32::consts::FRAC_2_SQRT_PI);
    let d = ctx.op("Mul", &[&e, &k], vec![]);
    let g = ctx.op("Mul", &[dy, &d], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

// ----- broadcasting arithmetic -----

/// `Add`, `Sum`: `dy` to every active input, summed over its broadcast axes.
pub(crate) fn add(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (_, y) = xy(n);
    for v in n.input.iter() {
        if ctx.is_active(v) {
            let g = ctx.reduce_to(dy, v, &y);
            ctx.add_grad(v, g);
        }
    }
    Ok(())
}

/// `Sub`: `dy` and `-dy`.
pub(crate) fn sub(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (_, y) = xy(n);
    let (a, b) = (&n.input[0], &n.input[1]);
    if ctx.is_active(a) {
        let g = ctx.reduce_to(dy, a, &y);
        ctx.add_grad(a, g);
    }
    if ctx.is_active(b) {
        let neg = ctx.op("Neg", &[dy], vec![]);
        let g = ctx.reduce_to(&neg, b, &y);
        ctx.add_grad(b, g);
    }
    Ok(())
}

/// `Mul`: `dy * b` and `dy * a`; a swish (`x * Sigmoid(x)`) as one rule, [`swish`].
pub(crate) fn mul(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (_, y) = xy(n);
    let (a, b) = (n.input[0].clone(), n.input[1].clone());
    for (x, s) in [(&a, &b), (&b, &a)] {
        if ctx.sigmoid_input(s) == Some(x.as_str()) {
            let g = swish(ctx, x, s, &y, dy);
            ctx.pass(x, g);
            return Ok(());
        }
    }
    if ctx.is_active(&a) {
        let other = spread_to(ctx, &b, &y);
        let g = ctx.op("Mul", &[dy, &other], vec![]);
        let g = sum_to(ctx, &g, &a, &y);
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        let other = spread_to(ctx, &a, &y);
        let g = ctx.op("Mul", &[dy, &other], vec![]);
        let g = sum_to(ctx, &g, &b, &y);
        ctx.add_grad(&b, g);
    }
    Ok(())
}

/// The input gradient of a swish `y = x * s`, `s = Sigmoid(x)`, through both of its paths:
/// `dy * (s + y * (1 - s))`, with `1 - s` by [`sigmoid_complement`]. Four full-size passes,
/// where the `Mul` and `Sigmoid` rules apart take six and a `Sum`. The `Sigmoid` gets no
/// gradient from this `Mul` (its rule still runs for any other use of `s`).
fn swish(ctx: &mut Ctx, x: &str, s: &str, y: &str, dy: &str) -> String {
    let om = sigmoid_complement(ctx, x, s);
    let t = ctx.op("Mul", &[y, &om], vec![]);
    let d = ctx.op("Add", &[s, &t], vec![]);
    ctx.op("Mul", &[dy, &d], vec![])
}

/// Whether `v` is `[N, C, 1, 1]` against a [`blocked`] `out` of `C` channels and a larger
/// spatial size, with the same batch: `(C, H, W)` of `out` if so.
fn gate_of(ctx: &Ctx, v: &str, out: &str) -> Option<(i64, i64, i64)> {
    let (c, h, w) = blocked(ctx, out)?;
    match (ctx.static_shape(v)?, ctx.static_shape(out)?) {
        ([vn, SDim::Fixed(vc), SDim::Fixed(1), SDim::Fixed(1)], [on, ..])
            if vn == on && *vc == c && (h, w) != (1, 1) =>
        {
            Some((c, h, w))
        }
        _ => None,
    }
}

/// The gradient `g` (shaped like `out`) summed back to the shape of `operand`: for a
/// [`gate_of`] operand as `GlobalAveragePool` times `H * W` (ONNX Runtime's blocked layout
/// has no `ReduceSum`), else [`Ctx::reduce_to`].
fn sum_to(ctx: &mut Ctx, g: &str, operand: &str, out: &str) -> String {
    match gate_of(ctx, operand, out) {
        Some((c, h, w)) => {
            let mean = ctx.op("GlobalAveragePool", &[g], vec![]);
            channel_affine(ctx, &mean, c, (h * w) as f32, 0.0)
        }
        None => ctx.reduce_to(g, operand, out),
    }
}

/// `v` as the factor of a product shaped like `out`: spread to `out`'s shape where `v` is
/// `[N, C, 1, 1]` and `out` is [`blocked`] (a squeeze-excite gate), so that the product
/// stays in ONNX Runtime's blocked layout; else `v` itself, broadcast by `Mul`.
fn spread_to(ctx: &mut Ctx, v: &str, out: &str) -> String {
    match gate_of(ctx, v, out) {
        Some((_, h, w)) => spread(ctx, v, h, w, out),
        None => v.to_string(),
    }
}

/// `Div`: `dy / b` and `-dy * y / b`.
pub(crate) fn div(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (_, y) = xy(n);
    let (a, b) = (n.input[0].clone(), n.input[1].clone());
    if ctx.is_active(&a) {
        let g = ctx.op("Div", &[dy, &b], vec![]);
        let g = ctx.reduce_to(&g, &a, &y);
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        // d(a/b)/db = -y / b
        let q = ctx.op("Div", &[&y, &b], vec![]);
        let g = ctx.op("Mul", &[dy, &q], vec![]);
        let g = ctx.op("Neg", &[&g], vec![]);
        let g = ctx.reduce_to(&g, &b, &y);
        ctx.add_grad(&b, g);
    }
    Ok(())
}

/// `Where`: `dy` to the value each position took, 0 to the other.
pub(crate) fn where_(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (_, y) = xy(n);
    let (cond, a, b) = (n.input[0].clone(), n.input[1].clone(), n.input[2].clone());
    let z = ctx.scalar_f32(0.0);
    if ctx.is_active(&a) {
        let g = ctx.op("Where", &[&cond, dy, &z], vec![]);
        let g = ctx.reduce_to(&g, &a, &y);
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        let g = ctx.op("Where", &[&cond, &z, dy], vec![]);
        let g = ctx.reduce_to(&g, &b, &y);
        ctx.add_grad(&b, g);
    }
    Ok(())
}

/// `Max`, `Min`: `dy` to every input equal to the result (all of them on ties).
pub(crate) fn max_min(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (_, y) = xy(n);
    let z = ctx.scalar_f32(0.0);
    for v in &n.input {
        if ctx.is_active(v) {
            let mask = ctx.op("Equal", &[v, &y], vec![]);
            let g = ctx.op("Where", &[&mask, dy, &z], vec![]);
            let g = ctx.reduce_to(&g, v, &y);
            ctx.add_grad(v, g);
        }
    }
    Ok(())
}

/// `Pow`: d/dx x^p = p * x^(p - 1), the exponent a constant or at least not image-dependent
/// (the table makes input 1 a constant one).
pub(crate) fn pow(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let p = n.input[1].clone();
    let one = ctx.scalar_f32(1.0);
    let pm1 = ctx.op("Sub", &[&p, &one], vec![]);
    let xp = ctx.op("Pow", &[&x, &pm1], vec![]);
    let d = ctx.op("Mul", &[&xp, &p], vec![]);
    let g = ctx.op("Mul", &[dy, &d], vec![]);
    let g = ctx.reduce_to(&g, &x, &y);
    ctx.pass(&x, g);
    Ok(())
}

// ----- shape and layout -----

/// `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`: `dy` reshaped to the input's shape.
pub(crate) fn reshape(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let s = ctx.shape_of(&x);
    let g = ctx.op("Reshape", &[dy, &s], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Transpose`: `dy` transposed by the inverse permutation.
pub(crate) fn transpose(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let perm = match attr::ints(n, "perm")? {
        Some(p) => p,
        None => {
            let rank = ctx
                .static_shape(&x)
                .map(<[SDim]>::len)
                .ok_or_else(|| n.unsupported("no perm and the input's rank is unknown"))?;
            (0..rank as i64).rev().collect()
        }
    };
    let mut inverse = vec![0i64; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        let p = usize::try_from(p).ok().filter(|&p| p < perm.len());
        let p = p.ok_or_else(|| n.unsupported(format!("perm {perm:?} is not a permutation")))?;
        inverse[p] = i as i64;
    }
    let g = ctx.op("Transpose", &[dy], vec![Attr::ints("perm", &inverse)]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Concat`: `dy` split back into the inputs' sizes along the axis.
pub(crate) fn concat(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let axis = attr::int_or(n, "axis", 0)?;
    let ax = ctx.vec_i64(&[axis]);
    let mut sizes = Vec::new();
    for v in &n.input {
        let s = ctx.shape_of(v);
        sizes.push(ctx.op("Gather", &[&s, &ax], vec![Attr::int("axis", 0)]));
    }
    let refs: Vec<&str> = sizes.iter().map(String::as_str).collect();
    let split = ctx.op("Concat", &refs, vec![Attr::int("axis", 0)]);
    let parts = ctx.op_multi("Split", &[dy, &split], n.input.len(), vec![Attr::int("axis", axis)]);
    for (v, part) in n.input.iter().zip(parts) {
        if ctx.is_active(v) {
            ctx.add_grad(v, part);
        }
    }
    Ok(())
}

/// `Split`: the gradients of the parts concatenated, zeros for parts without one. Reads the
/// gradients of all outputs itself (the table's `Backward::Outputs`).
pub(crate) fn split(ctx: &mut Ctx, n: Node<'_>) -> Done {
    let x = n.input[0].clone();
    if !ctx.is_active(&x) {
        return Ok(());
    }
    let axis = attr::int_or(n, "axis", 0)?;
    let mut parts = Vec::new();
    let mut any = false;
    for o in &n.output {
        match ctx.grad_of(o) {
            Some(g) => {
                any = true;
                parts.push(g);
            }
            None => {
                let s = ctx.shape_of(o);
                parts.push(ctx.filled(&s, 0.0)?);
            }
        }
    }
    if any {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let g = ctx.op("Concat", &refs, vec![Attr::int("axis", axis)]);
        ctx.add_grad(&x, g);
    }
    Ok(())
}

/// `Expand`: `dy` summed back over the broadcast axes.
pub(crate) fn expand(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let g = ctx.reduce_to(dy, &x, &y);
    ctx.pass(&x, g);
    Ok(())
}

/// The rank of `value`, from the static shapes or, for a constant, its dims.
fn rank_of(ctx: &Ctx, value: &str) -> Option<usize> {
    ctx.static_shape(value)
        .map(<[SDim]>::len)
        .or_else(|| ctx.consts.get(value).map(|t| t.dims.len()))
}

/// `Gather` of an active tensor at constant or computed indices (a class token `x[:, 0]`, a
/// channel selection): `dy` added into zeros shaped like the data at the gathered positions.
/// The gathered axis is moved to the front, `ScatterND` adds (repeated indices sum), and the
/// axis is moved back. Negative indices count from the end, as in the forward pass.
pub(crate) fn gather(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let indices = n.input[1].clone();
    let r = rank_of(ctx, &x).ok_or_else(|| n.unsupported("the data's rank is unknown"))?;
    let q = rank_of(ctx, &indices).ok_or_else(|| n.unsupported("the indices' rank is unknown"))?;
    let axis = attr::int_or(n, "axis", 0)?;
    let a = axis_of(n, axis, r)?;
    // The data with the axis first, and its inverse.
    let mut to_front: Vec<i64> = vec![a as i64];
    to_front.extend((0..r as i64).filter(|&i| i != a as i64));
    let mut back = vec![0i64; r];
    for (i, &p) in to_front.iter().enumerate() {
        back[p as usize] = i as i64;
    }
    let sx = ctx.shape_of(&x);
    let perm = ctx.vec_i64(&to_front);
    let zshape = ctx.op("Gather", &[&sx, &perm], vec![Attr::int("axis", 0)]);
    let zeros = ctx.filled(&zshape, 0.0)?;
    // dy is data[:a] + indices + data[a+1:]; ScatterND wants indices + data[:a] + data[a+1:].
    let mut perm_g: Vec<i64> = (a..a + q).map(|i| i as i64).collect();
    perm_g.extend((0..a).map(|i| i as i64));
    perm_g.extend((a + q..r - 1 + q).map(|i| i as i64));
    let updates = if perm_g.iter().enumerate().all(|(i, &p)| p == i as i64) {
        dy.to_string()
    } else {
        ctx.op("Transpose", &[dy], vec![Attr::ints("perm", &perm_g)])
    };
    let idx = ctx.op("Cast", &[&indices], vec![Attr::int("to", DataType::INT64 as i64)]);
    let ax = ctx.vec_i64(&[a as i64]);
    let dim = ctx.op("Gather", &[&sx, &ax], vec![Attr::int("axis", 0)]);
    let dim = ctx.op("Squeeze", &[&dim], vec![]);
    let zero = ctx.scalar_i64(0);
    let neg = ctx.op("Less", &[&idx, &zero], vec![]);
    let wrapped = ctx.op("Add", &[&idx, &dim], vec![]);
    let idx = ctx.op("Where", &[&neg, &wrapped, &idx], vec![]);
    let last = ctx.vec_i64(&[-1]);
    let idx = ctx.op("Unsqueeze", &[&idx, &last], vec![]);
    let scattered = ctx.op(
        "ScatterND",
        &[&zeros, &idx, &updates],
        vec![Attr::string("reduction", "add")],
    );
    let g = ctx.op("Transpose", &[&scattered], vec![Attr::ints("perm", &back)]);
    ctx.pass(&x, g);
    Ok(())
}

// ----- normalisation, softmax, reductions -----

/// `LayerNormalization` (constant scale and bias) over the axes from `axis` to the last:
/// with `xhat = (x - mean) * rstd` and `g = dy * scale`,
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`, the statistics recomputed from `x`.
pub(crate) fn layer_norm(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let axis = attr::int_or(n, "axis", -1)?;
    let eps = attr::float_or(n, "epsilon", 1e-5)?;
    let axes: Vec<i64> = if axis < 0 {
        (axis..0).collect()
    } else {
        let r = rank_of(ctx, &x).ok_or_else(|| n.unsupported("a non-negative axis and the input's rank is unknown"))?;
        (axis..r as i64).collect()
    };
    if axes.is_empty() {
        return Err(n.unsupported(format!("axis {axis} normalises no axis")));
    }
    let ax = ctx.vec_i64(&axes);
    let keep = || vec![Attr::int("keepdims", 1)];
    let sum = ctx.op("ReduceSum", &[&x, &ax], keep());
    let inv_n = size_ratio(ctx, &sum, &x);
    let mean = ctx.op("Mul", &[&sum, &inv_n], vec![]);
    let xc = ctx.op("Sub", &[&x, &mean], vec![]);
    let sq = ctx.op("Mul", &[&xc, &xc], vec![]);
    let var = ctx.op("ReduceSum", &[&sq, &ax], keep());
    let var = ctx.op("Mul", &[&var, &inv_n], vec![]);
    let e = ctx.scalar_f32(eps);
    let var = ctx.op("Add", &[&var, &e], vec![]);
    let sd = ctx.op("Sqrt", &[&var], vec![]);
    let rstd = ctx.op("Reciprocal", &[&sd], vec![]);
    let xhat = ctx.op("Mul", &[&xc, &rstd], vec![]);
    let g = ctx.op("Mul", &[dy, &n.input[1]], vec![]);
    let gs = ctx.op("ReduceSum", &[&g, &ax], keep());
    let gm = ctx.op("Mul", &[&gs, &inv_n], vec![]);
    let gx = ctx.op("Mul", &[&g, &xhat], vec![]);
    let gxs = ctx.op("ReduceSum", &[&gx, &ax], keep());
    let gxm = ctx.op("Mul", &[&gxs, &inv_n], vec![]);
    let t = ctx.op("Mul", &[&xhat, &gxm], vec![]);
    let d = ctx.op("Sub", &[&g, &gm], vec![]);
    let d = ctx.op("Sub", &[&d, &t], vec![]);
    let dx = ctx.op("Mul", &[&d, &rstd], vec![]);
    ctx.pass(&x, dx);
    Ok(())
}

/// `Softmax`: `y * (dy - sum(dy * y))` along the axis.
pub(crate) fn softmax(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let axis = attr::int_or(n, "axis", -1)?;
    let axes = ctx.vec_i64(&[axis]);
    let p = ctx.op("Mul", &[dy, &y], vec![]);
    let s = ctx.op("ReduceSum", &[&p, &axes], vec![Attr::int("keepdims", 1)]);
    let d = ctx.op("Sub", &[dy, &s], vec![]);
    let g = ctx.op("Mul", &[&y, &d], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `LogSoftmax`: `dy - exp(y) * sum(dy)` along the axis.
pub(crate) fn log_softmax(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let axis = attr::int_or(n, "axis", -1)?;
    let axes = ctx.vec_i64(&[axis]);
    let s = ctx.op("ReduceSum", &[dy, &axes], vec![Attr::int("keepdims", 1)]);
    let p = ctx.op("Exp", &[&y], vec![]);
    let ps = ctx.op("Mul", &[&p, &s], vec![]);
    let g = ctx.op("Sub", &[dy, &ps], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `BatchNormalization` (inference): affine, so with mean = bias = 0 it is
/// `dy * scale / sqrt(var + eps)`, written as a `BatchNormalization` of `dy`.
pub(crate) fn batch_norm(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let scale = n.input[1].clone();
    let var = n.input[4].clone();
    let c = ctx
        .consts
        .get(&scale)
        .map(|t| t.dims.iter().product::<i64>())
        .ok_or_else(|| n.unsupported("the scale is not a constant"))?;
    let zeros = ctx.const_f32("bn_zeros", &[c], vec![0.0; c as usize]);
    let eps = attr::float_or(n, "epsilon", 1e-5)?;
    let g = ctx.op(
        "BatchNormalization",
        &[dy, &scale, &zeros, &zeros, &var],
        vec![Attr::float("epsilon", eps)],
    );
    ctx.pass(&x, g);
    Ok(())
}

/// The reduced axes of a `ReduceMean`/`ReduceSum`: the constant `axes` input (opset 18+,
/// and `ReduceSum` 13+) or attribute; `None` for all of them.
pub(crate) fn reduce_axes(n: Node<'_>, consts: &Consts) -> Result<Option<Vec<i64>>, AttackError> {
    match n.given(1) {
        Some(a) => const_i64s(consts, a)
            .map(Some)
            .ok_or_else(|| n.unsupported("the axes are not a constant")),
        None => attr::ints(n, "axes"),
    }
}

/// `ReduceMean`, `ReduceSum`: `dy` expanded back over the reduced axes (and scaled by the
/// output-to-input size ratio for the mean).
pub(crate) fn reduce(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let axes = reduce_axes(n, &ctx.consts)?;
    let keep = attr::int_or(n, "keepdims", 1)? != 0;
    let noop = attr::int_or(n, "noop_with_empty_axes", 0)? != 0;
    if noop && axes.as_ref().is_none_or(Vec::is_empty) {
        ctx.pass(&x, dy.to_string());
        return Ok(());
    }
    let mut g = dy.to_string();
    if let Some(axes) = axes.filter(|a| !a.is_empty())
        && !keep
    {
        let a = ctx.vec_i64(&axes);
        g = ctx.op("Unsqueeze", &[&g, &a], vec![]);
    }
    let s = ctx.shape_of(&x);
    g = ctx.op("Expand", &[&g, &s], vec![]);
    if n.op_type == "ReduceMean" {
        let scale = size_ratio(ctx, &y, &x);
        g = ctx.op("Mul", &[&g, &scale], vec![]);
    }
    ctx.pass(&x, g);
    Ok(())
}

// ----- pooling -----

/// `MaxPool`: `dy` scattered (added) to the positions of ONNX Runtime's `Indices` output,
/// which the transform adds where the model leaves it out (the table's `reads_output`).
pub(crate) fn max_pool(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, _) = xy(n);
    let indices = n.output[1].clone();
    let size = ctx.op("Size", &[&x], vec![]);
    let one = ctx.vec_i64(&[1]);
    let size1 = ctx.op("Reshape", &[&size, &one], vec![]);
    let zeros = ctx.filled(&size1, 0.0)?;
    let flat = ctx.vec_i64(&[-1]);
    let idx = ctx.op("Reshape", &[&indices, &flat], vec![]);
    let upd = ctx.op("Reshape", &[dy, &flat], vec![]);
    let scattered = ctx.op(
        "ScatterElements",
        &[&zeros, &idx, &upd],
        vec![Attr::int("axis", 0), Attr::string("reduction", "add")],
    );
    let s = ctx.shape_of(&x);
    let g = ctx.op("Reshape", &[&scattered, &s], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `GlobalAveragePool`: `dy` divided by the spatial size, then expanded over the spatial
/// axes (scaling the `[N, C, 1...]` gradient first spares a pass over the input's size); for
/// a [`blocked`] input, a depthwise `Conv` and a nearest `Resize` do the same.
pub(crate) fn global_average_pool(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    if let Some((c, h, w)) = blocked(ctx, &x) {
        let scaled = channel_affine(ctx, dy, c, 1.0 / (h * w) as f32, 0.0);
        let g = spread(ctx, &scaled, h, w, &x);
        ctx.pass(&x, g);
        return Ok(());
    }
    let scale = size_ratio(ctx, &y, &x);
    let scaled = ctx.op("Mul", &[dy, &scale], vec![]);
    let s = ctx.shape_of(&x);
    let g = ctx.op("Expand", &[&scaled, &s], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `GlobalMaxPool`: `dy` to every position equal to its channel's maximum (all of them on
/// ties).
pub(crate) fn global_max_pool(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (x, y) = xy(n);
    let z = ctx.scalar_f32(0.0);
    let mask = ctx.op("Equal", &[&x, &y], vec![]);
    let g = ctx.op("Where", &[&mask, dy, &z], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// `Size(num) / Size(den)` as a float scalar.
fn size_ratio(ctx: &mut Ctx, num: &str, den: &str) -> String {
    let a = ctx.op("Size", &[num], vec![]);
    let b = ctx.op("Size", &[den], vec![]);
    let a = ctx.op("Cast", &[&a], vec![Attr::int("to", DataType::FLOAT as i64)]);
    let b = ctx.op("Cast", &[&b], vec![Attr::int("to", DataType::FLOAT as i64)]);
    ctx.op("Div", &[&a, &b], vec![])
}

// ----- convolution and windowed pooling -----

/// The window of a convolution or pooling: kernel, strides, pads (`[begin..., end...]`) and
/// dilations, one value per spatial axis (two for the pads).
pub(crate) struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    pads: Vec<i64>,
    dilations: Vec<i64>,
}

impl Window {
    /// The window of `n` with `kernel`: its attributes, or their defaults (`auto_pad`
    /// VALID: no pads). Fails when a list does not have one value per spatial axis.
    fn of(n: Node<'_>, kernel: Vec<i64>) -> Result<Self, AttackError> {
        let sp = kernel.len();
        let valid = attr::string(n, "auto_pad")?.is_some_and(|p| p == "VALID");
        let win = Self {
            strides: attr::ints(n, "strides")?.unwrap_or_else(|| vec![1; sp]),
            pads: if valid {
                vec![0; 2 * sp]
            } else {
                attr::ints(n, "pads")?.unwrap_or_else(|| vec![0; 2 * sp])
            },
            dilations: attr::ints(n, "dilations")?.unwrap_or_else(|| vec![1; sp]),
            kernel,
        };
        if win.strides.len() != sp || win.dilations.len() != sp || win.pads.len() != 2 * sp {
            return Err(n.unsupported(format!(
                "strides {:?}, pads {:?} and dilations {:?} do not fit a {sp}-d kernel",
                win.strides, win.pads, win.dilations
            )));
        }
        Ok(win)
    }

    /// The `output_padding` that makes the transposed convolution reach every input
    /// position a strided window may have skipped (cropped back afterwards).
    fn output_padding(&self) -> Vec<i64> {
        self.strides.iter().map(|s| s - 1).collect()
    }

    /// Whether any stride is above 1.
    fn strided(&self) -> bool {
        self.strides.iter().any(|&s| s > 1)
    }
}

/// Slices the spatial axes (2..) of `g` to the spatial size of `like`.
fn crop_spatial(ctx: &mut Ctx, g: &str, like: &str, sp: usize) -> String {
    let s = ctx.shape_of(like);
    let two = ctx.vec_i64(&[2]);
    let max = ctx.vec_i64(&[i64::MAX]);
    let ends = ctx.op("Slice", &[&s, &two, &max], vec![]);
    let starts = ctx.vec_i64(&vec![0; sp]);
    let axes = ctx.vec_i64(&(2..2 + sp as i64).collect::<Vec<_>>());
    ctx.op("Slice", &[g, &starts, &ends, &axes], vec![])
}

/// The window of a `Conv`; without a `kernel_shape`, the kernel is the spatial shape of the
/// weights, which must then be a constant.
pub(crate) fn conv_window(n: Node<'_>, consts: &Consts) -> Result<Window, AttackError> {
    let kernel = match attr::ints(n, "kernel_shape")? {
        Some(k) => k,
        None => consts
            .get(&n.input[1])
            .and_then(|t| t.dims.get(2..))
            .map(<[i64]>::to_vec)
            .ok_or_else(|| n.unsupported("no kernel_shape and the weights are not a constant"))?,
    };
    Window::of(n, kernel)
}

/// The window of an `AveragePool`, which must give its `kernel_shape`.
pub(crate) fn pool_window(n: Node<'_>) -> Result<Window, AttackError> {
    let kernel = attr::ints(n, "kernel_shape")?.ok_or_else(|| n.unsupported("no kernel_shape"))?;
    Window::of(n, kernel)
}

/// `Conv`: `dy` through the transposed convolution, with the same weights, strides, pads,
/// dilations and groups. Where the shapes it needs are static, it is written as a `Conv`
/// ([`transposed_as_conv`]), which ONNX Runtime runs in its fast convolution kernels
/// (depthwise ones included); otherwise as a `ConvTranspose`, cropped to the input's size
/// where strides leave input positions that no window reached.
pub(crate) fn conv(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let x = n.input[0].clone();
    let w = n.input[1].clone();
    let win = conv_window(n, &ctx.consts)?;
    let group = attr::int_or(n, "group", 1)?;
    let g = match transposed_as_conv(ctx, &x, &w, dy, &win, group) {
        Some(g) => g,
        None => {
            let full = ctx.op(
                "ConvTranspose",
                &[dy, &w],
                vec![
                    Attr::ints("kernel_shape", &win.kernel),
                    Attr::ints("strides", &win.strides),
                    Attr::ints("pads", &win.pads),
                    Attr::ints("dilations", &win.dilations),
                    Attr::ints("output_padding", &win.output_padding()),
                    Attr::int("group", group),
                ],
            );
            if win.strided() {
                crop_spatial(ctx, &full, &x, win.kernel.len())
            } else {
                full
            }
        }
    };
    ctx.pass(&x, g);
    Ok(())
}

/// The transposed convolution of `dy` (the input gradient of a `Conv` of `x` with weights
/// `w`, `[C_out, C_in / group, k...]`) written as a stride-1 `Conv`: ONNX Runtime's
/// `ConvTranspose` runs a grouped (above all a depthwise) one as one small matrix product and
/// col2im per image and group, while its `Conv` has fast kernels for every form.
///
/// Per spatial axis, with `k' = (k - 1) * dilation + 1` and the forward pads `pb`, `pe`:
/// `dx[h] = sum_t w[t] u[h + pb - t * dilation]`, where `u` is `dy` with `stride - 1` zeros
/// after every value (length `H_out * stride`). That is a correlation of `u`, padded by
/// `k' - 1 - pb` before and `H + pb - H_out * stride` after, with the kernel flipped, at the
/// same dilation; per group, the kernel's input and output channels swap places. The sums
/// are the transposed convolution's, term by term.
///
/// `None` (use `ConvTranspose`) for an ungrouped strided convolution, when the weights'
/// shape is not static, when a stride is above 1 and the input's spatial sizes are not
/// static, or when the pads exceed the kernel (a negative pad before, or after at stride 1).
fn transposed_as_conv(ctx: &mut Ctx, x: &str, w: &str, dy: &str, win: &Window, group: i64) -> Option<String> {
    let sp = win.kernel.len();
    let fixed = |dims: &[SDim]| -> Option<Vec<i64>> {
        dims.iter()
            .map(|d| match d {
                SDim::Fixed(v) => Some(*v),
                SDim::Sym(_) => None,
            })
            .collect()
    };
    let wdims = fixed(ctx.static_shape(w)?)?;
    if wdims.len() != sp + 2 || group < 1 || wdims[0] % group != 0 || wdims[2..] != win.kernel[..] {
        return None;
    }
    let (c_out, c_in_group) = (wdims[0], wdims[1]);
    if win.strided() && group == 1 {
        // Ungrouped, `ConvTranspose` is one matrix product per image with no zeros in it,
        // where the correlation below multiplies stride^2 times as many values, most of
        // them zeros (EfficientNet-Lite0's stem: its step took 0.86 of the time).
        return None;
    }
    let x_spatial = ctx
        .static_shape(x)
        .filter(|s| s.len() == sp + 2)
        .and_then(|s| fixed(&s[2..]));
    let mut before = Vec::with_capacity(sp);
    let mut after = Vec::with_capacity(sp);
    // Per axis: the output size and the length of `u`, for strided axes.
    let mut upsampled = Vec::with_capacity(sp);
    for i in 0..sp {
        let (k, s, d) = (win.kernel[i], win.strides[i], win.dilations[i]);
        let (pb, pe) = (win.pads[i], win.pads[sp + i]);
        if k < 1 || s < 1 || d < 1 {
            return None;
        }
        let k_eff = (k - 1) * d + 1;
        let b = k_eff - 1 - pb;
        if b < 0 {
            return None;
        }
        before.push(b);
        if win.strided() {
            let h = *x_spatial.as_ref()?.get(i)?;
            let span = h + pb + pe - k_eff;
            if span < 0 {
                return None;
            }
            let h_out = span / s + 1;
            let a = h + pb - h_out * s;
            // Cropping the trailing zeros of `u` must leave something to correlate.
            if h_out * s + a.min(0) < 1 {
                return None;
            }
            upsampled.push(h_out * s);
            after.push(a);
        } else {
            let a = k_eff - 1 - pe;
            if a < 0 {
                return None;
            }
            after.push(a);
        }
    }

    // u: dy with stride - 1 zeros after every value (dy itself at stride 1): every value
    // repeated `stride` times by a nearest `Resize`, then all but the first of each run
    // zeroed by a constant mask (ONNX Runtime runs these two faster than a `Pad` that
    // interleaves the zeros).
    let mut u = dy.to_string();
    if win.strided() {
        let mut scales = vec![1, 1];
        scales.extend(&win.strides);
        let repeated = repeat(ctx, dy, &scales);
        let len: i64 = upsampled.iter().product();
        let mask: Vec<f32> = (0..len)
            .map(|flat| {
                let mut rest = flat;
                let mut kept = true;
                for i in (0..sp).rev() {
                    kept &= (rest % upsampled[i]) % win.strides[i] == 0;
                    rest /= upsampled[i];
                }
                if kept { 1.0 } else { 0.0 }
            })
            .collect();
        let mut mask_dims = vec![1i64, 1];
        mask_dims.extend(&upsampled);
        let mask = ctx.const_f32("stride_mask", &mask_dims, mask);
        u = ctx.op("Mul", &[&repeated, &mask], vec![]);
        // Trailing zeros beyond what any input position reads.
        if after.iter().any(|&a| a < 0) {
            let starts = ctx.vec_i64(&vec![0; sp]);
            let ends: Vec<i64> = upsampled.iter().zip(&after).map(|(&l, &a)| l + a.min(0)).collect();
            let ends = ctx.vec_i64(&ends);
            let axes = ctx.vec_i64(&(2..2 + sp as i64).collect::<Vec<_>>());
            u = ctx.op("Slice", &[&u, &starts, &ends, &axes], vec![]);
            for a in &mut after {
                *a = (*a).max(0);
            }
        }
    }

    // The kernel: per group, input and output channels swapped ([C_in, C_out / group, k...]),
    // then flipped along every spatial axis. Constant weights fold at session load.
    let c_out_group = c_out / group;
    let mut wt = w.to_string();
    if c_out_group > 1 && c_in_group > 1 {
        let mut grouped = vec![group, c_out_group, c_in_group];
        grouped.extend(&win.kernel);
        let grouped = ctx.vec_i64(&grouped);
        wt = ctx.op("Reshape", &[&wt, &grouped], vec![]);
        let mut perm = vec![0i64, 2, 1];
        perm.extend(3..3 + sp as i64);
        wt = ctx.op("Transpose", &[&wt], vec![Attr::ints("perm", &perm)]);
    }
    let mut swapped = vec![group * c_in_group, c_out_group];
    swapped.extend(&win.kernel);
    let swapped = ctx.vec_i64(&swapped);
    wt = ctx.op("Reshape", &[&wt, &swapped], vec![]);
    let starts = ctx.vec_i64(&vec![-1; sp]);
    let ends = ctx.vec_i64(&vec![i64::MIN; sp]);
    let axes = ctx.vec_i64(&(2..2 + sp as i64).collect::<Vec<_>>());
    let steps = ctx.vec_i64(&vec![-1; sp]);
    let flipped = ctx.op("Slice", &[&wt, &starts, &ends, &axes, &steps], vec![]);

    let mut pads = before;
    pads.extend(after);
    Some(ctx.op(
        "Conv",
        &[&u, &flipped],
        vec![
            Attr::ints("kernel_shape", &win.kernel),
            Attr::ints("pads", &pads),
            Attr::ints("dilations", &win.dilations),
            Attr::int("group", group),
        ],
    ))
}

/// `AveragePool`: `dy` divided by the number of values each window averaged (with or without
/// the padding, `count_include_pad`; `ceil_mode`'s partial windows), spread back over each
/// window by a transposed convolution with a kernel of ones; by [`tiled_average_pool`]
/// where the windows tile a blocked input.
pub(crate) fn average_pool(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let x = n.input[0].clone();
    let win = pool_window(n)?;
    if let Some(g) = tiled_average_pool(ctx, &x, dy, &win) {
        ctx.pass(&x, g);
        return Ok(());
    }
    let sp = win.kernel.len();
    let ceil = attr::int_or(n, "ceil_mode", 0)? != 0;
    let include_pad = attr::int_or(n, "count_include_pad", 0)? != 0;
    let ones_kernel = {
        let mut dims = vec![1, 1];
        dims.extend(&win.kernel);
        let len = win.kernel.iter().product::<i64>() as usize;
        ctx.const_f32("pool_kernel", &dims, vec![1.0; len])
    };
    // dy as [N * C, 1, ...spatial], so one single-channel kernel serves every channel.
    let sdy = ctx.op("Shape", &[dy], vec![]);
    let two = ctx.vec_i64(&[2]);
    let max = ctx.vec_i64(&[i64::MAX]);
    let out_spatial = ctx.op("Slice", &[&sdy, &two, &max], vec![]);
    let lead = ctx.vec_i64(&[-1, 1]);
    let shape4 = ctx.op("Concat", &[&lead, &out_spatial], vec![Attr::int("axis", 0)]);
    let dy4 = ctx.op("Reshape", &[dy, &shape4], vec![]);

    // How many values each window averaged.
    let scaled = if include_pad && !ceil {
        let inv = ctx.scalar_f32(1.0 / win.kernel.iter().product::<i64>() as f32);
        ctx.op("Mul", &[&dy4, &inv], vec![])
    } else {
        let sx = ctx.shape_of(&x);
        let x_spatial = ctx.op("Slice", &[&sx, &two, &max], vec![]);
        let one_one = ctx.vec_i64(&[1, 1]);
        let ones_shape = ctx.op("Concat", &[&one_one, &x_spatial], vec![Attr::int("axis", 0)]);
        let mut ones = ctx.filled(&ones_shape, 1.0)?;
        let mut conv_pads = win.pads.clone();
        if include_pad {
            // The padded area counts: pad the ones with ones, then convolve without padding.
            let mut pads = vec![0, 0];
            pads.extend(&win.pads[..sp]);
            pads.extend([0, 0]);
            pads.extend(&win.pads[sp..]);
            let pads = ctx.vec_i64(&pads);
            let one = ctx.scalar_f32(1.0);
            ones = ctx.op("Pad", &[&ones, &pads, &one], vec![]);
            conv_pads = vec![0; 2 * sp];
        }
        if ceil {
            for i in 0..sp {
                conv_pads[sp + i] += win.strides[i] - 1;
            }
        }
        let counts = ctx.op(
            "Conv",
            &[&ones, &ones_kernel],
            vec![
                Attr::ints("kernel_shape", &win.kernel),
                Attr::ints("strides", &win.strides),
                Attr::ints("pads", &conv_pads),
                Attr::ints("dilations", &win.dilations),
            ],
        );
        let counts = crop_spatial(ctx, &counts, dy, sp);
        ctx.op("Div", &[&dy4, &counts], vec![])
    };
    let full = ctx.op(
        "ConvTranspose",
        &[&scaled, &ones_kernel],
        vec![
            Attr::ints("kernel_shape", &win.kernel),
            Attr::ints("strides", &win.strides),
            Attr::ints("pads", &win.pads),
            Attr::ints("dilations", &win.dilations),
            Attr::ints("output_padding", &win.output_padding()),
        ],
    );
    let g4 = crop_spatial(ctx, &full, &x, sp);
    let sx = ctx.shape_of(&x);
    let g = ctx.op("Reshape", &[&g4, &sx], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// The gradient of an `AveragePool` whose windows tile its [`blocked`] input (kernel equal
/// to the strides, no pads or dilation, each spatial size a multiple of its stride, so
/// every input value is in exactly one full window): `dy` divided by the window's size,
/// each value [`repeat`]ed over its window. Both run in ONNX Runtime's blocked layout, where
/// the general form's single-channel `ConvTranspose` and crops do not.
fn tiled_average_pool(ctx: &mut Ctx, x: &str, dy: &str, win: &Window) -> Option<String> {
    let (c, h, w) = blocked(ctx, x)?;
    let tiles = win.kernel.len() == 2
        && win.kernel == win.strides
        && win.pads.iter().all(|&p| p == 0)
        && win.dilations.iter().all(|&d| d == 1)
        && win.kernel.iter().all(|&k| k >= 1)
        && h % win.kernel[0] == 0
        && w % win.kernel[1] == 0;
    if !tiles {
        return None;
    }
    let scaled = channel_affine(ctx, dy, c, 1.0 / (win.kernel[0] * win.kernel[1]) as f32, 0.0);
    let g = repeat(ctx, &scaled, &[1, 1, win.kernel[0], win.kernel[1]]);
    ctx.declare_like(&g, x);
    Some(g)
}

// ----- matrix products -----

/// `Gemm` (`alpha * op(A) * op(B) + beta * C`): the two products of `dy` with the other
/// operand, transposed back where the operand was, and `beta * dy` summed to `C`'s shape.
pub(crate) fn gemm(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (a, b) = (n.input[0].clone(), n.input[1].clone());
    let alpha = attr::float_or(n, "alpha", 1.0)?;
    let beta = attr::float_or(n, "beta", 1.0)?;
    let ta = attr::int_or(n, "transA", 0)? != 0;
    let tb = attr::int_or(n, "transB", 0)? != 0;
    let y = n.output[0].clone();
    if ctx.is_active(&a) {
        // d(op(A)) = alpha * dY * op(B)^T
        let g = ctx.op(
            "Gemm",
            &[dy, &b],
            vec![Attr::float("alpha", alpha), Attr::int("transB", i64::from(!tb))],
        );
        let g = if ta {
            ctx.op("Transpose", &[&g], vec![Attr::ints("perm", &[1, 0])])
        } else {
            g
        };
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        // d(op(B)) = alpha * op(A)^T * dY
        let g = ctx.op(
            "Gemm",
            &[&a, dy],
            vec![Attr::float("alpha", alpha), Attr::int("transA", i64::from(!ta))],
        );
        let g = if tb {
            ctx.op("Transpose", &[&g], vec![Attr::ints("perm", &[1, 0])])
        } else {
            g
        };
        ctx.add_grad(&b, g);
    }
    if let Some(c) = n.input.get(2).filter(|c| ctx.is_active(c)).cloned() {
        let bs = ctx.scalar_f32(beta);
        let g = ctx.op("Mul", &[dy, &bs], vec![]);
        let g = ctx.reduce_to(&g, &c, &y);
        ctx.add_grad(&c, g);
    }
    Ok(())
}

/// `MatMul` (NumPy semantics): `dy * B^T` and `A^T * dy`, summed over broadcast batch axes;
/// needs the static ranks of the operands (a vector second operand is handled).
pub(crate) fn matmul(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let (a, b) = (n.input[0].clone(), n.input[1].clone());
    let y = n.output[0].clone();
    let rank = |ctx: &Ctx, v: &str| ctx.static_shape(v).map(<[SDim]>::len);
    let swap = |r: usize| -> Vec<i64> {
        let mut p: Vec<i64> = (0..r as i64).collect();
        p.swap(r - 2, r - 1);
        p
    };
    let need = |what: &str| n.unsupported(format!("the rank of {what} is unknown or below 2"));
    if ctx.is_active(&a) {
        let rb = rank(ctx, &b)
            .filter(|&r| r >= 1)
            .ok_or_else(|| need("the second operand"))?;
        let ra = rank(ctx, &a);
        let g = if rb == 1 {
            let last = ctx.vec_i64(&[-1]);
            let u = ctx.op("Unsqueeze", &[dy, &last], vec![]);
            ctx.op("Mul", &[&u, &b], vec![])
        } else {
            let bt = ctx.op("Transpose", &[&b], vec![Attr::ints("perm", &swap(rb))]);
            if ra == Some(1) {
                return Err(need("the first operand"));
            }
            ctx.op("MatMul", &[dy, &bt], vec![])
        };
        let g = ctx.reduce_to(&g, &a, &y);
        ctx.add_grad(&a, g);
    }
    if ctx.is_active(&b) {
        let ra = rank(ctx, &a)
            .filter(|&r| r >= 2)
            .ok_or_else(|| need("the first operand"))?;
        if rank(ctx, &b).is_none_or(|r| r < 2) {
            return Err(need("the second operand"));
        }
        let at = ctx.op("Transpose", &[&a], vec![Attr::ints("perm", &swap(ra))]);
        let g = ctx.op("MatMul", &[&at, dy], vec![]);
        let g = ctx.reduce_to(&g, &b, &y);
        ctx.add_grad(&b, g);
    }
    Ok(())
}

// ----- slicing -----

/// `Slice`: the gradient padded back with zeros. With constant starts and ends and static
/// sizes of the sliced axes, the pads are constants; otherwise (bounds computed from shapes,
/// or sizes unknown) they are worked out at run time, which needs the input's rank. Steps
/// above 1 (`x[:, ::2]`, Swin's patch merging) need the constant form: the gradient first gets
/// `step - 1` zeros after each value along the axis, then the pads.
pub(crate) fn slice(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Done {
    let steps = n.given(4).and_then(|v| const_i64s(&ctx.consts, v));
    if steps.as_ref().is_some_and(|s| s.iter().any(|&s| s != 1)) {
        return strided_slice(ctx, n, dy, steps.unwrap_or_default());
    }
    let x = n.input[0].clone();
    let input = |i: usize| n.input.get(i).filter(|v| !v.is_empty()).cloned();
    let get = |ctx: &Ctx, i: usize| input(i).and_then(|v| const_i64s(&ctx.consts, &v));
    let shape = ctx
        .static_shape(&x)
        .map(<[SDim]>::to_vec)
        .ok_or_else(|| n.unsupported("the input's rank is unknown"))?;
    let rank = shape.len();
    let (starts, ends) = (get(ctx, 1), get(ctx, 2));
    let axes = match (get(ctx, 3), &starts) {
        (Some(a), _) => a,
        (None, Some(s)) => (0..s.len() as i64).collect(),
        (None, None) => return Err(n.unsupported("no axes and the starts are not a constant")),
    };
    let axes: Vec<usize> = axes
        .iter()
        .map(|&axis| axis_of(n, axis, rank))
        .collect::<Result<_, _>>()?;
    let fixed: Option<Vec<i64>> = axes
        .iter()
        .map(|&a| match shape[a] {
            SDim::Fixed(d) => Some(d),
            SDim::Sym(_) => None,
        })
        .collect();
    let g = if let (Some(starts), Some(ends), Some(dims)) = (&starts, &ends, fixed) {
        let mut pads = vec![0i64; 2 * rank];
        for (((&a, &start), &end), dim) in axes.iter().zip(starts).zip(ends).zip(dims) {
            let (s, len) = super::shape::slice_span(start, end, 1, dim)
                .ok_or_else(|| n.unsupported(format!("axis {a} has size {dim}")))?;
            pads[a] = s;
            pads[a + rank] = dim - s - len;
        }
        let pads = ctx.vec_i64(&pads);
        ctx.op("Pad", &[dy, &pads], vec![])
    } else {
        let bound = |ctx: &mut Ctx, i: usize, what: &str| -> Result<String, AttackError> {
            match (get(ctx, i), input(i)) {
                (Some(v), _) => Ok(ctx.vec_i64(&v)),
                (None, Some(v)) => Ok(ctx.op("Cast", &[&v], vec![Attr::int("to", DataType::INT64 as i64)])),
                (None, None) => Err(n.unsupported(format!("no {what}"))),
            }
        };
        let starts = bound(ctx, 1, "starts")?;
        let ends = bound(ctx, 2, "ends")?;
        let pads = runtime_slice_pads(ctx, &x, &axes, rank, &starts, &ends);
        ctx.op("Pad", &[dy, &pads], vec![])
    };
    ctx.pass(&x, g);
    Ok(())
}

/// [`slice`] with positive `steps`, some above 1: constant starts and ends, static sizes of
/// the sliced axes. Along each stepped axis, `dy` (`m` values) becomes `m * step` values with
/// `step - 1` zeros after each (an `Unsqueeze`d axis padded and merged back), cut to what fits
/// before the axis end; then one `Pad` puts every sliced axis back in place.
fn strided_slice(ctx: &mut Ctx, n: Node<'_>, dy: &str, steps: Vec<i64>) -> Done {
    let x = n.input[0].clone();
    let get = |ctx: &Ctx, i: usize| n.given(i).and_then(|v| const_i64s(&ctx.consts, v));
    let need = |what: &str| n.unsupported(format!("steps {steps:?} with {what}"));
    let shape = ctx
        .static_shape(&x)
        .map(<[SDim]>::to_vec)
        .ok_or_else(|| need("the input's shape unknown"))?;
    let rank = shape.len();
    let (starts, ends) = (
        get(ctx, 1).ok_or_else(|| need("starts that are not constant"))?,
        get(ctx, 2).ok_or_else(|| need("ends that are not constant"))?,
    );
    let axes = get(ctx, 3).unwrap_or_else(|| (0..starts.len() as i64).collect());
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        return Err(need("starts, ends, axes and steps of different lengths"));
    }
    let mut g = dy.to_string();
    let mut pads = vec![0i64; 2 * rank];
    for (i, &axis) in axes.iter().enumerate() {
        let a = axis_of(n, axis, rank)?;
        let SDim::Fixed(dim) = shape[a] else {
            return Err(need("a sliced axis of unknown size"));
        };
        let step = steps[i];
        let (start, len) =
            super::shape::slice_span(starts[i], ends[i], step, dim).ok_or_else(|| need("a step below 1"))?;
        let mut kept = len;
        if step > 1 && len > 0 {
            // [.., len, ..] -> [.., len, 1, ..] -> [.., len, step, ..] -> [.., len * step, ..].
            let at = ctx.vec_i64(&[a as i64 + 1]);
            let u = ctx.op("Unsqueeze", &[&g, &at], vec![]);
            let mut p = vec![0i64; 2 * (rank + 1)];
            p[rank + 1 + a + 1] = step - 1;
            let p = ctx.vec_i64(&p);
            let spread = ctx.op("Pad", &[&u, &p], vec![]);
            let sg = ctx.op("Shape", &[&g], vec![]);
            let (zero, a0, a1, max) = (
                ctx.vec_i64(&[0]),
                ctx.vec_i64(&[a as i64]),
                ctx.vec_i64(&[a as i64 + 1]),
                ctx.vec_i64(&[i64::MAX]),
            );
            let head = ctx.op("Slice", &[&sg, &zero, &a0], vec![]);
            let tail = ctx.op("Slice", &[&sg, &a1, &max], vec![]);
            kept = (len * step).min(dim - start);
            let merged = ctx.vec_i64(&[len * step]);
            let target = ctx.op("Concat", &[&head, &merged, &tail], vec![Attr::int("axis", 0)]);
            g = ctx.op("Reshape", &[&spread, &target], vec![]);
            if kept < len * step {
                let (s0, e0, ax) = (ctx.vec_i64(&[0]), ctx.vec_i64(&[kept]), ctx.vec_i64(&[a as i64]));
                g = ctx.op("Slice", &[&g, &s0, &e0, &ax], vec![]);
            }
        }
        pads[a] = start;
        pads[a + rank] = dim - start - kept;
    }
    let pads = ctx.vec_i64(&pads);
    let g = ctx.op("Pad", &[&g, &pads], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// The `Pad` pads (`[begin..., end...]`, int64 `[2 * rank]`) that undo a step-1 `Slice` of
/// `x` on `axes` (non-negative) from run-time `starts` and `ends`, resolved as ONNX does:
/// negative values count from the end, then both are clamped to `[0, dim]`, and an end
/// before its start is the start.
fn runtime_slice_pads(ctx: &mut Ctx, x: &str, axes: &[usize], rank: usize, starts: &str, ends: &str) -> String {
    let axes_i: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    let sx = ctx.shape_of(x);
    let ax = ctx.vec_i64(&axes_i);
    let dims = ctx.op("Gather", &[&sx, &ax], vec![Attr::int("axis", 0)]);
    let zero = ctx.scalar_i64(0);
    let resolve = |ctx: &mut Ctx, v: &str| {
        // Clamp above first, so that adding the size to a negative value cannot overflow.
        let m = ctx.op("Min", &[v, &dims], vec![]);
        let neg = ctx.op("Less", &[&m, &zero], vec![]);
        let wrapped = ctx.op("Add", &[&m, &dims], vec![]);
        let r = ctx.op("Where", &[&neg, &wrapped, &m], vec![]);
        ctx.op("Max", &[&r, &zero], vec![])
    };
    let s = resolve(ctx, starts);
    let e = resolve(ctx, ends);
    let e = ctx.op("Max", &[&e, &s], vec![]);
    let after = ctx.op("Sub", &[&dims, &e], vec![]);
    let updates = ctx.op("Concat", &[&s, &after], vec![Attr::int("axis", 0)]);
    let mut positions = axes_i.clone();
    positions.extend(axes_i.iter().map(|a| a + rank as i64));
    let positions = ctx.vec_i64(&positions);
    let zeros = ctx.vec_i64(&vec![0; 2 * rank]);
    ctx.op(
        "ScatterElements",
        &[&zeros, &positions, &updates],
        vec![Attr::int("axis", 0)],
    )
}
