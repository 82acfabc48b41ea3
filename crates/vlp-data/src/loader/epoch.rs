//! The consumer side of an epoch: skips counted by reason, batches cut in a fixed order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vlp_text::TokenBatch;

use super::LoaderConfig;
use super::batch::Batch;
use super::process::{Item, Ready};
use super::stream::Stream;
use crate::error::{DataError, Result};
use crate::shapes::Rng;
use crate::source::Skip;

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

/// The batches of one epoch; [`Epoch::stats`] reports what was skipped.
pub struct Epoch {
    pub(super) stream: Stream,
    pub(super) stats: SkipStats,
    pub(super) buffer: Vec<Ready>,
    pub(super) shuffle: bool,
    pub(super) rng: Rng,
    pub(super) batch_index: usize,
    pub(super) to_discard: usize,
    pub(super) config: LoaderConfig,
    pub(super) image_size: usize,
    pub(super) done: bool,
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
        // Clips in one batch must have as many frames as its first sample.
        let plane = 3 * self.image_size * self.image_size;
        let frames = samples.first().map_or(1, |s| s.views[0].len() / plane);
        let (samples, odd): (Vec<Ready>, Vec<Ready>) = samples
            .into_iter()
            .partition(|s| s.views[0].len() == frames * plane);
        for s in odd {
            self.stats.seen -= 1;
            self.stats.add(Skip {
                detail: format!(
                    "{} frames where the batch has {frames}",
                    s.views[0].len() / plane
                ),
                key: s.key,
                reason: "frame count mismatch".into(),
            });
        }
        let n = samples.len();
        let views = samples.first().map_or(1, |s| s.views.len());
        let per = frames * plane;
        let mut b = Batch {
            index: self.batch_index,
            images: Vec::with_capacity(n * per),
            frames,
            views: vec![Vec::with_capacity(n * per); views - 1],
            image_size: self.image_size,
            captions: Vec::with_capacity(n),
            texts: Vec::with_capacity(n),
            all_captions: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            annotations: Vec::with_capacity(n),
            view_annotations: vec![Vec::with_capacity(n); views - 1],
            geometry: vec![Vec::with_capacity(n); views],
            tokens: None,
            text_tokens: None,
        };
        let mut encs = Vec::new();
        let mut text_encs = Vec::new();
        for s in samples {
            for (v, (px, (ann, g))) in s
                .views
                .into_iter()
                .zip(s.annotations.into_iter().zip(s.geometry))
                .enumerate()
            {
                if v == 0 {
                    b.images.extend(px);
                    b.annotations.push(ann);
                } else {
                    b.views[v - 1].extend(px);
                    b.view_annotations[v - 1].push(ann);
                }
                b.geometry[v].push(g);
            }
            b.captions.push(s.caption);
            b.texts.push(s.texts);
            b.all_captions.push(s.captions);
            b.keys.push(s.key);
            b.labels.push(s.label);
            if let Some(t) = s.tokens {
                encs.push(t);
            }
            text_encs.extend(s.text_tokens);
        }
        if encs.len() == n {
            b.tokens = TokenBatch::from_encodings(&encs);
        }
        b.text_tokens = TokenBatch::from_encodings(&text_encs);
        if b.texts.iter().all(Vec::is_empty) {
            b.texts.clear();
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
        if self.stream.job_granular() {
            // One job = one batch of fixed indices.
            loop {
                let items = match self.stream.next_chunk() {
                    Ok(Some(items)) => items,
                    Ok(None) => {
                        self.done = true;
                        return self.check_ceiling(true).err().map(Err);
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
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
                let items = match self.stream.next_chunk() {
                    Ok(Some(items)) => items,
                    Ok(None) => break,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
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
