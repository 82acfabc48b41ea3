//! `vlp bench`: throughput of training steps and encoders on random data.

use std::time::Instant;

use anyhow::bail;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Tensor};
use clap::{Args, ValueEnum};
use vlp_core::backend::{DefaultBackend, TrainBackend, backend_name, default_device};
use vlp_data::loader::Batch;
use vlp_text::TokenBatch;
use vlp_train::TrainConfig;
use vlp_train::comm::Single;
use vlp_train::method::BuildContext;
use vlp_train::method::clip::{ClipMethod, architecture};
use vlp_train::model::build_tokenizer;
use vlp_train::trainer::Trainer;

/// What to time.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Workload {
    /// A full training step: forward, InfoNCE over the batch, backward, clipping, AdamW.
    Train,
    /// `encode_image` (inference).
    EncodeImage,
    /// `encode_text` (inference).
    EncodeText,
}

/// Precision of the timed work.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// bfloat16 compute (training: f32 master weights and optimiser state).
    Bf16,
    /// float16 compute (training: f32 master weights and optimiser state).
    F16,
}

/// Arguments of `vlp bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to time.
    #[arg(value_enum)]
    workload: Workload,
    /// Architecture: `vit-b-32`, `vit-b-16`, `vit-l-14`, `vit-l-14-336`, `siglip-b-16-224` or `shapes-tiny`.
    #[arg(long, default_value = "vit-b-32")]
    model: String,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Precision.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// Timed iterations.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up iterations (autotuning, allocations).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Training-config overrides for the architecture, e.g. `--set model.layers=4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Peak resident memory of this process (the CPU backend's memory), where the OS reports it.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Cast(FloatDType);

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dt = self.0;
        p.map(|t| t.cast(dt))
    }
}

/// Runs the benchmark and prints one JSON line.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be positive");
    }
    let tiny = a.model == "shapes-tiny";
    let mut overrides = vec![
        format!("model.preset=\"{}\"", a.model),
        format!("data.batch_size={}", a.batch),
        format!(
            "precision.mode=\"{}\"",
            format!("{:?}", a.dtype).to_lowercase()
        ),
        "optim.warmup_steps=1".into(),
        "optim.steps=1000000".into(),
    ];
    if !tiny {
        overrides.push("tokenizer.kind=\"clip\"".into());
        overrides.push("tokenizer.context_length=77".into());
    }
    overrides.extend(a.set.iter().cloned());
    let cfg = TrainConfig::load(None, &overrides)?;
    let tok = build_tokenizer(&cfg)?;
    let arch = architecture(
        &BuildContext {
            config: &cfg,
            tokenizer: &tok,
        },
        false,
    )?;
    let device = default_device();
    let (s, ctx, vocab) = (
        arch.vision.image_size,
        cfg.tokenizer.context_length,
        arch.text.vocab_size,
    );
    // Random data, fixed across iterations; text lengths vary and end with the end token.
    let px = Tensor::<DefaultBackend, 4>::random(
        [a.batch, 3, s, s],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut ids = vec![0u32; a.batch * ctx];
    let mut mask = vec![0u32; a.batch * ctx];
    for b in 0..a.batch {
        // Lengths 4..ctx (every text full when the context is that short).
        let len = if ctx > 4 {
            4 + (b * 7) % (ctx - 4)
        } else {
            ctx
        };
        for t in 0..len {
            ids[b * ctx + t] = if t == len - 1 {
                (vocab - 1) as u32
            } else {
                ((b * 31 + t * 17) % (vocab - 2)) as u32 + 1
            };
            mask[b * ctx + t] = 1;
        }
    }
    let tokens = TokenBatch {
        ids,
        attention_mask: mask,
        batch: a.batch,
        context_length: ctx,
    };
    let half = match a.dtype {
        Dtype::F32 => None,
        Dtype::Bf16 => Some(FloatDType::BF16),
        Dtype::F16 => Some(FloatDType::F16),
    };
    let mut iteration: Box<dyn FnMut()> = match a.workload {
        Workload::Train => {
            let batch = Batch {
                images: px.into_data().convert::<f32>().into_vec().expect("f32"),
                frames: 1,
                image_size: s,
                captions: vec![String::new(); a.batch],
                all_captions: vec![Vec::new(); a.batch],
                keys: (0..a.batch).map(|i| i.to_string()).collect(),
                labels: vec![None; a.batch],
                tokens: Some(tokens),
                ..Default::default()
            };
            let mut trainer = Trainer::new(
                &cfg,
                std::sync::Arc::new(ClipMethod::clip(&cfg)?),
                arch.init::<TrainBackend>(&device),
                device.clone(),
                Single,
            );
            Box::new(move || {
                let r = trainer.step(&batch).expect("a benchmark step");
                assert!(r.loss.is_finite(), "non-finite loss in the benchmark");
            })
        }
        Workload::EncodeImage | Workload::EncodeText => {
            let mut model = arch.init::<TrainBackend>(&device).valid();
            let (px, ids) = match half {
                Some(dt) => {
                    model = model.map(&mut Cast(dt));
                    (px.cast(dt), tokens)
                }
                None => (px, tokens),
            };
            let (idt, mt) = ids.to_tensors::<DefaultBackend>(&device);
            let image = a.workload == Workload::EncodeImage;
            Box::new(move || {
                let out = if image {
                    model.encode_image(px.clone())
                } else {
                    model.encode_text(idt.clone(), Some(mt.clone()))
                };
                // Reading one value back waits for the device.
                let _ = out.slice([0..1, 0..1]).into_data();
            })
        }
    };
    for _ in 0..a.warmup {
        iteration();
    }
    let start = Instant::now();
    for _ in 0..a.steps {
        iteration();
    }
    let secs = start.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "workload": format!("{:?}", a.workload).to_lowercase(),
        "model": a.model,
        "backend": backend_name(),
        "dtype": format!("{:?}", a.dtype).to_lowercase(),
        "batch": a.batch,
        "steps": a.steps,
        "samples_per_s": (a.batch * a.steps) as f64 / secs,
        "step_ms": 1000.0 * secs / a.steps as f64,
        "peak_memory_bytes": peak_memory_bytes(),
        "peak_memory_kind": "process resident set (CPU backend)",
        "parameters": arch.init::<DefaultBackend>(&device).num_params(),
    });
    println!("{line}");
    Ok(())
}
