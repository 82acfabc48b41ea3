//! `vlp curate describe`, `vlp curate cocu` and `vlp curate filter`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use vlp_core::backend::default_device;
use vlp_curate::describe::{DescriptionSource, LlmClient, LlmConfig, TemplateDescriptions};
use vlp_curate::filter::{dedup, pair_scores};
use vlp_data::shapes::ShapesWorldConfig;
use vlp_data::source::open_source;
use vlp_tasks::bundle::load_bundle;
use vlp_tasks::embed::embed_texts;

use crate::eval::{B, images};

/// `vlp curate ...`.
#[derive(Subcommand, Debug)]
pub enum CurateCommand {
    /// Class descriptions from the offline templates or an LLM server into a JSON file.
    Describe(DescribeArgs),
    /// CoCu's concept archive: for every image, the concepts its caption leaves out, found in the
    /// captions of its nearest images and ranked by a CLIP model.
    Cocu(CocuArgs),
    /// Keep the pairs a CLIP model scores as matching, minus near-duplicate images (LAION's
    /// recipe); writes the kept keys and every dropped one with its reason.
    Filter(FilterArgs),
}

/// Where descriptions come from.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SourceKind {
    /// Seeded templates, offline (`--error-rate` injects wrong descriptions for testing).
    Template,
    /// An OpenAI-compatible chat-completion server (llama-server, vLLM, Ollama, hosted).
    Llm,
}

/// Arguments of `vlp curate describe`.
#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Class names, one per line (blank lines and `#` comments skipped).
    #[arg(long, conflicts_with = "data")]
    classes: Option<PathBuf>,
    /// A labelled data source whose class names are described (`imagefolder:DIR`, `shapes:...`).
    #[arg(long)]
    data: Option<String>,
    /// Descriptions per class (an LLM may give fewer; the summary counts them).
    #[arg(long, default_value_t = 5)]
    per_class: usize,
    /// Output JSON file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Where descriptions come from.
    #[arg(long, value_enum, default_value = "template")]
    source: SourceKind,
    /// LLM settings: a TOML file of `LlmConfig` fields (base_url, model, timeout_s, ...).
    #[arg(long)]
    llm_config: Option<PathBuf>,
    /// LLM server base URL (overrides the file; default `$VLP_LLM_BASE_URL`).
    #[arg(long)]
    llm_url: Option<String>,
    /// LLM model name (overrides the file; default `$VLP_LLM_MODEL`).
    #[arg(long)]
    llm_model: Option<String>,
    /// Answer cache folder (default: `llm-cache/` beside `--out`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Answer from the cache only; a missing answer is an error.
    #[arg(long)]
    offline: bool,
    /// Template source: seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Template source: share of descriptions that deliberately name another class.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f32,
}

/// Arguments of `vlp curate filter`.
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// The CLIP model that scores pairs.
    #[arg(long)]
    model: PathBuf,
    /// Captioned data (any source spec).
    #[arg(long)]
    data: String,
    /// Output JSON file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Keep pairs whose image–caption cosine is at least this (LAION-400M: 0.28 with ViT-B/32).
    #[arg(long, default_value_t = 0.28)]
    min_score: f64,
    /// Drop an image whose cosine to an earlier kept image reaches this (> 1 keeps all).
    #[arg(long, default_value_t = 0.96)]
    dedup: f64,
    /// Tokenizer override.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

/// Arguments of `vlp curate cocu`.
#[derive(Args, Debug)]
pub struct CocuArgs {
    /// The CLIP model that embeds images and concepts.
    #[arg(long)]
    model: PathBuf,
    /// The captioned data to curate (any source spec).
    #[arg(long)]
    data: String,
    /// Where neighbours are searched (default: the data itself, as CoCu curates CC3M against
    /// CC3M).
    #[arg(long)]
    index: Option<String>,
    /// Concept gallery: one concept per line, or JSON (CoCu's `gallery.json`); default: mined
    /// from the index's captions (`--min-count`).
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Mined gallery: captions a phrase must appear in.
    #[arg(long, default_value_t = 5)]
    min_count: usize,
    /// Neighbours per image (CoCu's L).
    #[arg(long, default_value_t = 8)]
    neighbours: usize,
    /// The prompt concepts are embedded with; `{}` is the concept.
    #[arg(long, default_value = vlp_curate::cocu::CONCEPT_PROMPT)]
    prompt: String,
    /// Image embeddings from `vlp embed` (`image_embeds` with `image_keys`) to use instead of
    /// embedding the data's images again; every image of the data (and index) must be in it.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// Output JSON file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer override.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

/// Runs a `vlp curate` subcommand.
pub fn run(cmd: CurateCommand) -> anyhow::Result<()> {
    match cmd {
        CurateCommand::Describe(a) => describe(a),
        CurateCommand::Cocu(a) => cocu(a),
        CurateCommand::Filter(a) => filter(a),
    }
}

fn read_classes(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if classes.is_empty() {
        bail!("{}: no class names", path.display());
    }
    Ok(classes)
}

fn llm_config(a: &DescribeArgs) -> anyhow::Result<LlmConfig> {
    let mut cfg = match &a.llm_config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<LlmConfig>(&text).with_context(|| format!("{}", p.display()))?
        }
        None => LlmConfig::default(),
    };
    if a.llm_url.is_some() {
        cfg.base_url = a.llm_url.clone();
    }
    if a.llm_model.is_some() {
        cfg.model = a.llm_model.clone();
    }
    if a.cache.is_some() || cfg.cache_dir.is_none() {
        let beside = a.out.parent().unwrap_or(Path::new(".")).join("llm-cache");
        cfg.cache_dir = Some(a.cache.clone().unwrap_or(beside));
    }
    cfg.offline |= a.offline;
    Ok(cfg)
}

fn describe(a: DescribeArgs) -> anyhow::Result<()> {
    if a.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    let classes = match (&a.classes, &a.data) {
        (Some(p), _) => read_classes(p)?,
        (None, Some(spec)) => {
            let source = open_source(spec, &ShapesWorldConfig::default())?;
            source.class_names().with_context(|| {
                format!("{}: not a labelled source; give --classes", source.name())
            })?
        }
        (None, None) => bail!("give --classes FILE or --data SOURCE"),
    };
    let llm = match a.source {
        SourceKind::Llm => Some(LlmClient::new(llm_config(&a)?)?),
        SourceKind::Template => None,
    };
    let template = TemplateDescriptions {
        error_rate: a.error_rate,
        seed: a.seed,
        ..Default::default()
    };
    let source: &dyn DescriptionSource = match &llm {
        Some(client) => client,
        None => &template,
    };
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(classes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} classes [{elapsed}]")
            .expect("valid template"),
    );
    bar.set_message("describing");
    let described = source.describe_observed(&classes, a.per_class, &|| bar.inc(1));
    bar.finish_and_clear();
    let described = described?;
    let short: Vec<&str> = classes
        .iter()
        .zip(&described)
        .filter(|(_, d)| d.len() < a.per_class)
        .map(|(c, _)| c.as_str())
        .collect();
    let total: usize = described.iter().map(Vec::len).sum();
    let body = serde_json::json!({
        "source": source.name(),
        "per_class": a.per_class,
        "classes": classes.iter().zip(&described).map(|(c, d)| serde_json::json!({
            "class": c,
            "descriptions": d.iter().map(|x| x.text.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    vlp_core::io::write_atomic(&a.out, serde_json::to_string_pretty(&body)?.as_bytes())?;
    let stats = llm.as_ref().map(LlmClient::stats);
    println!(
        "{}",
        serde_json::json!({
            "out": a.out,
            "source": source.name(),
            "classes": classes.len(),
            "descriptions": total,
            "classes_with_fewer": short,
            "llm": stats,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn filter(a: FilterArgs) -> anyhow::Result<()> {
    if !(-1.0..=1.0).contains(&a.min_score) {
        bail!("--min-score {} is not a cosine in [-1, 1]", a.min_score);
    }
    let start = Instant::now();
    let device = default_device();
    let bundle = load_bundle::<B>(&a.model, a.tokenizer.as_deref(), &device)?;
    let shapes = ShapesWorldConfig {
        image_size: bundle.config.vision.image_size,
        ..Default::default()
    };
    let source = open_source(&a.data, &shapes)?;
    let name = source.name();
    let set = images(&bundle, source, a.batch_size, "images")?;
    // A pair is an image and its first caption: the alt-text LAION scored.
    let mut dropped = Vec::new();
    let captioned: Vec<usize> = (0..set.keys.len())
        .filter(|&i| {
            let has = set.captions[i]
                .first()
                .is_some_and(|c| !c.trim().is_empty());
            if !has {
                dropped.push(serde_json::json!({"key": set.keys[i], "reason": "no caption"}));
            }
            has
        })
        .collect();
    let texts: Vec<&str> = captioned
        .iter()
        .map(|&i| set.captions[i][0].as_str())
        .collect();
    let text_features = embed_texts(
        &bundle.model,
        bundle.tokenizer.as_ref(),
        &texts,
        256,
        &device,
    )?;
    let dim = set.features.dim;
    let image_rows: Vec<f32> = captioned
        .iter()
        .flat_map(|&i| set.features.row(i).iter().copied())
        .collect();
    let scores = pair_scores(&image_rows, &text_features.data, dim);
    let mut passing = Vec::new();
    for (j, &i) in captioned.iter().enumerate() {
        if scores[j] >= a.min_score as f32 {
            passing.push(j);
        } else {
            dropped.push(serde_json::json!({
                "key": set.keys[i], "reason": "low score", "score": scores[j],
            }));
        }
    }
    let passing_rows: Vec<f32> = passing
        .iter()
        .flat_map(|&j| image_rows[j * dim..(j + 1) * dim].iter().copied())
        .collect();
    let (kept, duplicates) = dedup(&passing_rows, dim, a.dedup as f32);
    let key = |p: usize| &set.keys[captioned[passing[p]]];
    for (d, of) in duplicates {
        dropped.push(serde_json::json!({
            "key": key(d), "reason": "duplicate", "duplicate_of": key(of),
            "score": scores[passing[d]],
        }));
    }
    let kept_list: Vec<serde_json::Value> = kept
        .iter()
        .map(|&p| serde_json::json!({"key": key(p), "score": scores[passing[p]]}))
        .collect();
    let count = |reason: &str| dropped.iter().filter(|d| d["reason"] == reason).count();
    let summary = serde_json::json!({
        "data": name,
        "model": a.model,
        "min_score": a.min_score,
        "dedup": a.dedup,
        "samples": set.keys.len(),
        "skipped_by_loader": set.skipped_count,
        "kept": kept.len(),
        "dropped_low_score": count("low score"),
        "dropped_duplicate": count("duplicate"),
        "dropped_no_caption": count("no caption"),
    });
    let body = serde_json::json!({"summary": summary, "kept": kept_list, "dropped": dropped});
    vlp_core::io::write_atomic(&a.out, serde_json::to_string_pretty(&body)?.as_bytes())?;
    let mut line = summary;
    line["out"] = serde_json::json!(a.out);
    line["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
    println!("{line}");
    Ok(())
}

/// Keys, captions and normalised embeddings of a source's images.
struct Embedded {
    keys: Vec<String>,
    captions: Vec<String>,
    rows: Vec<f32>,
    /// Samples left out, with why.
    skipped: usize,
}

/// Rows of a `vlp embed` file by key.
struct StoredEmbeddings {
    path: PathBuf,
    rows: std::collections::HashMap<String, Vec<f32>>,
}

impl StoredEmbeddings {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = vlp_core::checkpoint::TensorFile::open(path)?;
        let t = file.get("image_embeds").with_context(|| {
            format!(
                "{}: no image_embeds (written by `vlp embed --data`)",
                path.display()
            )
        })?;
        let keys: Vec<String> = file
            .metadata()
            .get("image_keys")
            .map(|k| serde_json::from_str(k))
            .transpose()
            .with_context(|| format!("{}: metadata image_keys is not a JSON list", path.display()))?
            .with_context(|| format!("{}: no image_keys in the metadata", path.display()))?;
        let (n, dim) = match t.shape.as_slice() {
            [n, d] => (*n, *d),
            s => bail!(
                "{}: image_embeds has shape {s:?}, expected [n, dim]",
                path.display()
            ),
        };
        if keys.len() != n {
            bail!(
                "{}: {} image_keys for {n} embeddings",
                path.display(),
                keys.len()
            );
        }
        let rows = keys
            .into_iter()
            .zip(t.data.chunks(dim))
            .map(|(k, r)| (k, r.to_vec()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            rows,
        })
    }
}

fn embedded(
    bundle: &vlp_tasks::bundle::Bundle<B>,
    spec: &str,
    stored: Option<&StoredEmbeddings>,
    batch_size: usize,
) -> anyhow::Result<Embedded> {
    let shapes = ShapesWorldConfig {
        image_size: bundle.config.vision.image_size,
        ..Default::default()
    };
    let source = open_source(spec, &shapes)?;
    let name = source.name();
    let caption_of = |c: &[String]| c.first().cloned().unwrap_or_default();
    match stored {
        None => {
            let set = images(bundle, source, batch_size, &name)?;
            Ok(Embedded {
                captions: set.captions.iter().map(|c| caption_of(c)).collect(),
                keys: set.keys,
                rows: set.features.data,
                skipped: set.skipped_count,
            })
        }
        Some(st) => {
            // Captions from the source, images from the file: no image is decoded.
            let vlp_data::source::Source::Indexed(source) = source else {
                bail!(
                    "{name}: --embeddings needs a source read by index (csv:, jsonl:, imagefolder:, coco:, shapes:); tar shards are embedded here"
                );
            };
            let mut out = Embedded {
                keys: Vec::new(),
                captions: Vec::new(),
                rows: Vec::new(),
                skipped: 0,
            };
            for i in 0..source.len() {
                let raw = match source.get(i) {
                    Ok(r) => r,
                    Err(skip) => {
                        eprintln!(
                            "warning: {name}: {:?} skipped: {}: {}",
                            skip.key, skip.reason, skip.detail
                        );
                        out.skipped += 1;
                        continue;
                    }
                };
                // `vlp embed` leaves out images it could not decode; so does this.
                let Some(row) = st.rows.get(&raw.key) else {
                    eprintln!(
                        "warning: {name}: {:?} skipped: no embedding in {}",
                        raw.key,
                        st.path.display()
                    );
                    out.skipped += 1;
                    continue;
                };
                out.captions.push(caption_of(&raw.captions));
                out.rows.extend_from_slice(row);
                out.keys.push(raw.key);
            }
            if out.keys.is_empty() {
                bail!(
                    "{name}: no usable sample (none has an embedding in {})",
                    st.path.display()
                );
            }
            Ok(out)
        }
    }
}

fn cocu(a: CocuArgs) -> anyhow::Result<()> {
    use vlp_curate::cocu::ConceptGallery;
    use vlp_train::method::cocu::curate::{Curation, rank_archive};
    if a.neighbours == 0 {
        bail!("--neighbours must be at least 1");
    }
    if !a.prompt.contains("{}") {
        bail!("--prompt {:?} has no {{}} for the concept", a.prompt);
    }
    let start = Instant::now();
    let device = default_device();
    let bundle = load_bundle::<B>(&a.model, a.tokenizer.as_deref(), &device)?;
    let stored = a
        .embeddings
        .as_deref()
        .map(StoredEmbeddings::open)
        .transpose()?;
    let data = embedded(&bundle, &a.data, stored.as_ref(), a.batch_size)?;
    let index_spec = a.index.clone().unwrap_or_else(|| a.data.clone());
    let index = if index_spec == a.data {
        None
    } else {
        Some(embedded(
            &bundle,
            &index_spec,
            stored.as_ref(),
            a.batch_size,
        )?)
    };
    let index_ref = index.as_ref().unwrap_or(&data);
    let gallery = match &a.gallery {
        Some(p) => ConceptGallery::from_file(p)?,
        None => ConceptGallery::from_captions(&index_ref.captions, a.min_count),
    };
    if gallery.is_empty() {
        bail!(
            "no concept gallery: no phrase is in {} captions of {index_spec}; give --gallery or lower --min-count",
            a.min_count
        );
    }
    let summary = serde_json::json!({
        "data": a.data,
        "index": index_spec,
        "model": a.model,
        "images": data.keys.len(),
        "skipped": data.skipped,
        "index_images": index_ref.keys.len(),
        "gallery": gallery.len(),
        "neighbours": a.neighbours,
        "prompt": a.prompt,
    });
    let curation = Curation {
        keys: &data.keys,
        captions: &data.captions,
        rows: &data.rows,
        index_captions: &index_ref.captions,
        index_rows: &index_ref.rows,
    };
    let mut archive = rank_archive(
        &bundle.model,
        bundle.tokenizer.as_ref(),
        curation,
        &gallery,
        &a.prompt,
        a.neighbours,
        summary,
        &device,
    )
    .map_err(|e| match &stored {
        // Rows of the wrong width can only come from the file.
        Some(st) => anyhow::anyhow!("{}: {e}", st.path.display()),
        None => anyhow::anyhow!("{}: {e}", a.data),
    })?;
    let concepts: usize = archive.images.iter().map(|e| e.concepts.len()).sum();
    archive.summary["mean_concepts_per_image"] =
        serde_json::json!(concepts as f64 / archive.images.len().max(1) as f64);
    archive.write(&a.out)?;
    let mut line = archive.summary;
    line["out"] = serde_json::json!(a.out);
    line["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
    println!("{line}");
    Ok(())
}
