//! `vlp caption`: describe images with a model that has a decoder (a `kind = "ptp"` run's
//! `final/`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use vlp_core::backend::default_device;
use vlp_data::Preprocess;
use vlp_data::preprocess::load_image;
use vlp_tasks::caption::load_captioner;

use crate::eval::B;

/// Arguments of `vlp caption`.
#[derive(Args, Debug)]
pub struct CaptionArgs {
    /// A model directory with a decoder (the `final/` of a `kind = "ptp"` run).
    #[arg(long)]
    model: PathBuf,
    /// Beams of the beam search (1: greedy).
    #[arg(long, default_value_t = 3)]
    beams: usize,
    /// The images; one JSON line is printed per image.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Captions every image; prints one JSON line each.
pub fn run(args: CaptionArgs) -> anyhow::Result<()> {
    if !(1..=64).contains(&args.beams) {
        bail!("--beams {} is not in 1..=64", args.beams);
    }
    let dev = default_device();
    let m = load_captioner::<B>(&args.model, &dev)?;
    // Every image is read before the first caption: a missing one stops the run up front.
    let size = m.pipeline.size;
    let mut pixels = Vec::with_capacity(args.images.len() * 3 * size * size);
    for path in &args.images {
        let img = load_image(path).with_context(|| format!("reading {}", path.display()))?;
        pixels.extend(m.pipeline.process(&img));
    }
    let n = args.images.len();
    let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, size, size]), &dev);
    let captions = m.caption(images, args.beams)?;
    for (path, c) in args.images.iter().zip(&captions) {
        println!(
            "{}",
            serde_json::json!({
                "image": path.display().to_string(),
                "caption": c.text,
                "log_prob": c.log_prob,
                "finished": c.finished,
            })
        );
    }
    Ok(())
}
