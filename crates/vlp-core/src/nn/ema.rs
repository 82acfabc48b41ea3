//! Exponential moving averages of a module's parameters: the momentum (teacher) encoders of BYOL,
//! MoCo and the improved CLIP recipe's BYOLIP, which after every optimiser step move towards the
//! online model, `θ_m ← τ·θ_m + (1 − τ)·θ` (`main.py` of `facebookresearch/clip-rocket`
//! zips the two models' `parameters()` the same way).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Every float parameter of a module, flattened, in visiting order.
struct Collect<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let t = p.val().detach();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

/// Blends each parameter with the next collected one.
struct Blend<B: Backend> {
    online: std::vec::IntoIter<Tensor<B, 1>>,
    momentum: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let o = self
            .online
            .next()
            .expect("ema_update: the online module has fewer parameters than the target");
        let m = self.momentum;
        p.map(|t| {
            let dims = t.dims();
            assert_eq!(
                o.dims()[0],
                t.shape().num_elements(),
                "ema_update: a parameter of shape {dims:?} meets one of another size"
            );
            (t.detach() * m + o.reshape(dims) * (1.0 - m)).detach()
        })
    }
}

/// `target ← momentum · target + (1 − momentum) · online`, parameter by parameter (running
/// statistics such as batch norm's are left alone). No gradient flows into the result.
///
/// # Panics
/// If the two modules do not have the same parameters in the same order (they should be two
/// instances of one architecture).
pub fn ema_update<B: Backend, M: Module<B>>(target: M, online: &M, momentum: f64) -> M {
    let mut c = Collect(Vec::new());
    online.visit(&mut c);
    let count = c.0.len();
    let mut blend = Blend {
        online: c.0.into_iter(),
        momentum,
    };
    let out = target.map(&mut blend);
    assert!(
        blend.online.next().is_none(),
        "ema_update: the online module has more parameters ({count}) than the target"
    );
    out
}

/// A copy of `module` with the same values under fresh parameter ids, none of them trainable:
/// a momentum encoder's starting point (the code loads the online model's state into it).
/// Fresh ids keep the two apart for the optimiser and for gradient bookkeeping.
pub fn frozen_copy<B: Backend, M: Module<B>>(module: &M) -> M {
    struct Fresh;
    impl<B: Backend> ModuleMapper<B> for Fresh {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            Param::initialized(ParamId::new(), p.val().detach()).set_require_grad(false)
        }
    }
    // Lazily initialised parameters first become concrete, so the copy holds their values
    // rather than a draw of its own.
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let _ = p.val();
        }
    }
    module.visit(&mut Touch);
    module.clone().map(&mut Fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use crate::nn::{ProjectionHead, ProjectionHeadConfig};

    fn flat(m: &ProjectionHead<B>) -> Vec<f32> {
        let mut c = Collect(Vec::new());
        m.visit(&mut c);
        c.0.into_iter()
            .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn moves_every_parameter_by_the_momentum() {
        let dev = default_device();
        let cfg = ProjectionHeadConfig::new(3, 5, 2).with_layers(2);
        let online = cfg.init::<B>(&dev);
        let target = cfg.init::<B>(&dev);
        let (o, t) = (flat(&online), flat(&target));
        assert_eq!(o.len(), t.len());
        assert!(o.iter().zip(&t).any(|(a, b)| a != b));
        let moved = flat(&ema_update(target, &online, 0.9));
        for ((m, a), b) in moved.iter().zip(&o).zip(&t) {
            let want = 0.9 * b + 0.1 * a;
            assert!((m - want).abs() < 1e-6, "{m} vs {want}");
        }
        // Momentum 0 copies, 1 keeps.
        let target = cfg.init::<B>(&dev);
        let t = flat(&target);
        assert_eq!(flat(&ema_update(target.clone(), &online, 0.0)), o);
        assert_eq!(flat(&ema_update(target, &online, 1.0)), t);
    }

    #[test]
    fn a_frozen_copy_has_the_values_and_new_ids() {
        let dev = default_device();
        let online = ProjectionHeadConfig::new(3, 5, 2).init::<B>(&dev);
        let copy = frozen_copy(&online);
        assert_eq!(flat(&copy), flat(&online));
        assert_ne!(copy.layers[0].weight.id, online.layers[0].weight.id);
        assert!(!copy.layers[0].weight.is_require_grad());
    }

    #[test]
    #[should_panic(expected = "ema_update")]
    fn different_architectures_are_refused() {
        let dev = default_device();
        let a = ProjectionHeadConfig::new(3, 5, 2)
            .with_layers(2)
            .init::<B>(&dev);
        let b = ProjectionHeadConfig::new(3, 5, 2)
            .with_layers(3)
            .init::<B>(&dev);
        let _ = ema_update(b, &a, 0.5);
    }
}
