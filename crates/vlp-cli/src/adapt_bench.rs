//! `vlp adapt bench`: the few-shot benchmark harness from the command line — few-shot,
//! base-to-novel and cross-domain protocols over methods, shots and seeds; a table, a JSON
//! report, and a PNG of accuracy against shots.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use vlp_align::adapter::{ClipAdapterConfig, SgvaConfig};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, MapleConfig};
use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_data::shapes::{Background, Palette, Placement, ShapesWorldConfig};
use vlp_data::source::open_source;
use vlp_tasks::battery::{EvalImages, require_labels};
use vlp_tasks::bundle::load_bundle;
use vlp_tasks::fewshot::{
    ClipAdapter, Coop, Domain, FewShotContext, FewShotMethod, FewShotRow, HandWritten, ImageRows,
    LinearProbe, Maple, OpenVocabularyMethod, Proapo, ProapoConfig, Sgva, TipAdapter, ZeroShot,
    base_to_novel, cross_domain, run_few_shot,
};
use vlp_tasks::report::{accuracy_vs_shots_png, cross_domain_table, few_shot_table, shots_series};
use vlp_tasks::templates::load_templates;
use vlp_tasks::zeroshot::classifier;

/// Evaluation protocol.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Protocol {
    /// k shots of every class, tested on the test data.
    FewShot,
    /// Shots of the first half of the classes; base and novel accuracy and their harmonic mean.
    BaseToNovel,
    /// Shots of the source data, tested on it and on shifted domains (with the domain gap).
    CrossDomain,
}

/// A ShapesWorld domain shift: the test data drawn again with one axis changed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ShapesDomain {
    /// Colours mixed with white.
    Pastel,
    /// Colours darkened.
    Dark,
    /// Objects on a 3×3 grid.
    Grid,
    /// Flat backgrounds only.
    Solid,
    /// Noise backgrounds only.
    Noise,
    /// Half of the objects striped or dotted.
    Textured,
}

impl ShapesDomain {
    fn apply(self, mut c: ShapesWorldConfig) -> ShapesWorldConfig {
        match self {
            ShapesDomain::Pastel => c.palette = Palette::Pastel,
            ShapesDomain::Dark => c.palette = Palette::Dark,
            ShapesDomain::Grid => c.placement = Placement::Grid,
            ShapesDomain::Solid => c.background = Background::Solid,
            ShapesDomain::Noise => c.background = Background::Noise,
            ShapesDomain::Textured => c.texture_prob = 0.5,
        }
        c
    }
}

/// A method of the harness.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BenchMethod {
    /// Hand-written prompts (the templates).
    ZeroShot,
    /// Logistic regression on the shots.
    LinearProbe,
    /// Tip-Adapter's training-free cache.
    TipAdapter,
    /// CLIP-Adapter's bottleneck on the image feature.
    ClipAdapter,
    /// CoOp's learned context.
    Coop,
    /// SgVA-CLIP.
    Sgva,
    /// MaPLe (base-to-novel only: it runs the image tower).
    Maple,
    /// ProAPO's search over the `--library` templates.
    Proapo,
}

/// Arguments of `vlp adapt bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// The protocol.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// Labelled data the shots are drawn from.
    #[arg(long)]
    train_data: String,
    /// Class names for the prompts, as `vlp adapt --classes` reads them (`FOLDER<TAB>NAME`
    /// lines); it must list every class of the data (it may list more).
    #[arg(long)]
    classes: Option<std::path::PathBuf>,
    /// Labelled test data (the source domain for cross-domain), same classes by name.
    #[arg(long)]
    data: String,
    /// Cross-domain: ShapesWorld shifts of `--data` (a `shapes:` source) to test on.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pastel,grid")]
    domains: Vec<ShapesDomain>,
    /// Methods (default: zero-shot, linear-probe, tip-adapter, coop; base-to-novel: zero-shot,
    /// coop, maple).
    #[arg(long, value_enum, value_delimiter = ',')]
    methods: Vec<BenchMethod>,
    /// Shots per class.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    k: Vec<usize>,
    /// Seeds (each draws the shots and the training).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Templates of the hand-written prompts: `openai`, `simple` or a file.
    #[arg(long, default_value = "simple")]
    templates: String,
    /// ProAPO's template library (its first is the baseline): `openai`, `simple` or a file.
    #[arg(long, default_value = "openai")]
    library: String,
    /// Epochs of the trained methods (default: CoOp's code by shots: 50, 100, 200; MaPLe 5).
    #[arg(long)]
    epochs: Option<usize>,
    /// Context vectors of CoOp, SgVA-CLIP and MaPLe (defaults 16, 16, 2).
    #[arg(long)]
    n_ctx: Option<usize>,
    /// Tokenizer override.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Write the JSON report here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw mean accuracy against shots per method here (PNG; few-shot and cross-domain, on the
    /// source domain).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn coop_epochs(k: usize) -> usize {
    match k {
        0..=2 => 50,
        3..=8 => 100,
        _ => 200,
    }
}

struct Loaded {
    rows: ImageRows,
    labels: Vec<usize>,
}

/// Labelled images of `spec`, their classes renamed by `file` (`--classes`), in the label
/// space of `classes` (matched by name).
fn load(
    spec: &str,
    shapes: &ShapesWorldConfig,
    bundle: &vlp_tasks::bundle::Bundle<DefaultBackend>,
    file: Option<&std::path::PathBuf>,
    classes: Option<&[String]>,
    pixels: bool,
) -> anyhow::Result<(Loaded, Vec<String>)> {
    let source = open_source(spec, shapes)?;
    let names = crate::eval::class_names_within(&source, file)?;
    // Features only: streamed, no pixels held. With pixels (MaPLe): every image in memory.
    let (rows, labels) = if pixels {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let set = EvalImages::load(source, &bundle.pipeline, workers)?;
        let labels = set
            .labels
            .clone()
            .with_context(|| format!("{spec}: some images have no label"))?;
        (set.image_rows(&bundle.model, &default_device()), labels)
    } else {
        let set = crate::eval::images(bundle, source, 64, spec)?;
        let labels = require_labels(&set.labels, &set.keys, spec)?;
        let rows = ImageRows {
            features: set.features,
            pixels: None,
        };
        (rows, labels)
    };
    let (labels, names) = match classes {
        Some(c) => {
            let missing: Vec<&String> = names.iter().filter(|n| !c.contains(n)).collect();
            if !missing.is_empty() {
                bail!("{spec} has classes the training data does not: {missing:?}");
            }
            let map: Vec<usize> = names
                .iter()
                .map(|n| c.iter().position(|x| x == n).expect("checked"))
                .collect();
            (labels.iter().map(|&l| map[l]).collect(), c.to_vec())
        }
        None => (labels, names),
    };
    Ok((Loaded { rows, labels }, names))
}

/// Runs the protocol; prints a table, then the report as the last stdout line (JSON).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let device = default_device();
    let bundle = load_bundle::<DefaultBackend>(&args.model, args.tokenizer.as_deref(), &device)?;
    let train_model = load_bundle::<TrainBackend>(&args.model, args.tokenizer.as_deref(), &device)?;
    let tok = bundle.tokenizer.as_ref();
    let shapes = ShapesWorldConfig {
        image_size: bundle.config.vision.image_size,
        ..Default::default()
    };
    let templates = load_templates(&args.templates)?;
    let library = load_templates(&args.library)?;
    let b2n = args.protocol == Protocol::BaseToNovel;
    let methods = if args.methods.is_empty() {
        if b2n {
            vec![BenchMethod::ZeroShot, BenchMethod::Coop, BenchMethod::Maple]
        } else {
            vec![
                BenchMethod::ZeroShot,
                BenchMethod::LinearProbe,
                BenchMethod::TipAdapter,
                BenchMethod::Coop,
            ]
        }
    } else {
        args.methods.clone()
    };
    let pixels = methods.contains(&BenchMethod::Maple);
    if pixels && !b2n {
        bail!("maple runs in --protocol base-to-novel only (it needs the images, not features)");
    }
    let (train, classes) = load(
        &args.train_data,
        &shapes,
        &bundle,
        args.classes.as_ref(),
        None,
        pixels,
    )?;
    let (test, _) = load(
        &args.data,
        &shapes,
        &bundle,
        args.classes.as_ref(),
        Some(&classes),
        pixels,
    )?;
    let layers = bundle.model.shared_depth();
    let coop_cfg = || match args.n_ctx {
        Some(n) => CoopConfig::new().with_n_ctx(n),
        None => CoopConfig::new(),
    };
    let epochs = |k: usize| args.epochs.unwrap_or(coop_epochs(k));
    let mut report = serde_json::json!({
        "protocol": format!("{:?}", args.protocol),
        "model": args.model,
        "train_data": args.train_data,
        "data": args.data,
        "classes": classes.len(),
    });
    if b2n {
        let mut rows = Vec::new();
        for &k in &args.k {
            for &seed in &args.seeds {
                for m in &methods {
                    let fit = FewShotFitConfig::new()
                        .with_epochs(epochs(k))
                        .with_seed(seed);
                    let hand;
                    let coop;
                    let maple;
                    let method: &dyn OpenVocabularyMethod = match m {
                        BenchMethod::ZeroShot => {
                            hand = HandWritten {
                                model: &bundle.model,
                                tokenizer: tok,
                                templates: templates.clone(),
                                device: device.clone(),
                            };
                            &hand
                        }
                        BenchMethod::Coop => {
                            coop = Coop {
                                model: &train_model.model,
                                tokenizer: tok,
                                classes: &classes,
                                config: coop_cfg(),
                                fit,
                                device: device.clone(),
                            };
                            &coop
                        }
                        BenchMethod::Maple => {
                            let c = MapleConfig::new().with_depth(9.min(layers));
                            maple = Maple {
                                model: &train_model.model,
                                tokenizer: tok,
                                config: match args.n_ctx {
                                    Some(n) => c.with_n_ctx(n),
                                    None => c,
                                },
                                fit: fit
                                    .with_epochs(args.epochs.unwrap_or(5))
                                    .with_lr(0.0035)
                                    .with_batch_size(4),
                                device: device.clone(),
                            };
                            &maple
                        }
                        other => bail!(
                            "{other:?} is not an open-vocabulary method (base-to-novel takes \
                             zero-shot, coop, maple)"
                        ),
                    };
                    let r = base_to_novel(
                        method,
                        &train.rows,
                        &train.labels,
                        &test.rows,
                        &test.labels,
                        &classes,
                        k,
                        seed,
                    )?;
                    println!(
                        "{:<14} k {:>3} seed {:>3}: base {:.4} novel {:.4} H {:.4}",
                        method.name(),
                        k,
                        seed,
                        r.base,
                        r.novel,
                        r.harmonic
                    );
                    rows.push(serde_json::json!({
                        "method": method.name(), "k": k, "seed": seed,
                        "base": r.base, "novel": r.novel, "harmonic": r.harmonic,
                    }));
                }
            }
        }
        report["base_to_novel"] = rows.into();
    } else {
        let zs = classifier(&bundle.model, tok, &classes, &templates, &device)?;
        let ctx = FewShotContext {
            classes: classes.len(),
            zero_shot: &zs,
        };
        let scale = bundle.model.scale();
        // Other domains: the test data drawn again with one ShapesWorld axis changed.
        let mut shifted = Vec::new();
        if args.protocol == Protocol::CrossDomain {
            if !args.data.starts_with("shapes:") {
                bail!("--domains shifts a ShapesWorld source: give --data shapes:test:N");
            }
            for d in &args.domains {
                let cfg = d.apply(shapes.clone());
                let (l, _) = load(
                    &args.data,
                    &cfg,
                    &bundle,
                    args.classes.as_ref(),
                    Some(&classes),
                    false,
                )?;
                shifted.push((format!("{d:?}").to_lowercase(), l));
            }
        }
        let mut few = Vec::new();
        let mut cross = Vec::new();
        for &k in &args.k {
            let fit = FewShotFitConfig::new().with_epochs(epochs(k));
            let probe = LinearProbe::<DefaultBackend> {
                lambda: 1e-3,
                device: device.clone(),
            };
            let tip = TipAdapter::default();
            let clip_adapter = ClipAdapter::<TrainBackend> {
                config: ClipAdapterConfig::new(bundle.model.embed_dim()),
                fit: fit.clone(),
                logit_scale: scale,
                device: device.clone(),
            };
            let coop = Coop {
                model: &train_model.model,
                tokenizer: tok,
                classes: &classes,
                config: coop_cfg(),
                fit: fit.clone(),
                device: device.clone(),
            };
            let sgva = Sgva {
                model: &train_model.model,
                tokenizer: tok,
                classes: &classes,
                config: SgvaConfig::new(
                    ClipAdapterConfig::new(bundle.model.embed_dim()),
                    coop_cfg(),
                ),
                fit: fit.clone(),
                device: device.clone(),
            };
            let proapo = Proapo {
                model: &bundle.model,
                tokenizer: tok,
                classes: &classes,
                templates: library.clone(),
                descriptions: None,
                config: ProapoConfig::default(),
                device: device.clone(),
            };
            let chosen: Vec<&dyn FewShotMethod> = methods
                .iter()
                .map(|m| -> &dyn FewShotMethod {
                    match m {
                        BenchMethod::ZeroShot => &ZeroShot,
                        BenchMethod::LinearProbe => &probe,
                        BenchMethod::TipAdapter => &tip,
                        BenchMethod::ClipAdapter => &clip_adapter,
                        BenchMethod::Coop => &coop,
                        BenchMethod::Sgva => &sgva,
                        BenchMethod::Proapo => &proapo,
                        BenchMethod::Maple => unreachable!("refused above"),
                    }
                })
                .collect();
            if args.protocol == Protocol::FewShot {
                few.extend(run_few_shot(
                    &chosen,
                    &train.rows.features,
                    &train.labels,
                    &test.rows.features,
                    &test.labels,
                    &ctx,
                    &[k],
                    &args.seeds,
                )?);
            } else {
                let mut domains = vec![Domain {
                    name: "source".into(),
                    features: &test.rows.features,
                    labels: &test.labels,
                }];
                for (name, l) in &shifted {
                    domains.push(Domain {
                        name: name.clone(),
                        features: &l.rows.features,
                        labels: &l.labels,
                    });
                }
                cross.extend(cross_domain(
                    &chosen,
                    &train.rows.features,
                    &train.labels,
                    &domains,
                    &ctx,
                    &[k],
                    &args.seeds,
                )?);
            }
        }
        if args.protocol == Protocol::FewShot {
            print!("{}", few_shot_table(&few));
            report["few_shot"] = serde_json::to_value(&few)?;
        } else {
            print!("{}", cross_domain_table(&cross));
            // The source domain's rows feed the plot, as few-shot rows.
            few = cross
                .iter()
                .filter(|r| r.domain == "source")
                .map(|r| FewShotRow {
                    method: r.method.clone(),
                    k: r.k,
                    mean: r.mean,
                    std: r.std,
                    accuracies: r.accuracies.clone(),
                    trainable_params: r.trainable_params,
                    samples: r.samples,
                    family: Some(r.family),
                })
                .collect();
            report["cross_domain"] = serde_json::to_value(&cross)?;
        }
        if let Some(p) = &args.plot {
            accuracy_vs_shots_png(&shots_series(&few), p)?;
        }
    }
    let line = serde_json::to_string(&report)?;
    if let Some(p) = &args.out {
        vlp_core::io::write_atomic(p, line.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{line}");
    Ok(())
}
