//! `hardy corrupt`: write a corrupted copy of a data set in the released ImageNet-C layout.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use eval::{
    Corruption,
    corrupt::FrostSource,
    corrupt_set::{CorruptSetOptions, OutputFormat, write_corrupted},
    dataset::Shard,
    suite::DataSource,
};

use crate::eval::{Bars, parse_names};

/// Arguments of `hardy corrupt`.
#[derive(clap::Args)]
pub struct Args {
    /// The source: an ImageFolder, a flat folder of labelled files, or an IDX image file.
    #[arg(long)]
    data: PathBuf,
    /// Output root: `<corruption>/<severity>/<class>/<file>`.
    #[arg(long)]
    out: PathBuf,
    /// Corruptions: `benchmark` (the 15), `all` (19), or comma-separated names.
    #[arg(long, default_value = "benchmark")]
    corruptions: String,
    /// Severities.
    #[arg(long, default_value = "1,2,3,4,5", value_delimiter = ',')]
    severities: Vec<u8>,
    /// Resize the shorter side to this before cropping (ImageNet-C: 256).
    #[arg(long, default_value_t = 256)]
    resize: u32,
    /// Centre crop size; corruptions run at this size (ImageNet-C: 224).
    #[arg(long, default_value_t = 224)]
    crop: u32,
    /// `jpeg` (as released: the bytes Pillow writes at `--quality` with optimised Huffman
    /// tables) or `png` (lossless).
    #[arg(long, default_value = "jpeg")]
    format: String,
    /// JPEG quality.
    #[arg(long, default_value_t = 85)]
    quality: u8,
    /// Base seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Frost textures: a directory of images (default: fetched from PyPI imagecorruptions).
    #[arg(long)]
    frost_dir: Option<PathBuf>,
    /// Only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Write share i of n (0-based), e.g. 1/4.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// No progress bars or status lines on stderr (the summary still goes to stdout).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `hardy corrupt`.
pub fn run(args: Args) -> Result<ExitCode> {
    let format = match args.format.as_str() {
        "jpeg" | "jpg" => OutputFormat::Jpeg(args.quality),
        "png" => OutputFormat::Png,
        other => anyhow::bail!("--format: `{other}` is not jpeg or png"),
    };
    let options = CorruptSetOptions {
        corruptions: parse_names(&args.corruptions, &Corruption::BENCHMARK, &Corruption::ALL)
            .context("--corruptions")?,
        severities: args.severities,
        resize: args.resize,
        crop: args.crop,
        format,
        seed: args.seed,
        frost: Some(match args.frost_dir {
            Some(dir) => FrostSource::Dir(dir),
            None => FrostSource::Provisioned,
        }),
        limit: args.limit,
        shard: args.shard.parse::<Shard>().context("--shard")?,
    };
    let source = DataSource::resolve(&args.data)?;
    // No model is involved: class folders are taken as they are and copied by name.
    let items = source.items(&source.own_classes()?)?;
    let summary = write_corrupted(items, &args.out, &options, &Bars::new(args.quiet))?;
    println!(
        "{} images -> {} files written, {} already there, under {}",
        summary.images,
        summary.written,
        summary.kept,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
