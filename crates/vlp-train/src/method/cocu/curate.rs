//! CoCu's curation with a trained CLIP: the concept archive of a dataset. `vlp curate cocu`
//! writes one from any model and source; `[method.cocu] curate_with` writes the training data's
//! before a run when its archive does not exist yet.

use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::Value;
use vlp_align::ClipModel;
use vlp_curate::cocu::{ConceptArchive, ConceptGallery, concept_archive};
use vlp_data::source::{Source, open_source};
use vlp_tasks::battery::EvalImages;
use vlp_tasks::bundle::load_bundle;
use vlp_tasks::embed::embed_texts;
use vlp_text::Tokenizer;

use super::CocuSettings;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// Most images `curate_with` curates in a run: they are embedded from memory; larger data is
/// curated by `vlp curate cocu`, which streams.
pub const MAX_CURATED_IN_RUN: usize = 100_000;

/// Images to curate and the index their neighbours come from (the same images when CoCu
/// curates a dataset against itself).
#[derive(Debug, Clone, Copy)]
pub struct Curation<'a> {
    /// Keys of the images curated.
    pub keys: &'a [String],
    /// Their captions.
    pub captions: &'a [String],
    /// Their L2-normalised image embeddings, `[images, dim]` row-major.
    pub rows: &'a [f32],
    /// Captions of the index images.
    pub index_captions: &'a [String],
    /// Their embeddings, `[index images, dim]`.
    pub index_rows: &'a [f32],
}

/// The concept archive of `c`: each image's concepts from the captions of its `neighbours`
/// nearest index images, ranked by `model` with concepts embedded as `prompt` (CoCu §3.2).
#[allow(clippy::too_many_arguments)]
pub fn rank_archive<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    c: Curation<'_>,
    gallery: &ConceptGallery,
    prompt: &str,
    neighbours: usize,
    summary: Value,
    device: &B::Device,
) -> Result<ConceptArchive> {
    let prompts: Vec<String> = gallery
        .names()
        .iter()
        .map(|n| prompt.replace("{}", n))
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let concepts = embed_texts(model, tokenizer, &refs, 256, device)?;
    let dim = concepts.dim;
    for (what, rows, n) in [
        ("images", c.rows, c.keys.len()),
        ("index images", c.index_rows, c.index_captions.len()),
    ] {
        if rows.len() != n * dim {
            return Err(TrainError::Task(vlp_tasks::TaskError::Invalid {
                task: "cocu curation".into(),
                reason: format!(
                    "{} embedding values for {n} {what}, not {n} rows of the model's width {dim}",
                    rows.len()
                ),
            }));
        }
    }
    let index_concepts: Vec<Vec<usize>> = c
        .index_captions
        .iter()
        .map(|t| gallery.concepts_in(t))
        .collect();
    let ranked = concept_archive(
        c.rows,
        c.index_rows,
        &index_concepts,
        &concepts.data,
        dim,
        neighbours,
    );
    ConceptArchive::from_ranked(summary, c.keys, c.captions, &ranked, gallery).map_err(|reason| {
        TrainError::Task(vlp_tasks::TaskError::Invalid {
            task: "cocu curation".into(),
            reason,
        })
    })
}

/// Writes `[method.cocu] archive` from the training data (`data.train`) when it does not exist
/// and `curate_with` names a run configuration: that run is found or trained first (as
/// `model.init_from`'s), its exported CLIP embeds every training image and the gallery's
/// concepts, and each image's archive comes from its nearest training images.
pub fn curate_if_missing<B: AutodiffBackend>(
    cfg: &TrainConfig,
    devices: &[B::Device],
) -> Result<()> {
    let s: CocuSettings = cfg.method.parse("cocu")?;
    if s.curate_with.is_empty() || s.archive.as_os_str().is_empty() || s.archive.exists() {
        return Ok(());
    }
    // Bad settings are an error before a curator trains.
    super::CocuMethod::check_settings(&s)?;
    let field = "method.cocu.curate_with";
    if cfg.distributed.world_size > 1 {
        // Every process would curate (and train the curator) at once.
        return Err(TrainError::Config(format!(
            "`{field}` in a multi-process run: write `method.cocu.archive` = {} first with \
             `vlp curate cocu` (or one single-process run)",
            s.archive.display()
        )));
    }
    let dir = crate::run::stage_model::<B>(cfg, field, &s.curate_with, devices)?;
    let device = devices
        .first()
        .ok_or_else(|| TrainError::Config("cocu curation: no device to curate on".into()))?;
    let bundle = load_bundle::<B::InnerBackend>(&dir, None, device)?;
    let source = open_source(&cfg.data.train, &cfg.data.shapes)?;
    match &source {
        Source::Indexed(x) if x.len() <= MAX_CURATED_IN_RUN => {}
        _ => {
            return Err(TrainError::Config(format!(
                "`{field}`: `data.train` = {:?} is a stream or holds more than {MAX_CURATED_IN_RUN} \
                 images; curate it with `vlp curate cocu --model {dir} --data ... --out {}` first",
                cfg.data.train,
                s.archive.display()
            )));
        }
    }
    eprintln!(
        "curating {} with {dir} into {}",
        cfg.data.train,
        s.archive.display()
    );
    let set = EvalImages::load(source, &bundle.pipeline, cfg.data.workers.max(1))?;
    let skipped = set.skipped.skipped_count();
    if set.keys.is_empty() {
        return Err(TrainError::Config(format!(
            "`{field}`: no image of `data.train` = {:?} could be read to curate ({skipped} skipped)",
            cfg.data.train
        )));
    }
    if skipped > 0 {
        // They still train, with their caption in place of concepts.
        eprintln!(
            "warning: {skipped} images of {} could not be read to curate; they train without concepts",
            cfg.data.train
        );
    }
    let images = set.embed(&bundle.model, device);
    let captions: Vec<String> = set
        .captions
        .iter()
        .map(|c| c.first().cloned().unwrap_or_default())
        .collect();
    let gallery = if s.gallery.as_os_str().is_empty() {
        ConceptGallery::from_captions(&captions, s.min_count)
    } else {
        ConceptGallery::from_file(&s.gallery)
            .map_err(|e| TrainError::Config(format!("`method.cocu.gallery`: {e}")))?
    };
    if gallery.is_empty() {
        return Err(TrainError::Config(format!(
            "`{field}`: no concept gallery: no phrase is in {} captions of {}; give \
             `method.cocu.gallery` or lower `method.cocu.min_count`",
            s.min_count, cfg.data.train
        )));
    }
    let summary = serde_json::json!({
        "data": cfg.data.train,
        "index": cfg.data.train,
        "model": dir,
        "images": set.keys.len(),
        "skipped": skipped,
        "gallery": gallery.len(),
        "neighbours": s.neighbours,
        "prompt": vlp_curate::cocu::CONCEPT_PROMPT,
    });
    let c = Curation {
        keys: &set.keys,
        captions: &captions,
        rows: &images.data,
        index_captions: &captions,
        index_rows: &images.data,
    };
    let archive = rank_archive(
        &bundle.model,
        bundle.tokenizer.as_ref(),
        c,
        &gallery,
        vlp_curate::cocu::CONCEPT_PROMPT,
        s.neighbours,
        summary,
        device,
    )?;
    if let Some(parent) = Path::new(&s.archive).parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            TrainError::Config(format!(
                "`method.cocu.archive` = {}: {e}",
                s.archive.display()
            ))
        })?;
    }
    archive
        .write(&s.archive)
        .map_err(|e| TrainError::Config(format!("`method.cocu.archive`: {e}")))?;
    eprintln!(
        "curated {} images into {}",
        archive.images.len(),
        s.archive.display()
    );
    Ok(())
}
