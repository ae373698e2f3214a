//! Baseline JPEG files, byte for byte as Pillow writes them (libjpeg-turbo's encoder).
//!
//! Why: the released ImageNet-C files were written by Pillow's
//! `save(path, quality=85, optimize=True)`, so `hardy corrupt` writes its files the same way.
//! The pixels then go through the same lossy steps as the released data (not merely a JPEG of
//! the same quality), and the file is the same as the one Pillow would write for the same
//! corrupted pixels (tested against files written by Pillow). It is also several times faster
//! than a general-purpose encoder, since the colour conversion, downsampling, forward DCT and
//! quantisation are the vectorised ones of [`super::jpeg_roundtrip`].
//!
//! What libjpeg does and this follows: a JFIF 1.01 header (aspect 1:1, no units), the two
//! quantisation tables, SOF0 with 4:2:0 subsampling, one interleaved scan (two by two luma
//! blocks, then one Cb and one Cr block per MCU), luma blocks past the image's last column or
//! row of blocks as "dummy" blocks (no AC, the DC of the block before), and Huffman tables
//! either Annex K's (Pillow's default) or, for [`HuffmanTables::Optimal`], libjpeg's
//! `jpeg_gen_optimal_table` from the symbol counts of the image.

use super::islow::{Divisors, quantise_plane};

/// A Huffman table as a DHT marker holds it.
struct HuffSpec<'a> {
    bits: [u8; 16],
    vals: &'a [u8],
}

/// Annex K.3's DC luminance table: code counts per length 1..16, then the symbols.
const DC_LUMA: HuffSpec = HuffSpec {
    bits: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    vals: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// Annex K.3's DC chrominance table.
const DC_CHROMA: HuffSpec = HuffSpec {
    bits: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    vals: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// Annex K.3's AC luminance table.
const AC_LUMA: HuffSpec = HuffSpec {
    bits: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125],
    vals: &[
        1, 2, 3, 0, 4, 17, 5, 18, 33, 49, 65, 6, 19, 81, 97, 7, 34, 113, 20, 50, 129, 145, 161, 8, 35, 66, 177, 193,
        21, 82, 209, 240, 36, 51, 98, 114, 130, 9, 10, 22, 23, 24, 25, 26, 37, 38, 39, 40, 41, 42, 52, 53, 54, 55, 56,
        57, 58, 67, 68, 69, 70, 71, 72, 73, 74, 83, 84, 85, 86, 87, 88, 89, 90, 99, 100, 101, 102, 103, 104, 105, 106,
        115, 116, 117, 118, 119, 120, 121, 122, 131, 132, 133, 134, 135, 136, 137, 138, 146, 147, 148, 149, 150, 151,
        152, 153, 154, 162, 163, 164, 165, 166, 167, 168, 169, 170, 178, 179, 180, 181, 182, 183, 184, 185, 186, 194,
        195, 196, 197, 198, 199, 200, 201, 202, 210, 211, 212, 213, 214, 215, 216, 217, 218, 225, 226, 227, 228, 229,
        230, 231, 232, 233, 234, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250,
    ],
};

/// Annex K.3's AC chrominance table.
const AC_CHROMA: HuffSpec = HuffSpec {
    bits: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119],
    vals: &[
        0, 1, 2, 3, 17, 4, 5, 33, 49, 6, 18, 65, 81, 7, 97, 113, 19, 34, 50, 129, 8, 20, 66, 145, 161, 177, 193, 9, 35,
        51, 82, 240, 21, 98, 114, 209, 10, 22, 36, 52, 225, 37, 241, 23, 24, 25, 26, 38, 39, 40, 41, 42, 53, 54, 55,
        56, 57, 58, 67, 68, 69, 70, 71, 72, 73, 74, 83, 84, 85, 86, 87, 88, 89, 90, 99, 100, 101, 102, 103, 104, 105,
        106, 115, 116, 117, 118, 119, 120, 121, 122, 130, 131, 132, 133, 134, 135, 136, 137, 138, 146, 147, 148, 149,
        150, 151, 152, 153, 154, 162, 163, 164, 165, 166, 167, 168, 169, 170, 178, 179, 180, 181, 182, 183, 184, 185,
        186, 194, 195, 196, 197, 198, 199, 200, 201, 202, 210, 211, 212, 213, 214, 215, 216, 217, 218, 226, 227, 228,
        229, 230, 231, 232, 233, 234, 242, 243, 244, 245, 246, 247, 248, 249, 250,
    ],
};

/// `ZIGZAG[k]`: the natural-order index of the `k`-th coefficient in zigzag order
/// (libjpeg's `jpeg_natural_order`).
pub(super) const ZIGZAG: [usize; 64] = {
    let mut z = [0; 64];
    let (mut k, mut s) = (0, 0usize);
    while s < 15 {
        // diagonal s: up and to the right when s is even, down and to the left when odd
        let (lo, hi) = (s.saturating_sub(7), if s < 7 { s } else { 7 });
        let mut i = 0;
        while i <= hi - lo {
            let row = if s % 2 == 0 { hi - i } else { lo + i };
            z[k] = row * 8 + (s - row);
            k += 1;
            i += 1;
        }
        s += 1;
    }
    z
};

/// Which Huffman tables a file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuffmanTables {
    /// Annex K's example tables: Pillow's default.
    Standard,
    /// Tables made for the image from its symbol counts (two passes): Pillow's
    /// `optimize=True`, as the released ImageNet-C files were written.
    Optimal,
}

/// Encodes an 8-bit RGB buffer (`w * h * 3`) as a baseline JPEG file at `quality` (1..=100),
/// 4:2:0, as Pillow's `save(quality=quality)` (with `optimize=True` for
/// [`HuffmanTables::Optimal`]) writes it. `None` when a side is 0 or over 65535 (JPEG's
/// limit) or `rgb` is too short.
pub fn jpeg_encode(rgb: &[u8], w: usize, h: usize, quality: u8, tables: HuffmanTables) -> Option<Vec<u8>> {
    if w == 0 || h == 0 || w > 65535 || h > 65535 || rgb.len() < w * h * 3 {
        return None;
    }
    let luma_q = super::scaled_table(&super::LUMA_Q, quality);
    let chroma_q = super::scaled_table(&super::CHROMA_Q, quality);
    let mut planes = Vec::new();
    let (pw, ph) = super::forward_planes(rgb, w, h, &mut planes);
    let (cw, ch) = (pw / 2, ph / 2);
    let (yp, chroma) = planes.split_at(pw * ph);
    let (cbp, crp) = chroma.split_at(cw * ch);
    // the components' blocks: luma's real ones cover the image (w / 8 rounded up), chroma's
    // the whole MCUs
    let (ybw, ybh) = (w.div_ceil(8), h.div_ceil(8));
    let (mx, my) = (w.div_ceil(16), h.div_ceil(16));
    let mut ycoef = vec![0i16; 64 * ybw * ybh];
    quantise_plane(yp, pw, ybw, &Divisors::new(&luma_q), &mut ycoef);
    let cd = Divisors::new(&chroma_q);
    let mut cbcoef = vec![0i16; 64 * mx * my];
    let mut crcoef = vec![0i16; 64 * mx * my];
    quantise_plane(cbp, cw, mx, &cd, &mut cbcoef);
    quantise_plane(crp, cw, mx, &cd, &mut crcoef);
    let scan = Scan {
        ycoef: &ycoef,
        cbcoef: &cbcoef,
        crcoef: &crcoef,
        ybw,
        ybh,
        mx,
        my,
    };
    Some(match tables {
        HuffmanTables::Standard => write_file(
            &scan.symbols(),
            w,
            h,
            &luma_q,
            &chroma_q,
            &[DC_LUMA, AC_LUMA, DC_CHROMA, AC_CHROMA],
        ),
        HuffmanTables::Optimal => encode_optimal(&scan, w, h, &luma_q, &chroma_q),
    })
}

/// The quantised blocks of one image, visited in scan order.
struct Scan<'a> {
    ycoef: &'a [i16],
    cbcoef: &'a [i16],
    crcoef: &'a [i16],
    /// Real luma blocks per row and per column.
    ybw: usize,
    ybh: usize,
    /// MCUs per row and per column.
    mx: usize,
    my: usize,
}

impl Scan<'_> {
    /// Calls `f(component, block)` for every block in scan order: per MCU four luma blocks
    /// (top left, top right, bottom left, bottom right), then Cb, then Cr. A luma block past
    /// the last real column or row is libjpeg's dummy block: zeros, with the DC of the block
    /// before it in the MCU.
    fn for_each_block(&self, mut f: impl FnMut(usize, &[i16])) {
        let mut dummy = [0i16; 64];
        for my in 0..self.my {
            for mx in 0..self.mx {
                let mut last_dc = 0;
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (by, bx) = (2 * my + dy, 2 * mx + dx);
                    if by < self.ybh && bx < self.ybw {
                        let i = 64 * (by * self.ybw + bx);
                        let block = &self.ycoef[i..i + 64];
                        last_dc = block[0];
                        f(0, block);
                    } else {
                        dummy[0] = last_dc;
                        f(0, &dummy);
                    }
                }
                let i = 64 * (my * self.mx + mx);
                f(1, &self.cbcoef[i..i + 64]);
                f(2, &self.crcoef[i..i + 64]);
            }
        }
    }

    /// Every Huffman symbol of the scan in order, packed as `table << 30 | symbol << 22 | size
    /// << 16 | bits` (tables: 0 DC luma, 1 AC luma, 2 DC chroma, 3 AC chroma; `size` extra
    /// `bits` follow the symbol's code): each block's DC difference (its size category is the
    /// symbol), then its AC run/size symbols (`0xF0` for 16 zeros, `0x00` for end of block).
    /// The nonzero AC coefficients are found from a 64-bit mask in zigzag order.
    fn symbols(&self) -> Vec<u32> {
        let pack = |table: u32, sym: u32, (size, bits): (u32, u32)| table << 30 | sym << 22 | size << 16 | bits;
        let mut out = Vec::with_capacity(self.ycoef.len() / 2);
        let mut last = [0i16; 3];
        self.for_each_block(|c, block| {
            let (dc, ac) = if c == 0 { (0, 1) } else { (2, 3) };
            let m = magnitude(i32::from(block[0]) - i32::from(last[c]));
            out.push(pack(dc, m.0, m));
            last[c] = block[0];
            let z: [i16; 64] = std::array::from_fn(|k| block[ZIGZAG[k]]);
            let mask = z
                .iter()
                .enumerate()
                .fold(0u64, |m, (k, &v)| m | (u64::from(v != 0) << k))
                & !1;
            let (mut rest, mut prev) = (mask, 0);
            while rest != 0 {
                let k = rest.trailing_zeros();
                let mut run = k - prev - 1;
                while run > 15 {
                    out.push(pack(ac, 0xF0, (0, 0)));
                    run -= 16;
                }
                let m = magnitude(i32::from(z[k as usize]));
                out.push(pack(ac, run << 4 | m.0, m));
                prev = k;
                rest &= rest - 1;
            }
            if prev != 63 {
                out.push(pack(ac, 0x00, (0, 0)));
            }
        });
        out
    }
}

/// JPEG's size category of `v` and the `size` bits that follow its code (`v` for positive
/// values, `v - 1` in two's complement for negative ones).
fn magnitude(v: i32) -> (u32, u32) {
    let size = 32 - v.unsigned_abs().leading_zeros();
    let bits = if v < 0 { (v - 1) as u32 } else { v as u32 };
    (size, bits & ((1u32 << size) - 1))
}

/// The file with tables made from the image's own symbol counts.
fn encode_optimal(scan: &Scan, w: usize, h: usize, luma_q: &[u16; 64], chroma_q: &[u16; 64]) -> Vec<u8> {
    let symbols = scan.symbols();
    // counts per table (257: room for the pseudo-symbol 256)
    let mut freq = [[0u64; 257]; 4];
    for &s in &symbols {
        freq[(s >> 30) as usize][(s >> 22 & 0xFF) as usize] += 1;
    }
    let tables = freq.map(optimal_table);
    let specs = tables.each_ref().map(|(bits, vals)| HuffSpec { bits: *bits, vals });
    write_file(&symbols, w, h, luma_q, chroma_q, &specs)
}

/// libjpeg's `jpeg_gen_optimal_table`: Huffman code lengths from the counts (ties broken
/// towards the larger symbol; a pseudo-symbol 256 of count 1 keeps any real code from being
/// all ones), lengths over 16 folded back, then the pseudo-symbol's code dropped. Returns the
/// code counts per length and the symbols by length.
fn optimal_table(mut freq: [u64; 257]) -> ([u8; 16], Vec<u8>) {
    const MAX_CLEN: usize = 32;
    let mut bits = [0usize; MAX_CLEN + 1];
    let mut codesize = [0usize; 257];
    let mut others = [usize::MAX; 257];
    freq[256] = 1;
    // the symbols still counted, in increasing order (scanning only these finds the same
    // pairs as libjpeg's scan over all 257)
    let mut active: Vec<usize> = (0..257).filter(|&i| freq[i] != 0).collect();
    loop {
        // the smallest count (the largest symbol among equals), then the next smallest
        let smallest = |skip: usize| {
            let mut best: Option<(usize, u64)> = None;
            for &i in &active {
                if i != skip && best.is_none_or(|(_, v)| freq[i] <= v) {
                    best = Some((i, freq[i]));
                }
            }
            best.map(|(i, _)| i)
        };
        let Some(mut c1) = smallest(usize::MAX) else { break };
        let Some(mut c2) = smallest(c1) else { break };
        freq[c1] += freq[c2];
        freq[c2] = 0;
        active.retain(|&i| i != c2);
        codesize[c1] += 1;
        while others[c1] != usize::MAX {
            c1 = others[c1];
            codesize[c1] += 1;
        }
        others[c1] = c2;
        codesize[c2] += 1;
        while others[c2] != usize::MAX {
            c2 = others[c2];
            codesize[c2] += 1;
        }
    }
    for &s in &codesize {
        if s > 0 {
            // a 32-bit code would need over 2^31 symbols: more than any image has
            bits[s.min(MAX_CLEN)] += 1;
        }
    }
    for i in (17..=MAX_CLEN).rev() {
        while bits[i] > 0 {
            let mut j = i - 2;
            while bits[j] == 0 {
                j -= 1;
            }
            bits[i] -= 2;
            bits[i - 1] += 1;
            bits[j + 1] += 2;
            bits[j] -= 1;
        }
    }
    let mut i = 16;
    while bits[i] == 0 {
        i -= 1;
    }
    bits[i] -= 1;
    let mut vals = Vec::new();
    for len in 1..=MAX_CLEN {
        for (sym, &s) in codesize[..256].iter().enumerate() {
            if s == len {
                vals.push(sym as u8);
            }
        }
    }
    (std::array::from_fn(|l| bits[l + 1] as u8), vals)
}

/// A Huffman table as codes: `(code, length)` per symbol (libjpeg's `jpeg_make_c_derived_tbl`).
fn derive(spec: &HuffSpec) -> [(u32, u32); 256] {
    let mut table = [(0, 0); 256];
    let (mut code, mut k) = (0u32, 0);
    for (len, &n) in (1u32..).zip(&spec.bits) {
        for _ in 0..n {
            if let Some(&sym) = spec.vals.get(k) {
                table[usize::from(sym)] = (code, len);
            }
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    table
}

/// The whole file: headers as libjpeg writes them, the entropy-coded scan, EOI.
fn write_file(
    symbols: &[u32],
    w: usize,
    h: usize,
    luma_q: &[u16; 64],
    chroma_q: &[u16; 64],
    specs: &[HuffSpec; 4],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + w * h / 2);
    out.extend_from_slice(&[0xFF, 0xD8]);
    // APP0: JFIF 1.01, no units, density 1:1, no thumbnail
    out.extend_from_slice(&[0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
    for (id, table) in [luma_q, chroma_q].into_iter().enumerate() {
        out.extend_from_slice(&[0xFF, 0xDB, 0, 67, id as u8]);
        out.extend(ZIGZAG.iter().map(|&z| table[z] as u8));
    }
    let (w16, h16) = (w as u16, h as u16);
    out.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
    out.extend_from_slice(&h16.to_be_bytes());
    out.extend_from_slice(&w16.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    // DC then AC of luma (class/id 0x00, 0x10), then of chroma (0x01, 0x11)
    for (spec, class_id) in specs.iter().zip([0x00u8, 0x10, 0x01, 0x11]) {
        let len = 2 + 1 + 16 + spec.vals.len();
        out.extend_from_slice(&[0xFF, 0xC4]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.push(class_id);
        out.extend_from_slice(&spec.bits);
        out.extend_from_slice(spec.vals);
    }
    out.extend_from_slice(&[0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    let codes = specs.each_ref().map(derive);
    let mut bits = BitWriter { out, acc: 0, n: 0 };
    for &s in symbols {
        let (code, len) = codes[(s >> 30) as usize][(s >> 22 & 0xFF) as usize];
        let size = s >> 16 & 0x1F;
        // a code of at most 16 bits and at most 12 extra bits
        bits.put(code << size | (s & 0xFFFF), len + size);
    }
    let mut out = bits.finish();
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// Entropy-coded bytes: bits most significant first, a 0x00 stuffed after every 0xFF byte,
/// the last byte padded with ones.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `len` bits of `v` (`len` at most 32), most significant first.
    #[inline]
    fn put(&mut self, v: u32, len: u32) {
        // fewer than 32 bits wait in `acc`, so 32 more fit
        self.acc = (self.acc << len) | u64::from(v);
        self.n += len;
        if self.n >= 32 {
            self.n -= 32;
            let word = (self.acc >> self.n) as u32;
            // no 0xFF byte (no zero byte in !word): all four at once
            let inv = !word;
            if inv.wrapping_sub(0x0101_0101) & !inv & 0x8080_8080 == 0 {
                self.out.extend_from_slice(&word.to_be_bytes());
            } else {
                for byte in word.to_be_bytes() {
                    self.out.push(byte);
                    if byte == 0xFF {
                        self.out.push(0);
                    }
                }
            }
        }
    }

    /// The bytes, the last one padded with ones (libjpeg's `flush_bits`).
    fn finish(mut self) -> Vec<u8> {
        let pad = (8 - self.n % 8) % 8;
        self.acc = (self.acc << pad) | ((1u64 << pad) - 1);
        self.n += pad;
        while self.n >= 8 {
            self.n -= 8;
            let byte = (self.acc >> self.n) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/corrupt")
            .join(name)
    }

    /// The crop `(left, top, right, bottom)` of the committed 224x224 input.
    fn crop(left: u32, top: u32, right: u32, bottom: u32) -> image::RgbImage {
        let img = image::open(data("input224.png")).unwrap().to_rgb8();
        image::imageops::crop_imm(&img, left, top, right - left, bottom - top).to_image()
    }

    /// Files written by Pillow 13.0 (libjpeg-turbo) from the same pixels, by
    /// `scripts/make_jpeg_reference.py`: the same bytes, for both kinds of table, at a size of
    /// whole MCUs, at sizes with partial MCUs (dummy luma blocks right and below; chroma rows
    /// repeated below), and for a single block.
    #[test]
    fn files_are_byte_identical_to_pillows() {
        let cases = [
            ("q85_opt_224x224", (0, 0, 224, 224), 85, HuffmanTables::Optimal),
            ("q85_opt_97x61", (40, 50, 137, 111), 85, HuffmanTables::Optimal),
            ("q15_std_224x224", (0, 0, 224, 224), 15, HuffmanTables::Standard),
            ("q50_std_100x70", (10, 120, 110, 190), 50, HuffmanTables::Standard),
            ("q85_opt_8x8", (100, 100, 108, 108), 85, HuffmanTables::Optimal),
        ];
        for (name, (l, t, r, b), q, tables) in cases {
            let img = crop(l, t, r, b);
            let ours = jpeg_encode(img.as_raw(), img.width() as usize, img.height() as usize, q, tables).unwrap();
            let pillow = std::fs::read(data(&format!("jpeg/{name}.jpg"))).unwrap();
            let first = ours.iter().zip(&pillow).position(|(a, b)| a != b);
            assert!(
                ours == pillow,
                "{name}: {} bytes against Pillow's {}, first difference at {first:?}",
                ours.len(),
                pillow.len()
            );
        }
    }

    /// The round trip at a height that is even but not a multiple of 16 matches Pillow's
    /// decoding of its own file: the chroma rows below the image repeat the last real one.
    #[test]
    fn roundtrip_matches_pillow_below_a_partial_mcu() {
        let img = crop(10, 120, 110, 190);
        let ours = super::super::jpeg_roundtrip(img.as_raw(), 100, 70, 90);
        let pillow = image::open(data("jpeg/roundtrip_q90_100x70.png")).unwrap().to_rgb8();
        assert!(ours == pillow.into_raw(), "differs from Pillow's decoding");
    }

    #[test]
    fn zigzag_is_libjpegs_natural_order() {
        assert_eq!(ZIGZAG[..10], [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]);
        assert_eq!(ZIGZAG[60..], [47, 55, 62, 63]);
        let mut seen = ZIGZAG;
        seen.sort_unstable();
        assert!(seen.iter().enumerate().all(|(i, &z)| i == z));
    }

    /// Counts growing like Fibonacci numbers make plain Huffman codes longer than 16 bits; the
    /// folded lengths stay within 16, every symbol keeps a code, and no code is all ones.
    #[test]
    fn optimal_tables_fold_long_codes_and_leave_room() {
        let mut freq = [0u64; 257];
        let (mut a, mut b) = (1u64, 1u64);
        for f in freq.iter_mut().take(30) {
            *f = a;
            (a, b) = (b, a + b);
        }
        let (bits, vals) = optimal_table(freq);
        assert_eq!(vals.len(), 30);
        assert_eq!(bits.iter().map(|&n| usize::from(n)).sum::<usize>(), 30);
        // Kraft sum strictly below 1: the all-ones code of each length is free
        let kraft: f64 = bits
            .iter()
            .enumerate()
            .map(|(l, &n)| f64::from(n) / 2f64.powi(l as i32 + 1))
            .sum();
        assert!(kraft < 1.0, "{kraft}");
        // the most frequent symbol is among those with the shortest code
        let shortest = usize::from(bits.iter().find(|&&n| n > 0).copied().unwrap_or(0));
        assert!(vals[..shortest].contains(&29), "{bits:?} {vals:?}");
    }

    /// Files of any size decode (by the `image` crate's own decoder) to the sizes given and to
    /// nearly the pixels of the exact round trip.
    #[test]
    fn any_size_decodes() {
        let img = crop(0, 0, 224, 224);
        for (w, h) in [(1, 1), (17, 9), (33, 31), (16, 16), (200, 3)] {
            let part = image::imageops::crop_imm(&img, 10, 60, w, h).to_image();
            for tables in [HuffmanTables::Standard, HuffmanTables::Optimal] {
                let file = jpeg_encode(part.as_raw(), w as usize, h as usize, 85, tables).unwrap();
                let decoded = image::load_from_memory(&file).unwrap().to_rgb8();
                assert_eq!(decoded.dimensions(), (w, h));
                let exact = super::super::jpeg_roundtrip(part.as_raw(), w as usize, h as usize, 85);
                let worst = decoded.as_raw().iter().zip(&exact).map(|(&a, &b)| a.abs_diff(b)).max();
                assert!(worst <= Some(3), "{w}x{h} {tables:?}: {worst:?}");
            }
        }
        assert!(jpeg_encode(&[0; 3], 0, 1, 85, HuffmanTables::Standard).is_none());
        assert!(jpeg_encode(&[0; 3], 2, 1, 85, HuffmanTables::Standard).is_none());
    }
}
