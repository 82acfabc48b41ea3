//! Multi-node training with real processes on this machine: the same trajectory as one process
//! with two devices, every sample once per epoch, failures that end every process within the
//! timeout with a message naming the rank, a configuration mismatch refused at start-up, and an
//! interrupted two-process run resumed onto the uninterrupted trajectory.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::text;

/// A model small enough for seconds, for the failure tests.
const TINY_MODEL: &[&str] = &[
    "model.width=32",
    "model.layers=1",
    "model.heads=2",
    "model.embed_dim=32",
];

/// A short run: one epoch of `shapes:train:64` is 4 steps of 16.
const SHORT: &[&str] = &[
    "data.shapes.image_size=32",
    "data.train=\"shapes:train:64\"",
    "data.batch_size=16",
    "data.workers=1",
    "data.eval=\"\"",
    "data.eval_unseen=\"\"",
    "optim.warmup_steps=2",
    "log.progress=false",
    "log.every=1",
    "eval.every=0",
    "distributed.timeout_s=10",
];

fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = model_args(dir, extra);
    for s in TINY_MODEL {
        a.push("--set".into());
        a.push(s.to_string());
    }
    a
}

/// [`train_args`] with the default model (`configs/shapes-clip.toml`'s architecture).
fn model_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "train".to_string(),
        "--run-dir".into(),
        dir.display().to_string(),
    ];
    for s in SHORT.iter().chain(extra) {
        a.push("--set".into());
        a.push(s.to_string());
    }
    a
}

fn vlp_cmd(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vlp"));
    c.args(args);
    for v in [
        "WORLD_SIZE",
        "RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_NTASKS",
        "SLURM_PROCID",
    ] {
        c.env_remove(v);
    }
    c
}

/// (step → loss) of a run directory's metrics; the last record of a step wins (a resumed run
/// logs the steps after its checkpoint again).
fn losses(dir: &Path) -> BTreeMap<u64, f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "train")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

/// A block of four free ports (coordinator, liveness, two data ports), chosen as
/// `vlp train --nodes` chooses them (below the kernel's ephemeral range).
fn free_port() -> u16 {
    vlp_train::distributed::free_port_block(4).unwrap()
}

/// Starts rank `rank` of 2 with the coordinator on `port`.
fn rank(dir: &Path, port: u16, rank: usize, extra: &[&str]) -> Child {
    let mut a = train_args(dir, extra);
    a.extend([
        "--world-size".into(),
        "2".into(),
        "--rank".into(),
        rank.to_string(),
        "--coordinator".into(),
        format!("127.0.0.1:{port}"),
        "--node-address".into(),
        format!("127.0.0.1:{}", port + 2 + rank as u16),
    ]);
    vlp_cmd(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st, err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("a rank did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The acceptance: the default model for a few dozen steps (24, six epochs of a
/// 64-sample set, so the sharding is checked across reshuffles).
#[test]
fn two_processes_follow_the_two_device_trajectory_and_see_every_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let steps = [
        "optim.steps=24",
        "log.sample_keys=true",
        "checkpoint.every=0",
    ];
    // One process, two devices (threads).
    let one = dir.path().join("one");
    let mut a = model_args(&one, &steps);
    a.extend(["--devices".into(), "2".into()]);
    let o = vlp_cmd(&a).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Two processes, one device each, through `--nodes 2`.
    let two = dir.path().join("two");
    let mut a = model_args(&two, &steps);
    a.extend(["--nodes".into(), "2".into()]);
    let o = vlp_cmd(&a).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(
        last.starts_with("{\"final\""),
        "rank 0 prints the final line: {last}"
    );
    // And one device: the features are gathered and the gradients summed, so the global batch
    // gives the same loss however it is split.
    let single = dir.path().join("single");
    let o = vlp_cmd(&model_args(&single, &steps)).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (l1, l2, l0) = (losses(&one), losses(&two), losses(&single));
    assert_eq!(l1.len(), 24);
    assert_eq!(l1.keys().collect::<Vec<_>>(), l2.keys().collect::<Vec<_>>());
    assert_eq!(l1.keys().collect::<Vec<_>>(), l0.keys().collect::<Vec<_>>());
    for (step, a) in &l1 {
        let (b, c) = (l2[step], l0[step]);
        assert!(
            (a - b).abs() < 1e-5 && (a - c).abs() < 1e-5,
            "step {step}: one process with two devices {a}, two processes {b}, one device {c}"
        );
    }
    // Every epoch (4 steps of 16), the two ranks together saw each of the 64 samples once.
    let lines: Vec<String> = (0..2)
        .flat_map(|r| {
            std::fs::read_to_string(two.join(format!("samples-rank{r}.txt")))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(lines.len(), 24 * 16, "one line per sample trained on");
    let want: Vec<String> = (0..64).map(|i| format!("shapes-train-{i:08}")).collect();
    for epoch in 0..6 {
        let prefix = format!("{epoch} ");
        let mut keys: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect();
        keys.sort();
        assert_eq!(keys, want, "epoch {epoch}");
    }
}

#[test]
fn a_rank_that_dies_stops_the_other_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = ["optim.steps=100000", "checkpoint.every=0"];
    let mut r0 = rank(dir.path(), port, 0, &extra);
    let mut r1 = rank(dir.path(), port, 1, &extra);
    // Wait until training runs, then kill rank 1 outright.
    let start = Instant::now();
    while losses(dir.path()).len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "training did not start"
        );
        assert!(r0.try_wait().unwrap().is_none(), "rank 0 stopped early");
        std::thread::sleep(Duration::from_millis(50));
    }
    r1.kill().unwrap();
    let killed = Instant::now();
    let (st, err) = wait_for(&mut r0, Duration::from_secs(30));
    assert!(
        !st.success(),
        "rank 0 exited with success after its peer died"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "took {:?}",
        killed.elapsed()
    );
    assert!(err.contains("rank 1") && err.contains("stopped"), "{err}");
    let _ = r1.wait();
}

#[test]
fn ranks_with_different_configurations_both_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r0 = rank(dir.path(), port, 0, &["optim.steps=50"]);
    let mut r1 = rank(dir.path(), port, 1, &["optim.steps=50", "optim.lr=0.003"]);
    let (s0, e0) = wait_for(&mut r0, Duration::from_secs(30));
    let (s1, e1) = wait_for(&mut r1, Duration::from_secs(30));
    assert!(!s0.success() && !s1.success());
    assert!(e0.contains("configuration differs"), "rank 0: {e0}");
    assert!(e1.contains("configuration"), "rank 1: {e1}");
    assert!(losses(dir.path()).is_empty(), "a step was taken");
}

/// A data port that another program holds: the rank says so, naming the field and the port,
/// and rank 0 stops too (before this, the peer failed in its first download, naming neither).
#[test]
fn a_node_port_in_use_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _held = std::net::TcpListener::bind(("0.0.0.0", port + 3)).unwrap();
    let mut r0 = rank(dir.path(), port, 0, &["optim.steps=50"]);
    let mut r1 = rank(dir.path(), port, 1, &["optim.steps=50"]);
    let (s1, e1) = wait_for(&mut r1, Duration::from_secs(30));
    let (s0, e0) = wait_for(&mut r0, Duration::from_secs(30));
    assert!(!s0.success() && !s1.success());
    assert!(
        e1.contains("distributed.node_address")
            && e1.contains(&format!("port {}", port + 3))
            && e1.contains("another process holds it"),
        "rank 1: {e1}"
    );
    assert!(e0.contains("rank 1"), "rank 0: {e0}");
    assert!(losses(dir.path()).is_empty(), "a step was taken");
}

#[test]
fn an_unreachable_coordinator_is_an_error_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = Instant::now();
    let mut r1 = rank(dir.path(), port, 1, &["distributed.timeout_s=2"]);
    let (st, err) = wait_for(&mut r1, Duration::from_secs(30));
    assert!(!st.success());
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        err.contains("cannot reach") && err.contains(&(port + 1).to_string()),
        "{err}"
    );
}

#[test]
fn two_processes_killed_and_resumed_follow_the_uninterrupted_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["optim.steps=12", "checkpoint.every=3"];
    let full = dir.path().join("full");
    let mut a = train_args(&full, &extra);
    a.extend(["--nodes".into(), "2".into()]);
    let o = vlp_cmd(&a).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Interrupted: both processes killed once a checkpoint exists, then both resumed.
    let part = dir.path().join("part");
    let port = free_port();
    let mut r0 = rank(&part, port, 0, &extra);
    let mut r1 = rank(&part, port, 1, &extra);
    let start = Instant::now();
    while !part.join("checkpoints").is_dir()
        || std::fs::read_dir(part.join("checkpoints"))
            .unwrap()
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().starts_with("step-"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint was written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = r0.kill();
    let _ = r1.kill();
    let _ = (r0.wait(), r1.wait());
    let port = free_port();
    let resume = |r: usize| {
        let mut a = vec![
            "train".to_string(),
            "--resume".into(),
            part.display().to_string(),
            "--world-size".into(),
            "2".into(),
            "--rank".into(),
            r.to_string(),
            "--coordinator".into(),
            format!("127.0.0.1:{port}"),
            "--node-address".into(),
            format!("127.0.0.1:{}", port + 2 + r as u16),
        ];
        a.truncate(a.len());
        vlp_cmd(&a)
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut r0, mut r1) = (resume(0), resume(1));
    let (s0, e0) = wait_for(&mut r0, Duration::from_secs(120));
    let (s1, e1) = wait_for(&mut r1, Duration::from_secs(120));
    assert!(s0.success() && s1.success(), "{e0}\n{e1}");
    let (want, got) = (losses(&full), losses(&part));
    assert_eq!(want.len(), 12);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (step, a) in &want {
        assert!(
            (a - got[step]).abs() < 1e-5,
            "step {step}: {a} vs {}",
            got[step]
        );
    }
}
