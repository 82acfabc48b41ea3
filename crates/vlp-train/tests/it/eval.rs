//! The evaluation battery on a model trained in the test: zero-shot, retrieval, linear probe,
//! few-shot with Tip-Adapter, all above chance, probe and adapter at least as good as zero-shot.

use vlp_core::backend::default_device;
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::source::open_source;
use vlp_tasks::embed::{embed_images, embed_texts};
use vlp_tasks::fewshot::{FewShotContext, TipAdapter, ZeroShot, run_few_shot};
use vlp_tasks::probe::linear_probe;
use vlp_tasks::retrieval::retrieval;
use vlp_tasks::zeroshot::{classifier, evaluate};
use vlp_train::comm::Single;
use vlp_train::trainer::Trainer;

use crate::{arch, batches, method, model, tiny};

#[test]
fn trained_model_passes_the_battery() {
    use burn::module::AutodiffModule;
    // A small CLIP, 250 steps of 32 ShapesWorld pairs (about a minute in a test build).
    let cfg = tiny(&[
        "model.width=64",
        "model.layers=2",
        "model.embed_dim=64",
        "data.batch_size=32",
        "optim.steps=250",
        "optim.warmup_steps=20",
    ]);
    let data = batches(&cfg, 250);
    let mut t = Trainer::new(
        &cfg,
        method(&cfg),
        model(&cfg, 11),
        default_device(),
        Single,
    );
    for b in &data {
        t.step(b).unwrap();
    }
    let dev = default_device();
    let m = t.model.valid();
    let tok = vlp_train::model::build_tokenizer(&cfg).unwrap();
    let arch = arch(&cfg);
    let embed = |spec: &str| {
        let lc = LoaderConfig {
            batch_size: 100,
            workers: 1,
            shuffle: false,
            drop_last: false,
            ..Default::default()
        };
        let loader = Loader::new(
            open_source(spec, &cfg.data.shapes).unwrap(),
            vlp_data::ImagePipeline::clip(arch.vision.image_size),
            None,
            lc,
        )
        .unwrap();
        embed_images(&m, &loader, &dev, |_| {}).unwrap()
    };
    let test = embed("shapes:test:300");
    let train = embed("shapes:train:1000");
    let y: Vec<usize> = test.labels.iter().map(|l| l.unwrap()).collect();
    let ty: Vec<usize> = train.labels.iter().map(|l| l.unwrap()).collect();
    let classes: Vec<String> = (0..30).map(vlp_data::shapes::class_name).collect();
    let templates = vec!["a photo of a {}.".to_string()];
    let cls = classifier(&m, tok.tokenizer.as_ref(), &classes, &templates, &dev).unwrap();
    let zs = evaluate(&test.features, &y, &cls).unwrap();
    let caps: Vec<&str> = test.captions.iter().map(|c| c[0].as_str()).collect();
    let texts = embed_texts(&m, tok.tokenizer.as_ref(), &caps, 128, &dev).unwrap();
    let ret = retrieval(&test.features, &texts, &(0..caps.len()).collect::<Vec<_>>()).unwrap();
    let probe = linear_probe::<vlp_core::backend::DefaultBackend>(
        &train.features,
        &ty,
        &test.features,
        &y,
        30,
        0.2,
        0,
        &dev,
    )
    .unwrap();
    let ctx = FewShotContext {
        classes: 30,
        zero_shot: &cls,
    };
    let fs = run_few_shot(
        &[&ZeroShot, &TipAdapter::default()],
        &train.features,
        &ty,
        &test.features,
        &y,
        &ctx,
        &[16],
        &[1, 2, 3],
    )
    .unwrap();
    let tip = fs.iter().find(|r| r.method == "tip-adapter").unwrap();
    let zero = fs.iter().find(|r| r.method == "zero-shot").unwrap();
    println!(
        "zero-shot top1 {:.3} (chance 0.033), retrieval R@5 i2t {:.3} t2i {:.3} (chance 0.017), probe {:.3}, tip-adapter@16 {:.3}±{:.3}",
        zs.top1, ret.i2t_recall[1], ret.t2i_recall[1], probe.accuracy, tip.mean, tip.std
    );
    assert!(
        zs.top1 > 0.15,
        "zero-shot {} not clearly above chance 0.033",
        zs.top1
    );
    assert!(
        ret.i2t_recall[1] > 0.05 && ret.t2i_recall[1] > 0.05,
        "retrieval R@5 {:?} / {:?}",
        ret.i2t_recall,
        ret.t2i_recall
    );
    assert!(probe.accuracy > 0.15, "probe {}", probe.accuracy);
    assert!(
        probe.accuracy >= zs.top1,
        "linear probe {} below zero-shot {}",
        probe.accuracy,
        zs.top1
    );
    assert!(
        tip.mean >= zero.mean,
        "Tip-Adapter {} below zero-shot {}",
        tip.mean,
        zero.mean
    );
}
