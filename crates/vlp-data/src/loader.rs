//! The loader: samples from a [`Source`] decoded, augmented and tokenised on worker threads,
//! batched in a deterministic order.
//!
//! Order depends only on (seed, epoch, worker count, rank, world size). Random-access sources
//! are permuted, cut into fixed index ranges per batch and processed a batch per job, so the
//! order does not even depend on the worker count; a bad sample shrinks its batch by one instead
//! of shifting every later batch, which also makes resuming at batch `k` exact. Tar shards are
//! dealt to ranks then workers, streamed, interleaved round-robin and shuffled through a seeded
//! buffer. Prefetch is bounded per worker. Every skipped sample is counted by reason with its
//! key; past `max_skip_fraction` the epoch stops with an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use vlp_text::{Encoding, TokenBatch, Tokenizer};

use crate::augment::{AugmentConfig, augment};
use crate::error::{DataError, Result};
use crate::preprocess::{ImagePipeline, decode_image};
use crate::shapes::Rng;
use crate::source::{IndexedSource, RawImage, RawSample, Skip, Source, WdsSource, read_shard};

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
            max_skip_fraction: 0.01,
            rank: 0,
            world_size: 1,
            shuffle_buffer: 1000,
            resample: false,
        }
    }
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Position of this batch in its epoch.
    pub index: usize,
    /// Pixels, `[n, 3, size, size]` row-major.
    pub images: Vec<f32>,
    /// Second augmented view when `two_views` is on, same layout.
    pub second_view: Option<Vec<f32>>,
    /// Image side.
    pub image_size: usize,
    /// The caption used for training (one per sample).
    pub captions: Vec<String>,
    /// Every caption of every sample (COCO has several).
    pub all_captions: Vec<Vec<String>>,
    /// Sample keys.
    pub keys: Vec<String>,
    /// Class labels, where the source has them.
    pub labels: Vec<Option<usize>>,
    /// Tokenised `captions`, when the loader has a tokenizer.
    pub tokens: Option<TokenBatch>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The images as a `[n, 3, size, size]` tensor.
    pub fn images_tensor<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> burn::tensor::Tensor<B, 4> {
        let s = self.image_size;
        burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(self.images.clone(), [self.len(), 3, s, s]),
            device,
        )
    }
}

/// Skipped samples of an epoch, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkipStats {
    /// Samples looked at (loaded + skipped).
    pub seen: usize,
    /// Samples delivered in batches.
    pub loaded: usize,
    /// Reason → (key, detail) of each skip.
    pub skipped: BTreeMap<String, Vec<(String, String)>>,
}

impl SkipStats {
    /// Number of skipped samples.
    pub fn skipped_count(&self) -> usize {
        self.skipped.values().map(Vec::len).sum()
    }

    fn add(&mut self, s: Skip) {
        self.seen += 1;
        self.skipped
            .entry(s.reason)
            .or_default()
            .push((s.key, s.detail));
    }

    /// One line per reason with a few keys, for logs.
    pub fn summary(&self) -> String {
        let mut out = format!("{} of {} samples skipped", self.skipped_count(), self.seen);
        for (reason, keys) in &self.skipped {
            let some: Vec<&str> = keys.iter().take(5).map(|(k, _)| k.as_str()).collect();
            out += &format!(
                "; {reason}: {} ({}{})",
                keys.len(),
                some.join(", "),
                if keys.len() > 5 { ", ..." } else { "" }
            );
        }
        out
    }
}

/// A processed sample.
struct Ready {
    key: String,
    pixels: Vec<f32>,
    second: Option<Vec<f32>>,
    caption: String,
    captions: Vec<String>,
    label: Option<usize>,
    tokens: Option<Encoding>,
}

type Item = std::result::Result<Ready, Skip>;

/// What the workers share.
struct Shared {
    pipeline: ImagePipeline,
    augment: Option<AugmentConfig>,
    tokenizer: Option<Arc<dyn Tokenizer>>,
    seed: u64,
}

fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl Shared {
    fn process(&self, raw: RawSample, epoch: u64) -> Item {
        let skip = |reason: &str, detail: String| Skip {
            key: raw.key.clone(),
            reason: reason.into(),
            detail,
        };
        let img: RgbImage = match &raw.image {
            RawImage::Decoded(i) => i.clone(),
            RawImage::Encoded(b) => {
                decode_image(b, &raw.key).map_err(|e| skip("corrupt image", e.to_string()))?
            }
            RawImage::Path(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| skip("missing image", format!("{}: {e}", p.display())))?;
                decode_image(&bytes, &p.display().to_string())
                    .map_err(|e| skip("corrupt image", e.to_string()))?
            }
        };
        let mut rng = Rng::for_item(self.seed, epoch, key_hash(&raw.key));
        let captions: Vec<String> = raw
            .captions
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if captions.is_empty() {
            return Err(skip(
                if raw.captions.is_empty() {
                    "missing caption"
                } else {
                    "empty caption"
                },
                String::new(),
            ));
        }
        let caption = if self.augment.is_some() {
            captions[rng.below(captions.len())].clone()
        } else {
            captions[0].clone()
        };
        let (pixels, second) = match &self.augment {
            None => (self.pipeline.process(&img), None),
            Some(a) => {
                let v1 = self
                    .pipeline
                    .normalize(&augment(&img, self.pipeline.size, a, &mut rng));
                let v2 = a.two_views.then(|| {
                    self.pipeline
                        .normalize(&augment(&img, self.pipeline.size, a, &mut rng))
                });
                (v1, v2)
            }
        };
        let tokens = self.tokenizer.as_ref().map(|t| t.encode(&caption));
        Ok(Ready {
            key: raw.key,
            pixels,
            second,
            caption,
            captions,
            label: raw.label,
            tokens,
        })
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
        crate::preprocess::validate(&pipeline)?;
        if let Source::Indexed(s) = &source
            && s.is_empty()
        {
            return Err(DataError::Dataset {
                source_name: s.name(),
                reason: "empty dataset".into(),
            });
        }
        let shared = Shared {
            pipeline,
            augment: config.augment.clone(),
            tokenizer,
            seed: config.seed,
        };
        Ok(Self {
            source: Arc::new(source),
            shared: Arc::new(shared),
            config,
        })
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
            shuffle: matches!(self.source.as_ref(), Source::Wds(_)) && self.config.shuffle,
            rng: Rng::for_item(self.config.seed, 0xb0ff, epoch),
            batch_index: start_batch,
            to_discard: if matches!(self.source.as_ref(), Source::Wds(_)) {
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

/// The producer side of an epoch.
enum Stream {
    /// Decode on the caller's thread.
    Inline {
        source: Arc<Source>,
        shared: Arc<Shared>,
        jobs: std::vec::IntoIter<Vec<usize>>,
        epoch: u64,
    },
    /// Workers, each with its own bounded channel; jobs are taken round-robin.
    Workers {
        receivers: Vec<Receiver<Vec<Item>>>,
        next: usize,
        live: Vec<bool>,
        _handles: Vec<JoinHandle<()>>,
        job_granular: bool,
    },
}

fn run_indexed(source: &Source, shared: &Shared, job: &[usize], epoch: u64) -> Vec<Item> {
    let Source::Indexed(s) = source else {
        unreachable!("indexed jobs come from indexed sources")
    };
    job.iter()
        .map(|&i| s.get(i).and_then(|raw| shared.process(raw, epoch)))
        .collect()
}

impl Stream {
    fn indexed(
        source: Arc<Source>,
        shared: Arc<Shared>,
        jobs: Vec<Vec<usize>>,
        epoch: u64,
        workers: usize,
        prefetch: usize,
    ) -> Self {
        if workers == 0 {
            return Stream::Inline {
                source,
                shared,
                jobs: jobs.into_iter(),
                epoch,
            };
        }
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx): (SyncSender<Vec<Item>>, _) = sync_channel(prefetch.max(1));
            let mine: Vec<Vec<usize>> = jobs.iter().skip(w).step_by(workers).cloned().collect();
            let (source, shared) = (source.clone(), shared.clone());
            handles.push(std::thread::spawn(move || {
                for job in mine {
                    if tx.send(run_indexed(&source, &shared, &job, epoch)).is_err() {
                        return; // the consumer is gone
                    }
                }
            }));
            receivers.push(rx);
        }
        Stream::Workers {
            live: vec![true; workers],
            receivers,
            next: 0,
            _handles: handles,
            job_granular: true,
        }
    }

    fn wds(w: &WdsSource, shared: Arc<Shared>, cfg: &LoaderConfig, epoch: u64) -> Self {
        let mut shards: Vec<std::path::PathBuf> = w.shards().to_vec();
        let mut rng = Rng::for_item(cfg.seed, 0x5a4d, epoch);
        if cfg.resample {
            shards = (0..shards.len())
                .map(|_| shards[rng.below(shards.len())].clone())
                .collect();
        } else if cfg.shuffle {
            rng.shuffle(&mut shards);
        }
        let workers = cfg.workers.max(1);
        let slots = cfg.world_size * workers;
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for wk in 0..workers {
            let slot = cfg.rank * workers + wk;
            let mine: Vec<std::path::PathBuf> =
                shards.iter().skip(slot).step_by(slots).cloned().collect();
            let (tx, rx) = sync_channel::<Vec<Item>>(cfg.prefetch.max(1) * 4);
            let shared = shared.clone();
            handles.push(std::thread::spawn(move || {
                let mut chunk = Vec::with_capacity(16);
                for shard in mine {
                    let mut alive = true;
                    read_shard(&shard, |r| {
                        chunk.push(r.and_then(|raw| shared.process(raw, epoch)));
                        if chunk.len() == 16 {
                            alive = tx.send(std::mem::take(&mut chunk)).is_ok();
                        }
                        alive
                    });
                    if !alive {
                        return;
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
            }));
            receivers.push(rx);
        }
        Stream::Workers {
            live: vec![true; workers],
            receivers,
            next: 0,
            _handles: handles,
            job_granular: false,
        }
    }

    /// The next chunk of items in deterministic order, `None` when the epoch is exhausted.
    fn next_chunk(&mut self) -> Option<Vec<Item>> {
        match self {
            Stream::Inline {
                source,
                shared,
                jobs,
                epoch,
            } => jobs.next().map(|j| run_indexed(source, shared, &j, *epoch)),
            Stream::Workers {
                receivers,
                next,
                live,
                job_granular,
                ..
            } => {
                let n = receivers.len();
                for _ in 0..n {
                    let w = *next;
                    if !live[w] {
                        *next = (w + 1) % n;
                        continue;
                    }
                    match receivers[w].recv() {
                        Ok(chunk) => {
                            *next = (w + 1) % n;
                            return Some(chunk);
                        }
                        Err(_) => {
                            live[w] = false;
                            // Batch jobs were dealt round-robin: the first finished worker ends the epoch.
                            if *job_granular {
                                return None;
                            }
                            *next = (w + 1) % n;
                        }
                    }
                }
                None
            }
        }
    }
}

/// The batches of one epoch; [`Epoch::stats`] reports what was skipped.
pub struct Epoch {
    stream: Stream,
    stats: SkipStats,
    buffer: Vec<Ready>,
    shuffle: bool,
    rng: Rng,
    batch_index: usize,
    to_discard: usize,
    config: LoaderConfig,
    image_size: usize,
    done: bool,
}

impl Epoch {
    /// Skips so far (complete once the iterator is exhausted).
    pub fn stats(&self) -> &SkipStats {
        &self.stats
    }

    fn check_ceiling(&self, end: bool) -> Result<()> {
        let seen = self.stats.seen;
        let skipped = self.stats.skipped_count();
        // Judge the fraction once enough samples were seen for it to mean something.
        if (end || seen >= 1000) && skipped as f64 > self.config.max_skip_fraction * seen as f64 {
            return Err(DataError::Dataset {
                source_name: "loader".into(),
                reason: format!(
                    "too many bad samples (ceiling {:.1} %): {}",
                    100.0 * self.config.max_skip_fraction,
                    self.stats.summary()
                ),
            });
        }
        Ok(())
    }

    fn take(&mut self, items: Vec<Item>) -> Vec<Ready> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match it {
                Ok(r) => {
                    self.stats.seen += 1;
                    out.push(r);
                }
                Err(s) => self.stats.add(s),
            }
        }
        out
    }

    fn assemble(&mut self, samples: Vec<Ready>) -> Batch {
        let n = samples.len();
        let mut b = Batch {
            index: self.batch_index,
            images: Vec::with_capacity(n * 3 * self.image_size * self.image_size),
            second_view: samples
                .first()
                .and_then(|s| s.second.as_ref())
                .map(|_| Vec::new()),
            image_size: self.image_size,
            captions: Vec::with_capacity(n),
            all_captions: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            tokens: None,
        };
        let mut encs = Vec::new();
        for s in samples {
            b.images.extend(s.pixels);
            if let (Some(v), Some(s2)) = (b.second_view.as_mut(), s.second) {
                v.extend(s2);
            }
            b.captions.push(s.caption);
            b.all_captions.push(s.captions);
            b.keys.push(s.key);
            b.labels.push(s.label);
            if let Some(t) = s.tokens {
                encs.push(t);
            }
        }
        if encs.len() == n && n > 0 {
            let context_length = encs[0].ids.len();
            b.tokens = Some(TokenBatch {
                ids: encs.iter().flat_map(|e| e.ids.iter().copied()).collect(),
                attention_mask: encs
                    .iter()
                    .flat_map(|e| e.attention_mask.iter().copied())
                    .collect(),
                batch: n,
                context_length,
            });
        }
        self.stats.loaded += n;
        self.batch_index += 1;
        b
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let bsz = self.config.batch_size;
        if let Stream::Workers {
            job_granular: true, ..
        }
        | Stream::Inline { .. } = self.stream
        {
            // One job = one batch of fixed indices.
            loop {
                let Some(items) = self.stream.next_chunk() else {
                    self.done = true;
                    return self.check_ceiling(true).err().map(Err);
                };
                let ready = self.take(items);
                if let Err(e) = self.check_ceiling(false) {
                    self.done = true;
                    return Some(Err(e));
                }
                if !ready.is_empty() {
                    return Some(Ok(self.assemble(ready)));
                }
            }
        }
        // Streams: interleave, shuffle through the buffer, cut batches.
        let cap = if self.shuffle {
            self.config.shuffle_buffer.max(bsz)
        } else {
            bsz
        };
        loop {
            while self.buffer.len() < cap {
                let Some(items) = self.stream.next_chunk() else {
                    break;
                };
                let ready = self.take(items);
                self.buffer.extend(ready);
                if let Err(e) = self.check_ceiling(false) {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if self.buffer.is_empty() || (self.buffer.len() < bsz && self.config.drop_last) {
                self.done = true;
                return self.check_ceiling(true).err().map(Err);
            }
            let take = bsz.min(self.buffer.len());
            let mut samples = Vec::with_capacity(take);
            for _ in 0..take {
                let i = if self.shuffle {
                    self.rng.below(self.buffer.len())
                } else {
                    0
                };
                samples.push(if self.shuffle {
                    self.buffer.swap_remove(i)
                } else {
                    self.buffer.remove(0)
                });
            }
            if self.to_discard >= take {
                self.to_discard -= take;
                self.batch_index += 1;
                continue;
            }
            return Some(Ok(self.assemble(samples)));
        }
    }
}
