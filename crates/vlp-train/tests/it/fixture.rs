//! The pretrained fixture of the adaptation tests (methods.md's "tiny-CLIP fixture"): a small
//! CLIP trained once on ShapesWorld captions phrased "<shape> coloured <colour>" (never "a photo
//! of a …", so that hand-written prompts leave prompt learning headroom), exported in
//! transformers' layout under `target/vlp-fixtures/` and rebuilt when its recipe changes (the
//! directory name carries a hash of the recipe).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use vlp_align::ClipModel;
use vlp_core::rng::Rng;
use vlp_data::shapes::class_of;
use vlp_train::TrainConfig;
use vlp_train::method::ExportContext;
use vlp_train::method::clip::{ClipMethod, export_clip};
use vlp_train::model::{BuiltTokenizer, build_tokenizer};

use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_data::shapes::class_name;
use vlp_tasks::embed::{Features, embed_texts};
use vlp_tasks::fewshot::{
    BaseToNovel, FewShotContext, FewShotMethod, ImageRows, OpenVocabularyMethod, base_to_novel,
    run_few_shot,
};

use crate::{batches_with, claim_config, held_out, trained};

/// Training steps of the fixture (batches of 64).
const STEPS: usize = 1000;
/// How the fixture's captions are phrased; part of the recipe's hash.
const PHRASING: &str = "{shape} coloured {colour}";

/// Class `label` as the fixture's captions name it: "<shape> coloured <colour>".
pub fn phrased(label: usize) -> String {
    let (shape, colour) = class_of(label);
    PHRASING
        .replace("{shape}", shape.name())
        .replace("{colour}", colour.name())
}

/// The fixture's only caption: its main object, [`phrased`].
struct Coloured;

impl vlp_data::TextTransform for Coloured {
    fn texts(&self, sample: &vlp_data::TextInput<'_>, _: &mut Rng) -> Vec<String> {
        sample.label.map(phrased).into_iter().collect()
    }
}

/// The fixture: its recipe and where it lies.
pub struct Fixture {
    /// The recipe (architecture, tokenizer, data).
    pub config: TrainConfig,
    /// The exported model directory.
    pub dir: PathBuf,
}

impl Fixture {
    /// The model, loaded from [`dir`](Self::dir).
    pub fn model<B: burn::tensor::backend::Backend>(&self, device: &B::Device) -> ClipModel<B> {
        vlp_align::pretrained::load_pretrained::<B>(&self.dir, device)
            .unwrap()
            .model
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> BuiltTokenizer {
        build_tokenizer(&self.config).unwrap()
    }
}

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // The test binary lies in target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The fixture, trained on first use (1000 steps of 64, 128 wide, 3 layers: about 190 s in a
/// release build on 2 cores; zero-shot 0.50 with its own phrasing), then read from disk.
pub fn fixture() -> Fixture {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let config = claim_config(
        0,
        STEPS,
        &[
            "model.width=128",
            "model.layers=3",
            "model.heads=4",
            "model.embed_dim=128",
            "data.batch_size=64",
            "optim.warmup_steps=50",
            "optim.lr=0.002",
            "data.train=\"shapes:train:64000\"",
        ],
    );
    let recipe = format!("{}\n{PHRASING}", toml::to_string(&config).unwrap());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    recipe.hash(&mut h);
    let dir = target_dir()
        .join("vlp-fixtures")
        .join(format!("tiny-clip-{:016x}", h.finish()));
    let _turn = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("config.json").is_file() {
        let data = batches_with(&config, STEPS, Some(Arc::new(Coloured)));
        let model = trained(Arc::new(ClipMethod::clip(&config).unwrap()), &config, &data);
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let tokenizer = build_tokenizer(&config).unwrap();
        let ctx = ExportContext {
            dir: &tmp,
            config: &config,
            tokenizer: &tokenizer,
        };
        export_clip(&model, &ctx).unwrap();
        std::fs::write(tmp.join("recipe.txt"), &recipe).unwrap();
        // Another test process may have finished first: its copy is as good as ours.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    Fixture { config, dir }
}

/// What the adaptation claims share: the fixture (autodiff and inner copies), its tokenizer, the
/// 30 class names, `shapes:train:1000` to draw shots from and `shapes:test:1000` to score on, as
/// images and as frozen features, and the hand-written prompt "a photo of a {class}."'s
/// classifier.
pub struct Bench {
    /// The model, for training prompt learners and adapters.
    pub model: ClipModel<TrainBackend>,
    /// The same weights on the inner backend, for features and inference.
    pub inner: ClipModel<DefaultBackend>,
    /// Its tokenizer.
    pub tok: BuiltTokenizer,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Frozen features of `train`.
    pub train_x: Features,
    /// Labels of `train`.
    pub train_y: Vec<usize>,
    /// Frozen features of `test`.
    pub test_x: Features,
    /// Labels of `test`.
    pub test_y: Vec<usize>,
    /// The hand-written prompt's normalised class embeddings.
    pub hand: Features,
    /// `train` as the open-vocabulary protocols take it (features and pixels).
    pub train_rows: ImageRows,
    /// `test` likewise.
    pub test_rows: ImageRows,
}

/// The fixture, loaded with its data (see [`Bench`]).
pub fn bench() -> Bench {
    let fixture = fixture();
    let dev = default_device();
    let model = fixture.model::<TrainBackend>(&dev);
    let inner = fixture.model::<DefaultBackend>(&dev);
    let tok = fixture.tokenizer();
    let classes: Vec<String> = (0..30).map(class_name).collect();
    let train = held_out(&fixture.config, "shapes:train:1000");
    let test = held_out(&fixture.config, "shapes:test:1000");
    let (train_rows, test_rows) = (
        train.image_rows(&inner, &dev),
        test.image_rows(&inner, &dev),
    );
    let (train_x, test_x) = (train_rows.features.clone(), test_rows.features.clone());
    let (train_y, test_y) = (train.labels.clone().unwrap(), test.labels.clone().unwrap());
    let prompts: Vec<String> = classes
        .iter()
        .map(|c| format!("a photo of a {c}."))
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let hand = embed_texts(&inner, tok.tokenizer.as_ref(), &refs, 64, &dev).unwrap();
    Bench {
        model,
        inner,
        tok,
        classes,
        train_x,
        train_y,
        test_x,
        test_y,
        hand,
        train_rows,
        test_rows,
    }
}

impl Bench {
    /// Base-to-novel at `k` shots with `seed`, the labels named `classes` (see
    /// `vlp_tasks::fewshot::base_to_novel`).
    pub fn base_to_novel(
        &self,
        method: &dyn OpenVocabularyMethod,
        classes: &[String],
        k: usize,
        seed: u64,
    ) -> BaseToNovel {
        base_to_novel(
            method,
            &self.train_rows,
            &self.train_y,
            &self.test_rows,
            &self.test_y,
            classes,
            k,
            seed,
        )
        .unwrap()
    }
}

impl Bench {
    /// The context the feature methods see: the class count and the hand-written classifier.
    pub fn context(&self) -> FewShotContext<'_> {
        FewShotContext {
            classes: self.classes.len(),
            zero_shot: &self.hand,
        }
    }

    /// Test accuracy of `method` at `k` shots for each seed (the harness's own loop).
    pub fn accuracies(&self, method: &dyn FewShotMethod, k: usize, seeds: &[u64]) -> Vec<f64> {
        let rows = run_few_shot(
            &[method],
            &self.train_x,
            &self.train_y,
            &self.test_x,
            &self.test_y,
            &self.context(),
            &[k],
            seeds,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        rows[0].accuracies.clone()
    }
}
