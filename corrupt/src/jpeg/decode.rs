//! Baseline JPEG files decoded to the pixels Pillow (libjpeg-turbo) gives.
//!
//! Why: the released ImageNet-C files are baseline 4:2:0 JPEGs, and the reference evaluation
//! reads them with PIL. The `image` crate's decoder differs from PIL on about a fifth of the
//! values of such a file (by up to 5 levels), so an evaluation through it does not see the
//! pixels a PyTorch pipeline sees. This decoder runs libjpeg's own integer steps: Huffman
//! decoding, dequantisation and the `islow` inverse DCT ([`super::islow`]), "fancy" upsampling
//! and the fixed-point YCbCr -> RGB of [`super::jpeg_roundtrip`].
//!
//! What it takes: 8-bit baseline or extended sequential Huffman files (SOF0, SOF1) in one
//! interleaved scan, grey (one component) or YCbCr with 4:2:0 or 4:4:4 sampling, with or
//! without restart intervals. Anything else (progressive, arithmetic coding, 12-bit, CMYK, an
//! Adobe colour transform, other samplings, several scans, truncated or damaged data) gives
//! `None`, and the caller decodes the file another way. No EXIF orientation is applied, as
//! PIL's `Image.open` does not.

use super::encode::ZIGZAG;
use super::islow::reconstruct_plane;

/// One component of the frame.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    /// Sampling factors.
    h: usize,
    v: usize,
    /// Quantisation table index.
    tq: usize,
}

/// A Huffman table ready for decoding: the 8-bit lookahead (`(length, symbol)`, length 0 when
/// the code is longer), then libjpeg's `maxcode` / `valoffset` per length for longer codes.
struct Huffman {
    look: Vec<(u8, u8)>,
    maxcode: [i32; 18],
    valoffset: [i32; 17],
    vals: Vec<u8>,
}

impl Huffman {
    /// From a DHT table's code counts and symbols; `None` if the counts overflow a length.
    fn new(bits: &[u8; 16], vals: &[u8]) -> Option<Self> {
        let mut look = vec![(0u8, 0u8); 256];
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 17];
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16 {
            let n = usize::from(bits[len - 1]);
            valoffset[len] = k as i32 - code;
            for _ in 0..n {
                let sym = *vals.get(k)?;
                // more codes than the length has room for: not a valid table
                if code >= 1 << len {
                    return None;
                }
                if len <= 8 {
                    let first = (code as usize) << (8 - len);
                    for e in &mut look[first..first + (1 << (8 - len))] {
                        *e = (len as u8, sym);
                    }
                }
                code += 1;
                k += 1;
            }
            maxcode[len] = if n > 0 { code - 1 } else { -1 };
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Some(Huffman {
            look,
            maxcode,
            valoffset,
            vals: vals.to_vec(),
        })
    }
}

/// Reads the entropy-coded bits: 0xFF 0x00 is a data byte 0xFF; any other marker ends the
/// data (past it, only restart handling may go on).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    /// A marker was reached; `pos` points at its 0xFF.
    at_marker: bool,
}

impl Bits<'_> {
    /// Tops the buffer up to at least 25 bits where data remains.
    fn fill(&mut self) {
        while self.n <= 56 && !self.at_marker {
            let Some(&b) = self.data.get(self.pos) else {
                self.at_marker = true;
                break;
            };
            if b == 0xFF {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => self.pos += 2,
                    _ => {
                        self.at_marker = true;
                        break;
                    }
                }
            } else {
                self.pos += 1;
            }
            self.acc |= u64::from(b) << (56 - self.n);
            self.n += 8;
        }
    }

    /// The next `len` bits (at most 16) without consuming them, zeros past the data.
    fn peek(&mut self, len: u32) -> u32 {
        if self.n < len {
            self.fill();
        }
        (self.acc >> (64 - len)) as u32
    }

    /// Consumes `len` bits; `None` if there were not that many.
    fn skip(&mut self, len: u32) -> Option<()> {
        if self.n < len {
            return None;
        }
        self.acc <<= len;
        self.n -= len;
        Some(())
    }

    fn receive(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let v = self.peek(len);
        self.skip(len)?;
        Some(v)
    }

    /// One Huffman symbol.
    fn decode(&mut self, t: &Huffman) -> Option<u8> {
        let (len, sym) = t.look[self.peek(8) as usize];
        if len > 0 {
            self.skip(u32::from(len))?;
            return Some(sym);
        }
        let bits16 = self.peek(16) as i32;
        let mut len = 9;
        while len <= 16 && (bits16 >> (16 - len)) > t.maxcode[len] {
            len += 1;
        }
        if len > 16 {
            return None;
        }
        self.skip(len as u32)?;
        let code = bits16 >> (16 - len);
        t.vals.get(usize::try_from(code + t.valoffset[len]).ok()?).copied()
    }

    /// At a restart interval's end: drops the buffered bits and reads the RSTn marker.
    fn restart(&mut self, n: u8) -> Option<()> {
        self.acc = 0;
        self.n = 0;
        if !self.at_marker {
            // padding ones before the marker
            while self.data.get(self.pos) != Some(&0xFF) || self.data.get(self.pos + 1) == Some(&0x00) {
                self.pos += if self.data.get(self.pos) == Some(&0xFF) { 2 } else { 1 };
                if self.pos >= self.data.len() {
                    return None;
                }
            }
        }
        if self.data.get(self.pos + 1) != Some(&(0xD0 + (n & 7))) {
            return None;
        }
        self.pos += 2;
        self.at_marker = false;
        Some(())
    }
}

/// `v`'s `s`-bit JPEG value: the low half of the range is negative.
fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < (1 << (s - 1)) {
        v as i32 - (1 << s) + 1
    } else {
        v as i32
    }
}

/// Big-endian u16 at `i`.
fn be16(d: &[u8], i: usize) -> Option<usize> {
    Some(usize::from(*d.get(i)?) << 8 | usize::from(*d.get(i + 1)?))
}

/// Decodes a baseline JPEG file as Pillow does (see the module comment); `None` for anything
/// this decoder does not take, including files whose width times height exceeds `max_pixels`.
pub fn jpeg_decode(data: &[u8], max_pixels: u64) -> Option<image::RgbImage> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut t = Tables {
        q: [None; 4],
        dc: [None, None, None, None],
        ac: [None, None, None, None],
    };
    let mut frame: Option<(usize, usize, Vec<Component>)> = None;
    let mut restart = 0usize;
    let mut i = 2;
    loop {
        // a marker: 0xFF (fill bytes allowed), then its code
        if *data.get(i)? != 0xFF {
            return None;
        }
        while *data.get(i)? == 0xFF {
            i += 1;
        }
        let m = *data.get(i)?;
        i += 1;
        let len = be16(data, i)?;
        let seg = data.get(i + 2..i + len)?;
        match m {
            0xDB => {
                let mut p = 0;
                while p < seg.len() {
                    let (pq, tq) = (seg[p] >> 4, usize::from(seg[p] & 15));
                    if pq != 0 || tq > 3 {
                        return None;
                    }
                    let vals = seg.get(p + 1..p + 65)?;
                    let mut table = [0u16; 64];
                    for (k, &v) in vals.iter().enumerate() {
                        table[ZIGZAG[k]] = u16::from(v);
                    }
                    t.q[tq] = Some(table);
                    p += 65;
                }
            }
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    let (tc, th) = (seg[p] >> 4, usize::from(seg[p] & 15));
                    let bits: [u8; 16] = seg.get(p + 1..p + 17)?.try_into().ok()?;
                    let n: usize = bits.iter().map(|&b| usize::from(b)).sum();
                    let vals = seg.get(p + 17..p + 17 + n)?;
                    let table = Huffman::new(&bits, vals)?;
                    match (tc, th) {
                        (0, 0..=3) => t.dc[th] = Some(table),
                        (1, 0..=3) => t.ac[th] = Some(table),
                        _ => return None,
                    }
                    p += 17 + n;
                }
            }
            0xC0 | 0xC1 => {
                if *seg.first()? != 8 {
                    return None;
                }
                let (h, w, nc) = (be16(seg, 1)?, be16(seg, 3)?, usize::from(*seg.get(5)?));
                if h == 0 || w == 0 || (w as u64) * (h as u64) > max_pixels || !(nc == 1 || nc == 3) {
                    return None;
                }
                let comps: Vec<Component> = (0..nc)
                    .map(|c| {
                        let b = seg.get(6 + 3 * c..9 + 3 * c)?;
                        Some(Component {
                            id: b[0],
                            h: usize::from(b[1] >> 4),
                            v: usize::from(b[1] & 15),
                            tq: usize::from(b[2]),
                        })
                    })
                    .collect::<Option<_>>()?;
                frame = Some((w, h, comps));
            }
            // progressive, lossless, hierarchical, arithmetic: not taken
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xDD => restart = be16(seg, 0)?,
            // an Adobe marker may mean a colour transform other than YCbCr
            0xEE if seg.starts_with(b"Adobe") => return None,
            0xDA => {
                let (w, h, comps) = frame.take()?;
                // component ids R, G, B without a JFIF or Adobe marker mean RGB to libjpeg
                if comps.iter().map(|c| c.id).eq(*b"RGB") {
                    return None;
                }
                return decode_scan(&data[i + len..], seg, (w, h), &comps, &t, restart);
            }
            0xD9 => return None,
            _ => {}
        }
        i += len;
    }
}

/// The tables defined before the scan, by index.
struct Tables {
    q: [Option<[u16; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
}

/// The scan whose header is `sos` and whose entropy-coded data starts `data`, and the `w` x `h`
/// picture it makes.
fn decode_scan(
    data: &[u8],
    sos: &[u8],
    (w, h): (usize, usize),
    comps: &[Component],
    t: &Tables,
    restart: usize,
) -> Option<image::RgbImage> {
    let ns = usize::from(*sos.first()?);
    if ns != comps.len() || sos.get(1 + 2 * ns..4 + 2 * ns)? != [0, 63, 0] {
        return None;
    }
    // the scan's tables per component, in frame order
    let mut tables = Vec::with_capacity(ns);
    for (c, comp) in comps.iter().enumerate() {
        let (id, sel) = (*sos.get(1 + 2 * c)?, *sos.get(2 + 2 * c)?);
        if id != comp.id {
            return None;
        }
        let (td, ta) = (usize::from(sel >> 4), usize::from(sel & 15));
        tables.push((
            t.dc.get(td)?.as_ref()?,
            t.ac.get(ta)?.as_ref()?,
            t.q.get(comp.tq)?.as_ref()?,
        ));
    }
    // blocks per MCU of each component
    let sampling: Vec<(usize, usize)> = match comps {
        [_] => vec![(1, 1)],
        [a, b, c] if (b.h, b.v, c.h, c.v) == (1, 1, 1, 1) && matches!((a.h, a.v), (1, 1) | (2, 2)) => {
            vec![(a.h, a.v), (1, 1), (1, 1)]
        }
        _ => return None,
    };
    let (mh, mv) = sampling[0];
    let (mx, my) = (w.div_ceil(8 * mh), h.div_ceil(8 * mv));
    // each component's coefficient blocks, `mx * bh` per row, `my * bv` rows
    let mut coefs: Vec<Vec<i16>> = sampling
        .iter()
        .map(|&(bh, bv)| vec![0i16; 64 * mx * bh * my * bv])
        .collect();
    let mut bits = Bits {
        data,
        pos: 0,
        acc: 0,
        n: 0,
        at_marker: false,
    };
    let mut pred = vec![0i32; ns];
    let mut block = [0i32; 64];
    for m in 0..mx * my {
        if restart > 0 && m > 0 && m % restart == 0 {
            bits.restart(((m / restart - 1) & 7) as u8)?;
            pred.iter_mut().for_each(|p| *p = 0);
        }
        let (bx0, by0) = (m % mx, m / mx);
        for (c, &(bh, bv)) in sampling.iter().enumerate() {
            let (dct, act, _) = tables[c];
            for dy in 0..bv {
                for dx in 0..bh {
                    block.iter_mut().for_each(|v| *v = 0);
                    let s = u32::from(bits.decode(dct)?);
                    if s > 16 {
                        return None;
                    }
                    // wrapping, as libjpeg's int would on damaged data
                    pred[c] = pred[c].wrapping_add(extend(bits.receive(s)?, s));
                    block[0] = pred[c];
                    let mut k = 1;
                    while k < 64 {
                        let rs = bits.decode(act)?;
                        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
                        if s == 0 {
                            if r != 15 {
                                break;
                            }
                            k += 16;
                            continue;
                        }
                        k += r;
                        if k > 63 {
                            return None;
                        }
                        block[ZIGZAG[k]] = extend(bits.receive(s)?, s);
                        k += 1;
                    }
                    let (bw, bx, by) = (mx * bh, bx0 * bh + dx, by0 * bv + dy);
                    let o = 64 * (by * bw + bx);
                    for (d, &v) in coefs[c][o..o + 64].iter_mut().zip(&block) {
                        // libjpeg keeps coefficients in 16 bits
                        *d = v as i16;
                    }
                }
            }
        }
    }
    // samples per component, then colour
    let planes: Vec<(Vec<i16>, usize)> = sampling
        .iter()
        .zip(&coefs)
        .zip(&tables)
        .map(|((&(bh, _), cf), &(_, _, qt))| {
            let pw = 8 * mx * bh;
            let mut plane = vec![0i16; cf.len()];
            reconstruct_plane(cf, mx * bh, qt, &mut plane, pw);
            (plane, pw)
        })
        .collect();
    let out = match planes.as_slice() {
        [(y, pw)] => {
            let mut out = Vec::with_capacity(w * h * 3);
            for row in y.chunks_exact(*pw).take(h) {
                out.extend(row[..w].iter().flat_map(|&v| [v.clamp(0, 255) as u8; 3]));
            }
            out
        }
        [(y, pw), (cb, cw), (cr, _)] if mh == 2 => super::planes_to_rgb(y, *pw, cb, cr, *cw, w, h),
        [(y, pw), (cb, _), (cr, _)] => {
            // 4:4:4: no upsampling; 4 c as both "sums" upsamples to c itself
            let mut out = vec![0u8; w * h * 3];
            let (mut cbs, mut crs) = (vec![0i16; w], vec![0i16; w]);
            for yy in 0..h {
                let r = yy * pw..yy * pw + w;
                for (quad, plane) in [(&mut cbs, cb), (&mut crs, cr)] {
                    for (q, &v) in quad.iter_mut().zip(&plane[r.clone()]) {
                        *q = 4 * v;
                    }
                }
                super::ycc_to_rgb_row(
                    &y[r],
                    [&cbs, &cbs],
                    [&crs, &crs],
                    &mut out[yy * w * 3..(yy + 1) * w * 3],
                );
            }
            out
        }
        _ => return None,
    };
    image::RgbImage::from_raw(w as u32, h as u32, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/corrupt/jpeg")
            .join(name)
    }

    /// Pillow's decoding of files written by Pillow (`scripts/make_jpeg_reference.py`): 4:2:0
    /// at several sizes and qualities with both kinds of Huffman table, grey, 4:4:4 and
    /// restart markers, all equal value for value.
    #[test]
    fn decodes_as_pillow() {
        for name in [
            "q85_opt_224x224",
            "q85_opt_97x61",
            "q15_std_224x224",
            "q50_std_100x70",
            "q85_opt_8x8",
            "grey_q85_61x47",
            "q80_444_50x40",
            "q85_rst_97x61",
        ] {
            let file = std::fs::read(data(&format!("{name}.jpg"))).unwrap();
            let ours = jpeg_decode(&file, u64::MAX).unwrap_or_else(|| panic!("{name}: not decoded"));
            let pillow = image::open(data(&format!("{name}.decoded.png"))).unwrap().to_rgb8();
            assert_eq!(ours.dimensions(), pillow.dimensions(), "{name}");
            let differ = ours
                .as_raw()
                .iter()
                .zip(pillow.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(differ, 0, "{name}: {differ} values differ from Pillow's");
        }
    }

    /// What it does not take comes back as `None`: progressive files, files over the pixel
    /// limit, truncated files, and damaged bytes (never a panic).
    #[test]
    fn refuses_what_it_does_not_take() {
        let prog = std::fs::read(data("q85_prog_64x64.jpg")).unwrap();
        assert!(jpeg_decode(&prog, u64::MAX).is_none());
        let file = std::fs::read(data("q85_opt_97x61.jpg")).unwrap();
        assert!(jpeg_decode(&file, 97 * 61).is_some());
        assert!(jpeg_decode(&file, 97 * 61 - 1).is_none());
        let sos = file.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        for cut in [0, 1, 2, 100, sos, sos + 20, file.len() / 2, file.len() - 300] {
            assert!(jpeg_decode(&file[..cut], u64::MAX).is_none(), "cut at {cut}");
        }
        // damaged bytes: whatever comes back, nothing panics
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..300 {
            let mut bad = file.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % bad.len() as u64) as usize;
                bad[i] = (seed >> 32) as u8;
            }
            let _ = jpeg_decode(&bad, u64::MAX);
        }
        assert!(jpeg_decode(b"not a jpeg", u64::MAX).is_none());
        // a Huffman table with more codes of a length than fit: refused, not a panic
        assert!(Huffman::new(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4]).is_none());
        assert!(Huffman::new(&[0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4]).is_none());
        assert!(Huffman::new(&[0, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4]).is_some());
        // every byte of the tables and headers damaged in turn
        let sos = file.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        for i in 2..sos + 14 {
            for v in [0x00, 0x01, 0x10, 0x7F, 0xFF] {
                let mut bad = file.clone();
                bad[i] = v;
                let _ = jpeg_decode(&bad, u64::MAX);
            }
        }
    }
}
