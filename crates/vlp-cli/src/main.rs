//! `vlp`: train, evaluate and convert vision-language models from the command line.

mod data;
mod info;
mod inputs;
mod parity;

use clap::{Parser, Subcommand};

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
    /// Generate ShapesWorld datasets and inspect any data source.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Tokenise texts; prints one JSON line with `ids` and `attention_mask` per text.
    Tokenize(inputs::TokenizeArgs),
    /// Preprocess images into a safetensors file of `[3, H, W]` tensors named by file stem.
    Preprocess(inputs::PreprocessArgs),
    /// Compare a checkpoint's outputs with reference outputs from transformers or open_clip.
    CheckParity(parity::ParityArgs),
    /// Convert a transformers or open_clip checkpoint to transformers' safetensors layout.
    Convert(parity::ConvertArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Tokenize(args) => inputs::tokenize(args),
        Command::Preprocess(args) => inputs::preprocess(args),
        Command::CheckParity(args) => parity::run(args),
        Command::Convert(args) => parity::convert(args),
    }
}
