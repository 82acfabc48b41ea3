//! The loader: samples from a [`Source`] decoded, augmented and tokenised on worker threads,
//! batched in a deterministic order.
//!
//! Order depends only on (seed, epoch, worker count, rank, world size). Random-access sources
//! are permuted, cut into fixed index ranges per batch and processed a batch per job, so the
//! order does not even depend on the worker count; a bad sample shrinks its batch by one instead
//! of shifting every later batch, which also makes resuming at batch `k` exact. Tar shards are
//! dealt to ranks then workers, streamed, interleaved round-robin and shuffled through a seeded
//! buffer. Prefetch is bounded per worker. Every skipped sample is counted by reason with its
//! key; past `max_skip_fraction` the epoch stops with an error, and so does a worker that fails.
//!
//! - [`batch`]: what a batch holds and how it is sliced;
//! - `process`: one sample from raw to ready (decode, views, annotations, texts);
//! - `stream`: the workers; `epoch`: skips and batch cutting.

mod batch;
mod epoch;
mod process;
mod stream;

pub use batch::Batch;
pub use epoch::{Epoch, SkipStats};
pub use process::{TextInput, TextTransform};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vlp_text::Tokenizer;

use crate::augment::AugmentConfig;
use crate::error::{DataError, Result};
use crate::preprocess::ImagePipeline;
use crate::shapes::Rng;
use crate::source::{IndexedSource, Source};
use process::Shared;
use stream::Stream;

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Worker threads (0 = decode on the calling thread).
    pub workers: usize,
    /// Jobs each worker may run ahead of the consumer.
    pub prefetch: usize,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Shuffle every epoch.
    pub shuffle: bool,
    /// Drop a final batch smaller than `batch_size` (training).
    pub drop_last: bool,
    /// Training augmentation; `None` uses the deterministic preprocessing pipeline.
    pub augment: Option<AugmentConfig>,
    /// Independently augmented views per sample (2 for SLIP-style methods; `augment.two_views`
    /// also asks for 2).
    pub views: usize,
    /// Augmentation of view `k` for `k` below its length (the improved CLIP recipe's weak
    /// global and strong local views); later views, and every view when empty, use `augment`.
    pub view_augments: Vec<AugmentConfig>,
    /// Skip samples without a caption (image–text training); image-only methods turn it off.
    pub require_caption: bool,
    /// Largest fraction of samples that may be skipped before the epoch fails.
    pub max_skip_fraction: f64,
    /// This process's rank among `world_size` data-parallel processes.
    pub rank: usize,
    /// Number of data-parallel processes; each reads a disjoint part of every epoch.
    pub world_size: usize,
    /// Samples held in the shuffle buffer of streaming sources.
    pub shuffle_buffer: usize,
    /// Streaming sources: draw shards with replacement each epoch (endless multi-epoch streams).
    pub resample: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            workers: 2,
            prefetch: 2,
            seed: 0,
            shuffle: true,
            drop_last: true,
            augment: None,
            views: 1,
            view_augments: Vec::new(),
            require_caption: true,
            max_skip_fraction: 0.01,
            rank: 0,
            world_size: 1,
            shuffle_buffer: 1000,
            resample: false,
        }
    }
}

/// A source plus everything needed to turn it into batches.
pub struct Loader {
    source: Arc<Source>,
    shared: Arc<Shared>,
    config: LoaderConfig,
}

impl Loader {
    /// A loader over `source`, preprocessing with `pipeline` (and augmenting when
    /// `config.augment` is set), tokenising captions when `tokenizer` is given.
    pub fn new(
        source: Source,
        pipeline: ImagePipeline,
        tokenizer: Option<Arc<dyn Tokenizer>>,
        config: LoaderConfig,
    ) -> Result<Self> {
        let bad = |field: &str, reason: &str| {
            Err(DataError::Config {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if config.batch_size == 0 {
            return bad("batch_size", "must be positive");
        }
        if config.world_size == 0 || config.rank >= config.world_size {
            return bad("rank", "need rank < world_size");
        }
        if !(0.0..=1.0).contains(&config.max_skip_fraction) {
            return bad("max_skip_fraction", "must be in [0, 1]");
        }
        if config.views == 0 || config.views > 16 {
            return bad("views", "must be between 1 and 16");
        }
        for (k, a) in config
            .view_augments
            .iter()
            .chain(config.augment.as_ref())
            .enumerate()
        {
            a.validate().map_err(|e| DataError::Config {
                field: if k < config.view_augments.len() {
                    format!("view_augments[{k}]")
                } else {
                    "augment".into()
                },
                reason: e.to_string(),
            })?;
        }
        crate::preprocess::validate(&pipeline)?;
        if let Source::Indexed(s) = &source
            && s.is_empty()
        {
            return Err(DataError::Dataset {
                source_name: s.name(),
                reason: "empty dataset".into(),
            });
        }
        let two = config.augment.as_ref().is_some_and(|a| a.two_views);
        let shared = Shared {
            pipeline,
            augment: config.augment.clone(),
            view_augments: config.view_augments.clone(),
            views: if two {
                config.views.max(2)
            } else {
                config.views
            }
            .max(config.view_augments.len()),
            require_caption: config.require_caption,
            tokenizer,
            text_transform: None,
            seed: config.seed,
        };
        Ok(Self {
            source: Arc::new(source),
            shared: Arc::new(shared),
            config,
        })
    }

    /// Lets a method choose each sample's texts (see [`TextTransform`]).
    pub fn with_text_transform(mut self, transform: Arc<dyn TextTransform>) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("the loader has not started an epoch yet")
            .text_transform = Some(transform);
        self
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Samples this rank reads per epoch from a random-access source.
    fn rank_indices(&self, s: &dyn IndexedSource, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..s.len()).collect();
        if self.config.shuffle {
            Rng::for_item(self.config.seed, 0xe90c, epoch).shuffle(&mut order);
        }
        // Every rank gets the same number of samples, so data-parallel steps stay in lockstep.
        let per_rank = order.len() / self.config.world_size;
        order
            .into_iter()
            .skip(self.config.rank)
            .step_by(self.config.world_size)
            .take(per_rank)
            .collect()
    }

    /// Batches per epoch for random-access sources (`None` for streams).
    pub fn batches_per_epoch(&self) -> Option<usize> {
        match self.source.as_ref() {
            Source::Indexed(s) => {
                let n = s.len() / self.config.world_size;
                Some(if self.config.drop_last {
                    n / self.config.batch_size
                } else {
                    n.div_ceil(self.config.batch_size)
                })
            }
            Source::Wds(_) => None,
        }
    }

    /// The batches of `epoch`, starting at batch `start_batch` (to resume mid-epoch).
    pub fn epoch(&self, epoch: u64, start_batch: usize) -> Epoch {
        let workers = self.config.workers;
        let streaming = matches!(self.source.as_ref(), Source::Wds(_));
        let stream = match self.source.as_ref() {
            Source::Indexed(s) => {
                let idx = self.rank_indices(s.as_ref(), epoch);
                let b = self.config.batch_size;
                let mut jobs: Vec<Vec<usize>> = idx.chunks(b).map(<[usize]>::to_vec).collect();
                if self.config.drop_last && jobs.last().is_some_and(|j| j.len() < b) {
                    jobs.pop();
                }
                let jobs: Vec<Vec<usize>> = jobs.into_iter().skip(start_batch).collect();
                Stream::indexed(
                    self.source.clone(),
                    self.shared.clone(),
                    jobs,
                    epoch,
                    workers,
                    self.config.prefetch,
                )
            }
            Source::Wds(w) => Stream::wds(w, self.shared.clone(), &self.config, epoch),
        };
        Epoch {
            stream,
            stats: SkipStats::default(),
            buffer: Vec::new(),
            shuffle: streaming && self.config.shuffle,
            rng: Rng::for_item(self.config.seed, 0xb0ff, epoch),
            batch_index: start_batch,
            to_discard: if streaming {
                start_batch * self.config.batch_size
            } else {
                0
            },
            config: self.config.clone(),
            image_size: self.shared.pipeline.size,
            done: false,
        }
    }
}
