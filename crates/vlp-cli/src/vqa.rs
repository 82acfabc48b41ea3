//! `vlp vqa`: answer a question about an image with a trained question-answering model.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use vlp_core::backend::default_device;
use vlp_data::preprocess::load_image;
use vlp_data::{Annotations, ObjectBox, Preprocess};
use vlp_tasks::vqa::{answer, load_vqa_model};

use crate::eval::B;

/// Arguments of `vlp vqa`.
#[derive(Args, Debug)]
pub struct VqaArgs {
    /// A question-answering model directory (the `final/` of a `kind = "lxmert"` run).
    #[arg(long)]
    model: PathBuf,
    /// The image.
    #[arg(long)]
    image: PathBuf,
    /// The question.
    #[arg(long)]
    question: String,
    /// An object's box `x0,y0,x1,y1` in the image's pixels, once per object (the model reads
    /// objects, as from a detector). Without any, the whole image is one object.
    #[arg(long = "box", value_parser = parse_box)]
    boxes: Vec<[f32; 4]>,
}

fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("box \"{s}\": {e} (expected x0,y0,x1,y1)"))?;
    match v[..] {
        [x0, y0, x1, y1] if v.iter().all(|c| c.is_finite()) && x1 > x0 && y1 > y0 => {
            Ok([x0, y0, x1, y1])
        }
        _ => Err(format!(
            "box \"{s}\": expected four finite numbers x0,y0,x1,y1 with x1 > x0 and y1 > y0"
        )),
    }
}

/// Answers the question; prints one JSON line.
pub fn run(args: VqaArgs) -> anyhow::Result<()> {
    if args.question.trim().is_empty() {
        bail!("--question is empty");
    }
    let dev = default_device();
    let m = load_vqa_model::<B>(&args.model, &dev)?;
    let img =
        load_image(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let (w, h) = (img.width(), img.height());
    if let Some(b) = args
        .boxes
        .iter()
        .find(|b| b[0] < 0.0 || b[1] < 0.0 || b[2] > w as f32 || b[3] > h as f32)
    {
        bail!(
            "box {:?} is outside the {w}×{h} image {}",
            b,
            args.image.display()
        );
    }
    let size = m.pipeline.size;
    let pixels = m.pipeline.process(&img);
    // Boxes follow the resize and centre crop into model pixels.
    let g = m.pipeline.geometry(w, h);
    let annotations = Annotations {
        boxes: args
            .boxes
            .iter()
            .map(|&b| ObjectBox {
                bbox: g.map_box(b),
                label: None,
                name: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    // A box the centre crop cuts away would silently become the whole-image fallback.
    let visible = vlp_tasks::vqa::visible_objects(&annotations).len();
    if visible != args.boxes.len() {
        bail!(
            "{} of the {} boxes lie outside the model's centre crop of {}",
            args.boxes.len() - visible,
            args.boxes.len(),
            args.image.display()
        );
    }
    let boxes = vlp_tasks::vqa::object_boxes(&annotations, size);
    let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [1, 3, size, size]), &dev);
    let got = answer(
        &m.model,
        m.tokenizer.as_ref(),
        &m.answers,
        images,
        vec![boxes.clone()],
        &[args.question.as_str()],
    )?;
    let a = &got[0];
    println!(
        "{}",
        serde_json::json!({
            "image": args.image.display().to_string(),
            "question": args.question,
            "answer": a.answer,
            "probability": a.probability,
            "objects": boxes.len(),
        })
    );
    Ok(())
}
