//! The body of an Open Inference Protocol request with the binary tensor extension: the JSON
//! part (`Inference-Header-Content-Length` bytes) and the binary part after it.
//!
//! Why a reader of its own: a batch of pre-decoded FP32 images is tens of megabytes (32
//! EfficientNet inputs are 19.3 MB), and every pass over it takes memory bandwidth and a core
//! from the sessions. The binary part is therefore copied once, from the socket's chunks into
//! a buffer of `f32` words, and an FP32 input becomes the model's tensor by handing that
//! buffer over. The buffer has room for the `Content-Length` (already claimed from the
//! server's body budget), is never zeroed, and is never sized from a tensor shape.

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};

use super::{AppState, BodyGuard, content_length, read_chunks};
use crate::ServeError;

/// The header naming the JSON part's length in a binary request or response.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

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
    fn with_capacity(bytes: usize) -> Self {
        BinaryPart {
            words: Vec::with_capacity(bytes / 4),
            ..Self::default()
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
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

/// Reads an `infer` body into its JSON part and its binary part (empty without the
/// `Inference-Header-Content-Length` header), with the limits of [`read_chunks`]. Both
/// parts grow with the bytes that arrive, never with what a header declares; the guard keeps
/// them counted in the server's body budget.
pub async fn read_infer_body(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Bytes, BinaryPart, BodyGuard), ServeError> {
    let header_len = match req.headers().get(HEADER_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ServeError::Invalid(format!("{HEADER_LENGTH} is not a byte count")))?,
        ),
    };
    let short = |header_len: usize, got: usize| {
        ServeError::Invalid(format!(
            "{HEADER_LENGTH} is {header_len}, but the body has only {got} bytes"
        ))
    };
    if let (Some(h), Some(n)) = (header_len, content_length(req))
        && h > n
    {
        return Err(short(h, n));
    }
    // Room for the declared length (claimed from the budget already): no copies of growing
    // buffers, and pages are only touched as bytes arrive.
    let declared = content_length(req).unwrap_or(0).min(state.max_body_bytes);
    let mut header = BytesMut::with_capacity(header_len.unwrap_or(declared).min(declared));
    let mut binary = BinaryPart::with_capacity(declared.saturating_sub(header_len.unwrap_or(declared)));
    let guard = read_chunks(state, req, payload, |chunk| {
        let to_header = match header_len {
            Some(h) => (h - header.len()).min(chunk.len()),
            None => chunk.len(),
        };
        header.extend_from_slice(&chunk[..to_header]);
        binary.push(&chunk[to_header..]);
        Ok(())
    })
    .await?;
    if let Some(h) = header_len
        && header.len() < h
    {
        return Err(short(h, header.len() + binary.len()));
    }
    Ok((header.freeze(), binary, guard))
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
