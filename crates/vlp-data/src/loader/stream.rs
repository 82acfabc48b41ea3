//! The producer side of an epoch: samples decoded inline or on worker threads.
//!
//! A worker ends its channel with [`Msg::Done`]. A worker that panics reports which shard or
//! batch it was on ([`Msg::Failed`]); a channel that closes without either is a worker that died
//! some other way. Both end the epoch with an error: a dead worker is never mistaken for a
//! finished one, so no data is lost silently.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::LoaderConfig;
use super::process::{Item, Shared};
use crate::error::{DataError, Result};
use crate::shapes::Rng;
use crate::source::{Source, WdsSource, read_shard};

/// What a worker sends.
pub(super) enum Msg {
    /// Processed samples, in order.
    Items(Vec<Item>),
    /// The worker panicked; what it was doing and the panic message.
    Failed(String),
    /// The worker finished its share.
    Done,
}

/// The producer of one epoch.
pub(super) enum Stream {
    /// Decode on the caller's thread.
    Inline {
        source: Arc<Source>,
        shared: Arc<Shared>,
        jobs: std::vec::IntoIter<Vec<usize>>,
        epoch: u64,
    },
    /// Workers, each with its own bounded channel; chunks are taken round-robin.
    Workers {
        receivers: Vec<Receiver<Msg>>,
        next: usize,
        live: Vec<bool>,
        _handles: Vec<JoinHandle<()>>,
        /// Random-access jobs (one chunk = one batch) rather than streamed shards.
        job_granular: bool,
    },
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
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
    pub fn indexed(
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
            let (tx, rx): (SyncSender<Msg>, _) = sync_channel(prefetch.max(1));
            let mine: Vec<Vec<usize>> = jobs.iter().skip(w).step_by(workers).cloned().collect();
            let (source, shared) = (source.clone(), shared.clone());
            handles.push(std::thread::spawn(move || {
                for job in mine {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        run_indexed(&source, &shared, &job, epoch)
                    }));
                    let msg = match r {
                        Ok(items) => Msg::Items(items),
                        Err(e) => {
                            let first = job.first().copied().unwrap_or(0);
                            let _ = tx.send(Msg::Failed(format!(
                                "loader worker {w} panicked on samples {first}..{} of {}: {}",
                                first + job.len(),
                                source.name(),
                                panic_message(e)
                            )));
                            return;
                        }
                    };
                    if tx.send(msg).is_err() {
                        return; // the consumer is gone
                    }
                }
                let _ = tx.send(Msg::Done);
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

    pub fn wds(w: &WdsSource, shared: Arc<Shared>, cfg: &LoaderConfig, epoch: u64) -> Self {
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
            let (tx, rx) = sync_channel::<Msg>(cfg.prefetch.max(1) * 4);
            let shared = shared.clone();
            handles.push(std::thread::spawn(move || {
                let mut chunk = Vec::with_capacity(16);
                for shard in mine {
                    let mut alive = true;
                    let mut last_key = String::new();
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        read_shard(&shard, |r| {
                            if let Ok(raw) = &r {
                                last_key.clone_from(&raw.key);
                            }
                            chunk.push(r.and_then(|raw| shared.process(raw, epoch)));
                            if chunk.len() == 16 {
                                alive = tx.send(Msg::Items(std::mem::take(&mut chunk))).is_ok();
                            }
                            alive
                        })
                    }));
                    if let Err(e) = r {
                        let after = if last_key.is_empty() {
                            "at its start".to_string()
                        } else {
                            format!("after sample \"{last_key}\"")
                        };
                        let _ = tx.send(Msg::Failed(format!(
                            "loader worker {wk} panicked reading shard {} {after}: {}",
                            shard.display(),
                            panic_message(e)
                        )));
                        return;
                    }
                    if !alive {
                        return;
                    }
                }
                if !chunk.is_empty() && tx.send(Msg::Items(chunk)).is_err() {
                    return;
                }
                let _ = tx.send(Msg::Done);
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

    /// Whether chunks are whole batches of fixed indices (random-access sources).
    pub fn job_granular(&self) -> bool {
        match self {
            Stream::Inline { .. } => true,
            Stream::Workers { job_granular, .. } => *job_granular,
        }
    }

    /// The next chunk of items in deterministic order, `Ok(None)` when the epoch is exhausted,
    /// an error when a worker failed.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Item>>> {
        match self {
            Stream::Inline {
                source,
                shared,
                jobs,
                epoch,
            } => {
                let Some(job) = jobs.next() else {
                    return Ok(None);
                };
                catch_unwind(AssertUnwindSafe(|| {
                    run_indexed(source, shared, &job, *epoch)
                }))
                .map(Some)
                .map_err(|e| {
                    let first = job.first().copied().unwrap_or(0);
                    DataError::Dataset {
                        source_name: "loader".into(),
                        reason: format!(
                            "reading samples {first}..{} of {} panicked: {}",
                            first + job.len(),
                            source.name(),
                            panic_message(e)
                        ),
                    }
                })
            }
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
                    let failed = |what: String| DataError::Dataset {
                        source_name: "loader".into(),
                        reason: what,
                    };
                    match receivers[w].recv() {
                        Ok(Msg::Items(chunk)) => {
                            *next = (w + 1) % n;
                            return Ok(Some(chunk));
                        }
                        Ok(Msg::Failed(what)) => {
                            live[w] = false;
                            return Err(failed(what));
                        }
                        Ok(Msg::Done) => {
                            live[w] = false;
                            // Batch jobs were dealt round-robin: the first finished worker ends
                            // the epoch.
                            if *job_granular {
                                return Ok(None);
                            }
                            *next = (w + 1) % n;
                        }
                        Err(_) => {
                            live[w] = false;
                            return Err(failed(format!(
                                "loader worker {w} stopped without finishing its share of the epoch"
                            )));
                        }
                    }
                }
                Ok(None)
            }
        }
    }
}
