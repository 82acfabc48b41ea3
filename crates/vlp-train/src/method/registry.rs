//! Methods by name: the one place a config's `[method] kind` becomes a type. Adding a method is
//! one line in [`methods!`]'s invocation below.

use burn::tensor::backend::AutodiffBackend;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::run::{FinalReport, RunOptions, train_method};

macro_rules! methods {
    ($($name:literal => $build:path),* $(,)?) => {
        /// Every registered method name.
        pub const NAMES: &[&str] = &[$($name),*];

        /// Trains the method `cfg.method.kind` names on `devices` (one rank each).
        pub fn train_named<B: AutodiffBackend>(
            cfg: &TrainConfig,
            devices: Vec<B::Device>,
            opts: RunOptions,
        ) -> Result<FinalReport> {
            prepare::<B>(cfg, &devices)?;
            match cfg.method.kind.as_str() {
                $($name => train_method::<B, _>(cfg, $build(cfg)?, devices, opts),)*
                other => Err(unknown(other)),
            }
        }

        /// Checks that `cfg.method` names a registered method with valid settings.
        pub fn check(cfg: &TrainConfig) -> Result<()> {
            // CoCu's archive may be one training curates first (see `prepare`).
            if cfg.method.kind == "cocu" {
                return super::cocu::CocuMethod::check_config(cfg);
            }
            match cfg.method.kind.as_str() {
                $($name => $build(cfg).map(|_| ()),)*
                other => Err(unknown(other)),
            }
        }
    };
}

/// What a method needs made before it can be built: CoCu's concept archive
/// (`[method.cocu] curate_with`).
fn prepare<B: AutodiffBackend>(cfg: &TrainConfig, devices: &[B::Device]) -> Result<()> {
    match cfg.method.kind.as_str() {
        "cocu" => super::cocu::curate::curate_if_missing::<B>(cfg, devices),
        _ => Ok(()),
    }
}

fn unknown(kind: &str) -> TrainError {
    TrainError::Config(format!(
        "`method.kind` = \"{kind}\" is not a registered method ({})",
        NAMES.join(", ")
    ))
}

methods! {
    "clip" => super::clip::ClipMethod::clip,
    "siglip" => super::clip::ClipMethod::siglip,
    "filip" => super::filip::FilipMethod::from_config,
    "dreamlip" => super::dreamlip::DreamLipMethod::from_config,
    "clip_rocket" => super::clip_rocket::ClipRocketMethod::from_config,
    "lxmert" => super::lxmert::LxmertMethod::from_config,
    "ptp" => super::ptp::PtpMethod::from_config,
    "syvic" => super::syvic::SyvicMethod::from_config,
    "pixel_linguist" => super::pixel_linguist::PixelLinguistMethod::from_config,
    "semaim" => super::semaim::SemAimMethod::from_config,
    "cocu" => super::cocu::CocuMethod::from_config,
}
