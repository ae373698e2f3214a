//! FAB's projections: the smallest step (in L-inf or L2) that takes a point of the box
//! `[0, 1]^n` onto the hyperplane `<w, z> = b` without leaving the box.
//!
//! Ports of the reference's `projection_linf` and `projection_l2` (fra31/auto-attack,
//! `fab_projections.py`), one row at a time: the reference's batched tensors are independent
//! per row, so a row loop (in parallel over images, by the caller) computes the same thing.
//! Both sort the coordinates by the step at which they reach the box's boundary and search
//! the sorted cumulative sums for the segment where the hyperplane is reached; the sums are
//! accumulated in `f64` (the reference uses the tensors' `f32`).
//!
//! When the box does not meet the hyperplane, both return the reference's fallback: the box's
//! corner nearest to it (every coordinate moved to the bound that brings `<w, z>` towards
//! `b`). Coordinates whose weight is zero (L-inf) or below `1e-8` in magnitude (L2) are not
//! moved.

/// The reference's `1e12` stand-in for "never reaches the box's boundary" (L2).
const FAR: f64 = 1e12;

/// The smallest `d` in L-inf norm with `<w, t + d> = b` and `t + d` in `[0, 1]^n`, or the
/// nearest corner when there is none. `t`, `w` have the same length.
pub(super) fn projection_linf(t: &[f32], w: &[f32], b: f64) -> Vec<f32> {
    let n = t.len().min(w.len());
    let (t, w) = (&t[..n], &w[..n]);
    if n == 0 {
        return Vec::new();
    }
    // Flip the hyperplane so that `t` is on its non-negative side; the step then has to
    // lower `<w, .>` by `b - <w, t>` (<= 0).
    let wt: f64 = w.iter().zip(t).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    let sign = if wt - b >= 0.0 { 1.0 } else { -1.0 };
    let w: Vec<f64> = w.iter().map(|&v| sign * f64::from(v)).collect();
    let b = sign * b;
    // `a`: whether the coordinate moves up (towards 1), i.e. its weight is negative; `d`:
    // the step to that bound; `p`: its length.
    let up: Vec<bool> = w.iter().map(|&v| v < 0.0).collect();
    let mut d: Vec<f64> = (0..n)
        .map(|i| {
            if w[i] != 0.0 {
                f64::from(u8::from(up[i])) - f64::from(t[i])
            } else {
                0.0
            }
        })
        .collect();
    let p: Vec<f64> = (0..n)
        .map(|i| if up[i] { 1.0 - f64::from(t[i]) } else { f64::from(t[i]) })
        .collect();
    let ascending = argsort(&p);
    // The change of `<w, .>` the step needs, and the most the box allows.
    let need = b - w.iter().zip(t).map(|(&a, &b)| a * f64::from(b)).sum::<f64>();
    let most: f64 = w.iter().zip(&d).map(|(a, b)| a * b).sum();
    // Over the coordinates by decreasing `p`: `s[k]` sums the first k+1 `|w|`, `sb[k]` is the
    // change made by the others (all at their bound), so that a step of L-inf length
    // `lambda` in `[p(k+1), p(k)]` changes `<w, .>` by `sb[k] - s[k] lambda`.
    let mut s = Vec::with_capacity(n);
    let mut sb = Vec::with_capacity(n);
    let (mut s_acc, mut sb_acc) = (0.0f64, most);
    for &i in ascending.iter().rev() {
        s_acc += w[i].abs();
        sb_acc += -w[i] * d[i];
        s.push(s_acc);
        sb.push(sb_acc);
    }
    let lambda_at = |k: usize| {
        let rate = -s[k];
        if rate == 0.0 {
            0.0
        } else {
            ((need - sb[k]) / rate).max(0.0)
        }
    };
    // Reached before any coordinate meets its bound: every coordinate moves by `lambda`.
    let last = n - 1;
    let unbounded = need - (sb[last] - s[last] * p[ascending[0]]) > 0.0;
    // Reached with some coordinates at their bound: search the segment.
    let bounded = need - most > 0.0 && !unbounded;
    if unbounded {
        let lambda = lambda_at(last);
        for (di, &u) in d.iter_mut().zip(&up) {
            *di = if u { lambda } else { -lambda };
        }
    } else if bounded {
        let (mut lb, mut ub) = (0usize, last);
        for _ in 0..ceil_log2(n) {
            let mid = (lb + ub) / 2;
            let reached_at = sb[mid] - s[mid] * p[ascending[last - mid]];
            if need - reached_at > 0.0 {
                lb = mid;
            } else {
                ub = mid;
            }
        }
        let lambda = lambda_at(lb);
        for (di, &u) in d.iter_mut().zip(&up) {
            *di = if u { lambda.min(*di) } else { (-lambda).max(*di) };
        }
    }
    d.iter()
        .zip(&w)
        .map(|(&di, &wi)| if wi != 0.0 { di as f32 } else { 0.0 })
        .collect()
}

/// The smallest `d` in L2 norm with `<w, t + d> = b` and `t + d` in `[0, 1]^n`, or the nearest
/// corner when there is none. `t`, `w` have the same length.
pub(super) fn projection_l2(t: &[f32], w: &[f32], b: f64) -> Vec<f32> {
    let n = t.len().min(w.len());
    let (t, w) = (&t[..n], &w[..n]);
    if n == 0 {
        return Vec::new();
    }
    let wt: f64 = w.iter().zip(t).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    // Flip so that `c = <w, t> - b >= 0`: the step has to lower `<w, .>` by `c`.
    let sign = if wt - b >= 0.0 { 1.0 } else { -1.0 };
    let w: Vec<f64> = w.iter().map(|&v| sign * f64::from(v)).collect();
    let c = sign * (wt - b);
    let moves = |i: usize| w[i].abs() > 1e-8;
    // `r[i]`: the multiple of `-w` at which coordinate i meets its bound.
    let r: Vec<f64> = (0..n)
        .map(|i| {
            if !moves(i) {
                return FAR;
            }
            let ti = f64::from(t[i]);
            let v = (ti / w[i]).max((ti - 1.0) / w[i]).clamp(-FAR, FAR);
            if v == -FAR { FAR } else { v }
        })
        .collect();
    let order = argsort(&r);
    let zero_far = |v: f64| if v == FAR { 0.0 } else { v };
    let rs: Vec<f64> = order.iter().map(|&i| zero_far(r[i])).collect();
    let rs_next: Vec<f64> = (0..n)
        .map(|k| if k + 1 < n { zero_far(r[order[k + 1]]) } else { 0.0 })
        .collect();
    let w_sq_total: f64 = order.iter().map(|&i| w[i] * w[i]).sum();
    // `ws[k]`: the squared weights of the coordinates still moving past `rs[k]`.
    let mut ws = Vec::with_capacity(n);
    let mut acc = 0.0f64;
    for &i in &order {
        acc += w[i] * w[i];
        ws.push(w_sq_total - acc);
    }
    // Every coordinate at its bound.
    let mut d: Vec<f64> = (0..n).map(|i| if moves(i) { -(r[i] * w[i]) } else { 0.0 }).collect();
    // `s[k]`: the change of `<w, .>` at the multiple `rs[k]` (`n + 1` values, as the
    // reference's).
    let mut s = Vec::with_capacity(n + 1);
    let start = -w_sq_total * rs[0];
    s.push(start);
    let mut acc = 0.0f64;
    for k in 0..n {
        acc += (rs[k] - rs_next[k]) * ws[k];
        s.push(acc + start);
    }
    let before_first = s[0] + c < 0.0;
    let unreachable = d.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + c > 0.0;
    if before_first {
        let alpha = c / w_sq_total;
        for (di, &wi) in d.iter_mut().zip(&w) {
            *di = -alpha * wi;
        }
    } else if !unreachable {
        let (mut lb, mut ub) = (0usize, n - 1);
        for _ in 0..ceil_log2(n) {
            let mid = (lb + ub) / 2;
            if s[mid] + c > 0.0 {
                lb = mid;
            } else {
                ub = mid;
            }
        }
        let alpha = if ws[lb] == 0.0 {
            0.0
        } else {
            (s[lb] + c) / ws[lb] + rs[lb]
        };
        for i in 0..n {
            if alpha <= r[i] {
                d[i] = -alpha * w[i];
            }
        }
    }
    (0..n).map(|i| if moves(i) { d[i] as f32 } else { 0.0 }).collect()
}

/// The indices of `values` in ascending order (ties in any order, as torch's `argsort`; they
/// do not change the projections).
fn argsort(values: &[f64]) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = values.iter().copied().zip(0..).collect();
    keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// `ceil(log2(n))` for `n >= 1`: the reference's bisection steps.
fn ceil_log2(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The lowest `<w, z>` over the box within L-inf distance `lambda` of `t`.
    fn lowest_linf(t: &[f64], w: &[f64], lambda: f64) -> f64 {
        t.iter()
            .zip(w)
            .map(|(&ti, &wi)| {
                let zi = if wi > 0.0 {
                    (ti - lambda).max(0.0)
                } else {
                    (ti + lambda).min(1.0)
                };
                wi * zi
            })
            .sum()
    }

    /// The box point `t + clip(-mu w)`, the L2 projection's form for a multiplier `mu`.
    fn l2_step(t: &[f64], w: &[f64], mu: f64) -> Vec<f64> {
        t.iter()
            .zip(w)
            .map(|(&ti, &wi)| (-mu * wi).clamp(-ti, 1.0 - ti))
            .collect()
    }

    /// A random problem in dimension 3 to 6 with `t` on the non-negative side of the
    /// hyperplane or the other one; some weights zero.
    fn problem(rng: &mut StdRng) -> (Vec<f32>, Vec<f32>, f64) {
        let n = rng.random_range(3..=6);
        let t: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
        let w: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f32>() < 0.15 {
                    0.0
                } else {
                    rng.random::<f32>() * 4.0 - 2.0
                }
            })
            .collect();
        // b anywhere from well inside to (sometimes) beyond the box's range of <w, z>.
        let lowest: f64 = w.iter().map(|&v| f64::from(v.min(0.0))).sum();
        let highest: f64 = w.iter().map(|&v| f64::from(v.max(0.0))).sum();
        let b = lowest + (rng.random::<f64>() * 1.3 - 0.15) * (highest - lowest);
        (t, w, b)
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Whether the box holds a point on the far side of the hyperplane from `t` (or on it).
    fn reachable(t: &[f64], w: &[f64], b: f64) -> bool {
        let side = if dot(w, t) - b >= 0.0 { 1.0 } else { -1.0 };
        let lowest: f64 = w.iter().map(|&wi| (side * wi).min(0.0)).sum();
        lowest <= side * b
    }

    fn check(
        norm: fn(&[f64]) -> f64,
        project: fn(&[f32], &[f32], f64) -> Vec<f32>,
        exact: fn(&[f64], &[f64], f64) -> f64,
    ) {
        let mut rng = StdRng::seed_from_u64(11);
        let (mut reached, mut corners) = (0, 0);
        for _ in 0..400 {
            let (t32, w32, b) = problem(&mut rng);
            let t: Vec<f64> = t32.iter().map(|&v| f64::from(v)).collect();
            let w: Vec<f64> = w32.iter().map(|&v| f64::from(v)).collect();
            let d: Vec<f64> = project(&t32, &w32, b).iter().map(|&v| f64::from(v)).collect();
            let z: Vec<f64> = t.iter().zip(&d).map(|(a, b)| a + b).collect();
            for &zi in &z {
                assert!((-1e-6..=1.0 + 1e-6).contains(&zi), "left the box: {z:?}");
            }
            let side = if dot(&w, &t) - b >= 0.0 { 1.0 } else { -1.0 };
            if !reachable(&t, &w, b) {
                // The fallback: the nearest corner.
                corners += 1;
                for i in 0..t.len() {
                    let corner = if w[i] == 0.0 {
                        t[i]
                    } else if side * w[i] > 0.0 {
                        0.0
                    } else {
                        1.0
                    };
                    assert!(
                        (z[i] - corner).abs() < 1e-6,
                        "not the corner: {z:?} (t {t:?}, w {w:?}, b {b})"
                    );
                }
                continue;
            }
            reached += 1;
            let scale: f64 = w.iter().map(|v| v.abs()).sum::<f64>() + b.abs();
            assert!(
                (dot(&w, &z) - b).abs() <= 1e-5 * scale,
                "off the hyperplane: <w, z> {} vs b {b}",
                dot(&w, &z)
            );
            let length = norm(&d);
            // The exact optimum, found without the sort.
            let best = exact(&t, &w, b);
            assert!(
                (length - best).abs() <= 1e-5 * (1.0 + best),
                "length {length}, optimum {best} (t {t:?}, w {w:?}, b {b})"
            );
            // No random box point on the far side is nearer.
            for _ in 0..300 {
                let y: Vec<f64> = (0..t.len()).map(|_| rng.random::<f64>()).collect();
                if side * (dot(&w, &y) - b) <= 0.0 {
                    let dy: Vec<f64> = y.iter().zip(&t).map(|(a, b)| a - b).collect();
                    assert!(length <= norm(&dy) + 1e-6, "{length} > random feasible {}", norm(&dy));
                }
            }
        }
        // Both cases were exercised.
        assert!(reached > 200 && corners > 10, "reached {reached}, corners {corners}");
    }

    fn linf(d: &[f64]) -> f64 {
        d.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    fn l2(d: &[f64]) -> f64 {
        d.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// Bisection on the L-inf radius: the smallest `lambda` whose ball reaches the hyperplane.
    fn exact_linf(t: &[f64], w: &[f64], b: f64) -> f64 {
        let side = if dot(w, t) - b >= 0.0 { 1.0 } else { -1.0 };
        let ws: Vec<f64> = w.iter().map(|v| side * v).collect();
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if lowest_linf(t, &ws, mid) <= side * b {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Bisection on the multiplier of the clipped step `clip(-mu w)`, the L2 optimum's form.
    fn exact_l2(t: &[f64], w: &[f64], b: f64) -> f64 {
        let side = if dot(w, t) - b >= 0.0 { 1.0 } else { -1.0 };
        let ws: Vec<f64> = w.iter().map(|v| side * v).collect();
        let need = side * b - dot(&ws, t);
        let (mut lo, mut hi) = (0.0f64, 1e9f64);
        for _ in 0..300 {
            let mid = 0.5 * (lo + hi);
            if dot(&ws, &l2_step(t, &ws, mid)) <= need {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        l2(&l2_step(t, &ws, hi))
    }

    #[test]
    fn linf_projection_is_feasible_and_minimal() {
        check(linf, projection_linf, exact_linf);
    }

    #[test]
    fn l2_projection_is_feasible_and_minimal() {
        check(l2, projection_l2, exact_l2);
    }

    /// Away from the box's faces, the projections are the closed forms `|c| / ||w||_1` (every
    /// coordinate moved by it, along `sign(w)`) and `|c| / ||w||_2^2 * w`.
    #[test]
    fn projections_match_closed_forms_inside_the_box() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let n = rng.random_range(1..=40);
            let t: Vec<f32> = (0..n).map(|_| 0.4 + 0.2 * rng.random::<f32>()).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
            let wt: f64 = w.iter().zip(&t).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            let l1: f64 = w.iter().map(|&v| f64::from(v.abs())).sum();
            let sq: f64 = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let c = (rng.random::<f64>() - 0.5) * 0.2 * l1.min(sq);
            let b = wt + c;
            let d = projection_linf(&t, &w, b);
            let lambda = c.abs() / l1;
            for (&di, &wi) in d.iter().zip(&w) {
                let want = lambda * f64::from(wi.signum()) * c.signum();
                assert!((f64::from(di) - want).abs() < 1e-6, "L-inf: {di} vs {want}");
            }
            let d = projection_l2(&t, &w, b);
            for (&di, &wi) in d.iter().zip(&w) {
                let want = c / sq * f64::from(wi);
                assert!((f64::from(di) - want).abs() < 1e-6, "L2: {di} vs {want}");
            }
        }
    }
}
