//! Low-rank adaptation (LoRA, Hu et al., 2021): a frozen linear map `W` gains a trainable update
//! `x·A·B·(α/r)` with `A: [d_in, r]`, `B: [r, d_out]`; `B` starts at zero, so the wrapped layer
//! starts unchanged and only `r·(d_in + d_out)` parameters train per wrapped layer.
//!
//! Initialisation and scaling follow PEFT (`peft/tuners/lora/layer.py`, `reset_lora_parameters`):
//! `A` Kaiming-uniform with `a = √5` (bound `1/√d_in`), `B` zeros, scale `lora_alpha / r`. The
//! attention layers carry their adapters ([`crate::nn::Attention::add_lora`], on the query and
//! value projections as the LoRA paper's §7.1 recommends; [`crate::nn::Mlp::add_lora`] adds them
//! to both MLP layers too); [`train_only_lora`] freezes
//! everything else, and merging folds an update back into the weights, scaled — `weight` 1 is the
//! fine-tuned model, `weight` λ < 1 the weight average `(1 − λ)·θ₀ + λ·θ` with the original
//! model (WiSE-FT), exactly, since only the adapters moved.

use burn::config::Config;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// Configuration of the adapters.
#[derive(Config, Debug)]
pub struct LoraConfig {
    /// Rank `r` of each update (PEFT's `r`).
    #[config(default = 8)]
    pub rank: usize,
    /// Numerator of the update's scale `α / r` (PEFT's `lora_alpha`).
    #[config(default = 8.0)]
    pub alpha: f64,
}

/// One low-rank update of a `d_in → d_out` linear map.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `A` (PEFT's `lora_A`), `[d_in, rank]`.
    pub down: Param<Tensor<B, 2>>,
    /// `B` (PEFT's `lora_B`), `[rank, d_out]`; zero at initialisation.
    pub up: Param<Tensor<B, 2>>,
    /// `α / r`.
    pub scale: f64,
}

impl LoraConfig {
    /// Checks the rank; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("lora.rank must be at least 1".into());
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(format!("lora.alpha = {} must be positive", self.alpha));
        }
        Ok(())
    }

    /// A zero update of a `d_in → d_out` map on `device`.
    ///
    /// # Panics
    /// If the rank is 0 (call [`validate`](Self::validate) on user input first).
    pub fn init<B: Backend>(&self, d_in: usize, d_out: usize, device: &B::Device) -> Lora<B> {
        assert!(self.rank > 0, "lora: rank 0");
        let bound = 1.0 / (d_in as f64).sqrt();
        Lora {
            down: Param::from_tensor(Tensor::random(
                [d_in, self.rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            up: Param::from_tensor(Tensor::zeros([self.rank, d_out], device)),
            scale: self.alpha / self.rank as f64,
        }
    }
}

impl<B: Backend> Lora<B> {
    /// The update of `x`, `x·A·B·scale`.
    ///
    /// # Shapes
    /// - `x`: `[..., d_in]`; returns `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = x.shape().num_elements() / d_in.max(1);
        let out = x
            .reshape([rows, d_in])
            .matmul(self.down.val())
            .matmul(self.up.val())
            * self.scale;
        let mut shape = dims;
        shape[D - 1] = out.dims()[1];
        out.reshape(shape)
    }

    /// The update as a matrix in Burn's `Linear` layout, `A·B·scale`, `[d_in, d_out]`.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.down.val().matmul(self.up.val()) * self.scale
    }

    /// Trainable parameters of this update, `rank · (d_in + d_out)`.
    pub fn num_trainable(&self) -> usize {
        let [d_in, r] = self.down.lazy_shape().dims::<2>();
        let [_, d_out] = self.up.lazy_shape().dims::<2>();
        r * (d_in + d_out)
    }
}

/// Sets `require_grad` on parameters inside a submodule named `lora` and clears it elsewhere.
struct OnlyLora {
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for OnlyLora {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let train = self.path.iter().any(|n| n == "lora");
        p.map(|t| t.set_require_grad(train))
    }
}

/// Freezes every parameter of `module` except those of its LoRA adapters (submodules named
/// `lora`, as [`crate::nn::Attention`] names them).
pub fn train_only_lora<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut OnlyLora { path: Vec::new() })
}

/// Counts the scalars of parameters that require gradients.
struct CountTrainable(usize);

impl<B: Backend> ModuleVisitor<B> for CountTrainable {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if p.is_require_grad() {
            self.0 += p.lazy_shape().num_elements();
        }
    }
}

/// Number of trainable scalars of `module` (parameters that require gradients; on a backend
/// without autodiff, none do).
pub fn num_trainable<B: Backend, M: Module<B>>(module: &M) -> usize {
    let mut c = CountTrainable(0);
    module.visit(&mut c);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use crate::backend::{DefaultBackend as B, default_device};

    #[test]
    fn update_matches_a_loop_and_starts_at_zero() {
        let dev = default_device();
        let cfg = LoraConfig::new().with_rank(3).with_alpha(6.0);
        let mut lora = cfg.init::<B>(5, 7, &dev);
        let x = Tensor::<B, 3>::random([2, 4, 5], Distribution::Normal(0.0, 1.0), &dev);
        // B = 0 at initialisation: the update is exactly zero.
        let zero = lora.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        assert!(zero.iter().all(|v| *v == 0.0));
        let up: Vec<f32> = (0..21).map(|i| (i as f32 * 0.37).sin()).collect();
        lora.up = Param::from_tensor(Tensor::from_data(TensorData::new(up.clone(), [3, 7]), &dev));
        let a = lora.down.val().into_data().to_vec::<f32>().unwrap();
        let xs = x.clone().into_data().to_vec::<f32>().unwrap();
        let got = lora.forward(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), 2 * 4 * 7);
        for row in 0..8 {
            for o in 0..7 {
                let mut s = 0.0f64;
                for i in 0..5 {
                    for k in 0..3 {
                        s += xs[row * 5 + i] as f64 * a[i * 3 + k] as f64 * up[k * 7 + o] as f64;
                    }
                }
                let want = s * 2.0; // α / r = 6 / 3
                assert!((got[row * 7 + o] as f64 - want).abs() < 1e-5, "{row},{o}");
            }
        }
        // A is Kaiming-uniform with bound 1/√d_in.
        assert!(a.iter().all(|v| v.abs() <= 1.0 / 5f32.sqrt()));
        assert!(a.iter().any(|v| *v != 0.0));
        assert_eq!(lora.num_trainable(), 3 * (5 + 7));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(
            LoraConfig::new()
                .with_rank(0)
                .validate()
                .unwrap_err()
                .contains("lora.rank")
        );
        assert!(
            LoraConfig::new()
                .with_alpha(-1.0)
                .validate()
                .unwrap_err()
                .contains("lora.alpha")
        );
        assert!(LoraConfig::new().validate().is_ok());
    }

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A two-block encoder in either layout, its weights drawn (not lazy), and adapters whose
    /// `B` is non-zero so that the update is visible.
    fn adapted_encoder(
        fused: bool,
        cfg: &LoraConfig,
    ) -> (
        crate::nn::TransformerEncoder<B>,
        crate::nn::TransformerEncoder<B>,
    ) {
        let dev = default_device();
        let base = crate::nn::TransformerEncoderConfig::new(12, 2, 3, 24)
            .with_fused_qkv(fused)
            .init::<B>(&dev);
        let base = base.clone().map(&mut Materialize);
        let mut adapted = base.clone().add_lora(cfg, false, &dev);
        for (i, l) in adapted.layers.iter_mut().enumerate() {
            let lora = l.self_attn.lora.as_mut().unwrap();
            for (j, side) in [&mut lora.q, &mut lora.v].into_iter().enumerate() {
                side.up = Param::from_tensor(Tensor::random(
                    [cfg.rank, 12],
                    Distribution::Normal(0.0, 0.3 + 0.1 * (i + j) as f64),
                    &dev,
                ));
            }
        }
        (base, adapted)
    }

    /// Draws every lazily initialised parameter, so that clones share values.
    struct Materialize;

    impl<B2: Backend> ModuleMapper<B2> for Materialize {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B2, D>>) -> Param<Tensor<B2, D>> {
            p.map(|t| t)
        }
    }

    #[test]
    fn adapters_start_as_the_identity_change_and_merge_exactly() {
        let dev = default_device();
        let cfg = LoraConfig::new().with_rank(2).with_alpha(4.0);
        let x = Tensor::<B, 3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &dev);
        for fused in [false, true] {
            let (base, adapted) = adapted_encoder(fused, &cfg);
            let plain = values(base.forward(x.clone(), None, false).last_hidden_state);
            // Fresh adapters (B = 0) leave the output bit-identical.
            let fresh = base.clone().add_lora(&cfg, false, &dev);
            let same = values(fresh.forward(x.clone(), None, false).last_hidden_state);
            assert_eq!(plain, same, "fused {fused}");
            // Non-zero adapters change it; merging with weight 1 reproduces the adapted output.
            let out = values(adapted.forward(x.clone(), None, false).last_hidden_state);
            assert!(max_diff(&out, &plain) > 1e-2, "fused {fused}");
            let merged = adapted.clone().merge_lora(1.0);
            assert!(merged.layers.iter().all(|l| l.self_attn.lora.is_none()));
            let back = values(merged.forward(x.clone(), None, false).last_hidden_state);
            assert!(max_diff(&out, &back) < 1e-5, "fused {fused}");
            // Weight λ is the weight average (1 − λ)·θ₀ + λ·θ₁, parameter by parameter; the
            // key projection and the MLP do not move.
            let half = adapted.clone().merge_lora(0.25);
            let (p0, p1, ph) = (params(&base), params(&merged), params(&half));
            assert_eq!(p0.len(), ph.len());
            let mut moved = 0;
            for ((a, b), h) in p0.iter().zip(&p1).zip(&ph) {
                let avg: Vec<f32> = a.iter().zip(b).map(|(a, b)| 0.75 * a + 0.25 * b).collect();
                assert!(max_diff(h, &avg) < 1e-6);
                moved += usize::from(max_diff(a, b) > 0.0);
            }
            // q and v of two blocks (fused: the one in_proj of each block).
            assert_eq!(moved, if fused { 2 } else { 4 }, "fused {fused}");
        }
    }

    /// With `mlp`, an encoder's merge folds the MLP adapters too: nothing is left behind (an
    /// export would otherwise drop them) and the merged encoder computes what the adapted one did.
    #[test]
    fn encoder_merge_folds_mlp_adapters_too() {
        let dev = default_device();
        let cfg = LoraConfig::new().with_rank(2).with_alpha(4.0);
        let base = crate::nn::TransformerEncoderConfig::new(12, 2, 3, 24)
            .init::<B>(&dev)
            .map(&mut Materialize);
        let x = Tensor::<B, 3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &dev);
        let plain = values(base.forward(x.clone(), None, false).last_hidden_state);
        let mut adapted = base.clone().add_lora(&cfg, true, &dev);
        for l in adapted.layers.iter_mut() {
            let lora = l.mlp.lora.as_mut().expect("mlp adapters added");
            lora.fc1.up = Param::from_tensor(Tensor::random(
                [2, 24],
                Distribution::Normal(0.0, 0.5),
                &dev,
            ));
            lora.fc2.up = Param::from_tensor(Tensor::random(
                [2, 12],
                Distribution::Normal(0.0, 0.5),
                &dev,
            ));
        }
        let out = values(adapted.forward(x.clone(), None, false).last_hidden_state);
        assert!(max_diff(&out, &plain) > 1e-2);
        let merged = adapted.merge_lora(1.0);
        assert!(
            merged
                .layers
                .iter()
                .all(|l| l.self_attn.lora.is_none() && l.mlp.lora.is_none())
        );
        let back = values(merged.forward(x, None, false).last_hidden_state);
        assert!(max_diff(&out, &back) < 1e-5);
    }

    /// Every float parameter, flattened, in visiting order.
    fn params(m: &crate::nn::TransformerEncoder<B>) -> Vec<Vec<f32>> {
        struct All(Vec<Vec<f32>>);
        impl ModuleVisitor<B> for All {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                self.0.push(p.val().into_data().to_vec::<f32>().unwrap());
            }
        }
        let mut a = All(Vec::new());
        m.visit(&mut a);
        a.0
    }

    #[test]
    fn only_the_adapters_train_and_receive_gradients() {
        use crate::backend::TrainBackend as T;
        let dev = default_device();
        let cfg = LoraConfig::new().with_rank(3);
        let (d, layers) = (12usize, 2usize);
        let enc = crate::nn::TransformerEncoderConfig::new(d, layers, 3, 24)
            .init::<T>(&dev)
            .add_lora(&cfg, false, &dev);
        let all = enc.num_params();
        assert!(
            num_trainable(&enc) == all,
            "everything trains before freezing"
        );
        let enc = train_only_lora(enc);
        // r·(d_in + d_out) per wrapped linear, two wrapped linears (q, v) per block.
        assert_eq!(num_trainable(&enc), layers * 2 * 3 * (d + d));
        // With the MLPs (hidden 24) too: their two layers, d → 24 and 24 → d, per block.
        let all_linear = train_only_lora(
            crate::nn::TransformerEncoderConfig::new(d, layers, 3, 24)
                .init::<T>(&dev)
                .add_lora(&cfg, true, &dev),
        );
        assert_eq!(
            num_trainable(&all_linear),
            layers * 3 * (2 * (d + d) + 2 * (d + 24))
        );
        let x = Tensor::<T, 3>::random([2, 4, d], Distribution::Normal(0.0, 1.0), &dev);
        let grads = enc
            .forward(x, None, false)
            .last_hidden_state
            .powi_scalar(2)
            .sum()
            .backward();
        for l in &enc.layers {
            let a = &l.self_attn;
            assert!(a.q_proj.as_ref().unwrap().weight.grad(&grads).is_none());
            assert!(a.out_proj.weight.grad(&grads).is_none());
            assert!(l.mlp.fc1.weight.grad(&grads).is_none());
            let lora = a.lora.as_ref().unwrap();
            // B is zero, so A's gradient is zero too; B's is not.
            assert!(lora.q.down.grad(&grads).is_some());
            let g = lora.v.up.grad(&grads).unwrap();
            assert!(g.abs().max().into_scalar() > 0.0);
        }
    }
}
