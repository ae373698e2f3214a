//! The body of an Open Inference Protocol request with the binary tensor extension: the JSON
//! part (`Inference-Header-Content-Length` bytes) and the binary part after it.
//!
//! Why a reader of its own: a batch of pre-decoded FP32 images is tens of megabytes (32
//! EfficientNet inputs are 19.3 MB), and every pass over it takes memory bandwidth and a core
//! from the sessions. The binary part is therefore copied once, from the socket's chunks into
//! a buffer of `f32` words, and an FP32 input becomes the model's tensor by handing that buffer
//! over (on little-endian machines the wire format is the memory format).

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{content_length, read_body};
use crate::ServeError;

/// The header naming the JSON part's length in a binary request or response.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// The binary part of a request: `len` bytes, stored in `f32` words.
#[derive(Default)]
pub struct BinaryPart {
    words: Vec<f32>,
    len: usize,
}

impl BinaryPart {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// Its bytes read as little-endian `f32` values, without a copy (a byte swap on big-endian
    /// machines). A trailing partial value is dropped: check the length first.
    pub fn into_f32(mut self) -> Vec<f32> {
        self.words.truncate(self.len / 4);
        if cfg!(target_endian = "big") {
            for w in &mut self.words {
                *w = f32::from_bits(w.to_bits().swap_bytes());
            }
        }
        self.words
    }

    /// Its bytes as [`Bytes`], without a copy.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// A part that will hold `bytes` bytes: zeroed memory from the allocator, which for large
    /// sizes is fresh pages rather than a pass of writes.
    fn with_capacity(bytes: usize) -> Self {
        BinaryPart {
            words: vec![0.0; bytes.div_ceil(4)],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        let needed = end.div_ceil(4);
        if needed > self.words.len() {
            // A body of unknown length (chunked): grow geometrically.
            self.words.resize(needed.max(2 * self.words.len()), 0.0);
        }
        bytemuck::cast_slice_mut::<f32, u8>(&mut self.words)[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }
}

impl AsRef<[u8]> for BinaryPart {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// Reads an `infer` body of at most `limit` bytes into its JSON part and its binary part
/// (empty without the `Inference-Header-Content-Length` header).
pub async fn read_infer_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<(Bytes, BinaryPart), ServeError> {
    let Some(value) = req.headers().get(HEADER_LENGTH) else {
        return Ok((read_body(req, payload, limit).await?, BinaryPart::default()));
    };
    let header_len = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| ServeError::Invalid(format!("{HEADER_LENGTH} is not a byte count")))?;
    let declared = content_length(req);
    if declared.is_some_and(|n| n > limit) {
        return Err(ServeError::PayloadTooLarge { limit });
    }
    let short = |got: usize| {
        ServeError::Invalid(format!(
            "{HEADER_LENGTH} is {header_len}, but the body has only {got} bytes"
        ))
    };
    if let Some(n) = declared
        && header_len > n
    {
        return Err(short(n));
    }
    let mut header = BytesMut::with_capacity(header_len.min(limit));
    let mut binary = match declared {
        Some(n) => BinaryPart::with_capacity(n - header_len),
        None => BinaryPart::default(),
    };
    let mut total = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ServeError::Invalid(format!("cannot read the request body: {e}")))?;
        total += chunk.len();
        if total > limit {
            return Err(ServeError::PayloadTooLarge { limit });
        }
        let to_header = (header_len - header.len()).min(chunk.len());
        header.extend_from_slice(&chunk[..to_header]);
        binary.push(&chunk[to_header..]);
    }
    if header.len() < header_len {
        return Err(short(total));
    }
    Ok((header.freeze(), binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_any_chunks_come_back_as_bytes_and_as_f32() {
        let values = [1.5f32, -2.0, f32::MIN_POSITIVE, 3.25e7, f32::NAN];
        let wire: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for split in [0, 1, 3, 4, 7, wire.len()] {
            for mut part in [BinaryPart::default(), BinaryPart::with_capacity(wire.len())] {
                part.push(&wire[..split]);
                part.push(&wire[split..]);
                assert_eq!(part.len(), wire.len());
                assert_eq!(part.bytes(), wire.as_slice());
                let back = part.into_f32();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&back), bits(&values), "split at {split}");
            }
        }
        let mut odd = BinaryPart::default();
        odd.push(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(odd.bytes(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(odd.into_bytes().as_ref(), [1, 2, 3, 4, 5, 6]);
    }
}
