//! A method defined only here trains through the real runner: the seam needs no edit of
//! `vlp-train` for a new method.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use vlp_core::backend::TrainBackend as A;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::Field;
use vlp_train::method::{
    BuildContext, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics, Objective,
    StepInput,
};
use vlp_train::metrics::MetricsLog;
use vlp_train::{Result, RunOptions, TrainError, train_method};

use crate::{devices, tiny};

/// A linear classifier of the main object's class from raw pixels: no text, no towers.
#[derive(Module, Debug)]
struct Probe<B: Backend> {
    linear: Linear<B>,
}

struct PixelProbe {
    needs: Vec<Field>,
}

fn side(cfg: &vlp_train::TrainConfig) -> usize {
    cfg.data.shapes.image_size
}

impl Method for PixelProbe {
    type Model<B: Backend> = Probe<B>;

    fn name(&self) -> &'static str {
        "pixel-probe"
    }

    fn requires(&self) -> Vec<Field> {
        self.needs.clone()
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            require_caption: Some(false),
            ..Default::default()
        }
    }

    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        Ok(ImagePipeline::clip(side(ctx.config)))
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, device: &B::Device) -> Result<Probe<B>> {
        let s = side(ctx.config);
        Ok(Probe {
            linear: LinearConfig::new(3 * s * s, 30).init(device),
        })
    }

    fn embed<B: Backend>(
        &self,
        model: &Probe<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let px = input.images();
        let [n, c, h, w] = px.dims();
        let logits = model.linear.forward(px.reshape([n, c * h * w]));
        // Labels travel as features so that they are gathered and stacked with the logits.
        let labels: Vec<f32> = input
            .batch
            .labels
            .iter()
            .map(|l| {
                l.map(|l| l as f32)
                    .ok_or_else(|| TrainError::Config("unlabelled sample".into()))
            })
            .collect::<Result<_>>()?;
        let labels = Tensor::<B, 2>::from_data(TensorData::new(labels, [n, 1]), input.device);
        Ok(Embeddings::new()
            .with_rows("logits", logits)
            .with_rows("label", labels))
    }

    fn objective<B: Backend>(&self, _: &Probe<B>, e: Embeddings<B>) -> Result<Objective<B>> {
        let logits = e.rows("logits")?;
        let labels = e.rows("label")?;
        let n = labels.dims()[0];
        let y: Tensor<B, 1, Int> = labels.reshape([n]).int();
        let ce = CrossEntropyLossConfig::new().init(&logits.device());
        Ok(Objective::new(ce.forward(logits, y)))
    }

    fn evaluate<B: Backend>(&self, model: &Probe<B>, ctx: &EvalContext<'_, B>) -> Result<Metrics> {
        let mut m = Metrics::new();
        if let Some(set) = ctx.eval {
            let labels = set.labels.as_ref().expect("ShapesWorld is labelled");
            let mut hits = 0usize;
            let mut k = 0;
            for px in set.tensors::<B>(ctx.device) {
                let [n, c, h, w] = px.dims();
                let pred: Vec<i64> = model
                    .linear
                    .forward(px.reshape([n, c * h * w]))
                    .argmax(1)
                    .into_data()
                    .convert::<i64>()
                    .to_vec()
                    .unwrap();
                for p in pred {
                    hits += usize::from(p as usize == labels[k]);
                    k += 1;
                }
            }
            m.insert("probe_accuracy".into(), hits as f64 / k as f64);
        }
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &Probe<B>, ctx: &ExportContext<'_>) -> Result<()> {
        let norm: f32 = model
            .linear
            .weight
            .val()
            .powi_scalar(2)
            .sum()
            .into_scalar()
            .elem();
        std::fs::write(
            ctx.dir.join("probe.json"),
            format!("{{\"weight_sq_norm\": {norm}}}"),
        )
        .map_err(|e| TrainError::Io {
            path: ctx.dir.join("probe.json"),
            source: e,
        })
    }
}

#[test]
fn a_method_defined_in_a_test_trains_through_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(&[
        "optim.steps=40",
        "optim.lr=0.01",
        "data.eval=\"shapes:test:200\"",
        "log.every=1",
    ]);
    let report = train_method::<A, _>(
        &cfg,
        PixelProbe {
            needs: vec![Field::Labels],
        },
        devices(&cfg),
        RunOptions {
            run_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let losses: Vec<f64> = MetricsLog::read(dir.path())
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 40);
    let (first, last) = (
        losses[..5].iter().sum::<f64>() / 5.0,
        losses[35..].iter().sum::<f64>() / 5.0,
    );
    println!("pixel probe: loss {first:.3} → {last:.3}, {report:?}");
    assert!(last < first - 0.5, "loss did not fall: {first} → {last}");
    assert_eq!(report.method, "pixel-probe");
    let acc = report
        .metric("probe_accuracy")
        .expect("the method's own metric");
    assert!(
        acc > 2.0 / 30.0,
        "probe accuracy {acc} is not above twice chance"
    );
    assert!(dir.path().join("final/probe.json").is_file());
    assert!(dir.path().join("checkpoints").read_dir().unwrap().count() >= 1);
}

#[test]
fn a_method_needing_what_the_data_lacks_stops_at_start_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(&["optim.steps=5"]);
    let e = train_method::<A, _>(
        &cfg,
        PixelProbe {
            needs: vec![Field::Labels, Field::Frames],
        },
        devices(&cfg),
        RunOptions {
            run_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pixel-probe") && e.contains("video frames") && e.contains("shapes:train"),
        "{e}"
    );
}
