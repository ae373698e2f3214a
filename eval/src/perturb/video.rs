//! Reading the released ImageNet-P videos: mp4 demuxing (`mp4` crate), H.264 decoding
//! (OpenH264, built from source by the `openh264` crate) and YUV 4:2:0 to RGB conversion.
//!
//! The mp4 stores H.264 samples as length-prefixed NAL units (AVCC) with the parameter sets in
//! the `avcC` box; OpenH264 wants an Annex-B byte stream, so each sample is rewritten with start
//! codes and the SPS/PPS are sent first. Frames are converted with BT.601 limited-range
//! coefficients and each chroma sample covering its 2x2 luma block, which is what FFmpeg's
//! unscaled `yuv420p -> rgb24` path (and so OpenCV's `VideoCapture`, the reference loader) does.
//!
//! OpenH264 decodes 8-bit 4:2:0 streams only, which the SPS tells. The released set needs
//! more: `make_imagenet_p.py` encodes RGB PNG frames with `ffmpeg -vcodec libx264` and no
//! `-pix_fmt` (its bundled static ffmpeg 4.0.2, libx264 155), for which ffmpeg selects yuv444p,
//! profile "High 4:4:4 Predictive" (`scripts/make_perturb_video_data.sh` reproduces this with
//! `clip_yuv444p.mp4`). Those streams (and lossless or high-bit-depth ones) are decoded by
//! ffmpeg itself, the decoder behind the reference's loader: `$HARDY_FFMPEG` if set, else the
//! static ffmpeg 7.0.2 of the PyPI `imageio-ffmpeg` wheel, fetched into Hardy's cache on first
//! use ([`data::fetch::ffmpeg`]). It writes raw `rgb24` frames to a pipe in presentation
//! order, converted with swscale's defaults (BT.601, limited range), as OpenCV gets them.

use std::{
    fs::File,
    io::BufReader,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use image::RgbImage;
use openh264::{
    decoder::{DecodedYUV, Decoder, DecoderConfig, Flush},
    formats::YUVSource,
};

use super::PerturbError;

/// The H.264 track of an mp4, as Annex-B pieces.
struct Demuxed {
    /// Sequence parameter sets (raw NAL units, no start code).
    sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pps: Vec<Vec<u8>>,
    /// Each sample converted to Annex-B (start code before every NAL unit).
    samples: Vec<Vec<u8>>,
    /// The picture size the track declares (`avc1` box).
    size: (u16, u16),
}

/// Decodes a released ImageNet-P video (mp4, H.264) to RGB frames, in presentation order.
///
/// Errors name the file: [`PerturbError::Io`] when it cannot be read,
/// [`PerturbError::Container`] for a truncated or non-mp4 file or one without an H.264 track,
/// [`PerturbError::Unsupported`] for streams OpenH264 cannot decode (4:4:4 chroma, more than 8
/// bits, lossless) when no ffmpeg can be found or fetched for them, [`PerturbError::Decode`]
/// when the decoder rejects a sample or returns another number of frames than the track holds.
pub fn read_video(path: &Path) -> Result<Vec<RgbImage>, PerturbError> {
    let io = |source| PerturbError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    // The demuxer trusts box sizes; a hostile file must become an error, not a crash.
    let demuxed = catch_unwind(AssertUnwindSafe(|| demux(BufReader::new(file), size)))
        .map_err(|_| container(path, "the mp4 parser failed on malformed boxes".into()))?
        .map_err(|reason| container(path, reason))?;
    match demuxed.sps.iter().find_map(|sps| check_sps(sps).err()) {
        None => decode(path, &demuxed),
        Some(reason) => decode_with_ffmpeg(path, &demuxed, &reason),
    }
}

/// The ffmpeg for streams OpenH264 cannot decode: `$HARDY_FFMPEG` (5.1 or later, for
/// `-fps_mode`), else the provisioned one.
fn ffmpeg() -> Result<PathBuf, String> {
    if let Some(exe) = std::env::var_os("HARDY_FFMPEG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(exe));
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    return data::fetch::ffmpeg().map_err(|e| e.to_string());
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    Err("Hardy provisions ffmpeg for Linux x86-64 only; set HARDY_FFMPEG".into())
}

/// Decodes the whole file with ffmpeg (`why`: what OpenH264 lacks for it) into `rgb24` frames
/// of the track's declared size, one per sample.
fn decode_with_ffmpeg(path: &Path, demuxed: &Demuxed, why: &str) -> Result<Vec<RgbImage>, PerturbError> {
    let exe = ffmpeg().map_err(|e| PerturbError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("{why}; ffmpeg, which decodes it, is not available: {e}"),
    })?;
    let count = demuxed.samples.len() as u32;
    let fail = |reason: String| PerturbError::Decode {
        path: path.to_path_buf(),
        sample: count,
        reason,
    };
    // `file:` keeps a name that starts with '-' from reading as an option
    let mut input = std::ffi::OsString::from("file:");
    input.push(path.as_os_str());
    let out = std::process::Command::new(&exe)
        .args(["-nostdin", "-v", "error", "-threads", "1", "-i"])
        .arg(input)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{} failed ({}): {}",
            exe.display(),
            out.status,
            stderr.trim()
        )));
    }
    let (w, h) = (u32::from(demuxed.size.0), u32::from(demuxed.size.1));
    let frame = w as usize * h as usize * 3;
    if frame == 0 || out.stdout.len() != frame * demuxed.samples.len() {
        return Err(fail(format!(
            "ffmpeg gave {} bytes for {} samples of {w}x{h} (expected {} per frame)",
            out.stdout.len(),
            count,
            frame
        )));
    }
    Ok(out
        .stdout
        .chunks_exact(frame)
        .filter_map(|f| RgbImage::from_raw(w, h, f.to_vec()))
        .collect())
}

fn container(path: &Path, reason: String) -> PerturbError {
    PerturbError::Container {
        path: path.to_path_buf(),
        reason,
    }
}

/// Finds the H.264 track and rewrites its samples as Annex-B.
fn demux(reader: BufReader<File>, size: u64) -> Result<Demuxed, String> {
    let mut mp4 = mp4::Mp4Reader::read_header(reader, size).map_err(|e| e.to_string())?;
    let (track_id, avcc, size) = mp4
        .tracks()
        .values()
        .find_map(|t| {
            t.trak
                .mdia
                .minf
                .stbl
                .stsd
                .avc1
                .as_ref()
                .map(|avc1| (t.track_id(), avc1.avcc.clone(), (avc1.width, avc1.height)))
        })
        .ok_or_else(|| "no H.264 (avc1) video track".to_string())?;
    let length_size = usize::from(avcc.length_size_minus_one & 3) + 1;
    let sps: Vec<Vec<u8>> = avcc.sequence_parameter_sets.iter().map(|n| n.bytes.clone()).collect();
    let pps: Vec<Vec<u8>> = avcc.picture_parameter_sets.iter().map(|n| n.bytes.clone()).collect();
    if sps.is_empty() || pps.is_empty() {
        return Err("the avcC box holds no SPS or no PPS".into());
    }
    let count = mp4.sample_count(track_id).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(count.min(4096) as usize);
    for id in 1..=count {
        let sample = mp4
            .read_sample(track_id, id)
            .map_err(|e| format!("sample {id} of {count}: {e}"))?
            .ok_or_else(|| format!("sample {id} of {count} is missing"))?;
        samples.push(avcc_to_annex_b(&sample.bytes, length_size).map_err(|e| format!("sample {id} of {count}: {e}"))?);
    }
    if samples.is_empty() {
        return Err("the video track has no samples".into());
    }
    Ok(Demuxed {
        sps,
        pps,
        samples,
        size,
    })
}

/// Rewrites length-prefixed NAL units as start-code-prefixed ones.
fn avcc_to_annex_b(mut data: &[u8], length_size: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() + 16);
    while !data.is_empty() {
        if data.len() < length_size {
            return Err(format!(
                "{} trailing bytes, shorter than a NAL length field",
                data.len()
            ));
        }
        let len = data[..length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        data = &data[length_size..];
        if len > data.len() {
            return Err(format!("NAL unit of {len} bytes but only {} left", data.len()));
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&data[..len]);
        data = &data[len..];
    }
    Ok(out)
}

/// How to make a stream OpenH264 reads (not lossless: x264's lossless mode needs the High 4:4:4
/// profile's transform bypass, which OpenH264 lacks).
const REENCODE: &str = "re-encode, e.g. `ffmpeg -i in.mp4 -pix_fmt yuv420p -c:v libx264 -crf 10 out.mp4`";

/// Reads an SPS far enough to know whether OpenH264 can decode the stream.
fn check_sps(sps: &[u8]) -> Result<(), String> {
    let rbsp: Vec<u8> = {
        // Drop emulation-prevention bytes (00 00 03 -> 00 00).
        let mut out = Vec::with_capacity(sps.len());
        let mut zeros = 0;
        for &b in sps.iter().skip(1) {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    };
    let mut bits = BitReader { data: &rbsp, pos: 0 };
    let profile = bits.bits(8).ok_or("SPS too short")?;
    bits.bits(16).ok_or("SPS too short")?; // constraint flags, level
    bits.ue().ok_or("SPS too short")?; // seq_parameter_set_id
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        let chroma = bits.ue().ok_or("SPS too short")?;
        if chroma != 1 {
            let name = match chroma {
                0 => "4:0:0 (monochrome)",
                2 => "4:2:2",
                _ => "4:4:4",
            };
            return Err(format!(
                "profile_idc {profile} with {name} chroma; OpenH264 decodes 8-bit 4:2:0 only ({REENCODE})"
            ));
        }
        let luma = bits.ue().ok_or("SPS too short")?;
        let chroma_depth = bits.ue().ok_or("SPS too short")?;
        if luma != 0 || chroma_depth != 0 {
            return Err(format!(
                "{}-bit samples; OpenH264 decodes 8-bit only",
                8 + luma.max(chroma_depth)
            ));
        }
        if bits.bit().ok_or("SPS too short")? == 1 {
            return Err(format!(
                "profile_idc {profile} with lossless coding (qpprime_y_zero_transform_bypass); OpenH264 cannot \
                 decode it ({REENCODE})"
            ));
        }
    }
    Ok(())
}

/// An MSB-first bit reader with Exp-Golomb codes.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
}

/// Runs OpenH264 over the samples and converts every output picture.
fn decode(path: &Path, demuxed: &Demuxed) -> Result<Vec<RgbImage>, PerturbError> {
    let path_buf = || PathBuf::from(path);
    let fail = |sample: u32, reason: String| PerturbError::Decode {
        path: path_buf(),
        sample,
        reason,
    };
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder = Decoder::with_api_config(openh264::OpenH264API::from_source(), config)
        .map_err(|e| fail(0, format!("cannot start OpenH264: {e}")))?;
    let mut headers = Vec::new();
    for nal in demuxed.sps.iter().chain(&demuxed.pps) {
        headers.extend_from_slice(&[0, 0, 0, 1]);
        headers.extend_from_slice(nal);
    }
    let mut frames = Vec::with_capacity(demuxed.samples.len());
    for (i, sample) in demuxed.samples.iter().enumerate() {
        let n = i as u32 + 1;
        // The parameter sets go in front of the first sample.
        let first;
        let packet: &[u8] = if i == 0 {
            first = [headers.as_slice(), sample].concat();
            &first
        } else {
            sample
        };
        let out = decoder.decode(packet).map_err(|e| fail(n, e.to_string()))?;
        if let Some(yuv) = out {
            frames.push(to_rgb(&yuv).map_err(|reason| fail(n, reason))?);
        }
    }
    let count = demuxed.samples.len() as u32;
    let rest = decoder
        .flush_remaining()
        .map_err(|e| fail(count, format!("flushing: {e}")))?;
    for yuv in &rest {
        frames.push(to_rgb(yuv).map_err(|reason| fail(count, reason))?);
    }
    if frames.len() != demuxed.samples.len() {
        return Err(fail(
            count,
            format!("decoded {} frames from {} samples", frames.len(), demuxed.samples.len()),
        ));
    }
    Ok(frames)
}

/// BT.601 limited-range YUV 4:2:0 to RGB, each chroma sample covering a 2x2 block.
fn to_rgb(yuv: &DecodedYUV<'_>) -> Result<RgbImage, String> {
    let (w, h) = yuv.dimensions();
    let (sy, su, sv) = yuv.strides();
    let (y, u, v) = (yuv.y(), yuv.u(), yuv.v());
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let fits = |plane: &[u8], stride: usize, pw: usize, ph: usize| ph == 0 || plane.len() >= (ph - 1) * stride + pw;
    if w == 0 || h == 0 || !fits(y, sy, w, h) || !fits(u, su, cw, ch) || !fits(v, sv, cw, ch) {
        return Err(format!(
            "decoder returned a {w}x{h} picture with planes too small for it"
        ));
    }
    let width = u32::try_from(w).map_err(|_| format!("picture width {w} too large"))?;
    let height = u32::try_from(h).map_err(|_| format!("picture height {h} too large"))?;
    Ok(RgbImage::from_fn(width, height, |x, row| {
        let (x, row) = (x as usize, row as usize);
        let luma = 1.164_383_6 * (f32::from(y[row * sy + x]) - 16.0);
        let cb = f32::from(u[(row / 2) * su + x / 2]) - 128.0;
        let cr = f32::from(v[(row / 2) * sv + x / 2]) - 128.0;
        let px = |val: f32| val.round().clamp(0.0, 255.0) as u8;
        image::Rgb([
            px(luma + 1.596_026_8 * cr),
            px(luma - 0.391_762_3 * cb - 0.812_967_6 * cr),
            px(luma + 2.017_232_2 * cb),
        ])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_lengths_become_start_codes() {
        let sample = [0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x41];
        assert_eq!(
            avcc_to_annex_b(&sample, 4).unwrap(),
            vec![0, 0, 0, 1, 0x65, 0xAA, 0, 0, 0, 1, 0x41]
        );
        assert!(avcc_to_annex_b(&[0, 0, 0, 9, 1], 4).is_err());
        assert!(avcc_to_annex_b(&[0, 0], 4).is_err());
    }

    /// The ffmpeg path on a 4:2:0 clip gives exactly the frames Debian's ffmpeg 5.1 wrote for
    /// it (`clip_yuv420p_NN.png`): the pipe, frame size, count and order are right.
    #[test]
    fn ffmpeg_path_reproduces_ffmpeg_frames_exactly() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/perturb");
        let path = dir.join("clip_yuv420p.mp4");
        let file = File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        let demuxed = demux(BufReader::new(file), size).unwrap();
        let frames = decode_with_ffmpeg(&path, &demuxed, "forced by the test").unwrap();
        assert_eq!(frames.len(), 12);
        for (i, f) in frames.iter().enumerate() {
            let want = image::open(dir.join(format!("clip_yuv420p_{i:02}.png")))
                .unwrap()
                .to_rgb8();
            assert!(*f == want, "frame {i} differs from ffmpeg's");
        }
    }

    #[test]
    fn sps_chroma_format_is_read() {
        // High 4:4:4 (244): sps id ue(0) = '1', chroma_format_idc ue(3) = '00100'.
        let sps_444 = [0x67, 244, 0, 10, 0b1001_0000];
        assert!(check_sps(&sps_444).unwrap_err().contains("4:4:4"));
        // High (100): sps id '1', chroma ue(1) '010', luma depth '1', chroma depth '1'.
        let sps_420 = [0x67, 100, 0, 10, 0b1010_1100];
        check_sps(&sps_420).unwrap();
        // High 4:4:4 (244) with 4:2:0 chroma is fine unless lossless (transform bypass '1').
        check_sps(&[0x67, 244, 0, 10, 0b1010_1100]).unwrap();
        assert!(
            check_sps(&[0x67, 244, 0, 10, 0b1010_1110])
                .unwrap_err()
                .contains("lossless")
        );
        // Baseline (66) carries no chroma field.
        check_sps(&[0x67, 66, 0, 10, 0b1000_0000]).unwrap();
        assert!(check_sps(&[0x67]).is_err());
    }
}
