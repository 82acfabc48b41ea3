//! `vlp`: train, evaluate and convert vision-language models from the command line.

// The device type depends on the backend feature: `Copy` on the CPU, not on every GPU backend.
#![allow(clippy::clone_on_copy)]

mod adapt;
mod adapt_bench;
mod bench;
mod caption;
mod curate;
mod data;
mod eval;
mod info;
mod inputs;
mod parity;
mod train;
mod vqa;

use clap::{Parser, Subcommand};

// Tensor code allocates and frees multi-megabyte buffers every step, and glibc's malloc hands
// each back to the OS (mmap/munmap, page faults on reuse): on the 2-core reference machine that
// cost a quarter of CPU training throughput. mimalloc recycles them (numbers in CONTRIBUTING.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2), which `libmimalloc-sys` does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of returning it to the OS after 10 ms: a training
/// step frees and reallocates the same activation buffers, and every purge makes the next step
/// fault and zero those pages again (+29 % CPU training throughput, CONTRIBUTING.md). The price
/// is that resident memory stays at its peak, which a training process reaches anyway.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide integer option; mimalloc reads options atomically and
    // `purge_delay` may be changed at any time (it is read at each purge).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Vision-language pretraining and adaptation on Burn.
#[derive(Parser, Debug)]
#[command(name = "vlp", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the version, the compiled backends and the devices they find.
    Info(info::InfoArgs),
    /// Train a CLIP or SigLIP model (default: a small CLIP on the built-in ShapesWorld).
    Train(train::TrainArgs),
    /// Evaluate a model: zero-shot, retrieval, linear probe or few-shot.
    Eval(eval::EvalArgs),
    /// Adapt a model to labelled classes with a few shots (CoOp, SgVA-CLIP, MaPLe, Tip-Adapter,
    /// linear probe) and save the adapter for `vlp eval --adapter`.
    Adapt(Box<adapt::AdaptCommand>),
    /// Embed images and/or texts into a safetensors file.
    Embed(eval::EmbedArgs),
    /// Time training steps or encoders on random data; prints one JSON line.
    Bench(bench::BenchArgs),
    /// Generate ShapesWorld datasets and inspect any data source.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Tokenise texts; prints one JSON line with `ids` and `attention_mask` per text.
    Tokenize(inputs::TokenizeArgs),
    /// Preprocess images into a safetensors file of `[3, H, W]` tensors named by file stem.
    Preprocess(inputs::PreprocessArgs),
    /// Curate data: describe classes (templates or an LLM server), filter pairs by CLIP score.
    #[command(subcommand)]
    Curate(curate::CurateCommand),
    /// Caption images with a model that has a decoder (PTP); one JSON line per image.
    Caption(caption::CaptionArgs),
    /// Answer a question about an image with a question-answering model (LXMERT); one JSON line.
    Vqa(vqa::VqaArgs),
    /// Compare a checkpoint's outputs with reference outputs from transformers or open_clip.
    CheckParity(parity::ParityArgs),
    /// Convert a transformers or open_clip checkpoint to transformers' safetensors layout.
    Convert(parity::ConvertArgs),
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info::run(args),
        Command::Train(args) => train::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Curate(cmd) => curate::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Adapt(cmd) => adapt::command(*cmd),
        Command::Embed(args) => eval::embed(args),
        Command::Tokenize(args) => inputs::tokenize(args),
        Command::Caption(args) => caption::run(args),
        Command::Vqa(args) => vqa::run(args),
        Command::Preprocess(args) => inputs::preprocess(args),
        Command::CheckParity(args) => parity::run(args),
        Command::Convert(args) => parity::convert(args),
    }
}
