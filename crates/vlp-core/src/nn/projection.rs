//! The MLP heads of self-supervised and multi-view objectives (SimCLR, Barlow Twins, SimSiam,
//! the improved CLIP recipe's local projectors): linear layers with batch norm and ReLU between
//! them, optionally a batch norm at the end.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use super::mlp::linear;

/// Batch norm after a head's last layer.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FinalNorm {
    /// None.
    None,
    /// With a learnable scale and shift (Barlow Twins' projector).
    Affine,
    /// Standardisation only (PyTorch's `affine=False`: SimSiam's projector).
    Plain,
}

/// Configuration of a [`ProjectionHead`].
#[derive(Config, Debug)]
pub struct ProjectionHeadConfig {
    /// Input width.
    pub d_input: usize,
    /// Width of the hidden layers.
    pub d_hidden: usize,
    /// Output width.
    pub d_output: usize,
    /// Linear layers (1 = a single linear projection, no hidden layer).
    #[config(default = 3)]
    pub layers: usize,
    /// Whether the hidden layers have a bias (none where a batch norm follows, as in SimSiam).
    #[config(default = true)]
    pub hidden_bias: bool,
    /// Whether the last layer has a bias.
    #[config(default = true)]
    pub output_bias: bool,
    /// Batch norm after the last layer.
    #[config(default = "FinalNorm::None")]
    pub final_norm: FinalNorm,
}

/// `Linear → BatchNorm → ReLU` repeated, then a last `Linear` (and batch norm).
#[derive(Module, Debug)]
pub struct ProjectionHead<B: Backend> {
    /// The linear layers, first to last.
    pub layers: Vec<Linear<B>>,
    /// Batch norm after each hidden layer (one fewer than `layers`).
    pub norms: Vec<BatchNorm<B>>,
    /// Batch norm after the last layer.
    pub final_norm: Option<BatchNorm<B>>,
}

impl ProjectionHeadConfig {
    /// Creates the head on `device`.
    ///
    /// # Panics
    /// If `layers` is 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ProjectionHead<B> {
        assert!(
            self.layers >= 1,
            "a projection head needs at least one layer"
        );
        let mut layers = Vec::with_capacity(self.layers);
        let mut norms = Vec::with_capacity(self.layers - 1);
        let mut d_in = self.d_input;
        for _ in 1..self.layers {
            layers.push(
                LinearConfig::new(d_in, self.d_hidden)
                    .with_bias(self.hidden_bias)
                    .init(device),
            );
            norms.push(BatchNormConfig::new(self.d_hidden).init(device));
            d_in = self.d_hidden;
        }
        layers.push(
            LinearConfig::new(d_in, self.d_output)
                .with_bias(self.output_bias)
                .init(device),
        );
        let final_norm = match self.final_norm {
            FinalNorm::None => None,
            FinalNorm::Affine => Some(BatchNormConfig::new(self.d_output).init(device)),
            FinalNorm::Plain => {
                let mut n = BatchNormConfig::new(self.d_output).init(device);
                // γ = 1 and β = 0 for good: the optimiser never sees them.
                n.gamma = n.gamma.set_require_grad(false);
                n.beta = n.beta.set_require_grad(false);
                Some(n)
            }
        };
        ProjectionHead {
            layers,
            norms,
            final_norm,
        }
    }
}

impl<B: Backend> ProjectionHead<B> {
    /// Batch norm uses the batch's statistics under autodiff (training) and the running ones
    /// otherwise, as Burn's `BatchNorm` does.
    ///
    /// # Shapes
    /// - `x`: `[batch, d_input]`; returns `[batch, d_output]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut x = x;
        let last = self.layers.len() - 1;
        for (k, layer) in self.layers.iter().enumerate() {
            x = linear(layer, x);
            if k < last {
                x = relu(self.norms[k].forward(x));
            }
        }
        match &self.final_norm {
            Some(n) => n.forward(x),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, TrainBackend as A, default_device};
    use burn::module::Module;
    use burn::tensor::{Distribution, TensorData};

    fn rows(t: Tensor<A, 2>) -> Vec<Vec<f32>> {
        let [n, d] = t.dims();
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        (0..n).map(|i| v[i * d..(i + 1) * d].to_vec()).collect()
    }

    #[test]
    fn matches_a_loop_with_batch_statistics() {
        let dev = default_device();
        let head = ProjectionHeadConfig::new(3, 4, 2)
            .with_layers(2)
            .init::<A>(&dev);
        let x = Tensor::<A, 2>::random([5, 3], Distribution::Normal(0.0, 1.0), &dev);
        let got = rows(head.forward(x.clone()));
        // By hand: h = x W1 + b1, batch-standardised per column (biased variance, ε 1e-5),
        // ReLU, then W2 + b2 (γ = 1, β = 0 at initialisation).
        let w = |l: &Linear<A>| -> (Vec<f32>, Vec<f32>, [usize; 2]) {
            let d = l.weight.val().dims();
            (
                l.weight.val().into_data().to_vec().unwrap(),
                l.bias.as_ref().unwrap().val().into_data().to_vec().unwrap(),
                d,
            )
        };
        let (w1, b1, [i1, o1]) = w(&head.layers[0]);
        let (w2, b2, [_, o2]) = w(&head.layers[1]);
        let xs = rows(x);
        let h: Vec<Vec<f32>> = xs
            .iter()
            .map(|r| {
                (0..o1)
                    .map(|j| b1[j] + (0..i1).map(|k| r[k] * w1[k * o1 + j]).sum::<f32>())
                    .collect()
            })
            .collect();
        let n = h.len() as f32;
        let mut hn = h.clone();
        for j in 0..o1 {
            let mean = h.iter().map(|r| r[j]).sum::<f32>() / n;
            let var = h.iter().map(|r| (r[j] - mean).powi(2)).sum::<f32>() / n;
            for (i, r) in h.iter().enumerate() {
                hn[i][j] = ((r[j] - mean) / (var + 1e-5).sqrt()).max(0.0);
            }
        }
        for (i, r) in hn.iter().enumerate() {
            for j in 0..o2 {
                let want = b2[j] + (0..o1).map(|k| r[k] * w2[k * o2 + j]).sum::<f32>();
                assert!(
                    (got[i][j] - want).abs() < 1e-4,
                    "[{i}, {j}] {} vs {want}",
                    got[i][j]
                );
            }
        }
    }

    #[test]
    fn plain_final_norm_standardises_and_does_not_train() {
        let dev = default_device();
        let head = ProjectionHeadConfig::new(6, 8, 4)
            .with_hidden_bias(false)
            .with_output_bias(false)
            .with_final_norm(FinalNorm::Plain)
            .init::<A>(&dev);
        assert!(head.layers[0].bias.is_none() && head.layers[2].bias.is_none());
        assert_eq!(head.layers.len(), 3);
        let x = Tensor::<A, 2>::random([7, 6], Distribution::Normal(0.0, 2.0), &dev);
        let y = rows(head.forward(x));
        for j in 0..4 {
            let mean = y.iter().map(|r| r[j]).sum::<f32>() / 7.0;
            let var = y.iter().map(|r| (r[j] - mean).powi(2)).sum::<f32>() / 7.0;
            assert!(
                mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-2,
                "column {j}: {mean} {var}"
            );
        }
        let n = head.final_norm.as_ref().unwrap();
        assert!(!n.gamma.is_require_grad() && !n.beta.is_require_grad());
        // Burn counts 6·8 + 8·8 + 8·4 weights, and γ, β and both running statistics of every
        // norm (4·8 for each hidden one, 4·4 for the final one, whose γ and β are frozen).
        assert_eq!(head.num_params(), 48 + 64 + 32 + 2 * 4 * 8 + 4 * 4);
        // A one-layer head is a linear projection.
        let one = ProjectionHeadConfig::new(6, 99, 4)
            .with_layers(1)
            .init::<B>(&dev);
        assert_eq!(one.layers.len(), 1);
        assert!(one.norms.is_empty());
        let x = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32; 6], [1, 6]), &dev);
        assert_eq!(one.forward(x).dims(), [1, 4]);
    }
}
