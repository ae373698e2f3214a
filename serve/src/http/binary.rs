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
use crate::{ServeError, oip::BinaryPart};

/// The header naming the JSON part's length in a binary request or response.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

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
