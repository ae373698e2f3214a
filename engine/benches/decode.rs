//! Decode time of the one image path (`engine::decode`: libjpeg-turbo for JPEG) against the
//! `image` crate's decoders (zune-jpeg for JPEG), which `hardy serve` used before, on the same
//! files in the same process. Prints a Markdown table of median milliseconds per image and
//! the ratio; single-threaded.
//!
//! `cargo bench -p hardy-engine --bench decode [-- REPS]`

use std::path::Path;
use std::time::Instant;

use engine::decode::{Exif, ImageLimits, decode};

/// Median wall-clock milliseconds of `reps` calls of `f`.
fn median_ms(reps: usize, f: &dyn Fn() -> usize) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(f());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let reps: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    let foolbox = engine::provision::foolbox_imagenet_samples().expect("the foolbox ImageNet samples");
    let parity = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity"));
    let files = [
        (
            "JPEG 512x512 (foolbox imagenet_00_243)",
            foolbox.join("imagenet_00_243.jpg"),
        ),
        (
            "JPEG 1024x683 (foolbox imagenet_10_541)",
            foolbox.join("imagenet_10_541.jpg"),
        ),
        (
            "JPEG 320x240 progressive (parity input)",
            parity.join("input_progressive_320x240.jpg"),
        ),
        ("PNG 221x165 RGBA (parity input)", parity.join("input_rgba_221x165.png")),
    ];
    let limits = ImageLimits::default();
    println!("{reps} decodes per file, median ms per image, one thread");
    println!();
    println!("| file | `engine::decode` | `image` crate | engine / image crate |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for (name, path) in &files {
        let bytes = std::fs::read(path).expect("read the file");
        let ours = median_ms(reps, &|| {
            decode(&bytes, &limits, Exif::Apply).map(|i| i.len()).unwrap_or(0)
        });
        let crate_ms = median_ms(reps, &|| {
            image::load_from_memory(&bytes).map(|i| i.to_rgb8().len()).unwrap_or(0)
        });
        let ratio = ours / crate_ms;
        if name.starts_with("JPEG") {
            ratios.push(ratio);
        }
        println!("| {name} | {ours:.3} | {crate_ms:.3} | {ratio:.2} |");
    }
    let geo = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    println!();
    println!("JPEG geometric mean engine / image crate: {:.2}", geo.exp());
}
