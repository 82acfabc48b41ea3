//! `vlp eval` and `vlp embed`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use vlp_core::backend::{DefaultBackend, default_device};
use vlp_core::checkpoint::{HostTensor, StoredDType, write_safetensors};
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::shapes::ShapesWorldConfig;
use vlp_data::source::{Source, open_source};
use vlp_tasks::battery::{
    align_label_spaces, clip_retrieval, clip_zero_shot, match_classes, require_labels,
};
use vlp_tasks::bundle::{Bundle, load_bundle};
use vlp_tasks::embed::{Features, ImageSet, embed_images, embed_texts};
use vlp_tasks::fewshot::{FewShotContext, LinearProbe, TipAdapter, ZeroShot, run_few_shot};
use vlp_tasks::probe::linear_probe;
use vlp_tasks::report::confusion_png;
use vlp_tasks::templates::load_templates;
use vlp_tasks::zeroshot::classifier;

pub(crate) type B = DefaultBackend;

/// Evaluation task.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Task {
    /// Zero-shot classification with a prompt ensemble (labelled data).
    ZeroShot,
    /// Image↔text retrieval (captioned data, e.g. COCO).
    Retrieval,
    /// Logistic regression on frozen features (needs --train-data).
    LinearProbe,
    /// k-shot adaptation: zero-shot, linear probe and Tip-Adapter over seeds (needs --train-data).
    FewShot,
    /// Visual question answering (a question-answering model; data with questions and boxes,
    /// e.g. `shapes:test:N`): accuracy overall and per question type.
    Vqa,
    /// The ARO-like compositional benchmark (data with named boxes, e.g. `shapes:test:N`):
    /// how often each image's true caption beats its attribute-, relation- or object-swapped
    /// twin, per kind (chance 0.5).
    Swaps,
}

/// Arguments of `vlp eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model directory (transformers or open_clip layout, or a run's `final/`).
    #[arg(long)]
    model: PathBuf,
    /// What to measure.
    #[arg(long, value_enum)]
    task: Task,
    /// Evaluation data: `imagefolder:DIR`, `coco:FILE`, `shapes:test:N`, `wds:...`, `csv:...`.
    #[arg(long)]
    data: String,
    /// Training data for linear-probe and few-shot (labelled).
    #[arg(long)]
    train_data: Option<String>,
    /// Class names, one per line (default: the data's own, e.g. folder names); each must match
    /// a class of the data; `FOLDER<TAB>NAME` lines give the prompt name of a folder
    /// (`datasets/imagenet-1k/classes.tsv`). With `--adapter`: the file the adapter was
    /// trained with (`vlp adapt --classes`), which may list more classes than the data.
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Prompt templates: `openai` (80), `simple`, or a file with one template per line.
    #[arg(long, default_value = "openai")]
    templates: String,
    /// Tokenizer override: `clip` or a tokenizer.json.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Shots per class for few-shot.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    k: Vec<usize>,
    /// Seeds for few-shot splits.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Also write the results JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the zero-shot confusion matrix as a PNG heat map here.
    #[arg(long)]
    confusion: Option<PathBuf>,
    /// An adapter saved by `vlp adapt` (for this model): `--task zero-shot` then classifies
    /// with it instead of the prompt templates.
    #[arg(long)]
    adapter: Option<PathBuf>,
}

pub(crate) fn images(
    bundle: &Bundle<B>,
    source: Source,
    batch: usize,
    what: &str,
) -> anyhow::Result<ImageSet> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cfg = LoaderConfig {
        batch_size: batch,
        workers,
        shuffle: false,
        drop_last: false,
        max_skip_fraction: 1.0,
        ..Default::default()
    };
    let name = source.name();
    let loader = Loader::new(source, bundle.pipeline.clone(), None, cfg)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {pos} images [{elapsed_precise}] {per_sec}",
        )
        .expect("valid template"),
    );
    bar.set_message(format!("embedding {what}"));
    let set = embed_images(&bundle.model, &loader, &default_device(), |n| {
        bar.inc(n as u64)
    })?;
    bar.finish_and_clear();
    if set.features.rows == 0 {
        bail!("{name}: no usable image ({})", set.skipped);
    }
    if set.skipped_count > 0 {
        eprintln!("warning: {name}: {}", set.skipped);
    }
    Ok(set)
}

fn labels(set: &ImageSet, name: &str) -> anyhow::Result<Vec<usize>> {
    Ok(require_labels(&set.labels, &set.keys, name)?)
}

/// Class names of a labelled source, checked against `--classes` when given (by name: order
/// and duplicates matter, the result is in the data's label order). A line `FOLDER<TAB>NAME`
/// names the data's class `FOLDER` (an ImageNet synset folder, `n01440764`) `NAME` in prompts
/// (`tench`); a line without a tab keeps the data's name.
pub(crate) fn class_names(
    source: &Source,
    classes: Option<&PathBuf>,
) -> anyhow::Result<Vec<String>> {
    let own = labelled_classes(source)?;
    let Some(path) = classes else { return Ok(own) };
    let (listed, names) = read_class_file(path)?;
    let ordered = match_classes(&own, &listed, &source.name(), &path.display().to_string())?;
    Ok(ordered.iter().map(|c| names[c].clone()).collect())
}

/// As [`class_names`], but the file may list classes the data lacks (a shared class list, a
/// test set without some of an adapter's classes); every class of the data must be listed, and
/// under a name of its own (adapters match classes by name).
pub(crate) fn class_names_within(
    source: &Source,
    classes: Option<&PathBuf>,
) -> anyhow::Result<Vec<String>> {
    let own = labelled_classes(source)?;
    let Some(path) = classes else { return Ok(own) };
    let (_, names) = read_class_file(path)?;
    let mut renamed: Vec<String> = Vec::with_capacity(own.len());
    for c in &own {
        let name = names.get(c).with_context(|| {
            format!(
                "{} does not list class \"{c}\" of {}",
                path.display(),
                source.name()
            )
        })?;
        // Adapters match classes by name: two classes under one name would be scored as one.
        if let Some(i) = renamed.iter().position(|n| n == name) {
            bail!(
                "{} names classes \"{}\" and \"{c}\" of {} both \"{name}\"",
                path.display(),
                own[i],
                source.name()
            );
        }
        renamed.push(name.clone());
    }
    Ok(renamed)
}

fn labelled_classes(source: &Source) -> anyhow::Result<Vec<String>> {
    source.class_names().with_context(|| {
        format!(
            "{}: not a labelled source (use imagefolder: or shapes:)",
            source.name()
        )
    })
}

/// A `--classes` file: the listed classes in order (a class listed twice refused) and each
/// one's prompt name.
fn read_class_file(
    path: &PathBuf,
) -> anyhow::Result<(Vec<String>, std::collections::HashMap<String, String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut listed = Vec::new();
    let mut names = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (class, name) = match line.split_once('\t') {
            Some((c, n)) if !n.trim().is_empty() => (c.trim(), n.trim()),
            Some(_) => bail!("{} line {}: no name after the tab", path.display(), i + 1),
            None => (line.trim(), line.trim()),
        };
        if names.insert(class.to_string(), name.to_string()).is_some() {
            bail!(
                "{} line {}: class \"{class}\" listed twice",
                path.display(),
                i + 1
            );
        }
        listed.push(class.to_string());
    }
    Ok((listed, names))
}

/// `--task vqa`: every question of the data's images, answered by a question-answering model.
fn vqa(args: &EvalArgs) -> anyhow::Result<()> {
    let device = default_device();
    let m = vlp_tasks::vqa::load_vqa_model::<B>(&args.model, &device)?;
    let shapes = ShapesWorldConfig {
        image_size: m.pipeline.size,
        ..Default::default()
    };
    let source = open_source(&args.data, &shapes)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let set = vlp_tasks::battery::EvalImages::load(source, &m.pipeline, workers)?;
    let Some(r) =
        vlp_tasks::vqa::evaluate_vqa(&m.model, m.tokenizer.as_ref(), &m.answers, &set, &device)?
    else {
        bail!("{}: no image has a question", args.data);
    };
    println!(
        "VQA on {} questions about {} images",
        r.overall.total,
        set.len()
    );
    println!("  overall {:.4}", r.overall.accuracy());
    for (kind, t) in &r.per_kind {
        println!("  {kind:<10} {:.4} ({} questions)", t.accuracy(), t.total);
    }
    if r.whole_image > 0 {
        eprintln!(
            "warning: {} question(s) are about images without object boxes (answered from the whole image)",
            r.whole_image
        );
    }
    if r.out_of_table > 0 {
        eprintln!(
            "warning: {} question(s) have answers outside the model's table (counted wrong)",
            r.out_of_table
        );
    }
    let per_kind: BTreeMap<&str, f64> = r
        .per_kind
        .iter()
        .map(|(k, t)| (k.as_str(), t.accuracy()))
        .collect();
    let result = serde_json::json!({
        "task": "Vqa",
        "model": args.model,
        "data": args.data,
        "accuracy": r.overall.accuracy(),
        "per_kind": per_kind,
        "count": r.overall.total,
        "out_of_table": r.out_of_table,
        "whole_image": r.whole_image,
    });
    let line = serde_json::to_string(&result)?;
    if let Some(p) = &args.out {
        std::fs::write(p, &line).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{line}");
    Ok(())
}

/// Runs the task; prints a table, then the results as the last stdout line (JSON).
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.task == Task::Vqa {
        return vqa(&args);
    }
    let device = default_device();
    let bundle = load_bundle::<B>(&args.model, args.tokenizer.as_deref(), &device)?;
    let shapes = ShapesWorldConfig {
        image_size: bundle.config.vision.image_size,
        ..Default::default()
    };
    let templates = load_templates(&args.templates)?;
    let source = open_source(&args.data, &shapes)?;
    let mut result = serde_json::json!({ "task": format!("{:?}", args.task), "model": args.model, "data": args.data });
    if args.adapter.is_some() && args.task != Task::ZeroShot {
        bail!("--adapter applies to --task zero-shot (classification with the adapted classifier)");
    }
    match args.task {
        Task::Vqa => unreachable!("answered by `vqa` above"),
        Task::ZeroShot if args.adapter.is_some() => {
            let dir = args.adapter.as_ref().expect("checked");
            let adapter = vlp_tasks::adapt::Adapter::load(
                dir,
                &bundle.model,
                bundle.tokenizer.as_ref(),
                &device,
            )?;
            let r = crate::adapt::evaluate_adapter(
                &adapter,
                &bundle,
                &args.data,
                args.classes.as_ref(),
                dir,
            )?;
            println!(
                "{} adapter on {} images, {} classes",
                adapter.info.spec.name(),
                r.count,
                r.classes.len()
            );
            println!("  top-1 {:.4}   top-5 {:.4}", r.top1, r.top5);
            if let Some(p) = &args.confusion {
                confusion_png(&r.confusion, p, 16)?;
            }
            result["adapter"] = serde_json::to_value(dir)?;
            result["method"] = adapter.info.spec.name().into();
            result["top1"] = r.top1.into();
            result["top5"] = r.top5.into();
            result["per_class"] = serde_json::to_value(&r.per_class)?;
            result["confusion"] = serde_json::to_value(&r.confusion)?;
            result["count"] = r.count.into();
        }
        Task::ZeroShot => {
            let classes = class_names(&source, args.classes.as_ref())?;
            let set = images(&bundle, source, args.batch_size, "test images")?;
            let y = labels(&set, &args.data)?;
            let r = clip_zero_shot(
                &bundle.model,
                bundle.tokenizer.as_ref(),
                &set.features,
                &y,
                &classes,
                &templates,
                &device,
            )?;
            println!(
                "zero-shot on {} images, {} classes, {} templates",
                r.count,
                classes.len(),
                templates.len()
            );
            println!("  top-1 {:.4}   top-5 {:.4}", r.top1, r.top5);
            if let Some(p) = &args.confusion {
                confusion_png(&r.confusion, p, 16)?;
            }
            result["top1"] = r.top1.into();
            result["top5"] = r.top5.into();
            result["per_class"] = serde_json::to_value(&r.per_class)?;
            result["confusion"] = serde_json::to_value(&r.confusion)?;
            result["count"] = r.count.into();
        }
        Task::Swaps => {
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let set = vlp_tasks::battery::EvalImages::load(source, &bundle.pipeline, workers)?;
            let r = vlp_tasks::compositional::clip_swaps(
                &bundle.model,
                bundle.tokenizer.as_ref(),
                &set,
                0,
                &device,
            )?
            .with_context(|| {
                format!(
                    "{}: no image has a named box to build swapped captions from (the benchmark \
                     needs boxes named `[attribute ...] noun`, as ShapesWorld's)",
                    args.data
                )
            })?;
            println!("compositional swaps on {} images (chance 0.5)", set.len());
            for (kind, k) in &r.kinds {
                println!("  {kind:<10} {:.4}  ({} items)", k.accuracy, k.items);
            }
            result["swaps"] = serde_json::to_value(&r)?;
        }
        Task::Retrieval => {
            let set = images(&bundle, source, args.batch_size, "images")?;
            if let Some(list) = set.skip_stats.skipped.get("no caption") {
                let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
                bail!(
                    "{}: image(s) without captions cannot be scored for retrieval: {}",
                    args.data,
                    keys.join(", ")
                );
            }
            let mut texts = Vec::new();
            let mut link = Vec::new();
            for (i, caps) in set.captions.iter().enumerate() {
                if caps.is_empty() {
                    bail!("{}: image \"{}\" has no caption", args.data, set.keys[i]);
                }
                for c in caps {
                    texts.push(c.as_str());
                    link.push(i);
                }
            }
            let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
            let r = clip_retrieval(
                &bundle.model,
                bundle.tokenizer.as_ref(),
                &set.features,
                &texts,
                &link,
                &device,
            )?;
            println!("retrieval: {} images, {} captions", r.images, r.texts);
            println!(
                "  image→text R@1 {:.4} R@5 {:.4} R@10 {:.4}  mean rank {:.1} median {:.1}",
                r.i2t_recall[0],
                r.i2t_recall[1],
                r.i2t_recall[2],
                r.i2t_mean_rank,
                r.i2t_median_rank
            );
            println!(
                "  text→image R@1 {:.4} R@5 {:.4} R@10 {:.4}  mean rank {:.1} median {:.1}",
                r.t2i_recall[0],
                r.t2i_recall[1],
                r.t2i_recall[2],
                r.t2i_mean_rank,
                r.t2i_median_rank
            );
            result["retrieval"] = serde_json::to_value(&r)?;
        }
        Task::LinearProbe | Task::FewShot => {
            let train_spec = args
                .train_data
                .as_deref()
                .context("--train-data is needed for linear-probe and few-shot")?;
            let train_source = open_source(train_spec, &shapes)?;
            let classes = class_names(&source, args.classes.as_ref())?;
            let train_classes = class_names(&train_source, None)?;
            // Training labels in the test set's label space, matched by class name.
            let to_test = align_label_spaces(&train_classes, &classes, train_spec, &args.data)?;
            let train = images(&bundle, train_source, args.batch_size, "training images")?;
            let test = images(&bundle, source, args.batch_size, "test images")?;
            let ty: Vec<usize> = labels(&train, train_spec)?
                .into_iter()
                .map(|l| to_test[l])
                .collect();
            let ey = labels(&test, &args.data)?;
            if args.task == Task::LinearProbe {
                let r = linear_probe::<B>(
                    &train.features,
                    &ty,
                    &test.features,
                    &ey,
                    classes.len(),
                    0.2,
                    0,
                    &device,
                )?;
                println!(
                    "linear probe: accuracy {:.4} (λ = {:e}, chosen on a 20% validation split)",
                    r.accuracy, r.lambda
                );
                result["linear_probe"] = serde_json::to_value(&r)?;
            } else {
                let zs = classifier(
                    &bundle.model,
                    bundle.tokenizer.as_ref(),
                    &classes,
                    &templates,
                    &device,
                )?;
                let ctx = FewShotContext {
                    classes: classes.len(),
                    zero_shot: &zs,
                };
                let probe = LinearProbe::<B> {
                    lambda: 1e-3,
                    device: device.clone(),
                };
                let tip = TipAdapter::default();
                let rows = run_few_shot(
                    &[&ZeroShot, &probe, &tip],
                    &train.features,
                    &ty,
                    &test.features,
                    &ey,
                    &ctx,
                    &args.k,
                    &args.seeds,
                )?;
                println!("{:<14} {:>4} {:>8} {:>8}", "method", "k", "mean", "std");
                for r in &rows {
                    println!("{:<14} {:>4} {:>8.4} {:>8.4}", r.method, r.k, r.mean, r.std);
                }
                result["few_shot"] = serde_json::to_value(&rows)?;
            }
        }
    }
    let line = serde_json::to_string(&result)?;
    if let Some(p) = &args.out {
        std::fs::write(p, &line).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{line}");
    Ok(())
}

/// Arguments of `vlp embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Images to embed (any source spec).
    #[arg(long)]
    data: Option<String>,
    /// A text file whose lines are embedded.
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Output safetensors: `image_embeds` / `text_embeds` (`[n, dim]`, normalised), `labels`
    /// when known; keys in the metadata.
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer override.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

/// Lines of a `--texts` file (blank ones skipped); an error naming the file when none is left.
fn text_lines(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        bail!("{}: no text lines", path.display());
    }
    Ok(lines)
}

/// `vlp embed --texts` with a pixel text encoder (Pixel-Linguist's export): the lines are
/// rendered and encoded; texts cut at the strip's end and characters the font lacks are counted
/// in the summary line.
fn embed_pixel_texts(
    args: &EmbedArgs,
    device: &vlp_core::backend::DefaultDevice,
) -> anyhow::Result<()> {
    if args.data.is_some() {
        bail!(
            "{} is a pixel text encoder: it embeds texts (--texts), not images (--data)",
            args.model.display()
        );
    }
    let Some(path) = &args.texts else {
        bail!("give --texts (a file of lines) to embed with a pixel text encoder");
    };
    if let Some(t) = &args.tokenizer {
        bail!(
            "{} is a pixel text encoder: it reads rendered text, --tokenizer {t} does not apply",
            args.model.display()
        );
    }
    let start = std::time::Instant::now();
    let (model, config) = vlp_vision::pixel_text::load_pixel_text::<B>(&args.model, device)?;
    let lines = text_lines(path)?;
    let (f, lost) =
        vlp_tasks::embed::embed_rendered_texts(&model, &config, &lines, args.batch_size, device)?;
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "text_embeds".to_string(),
        HostTensor::new(vec![f.rows, f.dim], f.data),
    );
    let mut meta = std::collections::HashMap::new();
    meta.insert("texts".into(), serde_json::to_string(&lines)?);
    write_safetensors(&args.out, &tensors, StoredDType::F32, Some(meta))?;
    println!(
        "{}",
        serde_json::json!({
            "out": args.out,
            "tensors": {"text_embeds": [f.rows, f.dim]},
            "cut_texts": lost.cut_texts,
            "unsupported_chars": lost.unsupported_chars,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// Embeds images and/or texts into one safetensors file.
pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    if args.data.is_none() && args.texts.is_none() {
        bail!("give --data (images) and/or --texts (a file of lines)");
    }
    let device = default_device();
    if vlp_vision::pixel_text::is_pixel_text_dir(&args.model) {
        return embed_pixel_texts(&args, &device);
    }
    let bundle = load_bundle::<B>(&args.model, args.tokenizer.as_deref(), &device)?;
    let mut tensors = BTreeMap::new();
    let mut meta = std::collections::HashMap::new();
    let start = std::time::Instant::now();
    let put = |f: Features| HostTensor::new(vec![f.rows, f.dim], f.data);
    if let Some(spec) = &args.data {
        let shapes = ShapesWorldConfig {
            image_size: bundle.config.vision.image_size,
            ..Default::default()
        };
        let set = images(
            &bundle,
            open_source(spec, &shapes)?,
            args.batch_size,
            "images",
        )?;
        if set.labels.iter().all(Option::is_some) {
            tensors.insert(
                "labels".into(),
                HostTensor::new(
                    vec![set.labels.len()],
                    set.labels
                        .iter()
                        .map(|l| l.expect("checked") as f32)
                        .collect(),
                ),
            );
        }
        meta.insert("image_keys".into(), serde_json::to_string(&set.keys)?);
        tensors.insert("image_embeds".into(), put(set.features));
    }
    if let Some(p) = &args.texts {
        let owned = text_lines(p)?;
        let lines: Vec<&str> = owned.iter().map(String::as_str).collect();
        tensors.insert(
            "text_embeds".into(),
            put(embed_texts(
                &bundle.model,
                bundle.tokenizer.as_ref(),
                &lines,
                256,
                &device,
            )?),
        );
        meta.insert("texts".into(), serde_json::to_string(&lines)?);
    }
    write_safetensors(&args.out, &tensors, StoredDType::F32, Some(meta))?;
    let shapes: BTreeMap<&String, &Vec<usize>> =
        tensors.iter().map(|(k, v)| (k, &v.shape)).collect();
    println!(
        "{}",
        serde_json::json!({"out": args.out, "tensors": shapes, "seconds": start.elapsed().as_secs_f64()})
    );
    Ok(())
}
