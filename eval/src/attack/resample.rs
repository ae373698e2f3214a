//! Checks and backward rules of the padding and resampling operators: `Pad` in constant
//! mode, and the two forms our trainer's exporter writes for ResNet tweaks: `Pad` in reflect
//! mode (the blur pool of anti-aliased downsampling) and `Resize` in nearest mode by integer
//! factors (Big-Little's upsampling). The checks run before the transform writes anything
//! and the rules parse the attributes with the same functions, so whatever a check accepts,
//! its rule differentiates. The rule table (`rules`) points at [`check_pad`], [`pad`],
//! [`check_resize`] and [`resize`].

use engine::onnx::Attr;

use super::attr::{self, Node};
use super::consts::{Consts, const_f32s, const_i64s};
use super::ctx::Ctx;
use super::error::AttackError;
use super::shape::SDim;

/// `Pad`'s `mode`: constant (the default), or reflect; an error for another type.
fn pad_mode(n: Node<'_>) -> Result<String, AttackError> {
    Ok(attr::string(n, "mode")?.unwrap_or_else(|| "constant".into()))
}

/// The pads of a `Pad` (`[begin..., end...]`): the attribute (opset < 11) or the constant
/// input 1; `None` when they are not a constant.
fn pads_of(n: Node<'_>, consts: &Consts) -> Result<Option<Vec<i64>>, AttackError> {
    Ok(match attr::ints(n, "pads")? {
        Some(p) => Some(p),
        None => n.given(1).and_then(|p| const_i64s(consts, p)),
    })
}

/// Checks a `Pad` for what its rule handles: constant mode on any axis, and reflect mode
/// (numpy's `reflect`: the edge is not repeated) on the last two axes with widths below
/// the axis size; constant, non-negative pads and constant axes.
pub(crate) fn check_pad(n: Node<'_>, consts: &Consts) -> Result<(), AttackError> {
    let mode = pad_mode(n)?;
    if mode != "constant" && mode != "reflect" {
        return Err(n.unsupported(format!("mode {mode} (only constant and reflect padding)")));
    }
    match pads_of(n, consts)? {
        None => return Err(n.unsupported("the pads are not a constant")),
        Some(p) if p.iter().any(|&v| v < 0) => {
            return Err(n.unsupported(format!("negative pads {p:?}")));
        }
        _ => {}
    }
    if let Some(axes) = n.given(3)
        && const_i64s(consts, axes).is_none()
    {
        return Err(n.unsupported("the axes are not a constant"));
    }
    if mode == "reflect" && n.given(3).is_none() {
        // Without an axes input the pads give the rank; with one, the rule checks the axes
        // against the input's static rank.
        reflect_pads(n, consts, None)?;
    }
    Ok(())
}

/// `Pad`: in reflect mode, see [`reflect_pad`]; in constant mode, `dy` sliced back to the
/// input's extent.
pub(crate) fn pad(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Result<(), AttackError> {
    if pad_mode(n)? == "reflect" {
        return reflect_pad(ctx, n, dy);
    }
    let x = n.input[0].clone();
    let pads = pads_of(n, &ctx.consts)?.ok_or_else(|| n.unsupported("the pads are not a constant"))?;
    let k = pads.len() / 2;
    let axes: Vec<i64> = match n.given(3) {
        Some(a) => const_i64s(&ctx.consts, a).ok_or_else(|| n.unsupported("axes not constant"))?,
        None => (0..k as i64).collect(),
    };
    let begin = ctx.vec_i64(&pads[..k]);
    let ax = ctx.vec_i64(&axes);
    let s = ctx.shape_of(&x);
    let dims = ctx.op("Gather", &[&s, &ax], vec![Attr::int("axis", 0)]);
    let end = ctx.op("Add", &[&begin, &dims], vec![]);
    let g = ctx.op("Slice", &[dy, &begin, &end, &ax], vec![]);
    ctx.pass(&x, g);
    Ok(())
}

/// One reflect-padded axis: counted from the end (`-2`: H, `-1`: W), and its widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReflectAxis {
    /// The axis, negative: `-2` or `-1`.
    pub(crate) axis: i64,
    /// Values added before the first one.
    pub(crate) before: i64,
    /// Values added after the last one.
    pub(crate) after: i64,
}

/// The axes a reflect `Pad` pads (those with a non-zero width), with the input's rank.
///
/// Without an `axes` input the pads give the rank; with one, `rank` (the input's static
/// rank, if known) must.
/// Fails, naming the node, when the pads or axes are not constants, do not match, are
/// negative, or pad an axis other than the last two.
pub(crate) fn reflect_pads(
    n: Node<'_>,
    consts: &Consts,
    rank: Option<usize>,
) -> Result<(usize, Vec<ReflectAxis>), AttackError> {
    let pads = pads_of(n, consts)?.ok_or_else(|| n.unsupported("the pads are not a constant"))?;
    if pads.len() % 2 != 0 {
        return Err(n.unsupported(format!("pads {pads:?} have an odd length")));
    }
    let k = pads.len() / 2;
    let (axes, rank) = match n.given(3) {
        Some(a) => {
            let axes = const_i64s(consts, a).ok_or_else(|| n.unsupported("the axes are not a constant"))?;
            let rank = rank.ok_or_else(|| {
                n.unsupported(format!("reflect padding on axes {axes:?} of an input of unknown rank"))
            })?;
            (axes, rank)
        }
        None => ((0..k as i64).collect(), k),
    };
    if axes.len() != k {
        return Err(n.unsupported(format!(
            "pads {pads:?} do not match axes {axes:?} (two widths per axis)"
        )));
    }
    let mut out = Vec::new();
    for (i, &axis) in axes.iter().enumerate() {
        let (before, after) = (pads[i], pads[i + k]);
        if before == 0 && after == 0 {
            continue;
        }
        if before < 0 || after < 0 {
            return Err(n.unsupported(format!("negative pads {pads:?}")));
        }
        let from_end = if axis < 0 { axis } else { axis - rank as i64 };
        if !(-2..0).contains(&from_end) || from_end < -(rank as i64) {
            return Err(n.unsupported(format!(
                "mode reflect pads axis {axis} of a rank-{rank} input by ({before}, {after}); \
                     only the last two axes (H, W) are handled"
            )));
        }
        out.push(ReflectAxis {
            axis: from_end,
            before,
            after,
        });
    }
    Ok((rank, out))
}

/// Reflect `Pad`: per padded axis, the interior of the gradient, plus each border strip
/// reversed and added onto the values it mirrors (`y[-i] = x[i]`, `y[d - 1 + i] = x[d - 1 -
/// i]` for `i` in `1..=width`). Widths must be below the axis size, as ONNX Runtime's
/// forward `Pad` requires; static sizes are checked here.
fn reflect_pad(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Result<(), AttackError> {
    let x = n.input[0].clone();
    let shape = ctx.static_shape(&x).map(<[SDim]>::to_vec);
    let (rank, axes) = reflect_pads(n, &ctx.consts, shape.as_ref().map(Vec::len))?;
    if let Some(shape) = &shape {
        if shape.len() != rank {
            return Err(n.unsupported(format!("pads for rank {rank}, but the input has rank {}", shape.len())));
        }
        for a in &axes {
            if let SDim::Fixed(d) = shape[(rank as i64 + a.axis) as usize]
                && (a.before >= d || a.after >= d)
            {
                return Err(n.unsupported(format!(
                    "mode reflect pads axis {} of size {d} by ({}, {}); widths must be below the size",
                    a.axis, a.before, a.after
                )));
            }
        }
    }
    let mut g = dy.to_string();
    for a in &axes {
        g = unreflect_axis(ctx, &g, &x, rank, *a);
    }
    ctx.pass(&x, g);
    Ok(())
}

/// The gradient `g` of a tensor reflect-padded on one axis, folded back onto `x`'s size.
fn unreflect_axis(ctx: &mut Ctx, g: &str, x: &str, rank: usize, a: ReflectAxis) -> String {
    let ax = ctx.vec_i64(&[a.axis]);
    let step_back = ctx.vec_i64(&[-1]);
    let begin = ctx.vec_i64(&[a.before]);
    let end = ctx.vec_i64(&[if a.after == 0 { i64::MAX } else { -a.after }]);
    let mut out = ctx.op("Slice", &[g, &begin, &end, &ax], vec![]);
    let sx = ctx.shape_of(x);
    let size = ctx.op("Gather", &[&sx, &ax], vec![Attr::int("axis", 0)]);
    if a.before > 0 {
        // g[before - 1], ..., g[0] mirror x[1], ..., x[before].
        let first = ctx.vec_i64(&[a.before - 1]);
        let past_start = ctx.vec_i64(&[i64::MIN]);
        let strip = ctx.op("Slice", &[g, &first, &past_start, &ax, &step_back], vec![]);
        let gap = ctx.vec_i64(&[1 + a.before]);
        let tail = ctx.op("Sub", &[&size, &gap], vec![]);
        let one = ctx.vec_i64(&[1]);
        let placed = pad_one_axis(ctx, &strip, rank, a.axis, &one, &tail);
        out = ctx.op("Add", &[&out, &placed], vec![]);
    }
    if a.after > 0 {
        // g[last], ..., g[last - after + 1] mirror x[d - 1 - after], ..., x[d - 2].
        let last = ctx.vec_i64(&[-1]);
        let stop = ctx.vec_i64(&[-(a.after + 1)]);
        let strip = ctx.op("Slice", &[g, &last, &stop, &ax, &step_back], vec![]);
        let gap = ctx.vec_i64(&[1 + a.after]);
        let head = ctx.op("Sub", &[&size, &gap], vec![]);
        let one = ctx.vec_i64(&[1]);
        let placed = pad_one_axis(ctx, &strip, rank, a.axis, &head, &one);
        out = ctx.op("Add", &[&out, &placed], vec![]);
    }
    out
}

/// Zero-pads `v` (rank `rank`) on axis `axis` (negative) by `before` and `after`, int64
/// `[1]` values.
fn pad_one_axis(ctx: &mut Ctx, v: &str, rank: usize, axis: i64, before: &str, after: &str) -> String {
    let pos = (rank as i64 + axis) as usize;
    let mut parts: Vec<String> = Vec::new();
    if pos > 0 {
        parts.push(ctx.vec_i64(&vec![0; pos]));
    }
    parts.push(before.to_string());
    if rank > 1 {
        parts.push(ctx.vec_i64(&vec![0; rank - 1]));
    }
    parts.push(after.to_string());
    if rank - 1 - pos > 0 {
        parts.push(ctx.vec_i64(&vec![0; rank - 1 - pos]));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let pads = ctx.op("Concat", &refs, vec![Attr::int("axis", 0)]);
    ctx.op("Pad", &[v, &pads], vec![])
}

/// Checks a `Resize` for what its rule handles: nearest mode, asymmetric coordinates,
/// `nearest_mode = floor`, no `axes` attribute, and constant `scales` of 1 on the leading
/// axes and integers >= 1 on the last two (or constant `sizes`, resolved against the static
/// input shape by [`resize_factors`]).
pub(crate) fn check_resize(n: Node<'_>, consts: &Consts) -> Result<(), AttackError> {
    let mode = attr::string(n, "mode")?.unwrap_or_else(|| "nearest".into());
    if mode != "nearest" {
        return Err(n.unsupported(format!("mode {mode} (only nearest upsampling by integer factors)")));
    }
    let coords = attr::string(n, "coordinate_transformation_mode")?.unwrap_or_else(|| "half_pixel".into());
    if coords != "asymmetric" {
        return Err(n.unsupported(format!(
            "coordinate_transformation_mode {coords} (only asymmetric, with nearest_mode floor)"
        )));
    }
    let rounding = attr::string(n, "nearest_mode")?.unwrap_or_else(|| "round_prefer_floor".into());
    if rounding != "floor" {
        return Err(n.unsupported(format!(
            "nearest_mode {rounding} (only floor, with asymmetric coordinates)"
        )));
    }
    if let Some(axes) = attr::ints(n, "axes")? {
        return Err(n.unsupported(format!("axes attribute {axes:?} (only scales or sizes for every axis)")));
    }
    if let Some(policy) = attr::string(n, "keep_aspect_ratio_policy")?
        && policy != "stretch"
    {
        return Err(n.unsupported(format!("keep_aspect_ratio_policy {policy} (only stretch)")));
    }
    match (n.given(2), n.given(3)) {
        (Some(s), _) => {
            let scales = const_f32s(consts, s).ok_or_else(|| n.unsupported("the scales are not a constant"))?;
            scale_factors(n, &scales)?;
        }
        (None, Some(s)) => {
            const_i64s(consts, s).ok_or_else(|| n.unsupported("the sizes are not a constant"))?;
        }
        (None, None) => return Err(n.unsupported("neither scales nor sizes are given")),
    }
    Ok(())
}

/// The integer factors `(rank, on H, on W)` of constant `scales`.
fn scale_factors(n: Node<'_>, scales: &[f32]) -> Result<(usize, i64, i64), AttackError> {
    let bad = || {
        n.unsupported(format!(
            "scales {scales:?} (only 1 on the leading axes and integers >= 1 on the last two)"
        ))
    };
    let r = scales.len();
    if r < 2 || scales[..r - 2].iter().any(|&s| s != 1.0) {
        return Err(bad());
    }
    let factor = |s: f32| {
        (s.is_finite() && s >= 1.0 && s.fract() == 0.0 && s <= i32::MAX as f32)
            .then_some(s as i64)
            .ok_or_else(bad)
    };
    Ok((r, factor(scales[r - 2])?, factor(scales[r - 1])?))
}

/// The integer factors `(rank, on H, on W)` of a `Resize` accepted by [`check_resize`]:
/// from its scales, or from its sizes and the input's static shape `shape` (the sizes must
/// equal the input's on the leading axes and be multiples of it on the last two).
pub(crate) fn resize_factors(
    n: Node<'_>,
    consts: &Consts,
    shape: Option<&[SDim]>,
) -> Result<(usize, i64, i64), AttackError> {
    check_resize(n, consts)?;
    if let Some(scales) = n.given(2).and_then(|s| const_f32s(consts, s)) {
        return scale_factors(n, &scales);
    }
    let sizes = n
        .given(3)
        .and_then(|s| const_i64s(consts, s))
        .ok_or_else(|| n.unsupported("the sizes are not a constant"))?;
    let shape = shape.ok_or_else(|| {
        n.unsupported(format!(
            "sizes {sizes:?} for an input of unknown shape (the factors are unknown)"
        ))
    })?;
    let fixed: Option<Vec<i64>> = shape
        .iter()
        .map(|d| match d {
            SDim::Fixed(v) => Some(*v),
            SDim::Sym(_) => None,
        })
        .collect();
    let r = sizes.len();
    let factors = fixed.filter(|f| f.len() == r && r >= 2).and_then(|dims| {
        let lead_same = sizes[..r - 2] == dims[..r - 2];
        let factor =
            |i: usize| (dims[i] > 0 && sizes[i] % dims[i] == 0 && sizes[i] >= dims[i]).then(|| sizes[i] / dims[i]);
        lead_same.then_some(())?;
        Some((r, factor(r - 2)?, factor(r - 1)?))
    });
    factors.ok_or_else(|| {
        let dims: Vec<String> = shape
            .iter()
            .map(|d| match d {
                SDim::Fixed(v) => v.to_string(),
                SDim::Sym(s) => s.clone(),
            })
            .collect();
        n.unsupported(format!(
            "sizes {sizes:?} are not the input shape [{}] times integers on the last two axes",
            dims.join(", ")
        ))
    })
}

/// Nearest `Resize` by integer factors `fh x fw` (asymmetric coordinates, floor: each input
/// value repeated over a block): the gradient summed over each block, as a `Reshape` to
/// `[..., H, fh, W, fw]` and a `ReduceSum` over the block axes.
pub(crate) fn resize(ctx: &mut Ctx, n: Node<'_>, dy: &str) -> Result<(), AttackError> {
    let x = n.input[0].clone();
    let shape = ctx.static_shape(&x).map(<[SDim]>::to_vec);
    let (rank, fh, fw) = resize_factors(n, &ctx.consts, shape.as_deref())?;
    if let Some(s) = &shape
        && s.len() != rank
    {
        return Err(n.unsupported(format!("{rank} scales or sizes for an input of rank {}", s.len())));
    }
    if fh == 1 && fw == 1 {
        ctx.pass(&x, dy.to_string());
        return Ok(());
    }
    let r = rank as i64;
    let sx = ctx.shape_of(&x);
    let zero = ctx.vec_i64(&[0]);
    let h_end = ctx.vec_i64(&[r - 1]);
    let w_end = ctx.vec_i64(&[r]);
    let through_h = ctx.op("Slice", &[&sx, &zero, &h_end], vec![]);
    let w = ctx.op("Slice", &[&sx, &h_end, &w_end], vec![]);
    let fh = ctx.vec_i64(&[fh]);
    let fw = ctx.vec_i64(&[fw]);
    let blocks = ctx.op("Concat", &[&through_h, &fh, &w, &fw], vec![Attr::int("axis", 0)]);
    let split = ctx.op("Reshape", &[dy, &blocks], vec![]);
    let axes = ctx.vec_i64(&[r - 1, r + 1]);
    let g = ctx.op("ReduceSum", &[&split, &axes], vec![Attr::int("keepdims", 0)]);
    ctx.pass(&x, g);
    Ok(())
}
