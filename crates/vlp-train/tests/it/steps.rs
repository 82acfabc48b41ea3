//! Single steps and short runs: the loss falls, NaN is contained, accumulation and data
//! parallelism compute the same update, towers can be locked, runs resume exactly.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vlp_core::backend::{TrainBackend as A, default_device};
use vlp_core::checkpoint::collect_params;
use vlp_train::comm::{Collective, Single};
use vlp_train::metrics::MetricsLog;
use vlp_train::trainer::Trainer;
use vlp_train::{RunOptions, TrainError, train};

use crate::{batches, collective_lock, devices, method, model, tiny};

fn params(
    m: &vlp_align::ClipModel<A>,
) -> std::collections::BTreeMap<String, vlp_core::checkpoint::HostTensor> {
    collect_params(m)
}

fn max_diff(a: &vlp_align::ClipModel<A>, b: &vlp_align::ClipModel<A>) -> f32 {
    let (pa, pb) = (params(a), params(b));
    pa.iter()
        .map(|(k, t)| {
            t.data
                .iter()
                .zip(&pb[k].data)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn loss_falls_with_both_objectives() {
    // Eight passes over 8 batches: after four the fall was 9–15 % depending on the initial
    // weights (the vocabulary's size changes them), too close to the asserted 10 %.
    const ROUNDS: usize = 8;
    for loss in ["clip", "siglip"] {
        // A schedule longer than the 32 steps taken, so the rate stays up.
        let cfg = tiny(&[&format!("method.kind={loss}"), "optim.steps=200"]);
        let data = batches(&cfg, 8);
        let mut t = Trainer::new(&cfg, method(&cfg), model(&cfg, 1), default_device(), Single);
        let mut losses = Vec::new();
        for round in 0..ROUNDS {
            for b in &data {
                let r = t.step(b).unwrap();
                assert!(!r.skipped && r.loss.is_finite(), "{loss} round {round}");
                losses.push(r.loss);
            }
        }
        let (first, last) = (mean(&losses[..8]), mean(&losses[8 * (ROUNDS - 1)..]));
        println!("{loss}: first epoch {first:.4}, last {last:.4}");
        assert!(
            last < 0.9 * first,
            "{loss}: loss did not fall ({first} → {last})"
        );
    }
}

#[test]
fn non_finite_loss_skips_the_step_and_stops_a_divergent_run() {
    let cfg = tiny(&["optim.max_nonfinite=2"]);
    let mut data = batches(&cfg, 1);
    let good = data[0].clone();
    data[0].images.iter_mut().for_each(|v| *v = f32::NAN);
    let mut t = Trainer::new(&cfg, method(&cfg), model(&cfg, 2), default_device(), Single);
    let before = t.model.clone();
    let r = t.step(&data[0]).unwrap();
    assert!(r.skipped && !r.loss.is_finite());
    assert_eq!(
        max_diff(&before, &t.model),
        0.0,
        "a skipped step changed the weights"
    );
    assert_eq!((t.state.step, t.state.skipped_steps), (0, 1));
    // A good batch resets the run of failures.
    assert!(!t.step(&good).unwrap().skipped);
    assert_eq!(t.state.nonfinite_run, 0);
    t.step(&data[0]).unwrap();
    t.step(&data[0]).unwrap();
    match t.step(&data[0]) {
        Err(TrainError::Diverged { count: 3, .. }) => {}
        other => panic!("expected divergence after 3 non-finite losses, got {other:?}"),
    }
}

#[test]
fn accumulation_gives_the_same_update_as_one_big_batch() {
    let cfg1 = tiny(&[]);
    let cfg4 = tiny(&["optim.accumulate=4"]);
    let data = batches(&cfg1, 1);
    let mut a = Trainer::new(
        &cfg1,
        method(&cfg1),
        model(&cfg1, 3),
        default_device(),
        Single,
    );
    let mut b = Trainer::new(
        &cfg4,
        method(&cfg4),
        a.model.clone(),
        default_device(),
        Single,
    );
    let (ra, rb) = (a.step(&data[0]).unwrap(), b.step(&data[0]).unwrap());
    assert!(
        (ra.loss - rb.loss).abs() < 1e-5,
        "{} vs {}",
        ra.loss,
        rb.loss
    );
    assert!(
        (ra.grad_norm - rb.grad_norm).abs() < 1e-4 * ra.grad_norm.max(1.0),
        "{} vs {}",
        ra.grad_norm,
        rb.grad_norm
    );
    let d = max_diff(&a.model, &b.model);
    assert!(d < 1e-5, "weights differ by {d}");
}

#[test]
fn locked_image_tower_does_not_move() {
    locked_tower_stays(&tiny(&["optim.lock_image=true"]));
}

/// Under mixed precision the step casts every parameter to a compute copy; frozen ones must
/// stay frozen there (the cast once made every copy require gradients).
#[test]
fn locked_image_tower_does_not_move_under_mixed_precision() {
    locked_tower_stays(&tiny(&["optim.lock_image=true", "precision.mode=\"bf16\""]));
}

fn locked_tower_stays(cfg: &vlp_train::TrainConfig) {
    let cfg = cfg.clone();
    let data = batches(&cfg, 2);
    let mut t = Trainer::new(&cfg, method(&cfg), model(&cfg, 4), default_device(), Single);
    let before = params(&t.model);
    for b in &data {
        t.step(b).unwrap();
    }
    let after = params(&t.model);
    for (k, v) in &before {
        let moved = v.data != after[k].data;
        let image_side = k.starts_with("vision_model") || k.starts_with("visual_projection");
        assert_eq!(moved, !image_side, "{k}: moved = {moved}");
    }
}

#[test]
fn two_ranks_compute_the_single_process_update() {
    let _turn = collective_lock();
    // One step on 16 samples in one process, and as 2 ranks × 8 samples with the contrastive
    // loss over the gathered global batch and summed gradients (burn::collective on threads).
    let cfg = tiny(&[]);
    let data = batches(&cfg, 1);
    let init = model(&cfg, 5);
    let mut single = Trainer::new(&cfg, method(&cfg), init.clone(), default_device(), Single);
    let want = single.step(&data[0]).unwrap();
    let halves: Vec<vlp_data::loader::Batch> = (0..2)
        .map(|r| {
            let b = &data[0];
            let n = b.len() / 2;
            let px = b.images.len() / b.len();
            let t = b.tokens.as_ref().unwrap();
            let mut h = b.clone();
            h.images = b.images[r * n * px..(r + 1) * n * px].to_vec();
            h.keys = b.keys[r * n..(r + 1) * n].to_vec();
            h.captions = b.captions[r * n..(r + 1) * n].to_vec();
            h.labels = b.labels[r * n..(r + 1) * n].to_vec();
            let cl = t.context_length;
            h.tokens = Some(vlp_text::TokenBatch {
                ids: t.ids[r * n * cl..(r + 1) * n * cl].to_vec(),
                attention_mask: t.attention_mask[r * n * cl..(r + 1) * n * cl].to_vec(),
                batch: n,
                context_length: cl,
            });
            h
        })
        .collect();
    let cfg2 = tiny(&["distributed.devices=2"]);
    let results: Vec<(f32, vlp_align::ClipModel<A>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|r| {
                let (cfg2, init, half) = (&cfg2, init.clone(), halves[r].clone());
                s.spawn(move || {
                    let config = burn::collective::CollectiveConfig::default().with_num_devices(2);
                    let comm = Collective::<A>::register(r, 2, default_device(), config).unwrap();
                    // Each rank its own parameter tensors, as `train` gives them (it builds a
                    // model per rank and takes rank 0's weights): clones of one model share
                    // their autodiff nodes, and Burn's autodiff keeps one graph per set of
                    // connected nodes for the whole process, so two threads stepping clones
                    // share one graph. That is not a run `train` makes; it is the likeliest
                    // cause of this test's one failure (CI, 2026-12-01: the ranks' gradient
                    // all-reduce met tensors of different sizes), not reproduced since.
                    use vlp_train::comm::Comm;
                    let init = comm.sync_model(init).unwrap();
                    let mut t = Trainer::new(cfg2, method(cfg2), init, default_device(), comm);
                    let rep = t.step(&half).unwrap();
                    (rep.loss, t.model)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (loss, m) in &results {
        assert!(
            (loss - want.loss).abs() < 1e-5,
            "rank loss {loss} vs single {}",
            want.loss
        );
        let d = max_diff(m, &single.model);
        assert!(
            d < 2e-5,
            "rank weights differ from the single-process update by {d}"
        );
    }
}

#[test]
fn resumed_run_follows_the_uninterrupted_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(&["optim.steps=6", "checkpoint.every=1"]);
    let full = dir.path().join("full");
    train::<A>(
        &cfg,
        devices(&cfg),
        RunOptions {
            run_dir: Some(full.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    // Interrupted after its first step (the stop flag is already up), then resumed.
    let part = dir.path().join("part");
    let stop = Arc::new(AtomicBool::new(true));
    let e = train::<A>(
        &cfg,
        devices(&cfg),
        RunOptions {
            run_dir: Some(part.clone()),
            stop,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, TrainError::Interrupted { step: 1, .. }), "{e}");
    std::fs::write(part.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    train::<A>(
        &cfg,
        devices(&cfg),
        RunOptions {
            resume: Some(part.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b) = (crate::train_losses(&full), crate::train_losses(&part));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "resumed trajectory differs");
}

#[test]
fn ranks_that_built_their_own_models_stay_in_step() {
    let _turn = collective_lock();
    // Each rank (thread or machine) builds its own model: different weights and different
    // `ParamId`s. `sync_model` must equalise the weights, and the gradient all-reduce must pair
    // tensors by module position, not by id, so that both ranks take the same step.
    let cfg = tiny(&["distributed.devices=2", "data.batch_size=32"]);
    let data = batches(&tiny(&[]), 2);
    let models = [model(&cfg, 1), model(&cfg, 2)];
    assert!(max_diff(&models[0], &models[1]) > 1e-3);
    let first = models[0].clone();
    let results: Vec<(vlp_align::ClipModel<A>, vlp_align::ClipModel<A>)> =
        std::thread::scope(|s| {
            let hs: Vec<_> = models
                .into_iter()
                .enumerate()
                .map(|(r, m)| {
                    let (cfg, batch) = (&cfg, data[r].clone());
                    s.spawn(move || {
                        let config =
                            burn::collective::CollectiveConfig::default().with_num_devices(2);
                        let comm =
                            Collective::<A>::register(r, 2, default_device(), config).unwrap();
                        use vlp_train::comm::Comm;
                        let m = comm.sync_model(m).unwrap();
                        let synced = m.clone();
                        let mut t = Trainer::new(cfg, method(cfg), m, default_device(), comm);
                        t.step(&batch).unwrap();
                        (synced, t.model)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
    // Every rank starts from rank 0's weights exactly (a broadcast, not a mean that would
    // shrink the initialisation).
    for (r, (synced, _)) in results.iter().enumerate() {
        assert_eq!(
            max_diff(synced, &first),
            0.0,
            "rank {r} does not hold rank 0's weights"
        );
    }
    let d = max_diff(&results[0].1, &results[1].1);
    assert!(d < 1e-6, "ranks diverged by {d} after one step");
}

#[test]
fn two_device_run_trains_and_a_lone_multi_node_rank_stops_in_time() {
    let _turn = collective_lock();
    let dir = tempfile::tempdir().unwrap();
    // Automatic devices (the default): the run takes the two it is given and records them.
    let cfg = tiny(&["optim.steps=3"]);
    assert_eq!(cfg.distributed.devices, 0);
    let report = train::<A>(
        &cfg,
        vec![vlp_core::backend::default_device(); 2],
        RunOptions {
            run_dir: Some(dir.path().join("two")),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.final_loss.is_finite());
    let saved =
        vlp_train::TrainConfig::load(Some(&dir.path().join("two/config.toml")), &[]).unwrap();
    assert_eq!(saved.distributed.devices, 2, "the run records its devices");
    // An odd batch cannot be split over the two given.
    let odd = tiny(&["optim.steps=3", "data.batch_size=15"]);
    let e = train::<A>(
        &odd,
        vec![vlp_core::backend::default_device(); 2],
        RunOptions {
            run_dir: Some(dir.path().join("odd")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("data.batch_size"), "{e}");
    // Rank 1 of a two-machine run whose coordinator never answers: an error naming the
    // coordinator's liveness address, within the timeout.
    // Coordinator and liveness ports below the ephemeral range: a port from `bind(:0)` can be
    // handed to another test's server as soon as it is freed (see `liveness::tests`).
    let port = vlp_train::distributed::free_port_block(2).unwrap();
    let cfg = tiny(&[
        "optim.steps=3",
        "distributed.world_size=2",
        "distributed.rank=1",
        &format!("distributed.coordinator=\"127.0.0.1:{port}\""),
        "distributed.node_address=\"127.0.0.1:39998\"",
        "distributed.timeout_s=1",
    ]);
    let start = std::time::Instant::now();
    let e = train::<A>(
        &cfg,
        devices(&cfg),
        RunOptions {
            run_dir: Some(dir.path().join("nodes")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(start.elapsed().as_secs_f64() < 10.0);
    assert!(
        e.contains("cannot reach") && e.contains(&format!("127.0.0.1:{}", port + 1)),
        "{e}"
    );
}

#[test]
fn default_model_learns_in_a_handful_of_steps() {
    // The architecture and data of `cargo xtask train` as shipped, through the real runner;
    // only the schedule is shortened and evaluation left out.
    let dir = tempfile::tempdir().unwrap();
    let cfg = vlp_train::TrainConfig::load(
        None,
        &[
            "optim.steps=20".into(),
            "optim.warmup_steps=3".into(),
            "data.eval=\"\"".into(),
            "data.eval_unseen=\"\"".into(),
            "checkpoint.every=0".into(),
            "log.every=1".into(),
            "log.progress=false".into(),
        ],
    )
    .unwrap();
    assert_eq!(cfg.model, vlp_train::TrainConfig::default().model);
    train::<A>(
        &cfg,
        devices(&cfg),
        RunOptions {
            run_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let losses: Vec<f32> = MetricsLog::read(dir.path())
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["loss"].as_f64().unwrap() as f32)
        .collect();
    assert_eq!(losses.len(), 20);
    let (first, last) = (mean(&losses[..4]), mean(&losses[16..]));
    println!("default model: first 4 steps {first:.4}, last 4 {last:.4}");
    assert!(last < first - 0.2, "loss did not fall ({first} → {last})");
}
