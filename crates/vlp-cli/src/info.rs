//! `vlp info`.

use clap::Args;
use vlp_core::backend;

/// Arguments of `vlp info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints what this build can run on.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let devices = backend::device_count();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if args.json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "backend": backend::backend_name(),
            "backend_description": backend::backend_description(),
            "compiled_backends": backend::compiled_backends(),
            "devices": devices.as_ref().ok(),
            "device_error": devices.as_ref().err(),
            "cpu_threads": threads,
        });
        println!("{v}");
        return Ok(());
    }
    println!("vlp {}", env!("CARGO_PKG_VERSION"));
    println!(
        "backend: {} ({})",
        backend::backend_name(),
        backend::backend_description()
    );
    println!(
        "compiled backends: {}",
        backend::compiled_backends().join(", ")
    );
    match devices {
        Ok(n) => println!(
            "devices: {n} ({:?} is the default)",
            backend::default_device()
        ),
        Err(e) => println!("devices: none usable ({e})"),
    }
    println!("cpu threads: {threads}");
    Ok(())
}
