//! `vlp tokenize` and `vlp preprocess`: the input side, for porting and debugging.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use vlp_core::checkpoint::{HostTensor, StoredDType, write_safetensors};
use vlp_data::{ImagePipeline, Preprocess};
use vlp_text::Padding;

/// Padding of the built-in CLIP tokenizer.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Pad {
    /// Pad with id 0 (open_clip).
    Zero,
    /// Pad with the end token (transformers).
    Eot,
}

/// Arguments of `vlp tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// `clip` for the built-in CLIP BPE, `words` for ShapesWorld's word tokenizer, or the path of
    /// a Hugging Face tokenizer.json.
    #[arg(long, default_value = "clip")]
    tokenizer: String,
    /// Tokens per text (padding and truncation length); default 77, or the tokenizer.json's own.
    #[arg(long)]
    context_length: Option<usize>,
    /// Padding of the built-in tokenizer (a tokenizer.json brings its own pad token).
    #[arg(long, value_enum, default_value = "zero")]
    pad: Pad,
    /// Texts to tokenise; one JSON line is printed per text.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// Prints `{"ids": [...], "attention_mask": [...]}` per text.
pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let pad = match args.pad {
        Pad::Zero => Padding::Zero,
        Pad::Eot => Padding::Eot,
    };
    let tok = match (args.tokenizer.as_str(), args.context_length) {
        // A tokenizer.json keeps its own length unless told otherwise.
        (path, None) if path != "clip" && path != "words" => {
            vlp_text::tokenizer::from_hf(vlp_text::HfTokenizer::from_file(path, None)?).tokenizer
        }
        (kind, n) => {
            vlp_text::tokenizer::resolve(
                kind,
                n.unwrap_or(77),
                pad,
                &vlp_data::shapes::vocabulary(),
            )?
            .tokenizer
        }
    };
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let batch = tok.encode_batch(&texts)?;
    for i in 0..batch.batch {
        let e = batch.row(i);
        println!(
            "{}",
            serde_json::json!({"ids": e.ids, "attention_mask": e.attention_mask})
        );
    }
    Ok(())
}

/// Image pipeline style.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Style {
    /// Shortest side, bicubic, centre crop, CLIP mean/std.
    Clip,
    /// Squash to the square, bicubic, mean = std = 0.5.
    Siglip,
    /// Shortest side, bilinear, centre crop, ImageNet mean/std.
    Imagenet,
}

/// Arguments of `vlp preprocess`.
#[derive(Args, Debug)]
pub struct PreprocessArgs {
    /// Image files (JPEG, PNG, WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output side in pixels.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Pipeline style.
    #[arg(long, value_enum, default_value = "clip")]
    style: Style,
    /// Output safetensors file: one `[3, size, size]` f32 tensor per image, named by file stem.
    #[arg(long)]
    out: PathBuf,
}

/// Preprocesses the images on all cores and writes them to one safetensors file.
pub fn preprocess(args: PreprocessArgs) -> anyhow::Result<()> {
    if args.size == 0 {
        bail!("--size must be positive");
    }
    let pipe = match args.style {
        Style::Clip => ImagePipeline::clip(args.size),
        Style::Siglip => ImagePipeline::siglip(args.size),
        Style::Imagenet => ImagePipeline::imagenet(args.size),
    };
    let mut stems = BTreeMap::new();
    for p in &args.images {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("{}: no usable file name", p.display()))?;
        if let Some(prev) = stems.insert(stem.to_string(), p) {
            bail!(
                "{} and {} would both be stored as \"{stem}\"",
                prev.display(),
                p.display()
            );
        }
    }
    let mut tensors = BTreeMap::new();
    for (stem, result) in stems
        .keys()
        .zip(pipe.load_batch(&stems.values().collect::<Vec<_>>()))
    {
        tensors.insert(
            stem.clone(),
            HostTensor::new(vec![3, args.size, args.size], result?),
        );
    }
    write_safetensors(&args.out, &tensors, StoredDType::F32, None)?;
    println!("wrote {} images to {}", tensors.len(), args.out.display());
    Ok(())
}
