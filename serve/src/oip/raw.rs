//! Tensor bytes as `f32` words, filled from pieces of any size.
//!
//! Why a buffer of its own: a batch of pre-decoded FP32 images is tens of megabytes (32
//! EfficientNet inputs are 19.3 MB), and every pass over it takes memory bandwidth and a core
//! from the sessions. The HTTP binary part is copied once, from the socket's chunks into a
//! buffer of `f32` words, and an FP32 input becomes the model's tensor by handing that buffer
//! over.

/// The binary part of a request: its bytes as little-endian `f32` words, plus up to three
/// bytes that do not fill a word (yet).
#[derive(Default)]
pub struct BinaryPart {
    words: Vec<f32>,
    tail: [u8; 4],
    tail_len: usize,
}

impl BinaryPart {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.words.len() * 4 + self.tail_len
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.tail[..self.tail_len]);
        out
    }

    /// Its bytes read as little-endian `f32` values, without a copy. Trailing bytes that do
    /// not fill a value are dropped: check the length first.
    pub fn into_f32(self) -> Vec<f32> {
        self.words
    }

    /// Room for `bytes` bytes, allocated but not written.
    pub fn with_capacity(bytes: usize) -> Self {
        BinaryPart {
            words: Vec::with_capacity(bytes / 4),
            ..Self::default()
        }
    }

    /// Appends bytes, in any pieces.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.tail_len > 0 {
            let take = (4 - self.tail_len).min(bytes.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
            self.tail_len += take;
            bytes = &bytes[take..];
            if self.tail_len < 4 {
                return;
            }
            self.words.push(f32::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let whole = bytes.len() / 4 * 4;
        self.words.extend(
            bytes[..whole]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        let rest = &bytes[whole..];
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_any_chunks_come_back_as_bytes_and_as_f32() {
        let values = [1.5f32, -2.0, f32::MIN_POSITIVE, 3.25e7, f32::NAN];
        let wire: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for split in [0, 1, 3, 4, 7, wire.len()] {
            {
                let mut part = BinaryPart::default();
                part.push(&wire[..split]);
                part.push(&wire[split..]);
                assert_eq!(part.len(), wire.len());
                assert_eq!(part.to_bytes(), wire);
                let back = part.into_f32();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&back), bits(&values), "split at {split}");
            }
        }
        let mut odd = BinaryPart::default();
        for piece in [&[1u8][..], &[2, 3], &[4, 5, 6, 7, 8, 9], &[10]] {
            odd.push(piece);
        }
        assert_eq!(odd.len(), 10);
        assert_eq!(odd.to_bytes(), (1..=10).collect::<Vec<u8>>());
    }
}
