//! `vlp`: train, evaluate and convert vision-language models from the command line.

mod info;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info::run(args),
    }
}
