//! IDX files: MNIST's and Fashion-MNIST's format, raw or gzip-compressed.
//!
//! The trainer trains on Fashion-MNIST and the evaluator measures models on it, so both read the
//! same files; this module is their one reader. An IDX file is a 4-byte magic number
//! (`0 0 <type> <ndims>`), `ndims` big-endian `u32` dimensions and the data. Only unsigned bytes
//! (type `0x08`) occur in these data sets and only they are supported. Compression is detected
//! by content (the gzip magic `1f 8b`), not by file name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use image::GrayImage;

/// Why an IDX file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read (or its gzip stream is corrupt).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's (or gzip decoder's) error.
        source: std::io::Error,
    },
    /// The file's content is not what the format requires.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the numbers involved.
        reason: String,
    },
}

fn format_error(path: &Path, reason: impl Into<String>) -> IdxError {
    IdxError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IdxError + '_ {
    move |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The content of an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[n, rows, cols]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// The data, row-major; its length is the product of `dims`.
    pub data: Vec<u8>,
}

/// Opens `path`, transparently gunzipping it if it starts with the gzip magic `1f 8b`.
pub fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>, IdxError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(io_error(path))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads an IDX file of unsigned bytes that must have `ndims` dimensions (magic number
/// `0x0800 + ndims`: 2049 for labels, 2051 for images). Errors name the file and say what is
/// wrong: another magic number, a truncated header or payload, trailing bytes, dimensions whose
/// product overflows.
pub fn read(path: &Path, ndims: u8) -> Result<IdxArray, IdxError> {
    let mut reader = open_maybe_gzip(path)?;
    let eof_is_truncation = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format_error(path, "truncated IDX header")
        } else {
            IdxError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    };
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(eof_is_truncation)?;
    let expected = [0, 0, 0x08, ndims];
    if magic != expected {
        let (got, want) = (u32::from_be_bytes(magic), u32::from_be_bytes(expected));
        return Err(format_error(
            path,
            format!("not an IDX file of {ndims}-dimensional unsigned bytes: magic number {got}, expected {want}"),
        ));
    }
    let mut dims = Vec::with_capacity(usize::from(ndims));
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        reader.read_exact(&mut d).map_err(eof_is_truncation)?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_error(path, format!("dimensions {dims:?} overflow")))?;
    let mut data = Vec::new();
    let limit = u64::try_from(total).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(limit).read_to_end(&mut data).map_err(io_error(path))?;
    if data.len() < total {
        return Err(format_error(
            path,
            format!(
                "truncated: {} of {total} data bytes for dimensions {dims:?}",
                data.len()
            ),
        ));
    }
    if data.len() > total {
        return Err(format_error(
            path,
            format!("trailing bytes after the {total} data bytes of dimensions {dims:?}"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// `n` grey images of `rows × cols` bytes, held as one contiguous buffer (image after image,
/// row-major), as read from an IDX image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    rows: usize,
    cols: usize,
    pixels: Vec<u8>,
}

impl IdxImages {
    /// Images from their parts; `pixels.len()` must be a multiple of `rows × cols` (both > 0).
    pub fn from_raw(rows: usize, cols: usize, pixels: Vec<u8>) -> Option<Self> {
        let size = rows.checked_mul(cols).filter(|&s| s > 0)?;
        (u32::try_from(rows).is_ok() && u32::try_from(cols).is_ok() && pixels.len().is_multiple_of(size))
            .then_some(IdxImages { rows, cols, pixels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols)
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Rows (height) of every image.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (width) of every image.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All pixels, image after image.
    pub fn raw_pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Consumes the images, returning the pixel buffer.
    pub fn into_raw(self) -> Vec<u8> {
        self.pixels
    }

    /// Image `i`'s `rows × cols` bytes, `None` if out of range.
    pub fn pixels(&self, i: usize) -> Option<&[u8]> {
        let size = self.rows * self.cols;
        self.pixels
            .get(i.checked_mul(size)?..i.checked_add(1)?.checked_mul(size)?)
    }

    /// Image `i` as a grey image, `None` if out of range.
    pub fn image(&self, i: usize) -> Option<GrayImage> {
        // `from_raw` checked that rows and cols fit in u32.
        GrayImage::from_raw(self.cols as u32, self.rows as u32, self.pixels(i)?.to_vec())
    }
}

/// Reads an IDX image file (magic 2051, `n × rows × cols` bytes, raw or gzip).
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    let array = read(path, 3)?;
    let (rows, cols) = (array.dims[1], array.dims[2]);
    if rows == 0 || cols == 0 || u32::try_from(rows).is_err() || u32::try_from(cols).is_err() {
        return Err(format_error(path, format!("invalid images of {rows}x{cols} pixels")));
    }
    let n = array.dims[0];
    IdxImages::from_raw(rows, cols, array.data)
        .ok_or_else(|| format_error(path, format!("{n} images of {rows}x{cols}")))
}

/// Reads an IDX label file (magic 2049, `n` bytes, raw or gzip).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    Ok(read(path, 1)?.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn idx(ndims: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, ndims];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn idx_reads_raw_and_gzip_images_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..18).map(|v| v * 10).collect();
        let images = idx(3, &[3, 2, 3], &pixels);
        for (name, bytes) in [("raw", images.clone()), ("img.gz", gzip(&images))] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let set = read_images(&path).unwrap();
            assert_eq!((set.len(), set.rows(), set.cols()), (3, 2, 3));
            assert_eq!(set.raw_pixels(), &pixels[..]);
            assert_eq!(set.pixels(1), Some(&pixels[6..12]));
            assert_eq!(set.pixels(3), None);
            assert_eq!(set.image(2).unwrap().get_pixel(2, 1).0[0], 170);
        }
        let path = dir.path().join("labels");
        std::fs::write(&path, gzip(&idx(1, &[3], &[0, 2, 1]))).unwrap();
        assert_eq!(read_labels(&path).unwrap(), [0, 2, 1]);
        // Labels are not images and vice versa.
        let e = read_images(&path).unwrap_err().to_string();
        assert!(e.contains("magic number 2049") && e.contains("expected 2051"), "{e}");
    }

    #[test]
    fn idx_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let images = idx(3, &[3, 2, 3], &[7; 18]);
        let e = read_images(&write("short", &images[..images.len() - 1]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated: 17 of 18") && e.contains("short"), "{e}");
        let e = read_images(&write("head.gz", &gzip(&images[..10])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated IDX header"), "{e}");
        let mut long = images.clone();
        long.push(1);
        assert!(
            read_images(&write("long", &long))
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        let e = read_images(&write("huge", &idx(3, &[u32::MAX; 3], &[1])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("overflow") || e.contains("truncated"), "{e}");
        let e = read_images(&write("empty", &idx(3, &[0, 0, 5], &[])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0x5"), "{e}");
        let e = read_labels(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let mut corrupt = gzip(&images);
        let mid = corrupt.len() / 2;
        corrupt[mid..].iter_mut().for_each(|b| *b = b.wrapping_add(77));
        assert!(read_images(&write("corrupt.gz", &corrupt)).is_err());
        assert!(IdxImages::from_raw(2, 2, vec![0; 5]).is_none());
        assert!(IdxImages::from_raw(0, 2, vec![]).is_none());
    }
}
