//! Edge analysis for spatter's water layer, as OpenCV does it: Canny edges, the chamfer
//! distance to them, and histogram equalisation. The hot loops are rewritten for speed (row
//! by row, branch-free, AVX2 for the non-maximum suppression); the tests keep the plain
//! versions they must agree with.

use super::{Border, border_index, fmin};
use crate::simd::{self, multiversion};

multiversion! {
/// Canny edges of an 8-bit image (3x3 Sobel, L1 gradient magnitude, non-maximum suppression,
/// hysteresis between `low` and `high`), as OpenCV `Canny` with default options. Returns a
/// mask (true = edge).
pub fn canny(img: &[u8], w: usize, h: usize, low: f32, high: f32) -> Vec<bool> {
    // Padded copy (REFLECT_101) so the Sobel taps need no bounds checks.
    let (pw, ph) = (w + 2, h + 2);
    let mut p = vec![0.0f32; pw * ph];
    for yp in 0..ph {
        let ys = border_index(yp as isize - 1, h, Border::Reflect101);
        let (src, dst) = (&img[ys * w..(ys + 1) * w], &mut p[yp * pw..(yp + 1) * pw]);
        for (d, &v) in dst[1..=w].iter_mut().zip(src) {
            *d = f32::from(v);
        }
        dst[0] = f32::from(src[border_index(-1, w, Border::Reflect101)]);
        dst[w + 1] = f32::from(src[border_index(w as isize, w, Border::Reflect101)]);
    }
    // Gradients and magnitude on a zero-bordered grid of the same padded size, a row at a time
    // (x here is the padded column minus 1).
    let mut gx = vec![0.0f32; pw * ph];
    let mut gy = vec![0.0f32; pw * ph];
    let mut mag = vec![0.0f32; pw * ph];
    for y in 1..=h {
        let (n, c, s) = (
            &p[(y - 1) * pw..y * pw],
            &p[y * pw..(y + 1) * pw],
            &p[(y + 1) * pw..(y + 2) * pw],
        );
        let r = y * pw + 1..y * pw + 1 + w;
        let (gxr, gyr, mr) = (&mut gx[r.clone()], &mut gy[r.clone()], &mut mag[r]);
        for x in 0..w {
            let dx = (n[x + 2] + 2.0 * c[x + 2] + s[x + 2]) - (n[x] + 2.0 * c[x] + s[x]);
            let dy = (s[x] + 2.0 * s[x + 1] + s[x + 2]) - (n[x] + 2.0 * n[x + 1] + n[x + 2]);
            gxr[x] = dx;
            gyr[x] = dy;
            mr[x] = dx.abs() + dy.abs();
        }
    }
    // Non-maximum suppression, branch-free a row at a time: 0 = none, 1 = weak, 2 = strong.
    let mut state = vec![0u8; pw * ph];
    let tan22 = 0.414_213_57f32;
    for y in 1..=h {
        let (up, mid, dn) = (
            &mag[(y - 1) * pw..y * pw],
            &mag[y * pw..(y + 1) * pw],
            &mag[(y + 1) * pw..(y + 2) * pw],
        );
        let r = y * pw + 1..y * pw + 1 + w;
        let (gxr, gyr, st) = (&gx[r.clone()], &gy[r.clone()], &mut state[r]);
        #[cfg(target_arch = "x86_64")]
        let done = simd::avx2().map_or(0, |t| simd::ops::canny_nms_row(t, [up, mid, dn], gxr, gyr, st, low, high));
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        // neighbours as slices of exactly w (left, centre, right of the row above, this, below)
        let (ul, uc, ur) = (&up[..w], &up[1..w + 1], &up[2..w + 2]);
        let (ml, mc, mr) = (&mid[..w], &mid[1..w + 1], &mid[2..w + 2]);
        let (dl, dc, dr) = (&dn[..w], &dn[1..w + 1], &dn[2..w + 2]);
        for x in done..w {
            let (g, gx, gy) = (mc[x], gxr[x], gyr[x]);
            let (ax, ay) = (gx.abs(), gy.abs());
            let (l, r, u, d, ul, ur, dl, dr) = (ml[x], mr[x], uc[x], dc[x], ul[x], ur[x], dl[x], dr[x]);
            let horiz = ay <= ax * tan22;
            let vert = ay >= ax / tan22;
            let same = (gx > 0.0) == (gy > 0.0);
            let (da, db) = if same { (ul, dr) } else { (ur, dl) };
            let (va, vb) = if vert { (u, d) } else { (da, db) };
            let (a, b) = if horiz { (l, r) } else { (va, vb) };
            let keep = g > low && g > a && g >= b;
            st[x] = u8::from(keep) + u8::from(keep && g > high);
        }
    }
    // The strong pixels' indices, compacted without a branch: each index is written and the
    // end advances only for a strong pixel.
    let mut stack = vec![0usize; state.len()];
    let mut n = 0;
    for (i, &v) in state.iter().enumerate() {
        stack[n] = i;
        n += usize::from(v == 2);
    }
    stack.truncate(n);
    let edges = hysteresis(&state, stack, pw);
    let mut out = Vec::with_capacity(w * h);
    for y in 1..=h {
        out.extend_from_slice(&edges[y * pw + 1..y * pw + 1 + w]);
    }
    out
}
}

/// Canny's hysteresis on a padded grid `pw` wide whose border is 0 in `state` (0 none, 1 weak,
/// 2 strong): the edges are the strong pixels in `strong` and every weak pixel 8-connected to
/// one of them.
fn hysteresis(state: &[u8], strong: Vec<usize>, pw: usize) -> Vec<bool> {
    let mut edges = vec![false; state.len()];
    for &i in &strong {
        edges[i] = true;
    }
    // Every pixel enters the stack at most once (it is marked when it does), so a stack as
    // long as the grid never overflows; neighbours are pushed without a branch (the test is a
    // coin flip a predictor cannot learn) by writing each and advancing the top only when it
    // grows the edge set.
    let mut stack = strong;
    let mut top = stack.len();
    stack.resize(state.len() + 8, 0);
    while top > 0 {
        top -= 1;
        let i = stack[top];
        for j in [
            i - pw - 1,
            i - pw,
            i - pw + 1,
            i - 1,
            i + 1,
            i + pw - 1,
            i + pw,
            i + pw + 1,
        ] {
            let grow = (state[j] >= 1) & !edges[j];
            edges[j] |= grow;
            stack[top] = j;
            top += usize::from(grow);
        }
    }
    edges
}

/// `v[x] = min(v[x], v[x - 1] + a)` along `v` (with `before` at `v[-1]`), i.e. `v[x] = min over
/// j <= x of v[j] + (x - j) a`, computed 8 values at a time by doubling steps (1, 2, 4) and
/// a carry, instead of one long dependency chain. In floating point `(v + a) + a` and
/// `v + 2a` may round apart, so this is the same minimum to within an ulp, not bit-identical
/// to the sequential recurrence; it is the same on every machine.
#[inline(always)]
fn scan_min_plus(v: &mut [f32], a: f32, before: f32) {
    let steps: [f32; 8] = std::array::from_fn(|i| (i + 1) as f32 * a);
    let mut carry = before;
    let mut chunks = v.chunks_exact_mut(8);
    for ch in &mut chunks {
        let mut t: [f32; 8] = std::array::from_fn(|i| ch[i]);
        for (k, s) in [(1usize, a), (2, 2.0 * a), (4, 4.0 * a)] {
            let p = t;
            for i in k..8 {
                t[i] = fmin(p[i], p[i - k] + s);
            }
        }
        for (ti, &st) in t.iter_mut().zip(&steps) {
            *ti = fmin(*ti, carry + st);
        }
        carry = t[7];
        ch.copy_from_slice(&t);
    }
    for x in chunks.into_remainder() {
        *x = fmin(*x, carry + a);
        carry = *x;
    }
}

multiversion! {
/// Euclidean distance from every pixel to the nearest edge pixel (two-pass chamfer with the
/// 5x5 mask of OpenCV `distanceTransform(DIST_L2, 5)`: 1, 1.4, 2.1969). Without edges every
/// distance is large (1e6).
pub fn distance_to_edges(edges: &[bool], w: usize, h: usize) -> Vec<f32> {
    const BIG: f32 = 1e6;
    // A margin of 2 filled with BIG removes the bounds checks.
    let (pw, ph) = (w + 4, h + 4);
    let mut d = vec![BIG; pw * ph];
    for (drow, erow) in d[2 * pw..].chunks_exact_mut(pw).zip(edges.chunks_exact(w)) {
        for (dv, &e) in drow[2..w + 2].iter_mut().zip(erow) {
            if e {
                *dv = 0.0;
            }
        }
    }
    let (a, b, c) = (1.0f32, 1.4f32, 2.1969f32);
    // Each pass: the candidates from the two previous rows (in pass order) are independent of
    // the current row, so they are taken for the whole row at once (vectorisable), then a
    // scan along the row adds the left (or right) neighbour ([`scan_min_plus`]).
    let mut from_rows = vec![BIG; pw];
    for pass in 0..2 {
        let rows: Vec<usize> = if pass == 0 {
            (2..h + 2).collect()
        } else {
            (2..h + 2).rev().collect()
        };
        for y in rows {
            let (r1, r2) = if pass == 0 { (y - 1, y - 2) } else { (y + 1, y + 2) };
            {
                let (u1, u2) = (&d[r1 * pw..(r1 + 1) * pw], &d[r2 * pw..(r2 + 1) * pw]);
                // the candidates as slices of exactly w, shifted by -2..=2 (bounds-check free)
                let s1 = |k: usize| &u1[k..k + w];
                let (u1m2, u1m1, u1c, u1p1, u1p2) = (s1(0), s1(1), s1(2), s1(3), s1(4));
                let (u2m1, u2p1) = (&u2[1..1 + w], &u2[3..3 + w]);
                for (i, f) in from_rows[2..w + 2].iter_mut().enumerate() {
                    let m = fmin(fmin(u1c[i] + a, u1m1[i] + b), fmin(u1p1[i] + b, u1m2[i] + c));
                    *f = fmin(m, fmin(fmin(u1p2[i] + c, u2m1[i] + c), u2p1[i] + c));
                }
            }
            let seg = &mut d[y * pw + 2..y * pw + 2 + w];
            for (r, &f) in seg.iter_mut().zip(&from_rows[2..w + 2]) {
                *r = fmin(*r, f);
            }
            // the margin beyond the row's start is BIG
            if pass == 0 {
                scan_min_plus(seg, a, BIG);
            } else {
                seg.reverse();
                scan_min_plus(seg, a, BIG);
                seg.reverse();
            }
        }
    }
    (0..h)
        .flat_map(|y| d[(y + 2) * pw + 2..(y + 2) * pw + 2 + w].iter().copied())
        .collect()
}
}

/// Histogram equalisation of an 8-bit image (OpenCV `equalizeHist`).
pub fn equalize_hist(img: &[u8]) -> Vec<u8> {
    // four histograms, so that runs of equal values do not serialise on one counter
    let mut hists = [[0usize; 256]; 4];
    let mut chunks = img.chunks_exact(4);
    for c in &mut chunks {
        for (h, &v) in hists.iter_mut().zip(c) {
            h[v as usize] += 1;
        }
    }
    for &v in chunks.remainder() {
        hists[0][v as usize] += 1;
    }
    let hist: [usize; 256] = std::array::from_fn(|i| hists.iter().map(|h| h[i]).sum());
    let total = img.len();
    let Some(first) = hist.iter().position(|&c| c > 0) else {
        return img.to_vec();
    };
    if hist[first] == total {
        return vec![first as u8; total];
    }
    let scale = 255.0 / (total - hist[first]) as f32;
    let mut lut = [0u8; 256];
    let mut sum = 0usize;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = (sum as f32 * scale).round().clamp(0.0, 255.0) as u8;
    }
    img.iter().map(|&v| lut[v as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canny as first written (per-pixel branches, a division per pixel): the reference for the
    /// row-wise and AVX2 version, which must give the same edges.
    fn canny_sequential(img: &[u8], w: usize, h: usize, low: f32, high: f32) -> Vec<bool> {
        // Padded copy (REFLECT_101) so the Sobel taps need no bounds checks.
        let (pw, ph) = (w + 2, h + 2);
        let mut p = vec![0.0f32; pw * ph];
        for yp in 0..ph {
            let ys = border_index(yp as isize - 1, h, Border::Reflect101);
            for xp in 0..pw {
                let xs = border_index(xp as isize - 1, w, Border::Reflect101);
                p[yp * pw + xp] = f32::from(img[ys * w + xs]);
            }
        }
        // Gradients and magnitude on a zero-bordered grid of the same padded size.
        let mut gx = vec![0.0f32; pw * ph];
        let mut gy = vec![0.0f32; pw * ph];
        let mut mag = vec![0.0f32; pw * ph];
        for y in 1..=h {
            for x in 1..=w {
                let i = y * pw + x;
                let (n, s) = (i - pw, i + pw);
                let dx = (p[n + 1] + 2.0 * p[i + 1] + p[s + 1]) - (p[n - 1] + 2.0 * p[i - 1] + p[s - 1]);
                let dy = (p[s - 1] + 2.0 * p[s] + p[s + 1]) - (p[n - 1] + 2.0 * p[n] + p[n + 1]);
                gx[i] = dx;
                gy[i] = dy;
                mag[i] = dx.abs() + dy.abs();
            }
        }
        // 0 = none, 1 = weak, 2 = strong
        let mut state = vec![0u8; pw * ph];
        let tan22 = 0.414_213_57f32;
        let mut stack = Vec::new();
        for y in 1..=h {
            for x in 1..=w {
                let i = y * pw + x;
                let g = mag[i];
                if g <= low {
                    continue;
                }
                let (ax, ay) = (gx[i].abs(), gy[i].abs());
                let (a, b) = if ay <= ax * tan22 {
                    (i - 1, i + 1)
                } else if ay >= ax / tan22 {
                    (i - pw, i + pw)
                } else if (gx[i] > 0.0) == (gy[i] > 0.0) {
                    (i - pw - 1, i + pw + 1)
                } else {
                    (i - pw + 1, i + pw - 1)
                };
                if g > mag[a] && g >= mag[b] {
                    state[i] = if g > high { 2 } else { 1 };
                    if g > high {
                        stack.push(i);
                    }
                }
            }
        }
        let edges = hysteresis(&state, stack, pw);
        (0..h)
            .flat_map(|y| edges[(y + 1) * pw + 1..(y + 1) * pw + 1 + w].iter().copied())
            .collect()
    }

    /// The chamfer distance with the sequential row scans, for [`scan_min_plus`].
    fn distance_sequential(edges: &[bool], w: usize, h: usize) -> Vec<f32> {
        const BIG: f32 = 1e6;
        // A margin of 2 filled with BIG removes the bounds checks.
        let (pw, ph) = (w + 4, h + 4);
        let mut d = vec![BIG; pw * ph];
        for y in 0..h {
            for x in 0..w {
                if edges[y * w + x] {
                    d[(y + 2) * pw + x + 2] = 0.0;
                }
            }
        }
        let (a, b, c) = (1.0f32, 1.4f32, 2.1969f32);
        // Each pass: the candidates from the two previous rows (in pass order) are independent of
        // the current row, so they are taken for the whole row at once (vectorisable), then a
        // sequential scan along the row adds the left (or right) neighbour.
        let mut from_rows = vec![BIG; pw];
        for pass in 0..2 {
            let rows: Vec<usize> = if pass == 0 {
                (2..h + 2).collect()
            } else {
                (2..h + 2).rev().collect()
            };
            for y in rows {
                let (r1, r2) = if pass == 0 { (y - 1, y - 2) } else { (y + 1, y + 2) };
                {
                    let (u1, u2) = (&d[r1 * pw..(r1 + 1) * pw], &d[r2 * pw..(r2 + 1) * pw]);
                    for x in 2..w + 2 {
                        let v = (u1[x] + a)
                            .min(u1[x - 1] + b)
                            .min(u1[x + 1] + b)
                            .min(u1[x - 2] + c)
                            .min(u1[x + 2] + c)
                            .min(u2[x - 1] + c)
                            .min(u2[x + 1] + c);
                        from_rows[x] = v;
                    }
                }
                let row = &mut d[y * pw..(y + 1) * pw];
                if pass == 0 {
                    for x in 2..w + 2 {
                        row[x] = row[x].min(from_rows[x]).min(row[x - 1] + a);
                    }
                } else {
                    for x in (2..w + 2).rev() {
                        row[x] = row[x].min(from_rows[x]).min(row[x + 1] + a);
                    }
                }
            }
        }
        (0..h)
            .flat_map(|y| d[(y + 2) * pw + 2..(y + 2) * pw + 2 + w].iter().copied())
            .collect()
    }

    /// A smooth random-looking 8-bit field with blobs (like the spatter liquid layer).
    fn field(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let v = (x * 0.21).sin() * (y * 0.17).cos() + (x * 0.05 + y * 0.07).sin();
                if v > 0.3 { (v * 120.0).min(255.0) as u8 } else { 0 }
            })
            .collect()
    }

    #[test]
    fn hysteresis_matches_a_plain_flood_fill() {
        let (pw, ph) = (37, 29);
        for seed in 0..20u64 {
            // random none / weak / strong states with a zero border
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let state: Vec<u8> = (0..pw * ph)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (col, row) = (i % pw, i / pw);
                    if col == 0 || row == 0 || col == pw - 1 || row == ph - 1 {
                        0
                    } else {
                        [0, 1, 1, 1, 2][(x % 5) as usize]
                    }
                })
                .collect();
            let strong: Vec<usize> = (0..state.len()).filter(|&i| state[i] == 2).collect();
            // plain breadth-first flood from every strong pixel
            let mut want = vec![false; state.len()];
            let mut queue: std::collections::VecDeque<usize> = strong.iter().copied().collect();
            for &i in &strong {
                want[i] = true;
            }
            while let Some(i) = queue.pop_front() {
                for j in [
                    i - pw - 1,
                    i - pw,
                    i - pw + 1,
                    i - 1,
                    i + 1,
                    i + pw - 1,
                    i + pw,
                    i + pw + 1,
                ] {
                    if state[j] >= 1 && !want[j] {
                        want[j] = true;
                        queue.push_back(j);
                    }
                }
            }
            assert_eq!(hysteresis(&state, strong, pw), want, "seed {seed}");
        }
    }

    #[test]
    fn canny_matches_the_sequential_version() {
        for (w, h) in [(224, 224), (37, 21), (8, 8), (3, 5)] {
            let img = field(w, h);
            let fast = canny(&img, w, h, 50.0, 150.0);
            assert_eq!(fast, canny_sequential(&img, w, h, 50.0, 150.0), "{w}x{h}");
            assert!(
                w < 50 || fast.iter().filter(|&&e| e).count() > 100,
                "{w}x{h}: too few edges to test"
            );
        }
    }

    #[test]
    fn distance_scan_matches_the_sequential_version_within_rounding() {
        for (w, h) in [(224, 224), (37, 21), (5, 9)] {
            let edges = canny(&field(w, h), w, h, 50.0, 150.0);
            let (fast, slow) = (distance_to_edges(&edges, w, h), distance_sequential(&edges, w, h));
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!((a - b).abs() <= 1e-4 * b.max(1.0), "{w}x{h} at {i}: {a} vs {b}");
            }
        }
    }
}
