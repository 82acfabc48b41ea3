//! `vlp data shapes` and `vlp data inspect`.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::preprocess::ImagePipeline;
use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};
use vlp_data::source::open_source;
use vlp_data::writer::{Format, write_shapes};

/// `vlp data ...`.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write ShapesWorld samples as WebDataset shards, an ImageFolder tree or a CSV table.
    Shapes(ShapesArgs),
    /// Read a source once through the loader; print one JSON line with counts, skips and speed.
    Inspect(InspectArgs),
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutFormat {
    /// Tar shards.
    Wds,
    /// One folder per class (the main object's colour and shape).
    Imagefolder,
    /// `images/` plus a `<split>.csv` with `filepath,title`.
    Csv,
}

/// Split to write.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    /// Training split.
    Train,
    /// Validation split.
    Val,
    /// Test split.
    Test,
    /// Test split with held-out attribute combinations.
    Unseen,
}

/// Arguments of `vlp data shapes`.
#[derive(Args, Debug)]
pub struct ShapesArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Number of samples.
    #[arg(long)]
    samples: usize,
    /// Samples per shard (wds).
    #[arg(long, default_value_t = 1000)]
    shard_size: usize,
    /// World seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "wds")]
    format: OutFormat,
    /// Split.
    #[arg(long, value_enum, default_value = "train")]
    split: SplitArg,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    image_size: usize,
}

/// Arguments of `vlp data inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Source spec: `wds:DIR/shards-{0000..0003}.tar`, `csv:FILE`, `jsonl:FILE`,
    /// `imagefolder:DIR`, `coco:FILE`, `shapes:SPLIT:N`, `scenes:SPLIT:N`.
    source: String,
    /// Decode and preprocess to this side, as training would.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Samples per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

/// Runs a `vlp data` subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Shapes(a) => {
            let cfg = ShapesWorldConfig {
                seed: a.seed,
                image_size: a.image_size,
                ..Default::default()
            };
            let world = ShapesWorld::new(cfg)?;
            let split = match a.split {
                SplitArg::Train => Split::Train,
                SplitArg::Val => Split::Val,
                SplitArg::Test => Split::Test,
                SplitArg::Unseen => Split::Unseen,
            };
            let format = match a.format {
                OutFormat::Wds => Format::Wds {
                    shard_size: a.shard_size,
                },
                OutFormat::Imagefolder => Format::ImageFolder,
                OutFormat::Csv => Format::Csv,
            };
            let start = Instant::now();
            let files = write_shapes(&world, split, a.samples, &a.out, format)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"samples": a.samples, "files": files.len(), "out": a.out, "seconds": secs, "samples_per_s": a.samples as f64 / secs})
            );
            Ok(())
        }
        DataCommand::Inspect(a) => {
            // Opening the source is the one thing that can fail; everything after is reported.
            let source = open_source(&a.source, &ShapesWorldConfig::default())?;
            let workers = a.workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let cfg = LoaderConfig {
                batch_size: a.batch_size,
                workers,
                shuffle: false,
                drop_last: false,
                max_skip_fraction: 1.0,
                ..Default::default()
            };
            let loader = Loader::new(source, ImagePipeline::clip(a.size), None, cfg)?;
            let start = Instant::now();
            let mut epoch = loader.epoch(0, 0);
            let mut read = 0usize;
            let mut errors = Vec::new();
            for b in epoch.by_ref() {
                match b {
                    Ok(b) => read += b.len(),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let stats = epoch.stats();
            let skipped: serde_json::Map<String, serde_json::Value> = stats
                .skipped
                .iter()
                .map(|(reason, items)| {
                    let list: Vec<serde_json::Value> = items
                        .iter()
                        .map(|(k, d)| serde_json::json!({"key": k, "detail": d}))
                        .collect();
                    (reason.clone(), serde_json::Value::Array(list))
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "source": a.source,
                    "samples_read": read,
                    "samples_skipped": stats.skipped_count(),
                    "skipped": skipped,
                    "errors": errors,
                    "seconds": secs,
                    "samples_per_s": read as f64 / secs.max(1e-9),
                })
            );
            Ok(())
        }
    }
}
