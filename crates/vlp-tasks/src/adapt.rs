//! A pretrained model adapted to labelled classes with a few shots, and its files: what
//! `vlp adapt` trains and saves and `vlp eval --adapter` loads and applies.
//!
//! An adapter directory holds `adapter.json` (the method and its settings, the class names in
//! label order, how it was trained) and `adapter.safetensors` (the trained tensors: prompt
//! contexts and adapters under the module's own parameter names, Tip-Adapter's cache, a linear
//! probe's weights, GIST's fine-tuned image tower under the checkpoint's names and its probe as
//! `probe.*`). The model itself is not copied: the adapter is applied to the model it was
//! trained on, whose joint width is recorded and checked.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_align::adapter::{Sgva as SgvaModule, SgvaConfig};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{
    CoopConfig, CoopPromptLearner, CoopPrompts, MapleConfig, MaplePromptLearner,
};
use vlp_core::checkpoint::{
    HostTensor, Source, StoredDType, TensorFile, collect_params, load_params, write_safetensors,
};
use vlp_text::Tokenizer;

use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::fewshot::base_to_novel::maple_scores;
use crate::fewshot::gist::GistTower;
use crate::fewshot::{
    Coop, Gist, GistConfig, ImageRows, Maple, Pixels, Proapo, ProapoConfig, Sgva, ShotViews,
    TipAdapter, k_shot_indices, scores as dot_scores,
};
use crate::probe::fit as fit_probe;

/// Version of the adapter files this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const JSON: &str = "adapter.json";
const TENSORS: &str = "adapter.safetensors";

/// An adaptation method and its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum AdapterSpec {
    /// CoOp's learned prompt context.
    Coop {
        /// The prompt learner.
        config: CoopConfig,
    },
    /// SgVA-CLIP's prompt, visual adapter and support prototypes.
    Sgva {
        /// The method.
        config: SgvaConfig,
    },
    /// MaPLe's coupled prompts (the image tower runs with them).
    Maple {
        /// The prompt learner.
        config: MapleConfig,
    },
    /// Tip-Adapter's cache of the shots over a hand-written zero-shot classifier.
    TipAdapter {
        /// Weight of the cache logits.
        alpha: f32,
        /// Sharpness of the affinities.
        beta: f32,
        /// Templates of the zero-shot classifier.
        templates: Vec<String>,
    },
    /// Logistic regression on the frozen features.
    LinearProbe {
        /// L2 strength.
        lambda: f64,
    },
    /// GIST: the image tower fine-tuned on the shots paired with their matched class
    /// descriptions, then a linear probe on its features.
    Gist {
        /// Matching, fine-tuning and probe.
        config: GistConfig,
        /// Each class's descriptions, in label order (from a description source: the offline
        /// templates or `vlp curate describe`'s file).
        descriptions: Vec<Vec<String>>,
    },
    /// ProAPO's search for the template set that classifies the shots best.
    Proapo {
        /// The search.
        config: ProapoConfig,
        /// The template library (its first is the search's baseline).
        library: Vec<String>,
    },
}

impl AdapterSpec {
    /// The method's name (`coop`, `sgva`, `maple`, `tip-adapter`, `linear-probe`, `proapo`,
    /// `gist`).
    pub fn name(&self) -> &'static str {
        match self {
            AdapterSpec::Coop { .. } => "coop",
            AdapterSpec::Sgva { .. } => "sgva",
            AdapterSpec::Maple { .. } => "maple",
            AdapterSpec::TipAdapter { .. } => "tip-adapter",
            AdapterSpec::LinearProbe { .. } => "linear-probe",
            AdapterSpec::Proapo { .. } => "proapo",
            AdapterSpec::Gist { .. } => "gist",
        }
    }

    /// Whether applying it runs the image tower (so the images' pixels are needed, not only
    /// their frozen features).
    pub fn needs_pixels(&self) -> bool {
        matches!(self, AdapterSpec::Maple { .. } | AdapterSpec::Gist { .. })
    }
}

/// `adapter.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The method.
    #[serde(flatten)]
    pub spec: AdapterSpec,
    /// Class names in label order (the columns of its scores).
    pub classes: Vec<String>,
    /// Width of the model's joint embedding it was trained on.
    pub embed_dim: usize,
    /// Shots per class asked for.
    pub shots: usize,
    /// Seed of the shots and the training.
    pub seed: u64,
    /// Labelled images it learned from.
    pub samples: usize,
    /// Augmented views of each image it trained on instead of the image (none: the images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<ShotViews>,
    /// Parameters it trained (0 for Tip-Adapter).
    pub trainable_params: usize,
    /// Each epoch's mean training loss (empty for closed-form methods; ProAPO: the best
    /// fitness after each search epoch).
    pub losses: Vec<f64>,
    /// The templates ProAPO chose (empty for the other methods).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chosen_templates: Vec<String>,
}

/// The trained state, on an inference backend.
enum State<B: Backend> {
    Coop(CoopPromptLearner<B>),
    Sgva {
        module: SgvaModule<B>,
        prototypes: Tensor<B, 2>,
    },
    Maple(MaplePromptLearner<B>),
    TipAdapter {
        keys: Features,
        labels: Vec<usize>,
    },
    LinearProbe {
        /// `[dim, classes]`.
        weight: Tensor<B, 2>,
        /// `[classes]`.
        bias: Tensor<B, 1>,
    },
    /// The chosen templates live in [`AdapterInfo::chosen_templates`].
    Proapo,
    Gist {
        // Boxed: a whole image tower next to small prompt learners.
        tower: Box<GistTower<B>>,
        /// The probe on the tuned features, `[dim, classes]`.
        weight: Tensor<B, 2>,
        /// `[classes]`.
        bias: Tensor<B, 1>,
    },
}

/// An adapted classifier: its description and its trained state.
pub struct Adapter<B: Backend> {
    /// What it is and how it was trained.
    pub info: AdapterInfo,
    state: State<B>,
}

fn invalid(reason: impl Into<String>) -> TaskError {
    TaskError::Invalid {
        task: "adapt".into(),
        reason: reason.into(),
    }
}

fn core(e: vlp_core::CoreError) -> TaskError {
    TaskError::Align(e.into())
}

/// Trains `spec` on `shots` images per class of `train` (drawn with `seed`, as the few-shot
/// harness draws them) for the classes `classes` (labels index them); with `views`, on
/// augmented views of those images (which then need pixels) instead of the images.
#[allow(clippy::too_many_arguments)]
pub fn adapt<B: AutodiffBackend>(
    spec: &AdapterSpec,
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    classes: &[String],
    train: &ImageRows,
    train_labels: &[usize],
    shots: usize,
    seed: u64,
    views: Option<&ShotViews>,
    fit: &FewShotFitConfig,
    device: &B::Device,
) -> Result<Adapter<B::InnerBackend>> {
    if train.len() != train_labels.len() {
        return Err(invalid(format!(
            "{} training images for {} labels",
            train.len(),
            train_labels.len()
        )));
    }
    if shots == 0 {
        return Err(invalid("shots must be at least 1"));
    }
    if let Some(l) = train_labels.iter().find(|&&l| l >= classes.len()) {
        return Err(invalid(format!("label {l} but {} classes", classes.len())));
    }
    let idx = k_shot_indices(train_labels, classes.len(), shots, seed);
    let set = train.select(&idx);
    let labels: Vec<usize> = idx.iter().map(|&i| train_labels[i]).collect();
    let samples = labels.len();
    let fit = fit.clone().with_seed(seed);
    let inner = model.valid();
    let (set, labels) = match views {
        Some(v) => v.of(&inner, &set, &labels, seed, spec.name(), device)?,
        None => (set, labels),
    };
    let mut chosen = Vec::new();
    let (state, losses, trainable) = match spec {
        AdapterSpec::Coop { config } => {
            let coop = Coop {
                model,
                tokenizer,
                classes,
                config: config.clone(),
                fit,
                device: device.clone(),
            };
            let (learner, losses) = coop.learn_context(&set.features, &labels)?;
            let n = learner.num_params();
            (State::Coop(learner.valid()), losses, n)
        }
        AdapterSpec::Sgva { config } => {
            let sgva = Sgva {
                model,
                tokenizer,
                classes,
                config: config.clone(),
                fit,
                device: device.clone(),
            };
            let learned = sgva.learn(&set.features, &labels)?;
            let n = learned.sgva.num_params();
            let state = State::Sgva {
                module: learned.sgva,
                prototypes: learned.prototypes,
            };
            (state, learned.losses, n)
        }
        AdapterSpec::Maple { config } => {
            let maple = Maple {
                model,
                tokenizer,
                config: config.clone(),
                fit,
                device: device.clone(),
            };
            let (learner, losses) = maple.learn(&set, &labels, classes)?;
            let n = learner.num_params();
            (State::Maple(learner.valid()), losses, n)
        }
        AdapterSpec::TipAdapter { .. } => {
            let state = State::TipAdapter {
                keys: set.features.clone(),
                labels: labels.clone(),
            };
            (state, Vec::new(), 0)
        }
        AdapterSpec::Proapo { config, library } => {
            let p = Proapo {
                model: &inner,
                tokenizer,
                classes,
                templates: library.clone(),
                descriptions: None,
                config: ProapoConfig {
                    seed,
                    ..config.clone()
                },
                device: device.clone(),
            };
            let (r, _) = p.search(&set.features, &labels)?;
            chosen = r.best.iter().map(|&i| library[i].clone()).collect();
            (State::Proapo, r.history, 0)
        }
        AdapterSpec::Gist {
            config,
            descriptions,
        } => {
            let gist = Gist {
                model,
                tokenizer,
                classes,
                descriptions,
                config: config.clone().with_seed(seed),
                device: device.clone(),
            };
            let fitted = gist.fit(&set, &labels)?;
            let tower = GistTower::of(&fitted.model);
            let x = tower.embed(set.require_pixels("gist")?, device);
            let r = fit_probe::<B::InnerBackend>(
                &x,
                &labels,
                classes.len(),
                config.probe_lambda,
                100,
                device,
            )?;
            // Every parameter of the model is fine-tuned, then the probe.
            let n = model.num_params() + r.weight.dims().iter().product::<usize>() + classes.len();
            let state = State::Gist {
                tower: Box::new(tower),
                weight: r.weight,
                bias: r.bias,
            };
            (state, fitted.losses, n)
        }
        AdapterSpec::LinearProbe { lambda } => {
            let r = fit_probe::<B::InnerBackend>(
                &set.features,
                &labels,
                classes.len(),
                *lambda,
                100,
                device,
            )?;
            let n = r.weight.dims().iter().product::<usize>() + classes.len();
            let state = State::LinearProbe {
                weight: r.weight,
                bias: r.bias,
            };
            (state, Vec::new(), n)
        }
    };
    Ok(Adapter {
        info: AdapterInfo {
            format_version: FORMAT_VERSION,
            spec: spec.clone(),
            classes: classes.to_vec(),
            embed_dim: inner.embed_dim(),
            shots,
            seed,
            samples,
            views: views.cloned(),
            trainable_params: trainable,
            losses,
            chosen_templates: chosen,
        },
        state,
    })
}

impl<B: Backend> Adapter<B> {
    /// Scores of every image against every class of [`AdapterInfo::classes`], `[images,
    /// classes]`. `images` are the features of `model` (the model it was trained on), with
    /// pixels for methods that run the image tower ([`AdapterSpec::needs_pixels`]).
    pub fn scores(
        &self,
        model: &ClipModel<B>,
        tokenizer: &dyn Tokenizer,
        images: &ImageRows,
        device: &B::Device,
    ) -> Result<Features> {
        if model.embed_dim() != self.info.embed_dim {
            return Err(invalid(format!(
                "the adapter was trained on a model with {}-wide embeddings, this one has {}",
                self.info.embed_dim,
                model.embed_dim()
            )));
        }
        if !images.is_empty() && images.features.dim != self.info.embed_dim {
            return Err(invalid(format!(
                "image features are {} wide, the adapter's model {}",
                images.features.dim, self.info.embed_dim
            )));
        }
        let classes = &self.info.classes;
        let scale = model.scale() as f32;
        let scaled = |mut f: Features| {
            f.data.iter_mut().for_each(|v| *v *= scale);
            f
        };
        Ok(match (&self.state, &self.info.spec) {
            (State::Coop(learner), _) => {
                let prompts = CoopPrompts::new(tokenizer, classes, learner.ctx.dims()[1])?;
                let text = Features::from_tensor(learner.class_embeddings(model, &prompts));
                scaled(dot_scores(&images.features, &text))
            }
            (State::Sgva { module, prototypes }, AdapterSpec::Sgva { config }) => {
                let prompts = CoopPrompts::new(tokenizer, classes, module.prompt.ctx.dims()[1])?;
                let text = module.text(model, &prompts);
                Features::from_tensor(module.logits(
                    images.features.to_tensor::<B>(device),
                    text,
                    prototypes.clone(),
                    scale as f64,
                    config,
                ))
            }
            (State::Maple(_) | State::Gist { .. }, spec) => {
                return self.scores_pixels(
                    model,
                    tokenizer,
                    images.require_pixels(spec.name())?,
                    device,
                );
            }
            (
                State::TipAdapter { keys, labels },
                AdapterSpec::TipAdapter {
                    alpha,
                    beta,
                    templates,
                },
            ) => {
                let zs = crate::zeroshot::classifier(model, tokenizer, classes, templates, device)?;
                let tip = TipAdapter {
                    alpha: *alpha,
                    beta: *beta,
                };
                tip.logits(keys, labels, &zs, &images.features)
            }
            (State::Proapo, _) => {
                let w = crate::zeroshot::classifier(
                    model,
                    tokenizer,
                    classes,
                    &self.info.chosen_templates,
                    device,
                )?;
                scaled(dot_scores(&images.features, &w))
            }
            (State::LinearProbe { weight, bias }, _) => {
                let x = images.features.to_tensor::<B>(device);
                Features::from_tensor(x.matmul(weight.clone()) + bias.clone().unsqueeze())
            }
            _ => unreachable!("the state is built from its spec"),
        })
    }

    /// Scores of images given as pixels only, for the methods that run the image tower
    /// ([`AdapterSpec::needs_pixels`]; their frozen features would go unused).
    pub fn scores_pixels(
        &self,
        model: &ClipModel<B>,
        tokenizer: &dyn Tokenizer,
        pixels: &Pixels,
        device: &B::Device,
    ) -> Result<Features> {
        match (&self.state, &self.info.spec) {
            (State::Maple(learner), AdapterSpec::Maple { config }) => maple_scores(
                learner,
                model,
                config,
                tokenizer,
                &self.info.classes,
                pixels,
                device,
            ),
            (
                State::Gist {
                    tower,
                    weight,
                    bias,
                },
                _,
            ) => {
                let x = tower.embed(pixels, device).to_tensor::<B>(device);
                Ok(Features::from_tensor(
                    x.matmul(weight.clone()) + bias.clone().unsqueeze(),
                ))
            }
            _ => Err(invalid(format!(
                "{} scores frozen features: give them, not pixels",
                self.info.spec.name()
            ))),
        }
    }

    /// Writes `adapter.json` and `adapter.safetensors` into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| TaskError::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tensors: BTreeMap<String, HostTensor> = match &self.state {
            State::Coop(l) => collect_params(l),
            State::Sgva { module, prototypes } => {
                let mut t = collect_params(module);
                t.insert(
                    "prototypes".into(),
                    HostTensor::from_tensor(prototypes.clone()),
                );
                t
            }
            State::Maple(l) => collect_params(l),
            State::TipAdapter { keys, .. } => BTreeMap::from([(
                "cache_keys".to_string(),
                HostTensor::new(vec![keys.rows, keys.dim], keys.data.clone()),
            )]),
            State::Proapo => BTreeMap::new(),
            State::Gist {
                tower,
                weight,
                bias,
            } => {
                let mut t = collect_params(tower.as_ref());
                t.insert(
                    "probe.weight".into(),
                    HostTensor::from_tensor(weight.clone()),
                );
                t.insert("probe.bias".into(), HostTensor::from_tensor(bias.clone()));
                t
            }
            State::LinearProbe { weight, bias } => BTreeMap::from([
                (
                    "weight".to_string(),
                    HostTensor::from_tensor(weight.clone()),
                ),
                ("bias".to_string(), HostTensor::from_tensor(bias.clone())),
            ]),
        };
        if let State::TipAdapter { labels, .. } = &self.state {
            let l: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
            tensors.insert("cache_labels".into(), HostTensor::new(vec![l.len()], l));
        }
        write_safetensors(dir.join(TENSORS), &tensors, StoredDType::F32, None).map_err(core)?;
        let json = serde_json::to_string_pretty(&self.info)
            .map_err(|e| invalid(format!("cannot serialise the adapter: {e}")))?;
        vlp_core::io::write_atomic(dir.join(JSON), json.as_bytes()).map_err(core)
    }

    /// Reads an adapter saved by [`save`](Self::save) for `model` (the model it was trained on)
    /// and its tokenizer. Errors name the file and what does not fit.
    pub fn load(
        dir: &Path,
        model: &ClipModel<B>,
        tokenizer: &dyn Tokenizer,
        device: &B::Device,
    ) -> Result<Self> {
        let path = dir.join(JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| TaskError::Io {
            path: path.clone(),
            source: e,
        })?;
        let info: AdapterInfo = serde_json::from_str(&text).map_err(|e| TaskError::Invalid {
            task: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| TaskError::Invalid {
            task: path.display().to_string(),
            reason,
        };
        if info.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                info.format_version
            )));
        }
        if info.embed_dim != model.embed_dim() {
            return Err(bad(format!(
                "trained on a model with {}-wide embeddings, this one has {}",
                info.embed_dim,
                model.embed_dim()
            )));
        }
        if info.classes.is_empty() {
            return Err(bad("no classes".into()));
        }
        let file = TensorFile::open(dir.join(TENSORS)).map_err(core)?;
        let same = |p: &str| Source::Key(p.to_string());
        let get = |key: &str| file.get(key).map_err(core);
        let classes = &info.classes;
        let state = match &info.spec {
            AdapterSpec::Coop { config } => {
                let (l, _) = config.init(model, tokenizer, classes, device)?;
                State::Coop(load_params(l, &file, same, |_| false).map_err(core)?)
            }
            AdapterSpec::Sgva { config } => {
                let (m, _) = config.init(model, tokenizer, classes, device)?;
                let module = load_params(m, &file, same, |k| k == "prototypes").map_err(core)?;
                let p = get("prototypes")?;
                if p.shape != [classes.len(), info.embed_dim] {
                    return Err(bad(format!(
                        "prototypes are {:?}, expected [{}, {}]",
                        p.shape,
                        classes.len(),
                        info.embed_dim
                    )));
                }
                State::Sgva {
                    module,
                    prototypes: p.into_tensor(device),
                }
            }
            AdapterSpec::Maple { config } => {
                let (l, _) = config.init(model, tokenizer, classes, device)?;
                State::Maple(load_params(l, &file, same, |_| false).map_err(core)?)
            }
            AdapterSpec::TipAdapter { .. } => {
                let k = get("cache_keys")?;
                let l = get("cache_labels")?;
                if k.shape.len() != 2 || k.shape[1] != info.embed_dim || l.shape != [k.shape[0]] {
                    return Err(bad(format!(
                        "cache keys {:?} and labels {:?} do not fit {}-wide embeddings",
                        k.shape, l.shape, info.embed_dim
                    )));
                }
                let labels = l
                    .data
                    .iter()
                    .map(|&v| {
                        let c = v as usize;
                        (v >= 0.0 && v.fract() == 0.0 && c < classes.len())
                            .then_some(c)
                            .ok_or_else(|| bad(format!("cache label {v} is not a class index")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                State::TipAdapter {
                    keys: Features {
                        rows: k.shape[0],
                        dim: k.shape[1],
                        data: k.data,
                    },
                    labels,
                }
            }
            AdapterSpec::Proapo { .. } => {
                if info.chosen_templates.is_empty() {
                    return Err(bad("a ProAPO adapter without chosen templates".into()));
                }
                State::Proapo
            }
            AdapterSpec::Gist { .. } => {
                let tower = load_params(GistTower::of(model), &file, same, |k| {
                    k.starts_with("probe.")
                })
                .map_err(core)?;
                let (weight, bias) = probe_tensors(&get, "probe.", &info, &bad, device)?;
                State::Gist {
                    tower: Box::new(tower),
                    weight,
                    bias,
                }
            }
            AdapterSpec::LinearProbe { .. } => {
                let (weight, bias) = probe_tensors(&get, "", &info, &bad, device)?;
                State::LinearProbe { weight, bias }
            }
        };
        Ok(Adapter { info, state })
    }
}

/// A probe's `{prefix}weight` (`[embed_dim, classes]`) and `{prefix}bias` (`[classes]`), their
/// shapes checked against `info`.
fn probe_tensors<B: Backend>(
    get: &dyn Fn(&str) -> Result<HostTensor>,
    prefix: &str,
    info: &AdapterInfo,
    bad: &dyn Fn(String) -> TaskError,
    device: &B::Device,
) -> Result<(Tensor<B, 2>, Tensor<B, 1>)> {
    let c = info.classes.len();
    let w = get(&format!("{prefix}weight"))?;
    let b = get(&format!("{prefix}bias"))?;
    if w.shape != [info.embed_dim, c] || b.shape != [c] {
        return Err(bad(format!(
            "{prefix}weight {:?} and {prefix}bias {:?}, expected [{}, {c}] and [{c}]",
            w.shape, b.shape, info.embed_dim
        )));
    }
    Ok((w.into_tensor(device), b.into_tensor(device)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fewshot::Pixels;
    use burn::tensor::Distribution;
    use vlp_align::adapter::ClipAdapterConfig;
    use vlp_core::backend::{DefaultBackend, TrainBackend, default_device, seeded};

    fn specs(embed: usize) -> Vec<AdapterSpec> {
        vec![
            AdapterSpec::Coop {
                config: CoopConfig::new().with_n_ctx(2),
            },
            AdapterSpec::Sgva {
                config: SgvaConfig::new(
                    ClipAdapterConfig::new(embed).with_reduction(2),
                    CoopConfig::new().with_n_ctx(2),
                ),
            },
            AdapterSpec::Maple {
                config: MapleConfig::new().with_depth(2),
            },
            AdapterSpec::TipAdapter {
                alpha: 1.0,
                beta: 5.5,
                templates: vec!["a photo of a {}.".into()],
            },
            AdapterSpec::LinearProbe { lambda: 1e-3 },
            AdapterSpec::Proapo {
                config: ProapoConfig {
                    epochs: 2,
                    ..Default::default()
                },
                library: vec![
                    "a photo of a {}.".into(),
                    "a {}.".into(),
                    "{}".into(),
                    "a red {}.".into(),
                ],
            },
            AdapterSpec::Gist {
                config: GistConfig::new()
                    .with_top_k(2)
                    .with_captions_per_image(2)
                    .with_epochs(2)
                    .with_batch_size(4)
                    .with_lr(1e-3),
                descriptions: vec![
                    vec!["a red circle.".into(), "a photo of a red circle.".into()],
                    vec!["a blue star.".into(), "a photo of a blue star.".into()],
                    vec!["a red star.".into(), "a photo of a blue circle.".into()],
                ],
            },
        ]
    }

    /// Every method trains, saves, reloads into a fresh process state and scores the same; a
    /// file for another model, a damaged file and a method without pixels are refused by name.
    #[test]
    fn every_method_scores_the_same_after_a_save_and_load() {
        let dev = default_device();
        let (model, tok) = crate::fewshot::testing::tiny_clip(
            &["a", "photo", "of", "red", "blue", "circle", "star", "."],
            2,
            31,
        );
        let classes: Vec<String> = ["red circle", "blue star", "red star"]
            .map(String::from)
            .to_vec();
        let pixels = seeded::<TrainBackend, _>(&dev, 32, || {
            Tensor::<TrainBackend, 4>::random([12, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev)
        });
        let inner = model.valid();
        let features = Features::from_tensor(vlp_align::model::normalize(
            inner.encode_image(pixels.clone().inner()),
        ));
        let set = ImageRows {
            features,
            pixels: Some(Pixels {
                data: pixels.into_data().to_vec().unwrap(),
                rows: 12,
                image_size: 16,
            }),
        };
        let labels: Vec<usize> = (0..12).map(|i| i % 3).collect();
        let fit = FewShotFitConfig::new().with_epochs(2).with_batch_size(4);
        for spec in specs(6) {
            let name = spec.name();
            let a = adapt(
                &spec, &model, &tok, &classes, &set, &labels, 2, 4, None, &fit, &dev,
            )
            .unwrap();
            assert_eq!(a.info.samples, 6, "{name}");
            let want = a.scores(&inner, &tok, &set, &dev).unwrap();
            assert_eq!((want.rows, want.dim), (12, 3), "{name}");
            let dir = tempfile::tempdir().unwrap();
            a.save(dir.path()).unwrap();
            let b = Adapter::<DefaultBackend>::load(dir.path(), &inner, &tok, &dev).unwrap();
            assert_eq!(b.info.classes, classes);
            assert_eq!(b.info.trainable_params, a.info.trainable_params, "{name}");
            let got = b.scores(&inner, &tok, &set, &dev).unwrap();
            assert_eq!(got, want, "{name}: the reloaded adapter scores differently");
            if spec.needs_pixels() {
                let blind = ImageRows {
                    features: set.features.clone(),
                    pixels: None,
                };
                let err = b.scores(&inner, &tok, &blind, &dev).unwrap_err();
                assert!(err.to_string().contains("pixels"), "{err}");
            }
            // The same directory read for another model: refused, naming the file.
            let json = dir.path().join(JSON);
            let text = std::fs::read_to_string(&json).unwrap();
            std::fs::write(&json, text.replace("\"embed_dim\": 6", "\"embed_dim\": 7")).unwrap();
            let err = Adapter::<DefaultBackend>::load(dir.path(), &inner, &tok, &dev)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("adapter.json") && err.contains("7-wide"),
                "{name}: {err}"
            );
        }
        let params: Vec<usize> = specs(6)
            .iter()
            .map(|s| {
                adapt(
                    s, &model, &tok, &classes, &set, &labels, 2, 4, None, &fit, &dev,
                )
                .unwrap()
                .info
                .trainable_params
            })
            .collect();
        // CoOp 2×8; SgVA 2×8 + 2·6·3; MaPLe (ctx 2×8, proj 8×8+8)·2; Tip 0; probe 6·3+3;
        // ProAPO 0; GIST every parameter of the model and a probe.
        let all = model.num_params();
        assert_eq!(params, vec![16, 16 + 36, 2 * (16 + 72), 0, 21, 0, all + 21]);
    }

    /// With views, a method trains on augmented copies of its shots: the result differs from
    /// training on the shots, the file records the views, and images without pixels are refused.
    #[test]
    fn views_train_on_augmented_shots_and_are_recorded() {
        let dev = default_device();
        let (model, tok) = crate::fewshot::testing::tiny_clip(&["red", "star", "."], 1, 8);
        let inner = model.valid();
        let classes: Vec<String> = vec!["red".into(), "star".into()];
        let pixels = crate::fewshot::testing::pattern_pixels(6, 29);
        let set = ImageRows {
            features: pixels.embed(&inner, &dev),
            pixels: Some(pixels),
        };
        let labels = [0, 1, 0, 1, 0, 1];
        let views = ShotViews {
            augment: vlp_data::augment::AugmentConfig {
                scale: [0.5, 1.0],
                hflip: 0.5,
                ..Default::default()
            },
            views: 3,
        };
        let spec = AdapterSpec::LinearProbe { lambda: 1e-3 };
        let fit = FewShotFitConfig::new();
        let run = |v: Option<&ShotViews>, set: &ImageRows| {
            adapt(
                &spec, &model, &tok, &classes, set, &labels, 2, 5, v, &fit, &dev,
            )
        };
        let plain = run(None, &set).unwrap();
        let viewed = run(Some(&views), &set).unwrap();
        assert_eq!((plain.info.samples, viewed.info.samples), (4, 4));
        assert_eq!(viewed.info.views.as_ref(), Some(&views));
        let (a, b) = (
            plain.scores(&inner, &tok, &set, &dev).unwrap(),
            viewed.scores(&inner, &tok, &set, &dev).unwrap(),
        );
        assert_ne!(a, b, "training on views changed nothing");
        let dir = tempfile::tempdir().unwrap();
        viewed.save(dir.path()).unwrap();
        let back = Adapter::<DefaultBackend>::load(dir.path(), &inner, &tok, &dev).unwrap();
        assert_eq!(back.info.views, Some(views.clone()));
        let blind = ImageRows {
            features: set.features.clone(),
            pixels: None,
        };
        let err = run(Some(&views), &blind).err().unwrap().to_string();
        assert!(err.contains("pixels"), "{err}");
    }

    #[test]
    fn a_damaged_tensor_file_is_refused_by_name() {
        let dev = default_device();
        let (model, tok) = crate::fewshot::testing::tiny_clip(&["red", "star", "."], 1, 0);
        let classes: Vec<String> = vec!["red".into(), "star".into()];
        let set = ImageRows {
            features: Features {
                data: (0..24).map(|i| (i % 5) as f32).collect(),
                rows: 4,
                dim: 6,
            },
            pixels: None,
        };
        let fit = FewShotFitConfig::new().with_epochs(1);
        let spec = AdapterSpec::LinearProbe { lambda: 1e-3 };
        let a = adapt(
            &spec,
            &model,
            &tok,
            &classes,
            &set,
            &[0, 1, 0, 1],
            2,
            0,
            None,
            &fit,
            &dev,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        a.save(dir.path()).unwrap();
        // A bias for three classes where the adapter has two.
        let mut t = BTreeMap::new();
        t.insert(
            "weight".to_string(),
            HostTensor::new(vec![6, 2], vec![0.0; 12]),
        );
        t.insert("bias".to_string(), HostTensor::new(vec![3], vec![0.0; 3]));
        write_safetensors(dir.path().join(TENSORS), &t, StoredDType::F32, None).unwrap();
        let inner = model.valid();
        let err = Adapter::<DefaultBackend>::load(dir.path(), &inner, &tok, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("adapter.json") && err.contains("bias [3]"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join(TENSORS)).unwrap();
        let err = Adapter::<DefaultBackend>::load(dir.path(), &inner, &tok, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("adapter.safetensors"), "{err}");
        let err = adapt(
            &spec,
            &model,
            &tok,
            &classes,
            &set,
            &[0, 1, 2, 1],
            2,
            0,
            None,
            &fit,
            &dev,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("label 2 but 2 classes"), "{err}");
    }
}
