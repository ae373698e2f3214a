//! The losses the gradient graph can differentiate, written as ONNX nodes on the logits.
//!
//! FGSM and PGD follow the cross-entropy; AutoAttack also needs the difference of logits
//! ratio (APGD-DLR), its targeted form (APGD-T) and a plain logit difference (FAB-T). All are
//! in every gradient graph, so one ORT session serves every attack: the `loss_kind` input
//! ([`Loss::code`]) picks the per-image loss that is output and whose gradient seeds the
//! backward pass. Each loss's gradient at the logits is written in closed form (like
//! `softmax - onehot` for the cross-entropy), so the rule table needs no `TopK` rule.

use engine::onnx::Attr;

use super::ctx::Ctx;

/// The loss whose pixel gradient the gradient graph returns (of the sum over the batch; the
/// per-image values are the `loss` output). `z` are the logits, `y` the label, `t` the
/// target class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loss {
    /// Cross-entropy `-log softmax(z)[y]`.
    CrossEntropy,
    /// Difference of logits ratio: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`,
    /// `z_pi1 >= z_pi2 >= ...` the sorted logits (needs 3 classes or more).
    Dlr,
    /// Targeted DLR: `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)` (4 classes or
    /// more).
    DlrTargeted,
    /// `z_t - z_y`, whose gradient FAB-T linearises.
    LogitDifference,
}

impl Loss {
    /// The value of the graph's `loss_kind` input that selects this loss.
    pub fn code(self) -> i64 {
        match self {
            Loss::CrossEntropy => 0,
            Loss::Dlr => 1,
            Loss::DlrTargeted => 2,
            Loss::LogitDifference => 3,
        }
    }

    /// Whether the loss reads the target classes.
    pub fn targeted(self) -> bool {
        matches!(self, Loss::DlrTargeted | Loss::LogitDifference)
    }

    /// The fewest classes the loss is defined for.
    pub fn min_classes(self) -> usize {
        match self {
            Loss::CrossEntropy | Loss::LogitDifference => 2,
            Loss::Dlr => 3,
            Loss::DlrTargeted => 4,
        }
    }
}

/// Writes the four losses of the logits `z` (`[N, K]`), selects the one `kind` (int64 `[1]`)
/// names into `loss_out` (`[N]`) and returns the value holding `d(sum loss)/dz`.
///
/// The sorted logits come from `TopK(k = 4)` of `z` padded with three very negative columns,
/// so the graph is valid for any `K` (a DLR of fewer than 3 or 4 classes is refused before a
/// run, as the reference warns); `OneHot` of a padding index is a zero row.
pub(crate) fn write(ctx: &mut Ctx, z: &str, labels: &str, targets: &str, kind: &str, loss_out: &str) -> String {
    let shape_z = ctx.op("Shape", &[z], vec![]);
    let one = ctx.scalar_i64(1);
    let depth = ctx.op("Gather", &[&shape_z, &one], vec![Attr::int("axis", 0)]);
    let on_off = ctx.const_f32("onehot_values", &[2], vec![0.0, 1.0]);
    let onehot = |ctx: &mut Ctx, index: &str| ctx.op("OneHot", &[index, &depth, &on_off], vec![Attr::int("axis", -1)]);
    let axis_last = ctx.const_i64("axis_last", &[1], vec![-1]);
    let pick = |ctx: &mut Ctx, oh: &str| {
        let m = ctx.op("Mul", &[z, oh], vec![]);
        ctx.op("ReduceSum", &[&m, &axis_last], vec![Attr::int("keepdims", 0)])
    };
    let oh_y = onehot(ctx, labels);
    let oh_t = onehot(ctx, targets);
    let z_y = pick(ctx, &oh_y);
    let z_t = pick(ctx, &oh_t);

    // Cross-entropy.
    let logp = ctx.op("LogSoftmax", &[z], vec![Attr::int("axis", -1)]);
    let picked = ctx.op("Mul", &[&logp, &oh_y], vec![]);
    let nll = ctx.op("ReduceSum", &[&picked, &axis_last], vec![Attr::int("keepdims", 0)]);
    let ce = ctx.op("Neg", &[&nll], vec![]);
    let probs = ctx.op("Softmax", &[z], vec![Attr::int("axis", -1)]);
    let dz_ce = ctx.op("Sub", &[&probs, &oh_y], vec![]);

    // The four largest logits and their classes.
    let pads = ctx.const_i64("loss_pads", &[4], vec![0, 0, 0, 3]);
    let low = ctx.scalar_f32(-1e30);
    let padded = ctx.op("Pad", &[z, &pads, &low], vec![Attr::string("mode", "constant")]);
    let k = ctx.const_i64("topk", &[1], vec![4]);
    let top = ctx.op_multi("TopK", &[&padded, &k], 2, vec![Attr::int("axis", -1)]);
    let (mut v, mut ix) = (Vec::new(), Vec::new());
    for r in 0..4 {
        let r = ctx.scalar_i64(r);
        v.push(ctx.op("Gather", &[&top[0], &r], vec![Attr::int("axis", 1)]));
        ix.push(ctx.op("Gather", &[&top[1], &r], vec![Attr::int("axis", 1)]));
    }
    let oh: Vec<String> = [0, 2, 3].iter().map(|&r| onehot(ctx, &ix[r])).collect();
    let (oh1, oh3, oh4) = (&oh[0], &oh[1], &oh[2]);
    let tiny = ctx.scalar_f32(1e-12);
    let half = ctx.scalar_f32(0.5);
    let axis1 = ctx.const_i64("axis_1", &[1], vec![1]);
    let col = |ctx: &mut Ctx, v: &str| ctx.op("Unsqueeze", &[v, &axis1], vec![]);
    // `-u / d` and its gradient `-(e_y - e_other) / d + u / d^2 * (dd/dz)`.
    let ratio = |ctx: &mut Ctx, u: &str, d: &str, oh_other: &str, dd: &str| -> (String, String) {
        let q = ctx.op("Div", &[u, d], vec![]);
        let loss = ctx.op("Neg", &[&q], vec![]);
        let inv = ctx.op("Reciprocal", &[d], vec![]);
        let inv_c = col(ctx, &inv);
        let diff = ctx.op("Sub", &[oh_other, &oh_y], vec![]);
        let first = ctx.op("Mul", &[&diff, &inv_c], vec![]);
        let q_inv = ctx.op("Mul", &[&q, &inv], vec![]);
        let q_inv_c = col(ctx, &q_inv);
        let second = ctx.op("Mul", &[dd, &q_inv_c], vec![]);
        (loss, ctx.op("Add", &[&first, &second], vec![]))
    };

    // DLR: the other class is the top one, or the second when the top one is the label.
    let top_is_y = ctx.op("Equal", &[&ix[0], labels], vec![]);
    let z_o = ctx.op("Where", &[&top_is_y, &v[1], &v[0]], vec![]);
    let i_o = ctx.op("Where", &[&top_is_y, &ix[1], &ix[0]], vec![]);
    let oh_o = onehot(ctx, &i_o);
    let u = ctx.op("Sub", &[&z_y, &z_o], vec![]);
    let spread = ctx.op("Sub", &[&v[0], &v[2]], vec![]);
    let d = ctx.op("Add", &[&spread, &tiny], vec![]);
    let dd = ctx.op("Sub", &[oh1, oh3], vec![]);
    let (dlr, dz_dlr) = ratio(ctx, &u, &d, &oh_o, &dd);

    // Targeted DLR.
    let ut = ctx.op("Sub", &[&z_y, &z_t], vec![]);
    let v34 = ctx.op("Add", &[&v[2], &v[3]], vec![]);
    let v34h = ctx.op("Mul", &[&v34, &half], vec![]);
    let spread_t = ctx.op("Sub", &[&v[0], &v34h], vec![]);
    let dt = ctx.op("Add", &[&spread_t, &tiny], vec![]);
    let oh34 = ctx.op("Add", &[oh3, oh4], vec![]);
    let oh34h = ctx.op("Mul", &[&oh34, &half], vec![]);
    let ddt = ctx.op("Sub", &[oh1, &oh34h], vec![]);
    let (dlrt, dz_dlrt) = ratio(ctx, &ut, &dt, &oh_t, &ddt);

    // Logit difference.
    let diff = ctx.op("Sub", &[&z_t, &z_y], vec![]);
    let dz_diff = ctx.op("Sub", &[&oh_t, &oh_y], vec![]);

    // Select (Where, so an unselected loss's infinities cannot leak as NaN).
    let mut loss = diff;
    let mut dz = dz_diff;
    for (code, l, g) in [(2, dlrt, dz_dlrt), (1, dlr, dz_dlr), (0, ce, dz_ce)] {
        let c = ctx.const_i64("loss_code", &[1], vec![code]);
        let is = ctx.op("Equal", &[kind, &c], vec![]);
        loss = ctx.op("Where", &[&is, &l, &loss], vec![]);
        dz = ctx.op("Where", &[&is, &g, &dz], vec![]);
    }
    ctx.emit("Identity", &[&loss], &[loss_out.to_string()], vec![]);
    dz
}
