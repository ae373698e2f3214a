//! The lossy half of a baseline JPEG round trip, without the (lossless) entropy coding.
//!
//! `jpeg_compression` only needs what a JPEG encoder followed by a decoder does to the pixels:
//! colour conversion, 4:2:0 chroma subsampling, 8x8 DCT, quantisation with the IJG tables scaled
//! by the quality, and the inverse steps. Huffman coding changes nothing, so skipping it gives
//! the same pixels several times faster than encoding and decoding a file. Each step follows
//! libjpeg(-turbo) as Pillow uses it (`save(quality=q)` then `open`): JFIF YCbCr with rounding,
//! `h2v2_downsample` with alternating bias, quantisation rounding half away from zero,
//! "fancy" triangular upsampling, and 8-bit range limiting. The DCTs are computed in floating
//! point rather than libjpeg's `islow` integers, which moves a rare coefficient by one step.

use std::sync::OnceLock;

/// The IJG luminance quantisation table (natural order).
const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
    87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// The IJG chrominance quantisation table (natural order).
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99,
];

/// libjpeg's `jpeg_quality_scaling` + `jpeg_add_quant_table` (baseline: at most 255).
fn scaled_table(base: &[u16; 64], quality: u8) -> [f32; 64] {
    let q = i32::from(quality.clamp(1, 100));
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let mut out = [0.0f32; 64];
    for (o, &b) in out.iter_mut().zip(base) {
        *o = ((i32::from(b) * scale + 50) / 100).clamp(1, 255) as f32;
    }
    out
}

/// The 8-point DCT-II basis with JPEG normalisation, transposed: `bt[x][u] = C(u)/2
/// cos((2x+1)u pi/16)`.
fn basis_t() -> &'static [[f32; 8]; 8] {
    static B: OnceLock<[[f32; 8]; 8]> = OnceLock::new();
    B.get_or_init(|| {
        let mut b = [[0.0f32; 8]; 8];
        for (x, row) in b.iter_mut().enumerate() {
            for (u, v) in row.iter_mut().enumerate() {
                let cu = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
                *v = (cu / 2.0 * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()) as f32;
            }
        }
        b
    })
}

/// `out[i][u] = sum_x m[i][x] * t[x][u]` for 8x8 matrices (rows of `m` times the columns of
/// `t`); written so that the inner loop runs over 8 contiguous lanes.
#[inline(always)]
fn mul(m: &[[f32; 8]; 8], t: &[[f32; 8]; 8]) -> [[f32; 8]; 8] {
    let mut out = [[0.0f32; 8]; 8];
    for (o, row) in out.iter_mut().zip(m) {
        for (&v, trow) in row.iter().zip(t) {
            for (ov, &tv) in o.iter_mut().zip(trow) {
                *ov += v * tv;
            }
        }
    }
    out
}

/// Transposes an 8x8 matrix.
#[inline(always)]
fn transpose(m: &[[f32; 8]; 8]) -> [[f32; 8]; 8] {
    let mut t = [[0.0f32; 8]; 8];
    for (i, row) in m.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j][i] = v;
        }
    }
    t
}

/// Forward DCT, quantise (round half away from zero), dequantise, inverse DCT of one level-
/// shifted 8x8 block in place; on exit the block holds 0..255 sample values.
fn roundtrip_block(block: &mut [[f32; 8]; 8], q: &[[f32; 8]; 8], inv_q: &[[f32; 8]; 8]) {
    let bt = basis_t();
    // coefficients C = B X B^T: rows first (X B^T), then columns.
    let r = mul(block, bt);
    let mut c = mul(&transpose(&r), bt); // c[u][v] (transposed coefficient layout)
    for ((row, qr), iqr) in c.iter_mut().zip(q).zip(inv_q) {
        for ((v, &qv), &iq) in row.iter_mut().zip(qr).zip(iqr) {
            let k = ((v.abs() * iq + 0.5) as i32) as f32;
            *v = k.copysign(*v) * qv;
        }
    }
    // inverse: X = B^T C B; with b = bt^T.
    let b = transpose(bt);
    let r = mul(&c, &b);
    let x = mul(&transpose(&r), &b);
    for (orow, xrow) in block.iter_mut().zip(&x) {
        for (o, &v) in orow.iter_mut().zip(xrow) {
            *o = ((v + 128.5).clamp(0.0, 255.9)) as i32 as f32;
        }
    }
}

multiversion! {
/// Round trips one plane of `w` x `h` (both multiples of 8) 8-bit samples through the DCT.
fn roundtrip_plane(plane: &mut [f32], w: usize, h: usize, q: &[f32; 64]) {
    let mut qm = [[0.0f32; 8]; 8];
    let mut iq = [[0.0f32; 8]; 8];
    // The coefficient block is kept transposed (c[u][v] with u horizontal frequency).
    for v in 0..8 {
        for u in 0..8 {
            qm[u][v] = q[v * 8 + u];
            iq[u][v] = 1.0 / q[v * 8 + u];
        }
    }
    let mut block = [[0.0f32; 8]; 8];
    for by in (0..h).step_by(8) {
        for bx in (0..w).step_by(8) {
            for (y, row) in block.iter_mut().enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = plane[(by + y) * w + bx + x] - 128.0;
                }
            }
            roundtrip_block(&mut block, &qm, &iq);
            for (y, row) in block.iter().enumerate() {
                plane[(by + y) * w + bx..(by + y) * w + bx + 8].copy_from_slice(row);
            }
        }
    }
}
}

multiversion! {
/// libjpeg's "fancy" h2v2 upsampling (`h2v2_fancy_upsample`) of a `rw` x `rh` chroma plane
/// stored `cw` wide: each output is 9/16, 3/16, 3/16, 1/16 of its four nearest inputs, with
/// libjpeg's alternating rounding. Returns `2 rw` x `2 rh` values.
fn upsample_h2v2(plane: &[f32], cw: usize, rw: usize, rh: usize) -> Vec<i32> {
    let ow = 2 * rw;
    let mut out = vec![0i32; ow * 2 * rh];
    let mut colsum = vec![0i32; rw];
    for y in 0..rh {
        let near = &plane[y * cw..y * cw + rw];
        for (half, far_y) in [(0usize, y.saturating_sub(1)), (1, (y + 1).min(rh - 1))] {
            let far = &plane[far_y * cw..far_y * cw + rw];
            for ((c, &n), &f) in colsum.iter_mut().zip(near).zip(far) {
                *c = 3 * n as i32 + f as i32;
            }
            let oy = 2 * y + half;
            let row = &mut out[oy * ow..(oy + 1) * ow];
            for x in 0..rw {
                let t = colsum[x];
                let last = if x == 0 { t } else { colsum[x - 1] };
                let next = if x + 1 == rw { t } else { colsum[x + 1] };
                row[2 * x] = (3 * t + last + 8) >> 4;
                row[2 * x + 1] = (3 * t + next + 7) >> 4;
            }
        }
    }
    out
}
}

multiversion! {
/// JPEG-compresses and decompresses an 8-bit RGB buffer (`w * h * 3`) at `quality` (1..=100)
/// with 4:2:0 subsampling; returns the decoded RGB bytes.
pub fn jpeg_roundtrip(rgb: &[u8], w: usize, h: usize, quality: u8) -> Vec<u8> {
    if w == 0 || h == 0 {
        return rgb.to_vec();
    }
    let lq = scaled_table(&LUMA_Q, quality);
    let cq = scaled_table(&CHROMA_Q, quality);
    // Padded to whole MCUs (16x16) by repeating the last column / row, as libjpeg does.
    let pw = w.div_ceil(16) * 16;
    let ph = h.div_ceil(16) * 16;
    let mut yp = vec![0.0f32; pw * ph];
    let mut cb = vec![0.0f32; pw * ph];
    let mut cr = vec![0.0f32; pw * ph];
    for y in 0..ph {
        let sy = y.min(h - 1);
        let src = &rgb[sy * w * 3..(sy + 1) * w * 3];
        let o = y * pw;
        // libjpeg's fixed-point JFIF conversion (jccolor.c, 16 fraction bits)
        for (x, p) in src.chunks_exact(3).enumerate() {
            let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
            yp[o + x] = ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) as f32;
            cb[o + x] = ((-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16) as f32;
            cr[o + x] = ((32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16) as f32;
        }
        for plane in [&mut yp, &mut cb, &mut cr] {
            let last = plane[o + w - 1];
            plane[o + w..o + pw].iter_mut().for_each(|v| *v = last);
        }
    }
    // h2v2 downsampling with bias 1, 2, 1, 2, ... across each row.
    let (cw, chh) = (pw / 2, ph / 2);
    let down = |plane: &[f32]| {
        let mut out = vec![0.0f32; cw * chh];
        for y in 0..chh {
            for x in 0..cw {
                let s = plane[2 * y * pw + 2 * x]
                    + plane[2 * y * pw + 2 * x + 1]
                    + plane[(2 * y + 1) * pw + 2 * x]
                    + plane[(2 * y + 1) * pw + 2 * x + 1];
                let bias = if x % 2 == 0 { 1.0 } else { 2.0 };
                out[y * cw + x] = ((s + bias) * 0.25) as i32 as f32;
            }
        }
        out
    };
    let mut cbd = down(&cb);
    let mut crd = down(&cr);
    // Chroma blocks: the component is ceil(w / 2) wide, padded to a multiple of 8 (cw is).
    roundtrip_plane(&mut yp, pw, ph, &lq);
    roundtrip_plane(&mut cbd, cw, chh, &cq);
    roundtrip_plane(&mut crd, cw, chh, &cq);
    // Fancy upsampling over the component's real size.
    let (rw, rh) = (w.div_ceil(2), h.div_ceil(2));
    let cbu = upsample_h2v2(&cbd, cw, rw, rh);
    let cru = upsample_h2v2(&crd, cw, rw, rh);
    // libjpeg's fixed-point YCbCr -> RGB (jdcolor.c, 16 fraction bits), range-limited.
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        let orow = &mut out[y * w * 3..(y + 1) * w * 3];
        let (yrow, cbrow, crrow) = (
            &yp[y * pw..y * pw + w],
            &cbu[y * 2 * rw..y * 2 * rw + w],
            &cru[y * 2 * rw..y * 2 * rw + w],
        );
        for ((((o, &yy), &cbv), &crv), _) in orow.chunks_exact_mut(3).zip(yrow).zip(cbrow).zip(crrow).zip(0..w) {
            let yy = yy as i32;
            let (cbv, crv) = (cbv - 128, crv - 128);
            let r = yy + ((91881 * crv + 32768) >> 16);
            let g = yy + ((-22554 * cbv - 46802 * crv + 32768) >> 16);
            let b = yy + ((116130 * cbv + 32768) >> 16);
            o[0] = r.clamp(0, 255) as u8;
            o[1] = g.clamp(0, 255) as u8;
            o[2] = b.clamp(0, 255) as u8;
        }
    }
    out
}
}
