//! `hardy corrupt`: a corrupted copy of a data set in the released ImageNet-C layout,
//! `<out>/<corruption>/<severity>/<class>/<file>`, made as the released set was: Resize, then
//! CenterCrop, then the corruption, then JPEG at quality 85 (options change each step), the file
//! written as Pillow writes it with `optimize=True` ([`crate::corrupt::jpeg_encode`]).
//!
//! Images are decoded once and corrupted at every requested corruption and severity in
//! parallel; each output file is written under a temporary name and renamed, and files that
//! exist are skipped, so an interrupted run continues where it stopped.

use std::path::{Path, PathBuf};

use engine::preprocess::{ColorMode, Exif, ImageLimits, Interpolation, Layout, PreprocessSpec, resize_crop};
use image::RgbImage;
use rayon::prelude::*;

use crate::{
    Corruption, EvalError,
    corrupt::{Corruptor, FrostSource, HuffmanTables},
    dataset::{Item, Shard},
    store::write_atomic,
    suite::{Observer, seed_for},
};

/// How output images are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// JPEG at this quality (the released ImageNet-C: 85).
    Jpeg(u8),
    /// Lossless PNG.
    Png,
}

impl OutputFormat {
    fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg(_) => "JPEG",
            OutputFormat::Png => "png",
        }
    }
}

/// What `hardy corrupt` makes.
#[derive(Debug, Clone)]
pub struct CorruptSetOptions {
    /// Corruptions to apply.
    pub corruptions: Vec<Corruption>,
    /// Severities to apply (1..5).
    pub severities: Vec<u8>,
    /// The shorter side is resized to this (256 for ImageNet-C).
    pub resize: u32,
    /// Then the centre crop (224 for ImageNet-C); corruptions run at this size.
    pub crop: u32,
    /// Output encoding.
    pub format: OutputFormat,
    /// Base seed; each image, corruption and severity gets its own seed from it.
    pub seed: u64,
    /// Frost textures.
    pub frost: Option<FrostSource>,
    /// Only the first N items.
    pub limit: Option<usize>,
    /// Which share of the items this run writes.
    pub shard: Shard,
}

impl CorruptSetOptions {
    /// ImageNet-C's recipe: the 15 benchmark corruptions, severities 1..5, Resize 256,
    /// CenterCrop 224, JPEG 85.
    pub fn imagenet_c() -> Self {
        Self {
            corruptions: Corruption::BENCHMARK.to_vec(),
            severities: vec![1, 2, 3, 4, 5],
            resize: 256,
            crop: 224,
            format: OutputFormat::Jpeg(85),
            seed: 0,
            frost: None,
            limit: None,
            shard: Shard { index: 0, count: 1 },
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorruptSetSummary {
    /// Source images read.
    pub images: usize,
    /// Files written.
    pub written: usize,
    /// Files that already existed and were kept.
    pub kept: usize,
}

/// The class directory and file stem of an item's outputs: the item's own folder (ImageFolder
/// sources keep their class or wnid folders), else its label number.
fn output_name(item: &Item) -> (String, String) {
    let key = item.key.replace('\\', "/");
    let label = item.label.map_or_else(|| "unlabelled".to_string(), |l| l.to_string());
    if let Some(index) = key.strip_prefix("idx:") {
        let stem = index
            .parse::<usize>()
            .map_or_else(|_| index.to_string(), |i| format!("{i:05}"));
        return (label, stem);
    }
    let (dir, file) = match key.rsplit_once('/') {
        Some((dir, file)) => (dir.rsplit('/').next().unwrap_or(dir).to_string(), file.to_string()),
        None => (label, key.clone()),
    };
    let stem = Path::new(&file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(&file)
        .to_string();
    (dir, stem)
}

fn encode(img: &RgbImage, format: OutputFormat) -> Result<Vec<u8>, EvalError> {
    let mut bytes = Vec::new();
    match format {
        // as the released files were written: Pillow's save(quality=q, optimize=True)
        OutputFormat::Jpeg(q) => {
            let (w, h) = img.dimensions();
            bytes = crate::corrupt::jpeg_encode(img.as_raw(), w as usize, h as usize, q, HuffmanTables::Optimal)
                .ok_or_else(|| {
                    EvalError::Codec(format!("JPEG encoding: {w}x{h} is outside JPEG's 1..=65535 per side"))
                })?;
        }
        OutputFormat::Png => img
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .map_err(|e| EvalError::Codec(format!("PNG encoding: {e}")))?,
    }
    Ok(bytes)
}

/// Writes the corrupted copy of `items` under `out` (see the module comment).
pub fn write_corrupted(
    items: Vec<Item>,
    out: &Path,
    options: &CorruptSetOptions,
    observer: &dyn Observer,
) -> Result<CorruptSetSummary, EvalError> {
    if options.crop == 0 || options.resize < options.crop {
        return Err(EvalError::Option {
            option: "--resize/--crop",
            reason: format!(
                "need 0 < crop <= resize, got resize {} and crop {}",
                options.resize, options.crop
            ),
        });
    }
    if let Some(bad) = options.severities.iter().find(|s| !(1..=5).contains(*s)) {
        return Err(EvalError::Option {
            option: "--severities",
            reason: format!("{bad} is not a severity (1..5)"),
        });
    }
    if let OutputFormat::Jpeg(q) = options.format
        && !(1..=100).contains(&q)
    {
        return Err(EvalError::Option {
            option: "--quality",
            reason: format!("{q} is not a JPEG quality (1..100)"),
        });
    }
    let corruptor = Corruptor::for_corruptions(options.frost.clone(), &options.corruptions)?;
    let spec = PreprocessSpec {
        resize_size: options.resize,
        crop_height: options.crop,
        crop_width: options.crop,
        interpolation: Interpolation::Bilinear,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        color: ColorMode::Rgb,
        layout: Layout::Nchw,
        // As make_imagenet_c.py reads its inputs: PIL applies no EXIF rotation.
        exif_orientation: false,
    };
    let limits = ImageLimits::default();
    let mut items = items;
    if let Some(limit) = options.limit {
        items.truncate(limit);
    }
    let items: Vec<Item> = items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| options.shard.contains(*i))
        .map(|(_, item)| item)
        .collect();
    observer.part_started("corrupt", items.len());
    let counts = items
        .par_iter()
        .map(|item| -> Result<(usize, usize), EvalError> {
            let (class, stem) = output_name(item);
            let targets: Vec<(Corruption, u8, PathBuf)> = options
                .corruptions
                .iter()
                .flat_map(|&c| {
                    let (class, stem) = (&class, &stem);
                    options.severities.iter().map(move |&s| {
                        let path = out
                            .join(c.name())
                            .join(s.to_string())
                            .join(class)
                            .join(format!("{stem}.{}", options.format.extension()));
                        (c, s, path)
                    })
                })
                .collect();
            let todo: Vec<&(Corruption, u8, PathBuf)> = targets.iter().filter(|t| !t.2.is_file()).collect();
            let kept = targets.len() - todo.len();
            if todo.is_empty() {
                observer.advanced(1);
                return Ok((0, kept));
            }
            let img = resize_crop(&item.load(&limits, Exif::from_flag(spec.exif_orientation))?, &spec)?;
            for (c, s, path) in &todo {
                let corrupted = corruptor.apply(
                    &img,
                    *c,
                    *s,
                    seed_for(options.seed, &[item.key.as_bytes(), c.name().as_bytes(), &[*s]]),
                )?;
                write_atomic(path, &encode(&corrupted, options.format)?)?;
            }
            observer.advanced(1);
            Ok((todo.len(), kept))
        })
        .collect::<Result<Vec<_>, _>>()?;
    observer.part_finished("corrupt", false);
    Ok(CorruptSetSummary {
        images: items.len(),
        written: counts.iter().map(|c| c.0).sum(),
        kept: counts.iter().map(|c| c.1).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hardy corrupt`'s JPEG files are Pillow's `save(quality=85, optimize=True)` bytes, as
    /// the released files were written (reference written by `scripts/make_jpeg_reference.py`).
    #[test]
    fn jpeg_files_are_written_as_pillow_with_optimize() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corrupt/tests/data/corrupt");
        let img = image::open(data.join("input224.png")).unwrap().to_rgb8();
        let ours = encode(&img, OutputFormat::Jpeg(85)).unwrap();
        assert!(ours == std::fs::read(data.join("jpeg/q85_opt_224x224.jpg")).unwrap());
        let png = encode(&img, OutputFormat::Png).unwrap();
        assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8(), img);
    }
}
