//! `vlp check-parity` and `vlp convert`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use vlp_align::parity::{KNOWN_OUTPUTS, check_parity};
use vlp_align::pretrained::{load_pretrained, save_hf, save_preprocessor_config};
use vlp_core::backend::{DefaultBackend, default_device};
use vlp_core::checkpoint::StoredDType;

/// Arguments of `vlp check-parity`.
#[derive(Args, Debug)]
#[command(after_help = known_outputs_help())]
pub struct ParityArgs {
    /// Model directory: transformers (config.json + model.safetensors or pytorch_model.bin) or
    /// open_clip (open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin).
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file with the inputs (pixel_values, input_ids, attention_mask) and reference outputs.
    #[arg(long)]
    expected: PathBuf,
    /// Largest absolute difference allowed per element.
    #[arg(long, default_value_t = 1e-4)]
    atol: f32,
}

fn known_outputs_help() -> String {
    let mut s = String::from("Outputs compared when present in --expected:\n");
    for (name, what) in KNOWN_OUTPUTS {
        s.push_str(&format!("  {name:<28} {what}\n"));
    }
    s
}

/// Runs the comparison; an `Err` (non-zero exit) when any tensor is off or nothing was compared.
pub fn run(args: ParityArgs) -> anyhow::Result<()> {
    let device = default_device();
    let p = load_pretrained::<DefaultBackend>(&args.model, &device)?;
    println!(
        "model {} ({:?} layout, {})",
        args.model.display(),
        p.layout,
        p.weights.display()
    );
    let report = check_parity(&p, &args.expected, args.atol, &device)?;
    for c in &report.checks {
        let verdict = if c.passed { "ok" } else { "FAIL" };
        println!(
            "{verdict:>4} {:<28} {:<16} max abs err {:.3e}  mean {:.3e}",
            c.name,
            format!("{:?}", c.shape),
            c.max_abs_err,
            c.mean_abs_err
        );
    }
    for u in &report.unknown {
        println!("skip {u:<28} (not an output vlp knows; see --help)");
    }
    if report.checks.is_empty() {
        bail!("{}: no known output to compare", args.expected.display());
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "parity failed (atol {:e}) for: {}",
            args.atol,
            failed.join(", ")
        );
    }
    println!(
        "parity ok: {} tensors within {:e}",
        report.checks.len(),
        args.atol
    );
    Ok(())
}

/// Precision of the written weights.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    Bf16,
}

/// Arguments of `vlp convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Model directory in transformers or open_clip layout (see `vlp check-parity --help`).
    #[arg(long)]
    model: PathBuf,
    /// Output directory; receives config.json and model.safetensors in transformers' layout.
    #[arg(long)]
    out: PathBuf,
    /// Precision of the written weights.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
}

/// Loads any supported checkpoint and writes it in transformers' layout.
pub fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let device = default_device();
    let p = load_pretrained::<DefaultBackend>(&args.model, &device)?;
    let dtype = match args.dtype {
        Dtype::F32 => StoredDType::F32,
        Dtype::F16 => StoredDType::F16,
        Dtype::Bf16 => StoredDType::BF16,
    };
    save_hf(&p.model, &p.config, &args.out, dtype)
        .with_context(|| format!("writing {}", args.out.display()))?;
    save_preprocessor_config(&p.preprocess, &args.out)?;
    println!(
        "wrote {} ({:?} layout in, transformers layout out, {:?})",
        args.out.display(),
        p.layout,
        args.dtype
    );
    Ok(())
}
