//! Corruption speed: median time per 224x224 image for each of the 19 corruptions at severity
//! 3, single-threaded, and the ratio to the Python port's time when its timings are given.
//!
//! Times are the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`; the Python side uses
//! `time.thread_time`), so that a busy shared machine inflates both sides alike instead of
//! adding whatever scheduling delay each side happened to suffer. Wall-clock medians are
//! printed too.
//!
//! `cargo bench -p hardy-corrupt --bench corrupt_speed [-- PYTHON_TIMINGS.json]`; the JSON maps a
//! corruption name to the port's median milliseconds (written by
//! `scripts/corruption_speed.py`). `benches/corrupt_speed.sh` runs both.

use std::time::Instant;

/// CPU time consumed by the calling thread, in milliseconds.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
}

use corrupt::{Corruption, Corruptor, FROST_WHEEL, FrostWheel};

/// The reference's frost textures, fetched into Hardy's cache on first use (as Hardy's
/// evaluator does it, through the engine's provisioning).
fn provisioned_frost() -> std::path::PathBuf {
    let spec = engine::provision::WheelSpec {
        name: FROST_WHEEL.name,
        version: FROST_WHEEL.version,
        platform: None,
    };
    let dest = engine::provision::cache_root().join(FROST_WHEEL.cache_dir_name());
    engine::provision::ensure_unpacked(&spec, &dest, FrostWheel::member_path).expect("frost textures")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let python: Option<serde_json::Map<String, serde_json::Value>> = args.first().map(|p| {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p} is not a JSON object: {e}"))
    });
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corrupt/input224.png");
    let img = image::open(&input).expect("read the committed input").to_rgb8();
    let c = Corruptor::new(Some(provisioned_frost())).expect("frost textures");
    // CORRUPT_ONLY=name limits the run to one corruption (for profiling); CORRUPT_REPS sets
    // the number of timed calls (default 60).
    let only = std::env::var("CORRUPT_ONLY").ok();
    let reps: u64 = std::env::var("CORRUPT_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    println!("| corruption | Hardy CPU ms (wall) | Python port CPU ms | speed-up |");
    println!("|---|---|---|---|");
    let mut ratios = vec![];
    for corruption in Corruption::ALL
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.name()))
    {
        for seed in 0..3 {
            c.apply(&img, corruption, 3, seed).unwrap();
        }
        let (mut times, mut walls): (Vec<f64>, Vec<f64>) = (0..reps)
            .map(|seed| {
                let (t, c0) = (Instant::now(), thread_cpu_ms());
                let out = c.apply(&img, corruption, 3, seed).unwrap();
                let dt = thread_cpu_ms() - c0;
                let wall = t.elapsed().as_secs_f64() * 1e3;
                std::hint::black_box(out);
                (dt, wall)
            })
            .unzip();
        times.sort_by(f64::total_cmp);
        walls.sort_by(f64::total_cmp);
        let ours = times[reps as usize / 2];
        let wall = walls[reps as usize / 2];
        let theirs = python
            .as_ref()
            .and_then(|m| m.get(corruption.name()))
            .and_then(|v| v.as_f64());
        match theirs {
            Some(p) => {
                ratios.push(p / ours);
                println!(
                    "| {} | {ours:.3} ({wall:.3}) | {p:.2} | {:.1}x |",
                    corruption.name(),
                    p / ours
                )
            }
            None => println!("| {} | {ours:.3} ({wall:.3}) | - | - |", corruption.name()),
        }
    }
    if !ratios.is_empty() {
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        println!("\ngeometric mean speed-up {geo:.1}x, lowest {min:.1}x");
    }
    if only.as_deref().is_none_or(|o| o == "files") {
        file_writing(&img, reps, python.as_ref());
    }
}

/// How long one output file of `hardy corrupt` takes to write (224x224): Hardy's JPEG encoder
/// (Pillow's bytes) against the `image` crate's JPEG and PNG encoders in this process, and
/// Pillow's `save(quality=85, optimize=True)` when the Python timings hold it.
fn file_writing(img: &image::RgbImage, reps: u64, python: Option<&serde_json::Map<String, serde_json::Value>>) {
    use corrupt::{HuffmanTables, jpeg_encode};
    let time = |f: &dyn Fn() -> Vec<u8>| {
        let mut t: Vec<f64> = (0..reps.max(60))
            .map(|_| {
                let c0 = thread_cpu_ms();
                std::hint::black_box(f());
                thread_cpu_ms() - c0
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let raw = img.as_raw();
    let ours = time(&|| jpeg_encode(raw, 224, 224, 85, HuffmanTables::Optimal).unwrap_or_default());
    let standard = time(&|| jpeg_encode(raw, 224, 224, 85, HuffmanTables::Standard).unwrap_or_default());
    let crate_jpeg = time(&|| {
        let mut v = Vec::new();
        let _ = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut v, 85).encode_image(img);
        v
    });
    let crate_png = time(&|| {
        let mut v = Vec::new();
        let _ = img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png);
        v
    });
    println!("\n| writing one 224x224 file | CPU ms | Hardy's optimised JPEG is |");
    println!("|---|---|---|");
    println!("| Hardy JPEG q85, optimised tables (`hardy corrupt`) | {ours:.3} | 1.0x |");
    println!(
        "| Hardy JPEG q85, standard tables | {standard:.3} | {:.1}x |",
        standard / ours
    );
    println!(
        "| `image` crate JPEG q85 | {crate_jpeg:.3} | {:.1}x faster |",
        crate_jpeg / ours
    );
    println!(
        "| `image` crate PNG | {crate_png:.3} | {:.1}x faster |",
        crate_png / ours
    );
    if let Some(p) = python
        .and_then(|m| m.get("file:jpeg_q85_optimize"))
        .and_then(|v| v.as_f64())
    {
        println!(
            "| Pillow `save(quality=85, optimize=True)` | {p:.3} | {:.1}x faster |",
            p / ours
        );
    }
    // Reading that file back (libjpeg-turbo, Hardy's one decode path) against the round trip
    // that jpeg_compression runs in memory instead of writing and reading a file.
    let file = jpeg_encode(raw, 224, 224, 85, HuffmanTables::Optimal).unwrap_or_default();
    let limits = engine::decode::ImageLimits::default();
    let turbo = time(&|| {
        engine::decode::decode(&file, &limits, engine::decode::Exif::Ignore)
            .map(|i| i.into_raw())
            .unwrap_or_default()
    });
    let write_and_read = ours + turbo;
    let in_memory = time(&|| corrupt::ops::jpeg_roundtrip(raw, 224, 224, 85));
    println!("\n| JPEG round trip of one 224x224 image, q85 | CPU ms | the in-memory round trip is |");
    println!("|---|---|---|");
    println!("| in memory (`ops::jpeg_roundtrip`, jpeg_compression) | {in_memory:.3} | 1.0x |");
    println!(
        "| reading the file with libjpeg-turbo (`engine::decode`) | {turbo:.3} | {:.1}x faster |",
        turbo / in_memory
    );
    println!(
        "| writing it (`jpeg_encode`) and reading it | {write_and_read:.3} | {:.1}x faster |",
        write_and_read / in_memory
    );
}
