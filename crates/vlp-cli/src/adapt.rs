//! `vlp adapt`: adapt a pretrained model to labelled classes with a few shots per class, save
//! the adapter, and (with `--eval-data`) report its accuracy; `vlp eval --adapter` applies a
//! saved one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use vlp_align::adapter::{ClipAdapterConfig, SgvaConfig};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, MapleConfig};
use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_curate::describe::{DescriptionSource, TemplateDescriptions};
use vlp_data::augment::AugmentConfig;
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::shapes::ShapesWorldConfig;
use vlp_data::source::open_source;
use vlp_tasks::adapt::{Adapter, AdapterSpec, adapt};
use vlp_tasks::battery::require_labels;
use vlp_tasks::battery::{EvalImages, ZeroShotReport, zero_shot_report};
use vlp_tasks::bundle::{Bundle, load_bundle};
use vlp_tasks::embed::Features;
use vlp_tasks::fewshot::{GistConfig, ImageRows, Pixels, ShotViews, k_shot_indices};
use vlp_tasks::scoring::MatrixScorer;
use vlp_tasks::templates::load_templates;

/// Adaptation method.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Method {
    /// CoOp: a learned prompt context (16 random vectors by default).
    Coop,
    /// SgVA-CLIP: a CoOp prompt, a visual adapter and support prototypes.
    Sgva,
    /// MaPLe: coupled prompts in both towers (2 vectors from "a photo of a", depth ≤ 9).
    Maple,
    /// Tip-Adapter: a cache of the shots over the zero-shot classifier (no training).
    TipAdapter,
    /// Logistic regression on frozen features.
    LinearProbe,
    /// ProAPO: an evolutionary search for the template set (from `--templates`, the library)
    /// that classifies the shots best.
    Proapo,
    /// GIST: each shot matched to its class's descriptions (`--descriptions`), the model
    /// fine-tuned on those pairs, a linear probe on the tuned image features.
    Gist,
}

/// `vlp adapt [bench]`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AdaptCommand {
    /// `bench`: the benchmark harness.
    #[command(subcommand)]
    sub: Option<AdaptSub>,
    #[command(flatten)]
    args: Option<AdaptArgs>,
}

/// Subcommands of `vlp adapt`.
#[derive(clap::Subcommand, Debug)]
pub enum AdaptSub {
    /// Run the few-shot benchmark harness: few-shot, base-to-novel or cross-domain protocol
    /// over methods, shots and seeds; a table, a JSON report (last line) and a plot.
    Bench(crate::adapt_bench::BenchArgs),
}

/// Runs `vlp adapt` or `vlp adapt bench`.
pub fn command(cmd: AdaptCommand) -> anyhow::Result<()> {
    match (cmd.sub, cmd.args) {
        (Some(AdaptSub::Bench(b)), _) => crate::adapt_bench::run(b),
        (None, Some(a)) => run(a),
        (None, None) => bail!("vlp adapt needs --model, --method, --train-data, --shots and --out"),
    }
}

/// Arguments of `vlp adapt`.
#[derive(Args, Debug)]
pub struct AdaptArgs {
    /// Model directory (transformers or open_clip layout, or a run's `final/`).
    #[arg(long)]
    model: PathBuf,
    /// The method.
    #[arg(long, value_enum)]
    method: Method,
    /// Labelled training data: `imagefolder:DIR`, `shapes:train:N`, ...
    #[arg(long)]
    train_data: String,
    /// Shots per class drawn from the training data.
    #[arg(long)]
    shots: usize,
    /// Seed of the shots and the training.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write `adapter.json` and `adapter.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// Labelled data to report the adapted accuracy on (the same classes, by name).
    #[arg(long)]
    eval_data: Option<String>,
    /// Class names for the prompts, one per line: `FOLDER<TAB>NAME` names the data's class
    /// `FOLDER` (an ImageNet synset folder) `NAME`, a line without a tab keeps the data's name;
    /// it must list every class of the training and evaluation data (it may list more). Give
    /// the same file to `vlp eval --adapter`: classes are matched by these names.
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Prompt templates of Tip-Adapter's zero-shot classifier, or ProAPO's library (its first
    /// is the search's baseline): `openai`, `simple` or a file.
    #[arg(long, default_value = "openai")]
    templates: String,
    /// Tokenizer override: `clip` or a tokenizer.json.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Context vectors of CoOp, SgVA-CLIP's prompt or MaPLe (defaults: 16, 16, 2).
    #[arg(long)]
    n_ctx: Option<usize>,
    /// Phrase initialising the context (`none`: random; defaults: random for CoOp and SgVA-CLIP,
    /// "a photo of a" for MaPLe).
    #[arg(long)]
    ctx_init: Option<String>,
    /// Training epochs (defaults: CoOp's code, 50 for 1–2 shots, 100 for 4–8, 200 for more;
    /// MaPLe's 5).
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate (defaults: 0.002; MaPLe 0.0035).
    #[arg(long)]
    lr: Option<f64>,
    /// Shots per step (defaults: 32; MaPLe 4; GIST 20 pairs).
    #[arg(long)]
    batch_size: Option<usize>,
    /// GIST: the class descriptions, a JSON file as `vlp curate describe --out` writes it (for
    /// an LLM's: `--source llm`); without it, the offline template source with 20 % wrong
    /// descriptions (seeded by `--seed`).
    #[arg(long)]
    descriptions: Option<PathBuf>,
    /// Train on this many augmented views of each shot (a random resized crop and a flip, as
    /// CoOp's and MaPLe's code draw at every step) instead of the shots; the default epochs and
    /// the warm-up are divided by it, so each of the code's epochs sees one view per shot. The
    /// views are drawn up front and held in memory: V × shots images.
    #[arg(long, default_value_t = 0)]
    views: usize,
    /// The smallest crop of `--views` and of GIST's per-step crops, as a fraction of the
    /// image's area (torchvision's 0.08; raise it when the objects are small).
    #[arg(long, default_value_t = 0.08)]
    crop_scale: f32,
    /// GIST: descriptions per class drawn from the offline source.
    #[arg(long, default_value_t = 10)]
    descriptions_per_class: usize,
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn shapes_of(bundle: &Bundle<DefaultBackend>) -> ShapesWorldConfig {
    ShapesWorldConfig {
        image_size: bundle.config.vision.image_size,
        ..Default::default()
    }
}

/// The labelled images of `spec` as frozen features of `bundle`'s model, streamed (no pixels
/// held), with their labels and the source's class names, renamed by `names` (a `--classes`
/// file listing at least the data's classes).
fn labelled(
    spec: &str,
    names: Option<&PathBuf>,
    bundle: &Bundle<DefaultBackend>,
) -> anyhow::Result<(Features, Vec<usize>, Vec<String>)> {
    let source = open_source(spec, &shapes_of(bundle))?;
    let classes = crate::eval::class_names_within(&source, names)?;
    let set = crate::eval::images(bundle, source, 64, spec)?;
    let labels = require_labels(&set.labels, &set.keys, spec)?;
    Ok((set.features, labels, classes))
}

/// The pixels of the images of `spec` at positions `idx` (increasing), read in a second pass
/// that keeps only them.
fn pixels_of(spec: &str, bundle: &Bundle<DefaultBackend>, idx: &[usize]) -> anyhow::Result<Pixels> {
    let keep: std::collections::HashSet<usize> = idx.iter().copied().collect();
    let source = open_source(spec, &shapes_of(bundle))?;
    let set = EvalImages::load_where(source, &bundle.pipeline, workers(), &|i| keep.contains(&i))?;
    if set.len() != idx.len() {
        bail!(
            "{spec}: {} of the {} chosen images could be read again (did the data change?)",
            set.len(),
            idx.len()
        );
    }
    Ok(set.pixels())
}

/// `adapter` applied to the labelled images of `spec`: their classes (renamed by `names`, a
/// `--classes` file, which may list more) are matched to the adapter's by name, then scored as
/// zero-shot is (top-1, top-5, per class, confusion). Images are streamed: a method that runs
/// the image tower (MaPLe) gets them batch by batch.
pub fn evaluate_adapter(
    adapter: &Adapter<DefaultBackend>,
    bundle: &Bundle<DefaultBackend>,
    spec: &str,
    names: Option<&PathBuf>,
    adapter_dir: &Path,
) -> anyhow::Result<ZeroShotReport> {
    let device = default_device();
    let tok = bundle.tokenizer.as_ref();
    let (scores, labels, classes) = if adapter.info.spec.needs_pixels() {
        let source = open_source(spec, &shapes_of(bundle))?;
        let classes = crate::eval::class_names_within(&source, names)?;
        let cfg = LoaderConfig {
            batch_size: 64,
            workers: workers(),
            shuffle: false,
            drop_last: false,
            require_caption: false,
            max_skip_fraction: 1.0,
            ..Default::default()
        };
        let loader = Loader::new(source, bundle.pipeline.clone(), None, cfg)?;
        let (mut scores, mut labels, mut keys) = (Features::default(), Vec::new(), Vec::new());
        let mut epoch = loader.epoch(0, 0);
        for b in epoch.by_ref() {
            let b = b?;
            // Only the prompted tower runs: the plain image features would go unused.
            let pixels = Pixels {
                rows: b.len(),
                image_size: bundle.pipeline.size,
                data: b.images,
            };
            scores.extend(adapter.scores_pixels(&bundle.model, tok, &pixels, &device)?);

            labels.extend(b.labels);
            keys.extend(b.keys);
        }
        if keys.is_empty() {
            bail!("{spec}: no usable image ({})", epoch.stats().summary());
        }
        if epoch.stats().skipped_count() > 0 {
            eprintln!("warning: {spec}: {}", epoch.stats().summary());
        }
        (scores, require_labels(&labels, &keys, spec)?, classes)
    } else {
        let (features, labels, classes) = labelled(spec, names, bundle)?;
        let rows = ImageRows {
            features,
            pixels: None,
        };
        let scores = adapter.scores(&bundle.model, tok, &rows, &device)?;
        (scores, labels, classes)
    };
    // Every class of the data must be one the adapter knows (it may know more: a test set
    // without some class is still scored among all of them).
    let missing: Vec<&String> = classes
        .iter()
        .filter(|c| !adapter.info.classes.contains(c))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{spec} has classes the adapter in {} was not trained on: {missing:?}",
            adapter_dir.display()
        );
    }
    let to_adapter: Vec<usize> = classes
        .iter()
        .map(|c| {
            adapter
                .info
                .classes
                .iter()
                .position(|a| a == c)
                .expect("checked")
        })
        .collect();
    let labels: Vec<usize> = labels.iter().map(|&l| to_adapter[l]).collect();
    Ok(zero_shot_report(
        &MatrixScorer::new(&scores),
        &labels,
        &adapter.info.classes,
        1,
    )?)
}

/// The random resized crop (from `--crop-scale`) and flip of views and of GIST's steps.
fn crop(args: &AdaptArgs) -> AugmentConfig {
    AugmentConfig {
        scale: [args.crop_scale, 1.0],
        hflip: 0.5,
        ..Default::default()
    }
}

fn spec_of(
    args: &AdaptArgs,
    embed_dim: usize,
    layers: usize,
    classes: &[String],
) -> anyhow::Result<AdapterSpec> {
    let init = |default: Option<&str>| match args.ctx_init.as_deref() {
        Some("none") => None,
        Some(p) => Some(p.to_string()),
        None => default.map(str::to_string),
    };
    let coop = || {
        let c = CoopConfig::new().with_init(init(None));
        match args.n_ctx {
            Some(n) => c.with_n_ctx(n),
            None => c,
        }
    };
    Ok(match args.method {
        Method::Coop => AdapterSpec::Coop { config: coop() },
        Method::Sgva => AdapterSpec::Sgva {
            config: SgvaConfig::new(ClipAdapterConfig::new(embed_dim), coop()),
        },
        Method::Maple => {
            let c = MapleConfig::new()
                .with_init(init(Some("a photo of a")))
                .with_depth(9.min(layers));
            AdapterSpec::Maple {
                config: match args.n_ctx {
                    Some(n) => c.with_n_ctx(n),
                    None => c,
                },
            }
        }
        Method::TipAdapter => AdapterSpec::TipAdapter {
            alpha: 1.0,
            beta: 5.5,
            templates: load_templates(&args.templates)?,
        },
        Method::LinearProbe => AdapterSpec::LinearProbe { lambda: 1e-3 },
        Method::Proapo => AdapterSpec::Proapo {
            config: vlp_tasks::fewshot::ProapoConfig::default(),
            library: load_templates(&args.templates)?,
        },
        Method::Gist => {
            // The code crops and flips every image at every step.
            let mut config = GistConfig::new().with_augment(Some(crop(args)));
            if let Some(e) = args.epochs {
                config = config.with_epochs(e);
            }
            if let Some(lr) = args.lr {
                config = config.with_lr(lr);
            }
            if let Some(b) = args.batch_size {
                config = config.with_batch_size(b);
            }
            AdapterSpec::Gist {
                config,
                descriptions: descriptions_for(args, classes)?,
            }
        }
    })
}

/// GIST's descriptions of `classes`, in their order: from `--descriptions` (matched by class
/// name) or the offline template source.
fn descriptions_for(args: &AdaptArgs, classes: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    let Some(path) = &args.descriptions else {
        if args.descriptions_per_class == 0 {
            bail!("--descriptions-per-class must be at least 1");
        }
        let source = TemplateDescriptions {
            error_rate: 0.2,
            seed: args.seed,
            ..Default::default()
        };
        let described = source.describe(classes, args.descriptions_per_class)?;
        return Ok(described
            .into_iter()
            .map(|l| l.into_iter().map(|d| d.text).collect())
            .collect());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let file: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let not_a_file = || {
        anyhow::anyhow!(
            "{}: not a descriptions file (vlp curate describe's {{\"classes\": [{{\"class\": \
             NAME, \"descriptions\": [TEXT, ...]}}, ...]}})",
            path.display()
        )
    };
    let mut by_name: std::collections::HashMap<String, Vec<String>> = Default::default();
    for e in file["classes"].as_array().ok_or_else(not_a_file)? {
        let name = e["class"].as_str().ok_or_else(not_a_file)?;
        let list = e["descriptions"].as_array().ok_or_else(not_a_file)?;
        let texts = list
            .iter()
            .map(|d| d.as_str().map(str::to_string).ok_or_else(not_a_file))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if by_name.insert(name.to_string(), texts).is_some() {
            bail!("{}: class {name:?} is listed twice", path.display());
        }
    }
    classes
        .iter()
        .map(|c| match by_name.get(c.as_str()) {
            Some(d) if !d.is_empty() => Ok(d.clone()),
            Some(_) => bail!("{}: class {c:?} has no description", path.display()),
            None => bail!("{}: no descriptions of class {c:?}", path.display()),
        })
        .collect()
}

/// Trains, saves, optionally evaluates; prints the result as the last stdout line (JSON).
pub fn run(args: AdaptArgs) -> anyhow::Result<()> {
    let device = default_device();
    let bundle = load_bundle::<TrainBackend>(&args.model, args.tokenizer.as_deref(), &device)?;
    let layers = bundle.model.shared_depth();
    if args.shots == 0 {
        bail!("--shots must be at least 1");
    }
    let inner = load_bundle::<DefaultBackend>(&args.model, args.tokenizer.as_deref(), &device)?;
    // The settings (templates, descriptions) are checked before the images are read.
    let names = crate::eval::class_names_within(
        &open_source(&args.train_data, &shapes_of(&inner))?,
        args.classes.as_ref(),
    )?;
    crop(&args).validate().context("--crop-scale")?;
    let spec = spec_of(&args, bundle.model.embed_dim(), layers, &names)?;
    // Features of every training image, streamed; the pixels of the shots only, for methods
    // that run the image tower (drawn as `adapt` will draw them).
    let (features, labels, classes) = labelled(&args.train_data, args.classes.as_ref(), &inner)?;
    if classes != names {
        bail!(
            "{}: the class list changed between two reads (did the data change?)",
            args.train_data
        );
    }
    let all = ImageRows {
        features,
        pixels: None,
    };
    let views = (args.views > 0).then(|| ShotViews {
        augment: crop(&args),
        views: args.views,
    });
    let (train, labels) = if spec.needs_pixels() || views.is_some() {
        let idx = k_shot_indices(&labels, classes.len(), args.shots, args.seed);
        let mut shots = all.select(&idx);
        shots.pixels = Some(pixels_of(&args.train_data, &inner, &idx)?);
        let labels: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
        (shots, labels)
    } else {
        (all, labels)
    };
    let maple = matches!(args.method, Method::Maple);
    let per_view = args.views.max(1);
    let epochs = args.epochs.unwrap_or(
        match (maple, args.shots) {
            (true, _) => 5usize,
            (false, 0..=2) => 50,
            (false, 3..=8) => 100,
            _ => 200,
        }
        .div_ceil(per_view),
    );
    let fit = FewShotFitConfig::new()
        .with_epochs(epochs)
        .with_warmup_epochs(1.0 / per_view as f64)
        .with_lr(args.lr.unwrap_or(if maple { 0.0035 } else { 0.002 }))
        .with_batch_size(args.batch_size.unwrap_or(if maple { 4 } else { 32 }));
    let adapter = adapt(
        &spec,
        &bundle.model,
        bundle.tokenizer.as_ref(),
        &classes,
        &train,
        &labels,
        args.shots,
        args.seed,
        views.as_ref(),
        &fit,
        &device,
    )?;
    adapter
        .save(&args.out)
        .with_context(|| format!("saving the adapter to {}", args.out.display()))?;
    let info = &adapter.info;
    println!(
        "{} on {} classes: {} images, {} trained parameters{}",
        info.spec.name(),
        info.classes.len(),
        info.samples,
        info.trainable_params,
        info.losses
            .last()
            .map(|l| format!(", final loss {l:.4}"))
            .unwrap_or_default()
    );
    let mut result = serde_json::json!({
        "method": info.spec.name(),
        "model": args.model,
        "train_data": args.train_data,
        "shots": info.shots,
        "seed": info.seed,
        "samples": info.samples,
        "trainable_params": info.trainable_params,
        "final_loss": info.losses.last(),
        "out": args.out,
    });
    if let Some(spec) = &args.eval_data {
        // The adapter as trained, in memory (`vlp eval --adapter` scores the saved one).
        let r = evaluate_adapter(&adapter, &inner, spec, args.classes.as_ref(), &args.out)?;
        println!("  {spec}: top-1 {:.4}   top-5 {:.4}", r.top1, r.top5);
        result["eval_data"] = spec.clone().into();
        result["top1"] = r.top1.into();
        result["top5"] = r.top5.into();
        result["count"] = r.count.into();
    }
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
