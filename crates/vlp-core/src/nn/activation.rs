//! Activation functions used by CLIP-family MLPs, named as the checkpoints' configs name them.

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};
use vlp_kernels::Gelu;

/// The MLP non-linearity.
///
/// Deserialises from the strings found in Hugging Face `config.json` files (`hidden_act`):
/// `quick_gelu` (OpenAI CLIP), `gelu` (erf form; open_clip with `quick_gelu = false`) and
/// `gelu_pytorch_tanh` / `gelu_new` / `gelu_fast` (tanh approximation; SigLIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, the approximation OpenAI trained CLIP with.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact GELU, `x * Φ(x)` with the error function.
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new", alias = "gelu_fast")]
    GeluTanh,
}

impl Activation {
    /// Applies the activation element-wise (one vectorised pass on the CPU backend, see
    /// `vlp_kernels`; Burn's operations elsewhere).
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::QuickGelu => vlp_kernels::gelu(Gelu::Quick, x),
            Self::Gelu => vlp_kernels::gelu(Gelu::Erf, x),
            Self::GeluTanh => vlp_kernels::gelu(Gelu::Tanh, x),
        }
    }

    /// Parses the name used in Hugging Face configs.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    /// The canonical Hugging Face name.
    pub fn hf_name(&self) -> &'static str {
        match self {
            Self::QuickGelu => "quick_gelu",
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

#[cfg(test)]
mod tests {
    crate::backend_tests! {
    use super::super::*;

    fn erf(x: f64) -> f64 {
        // Abramowitz-Stegun 7.1.26 is too coarse for 1e-6 checks; integrate instead.
        let n = 20_000;
        let h = x / n as f64;
        let mut s = 0.0;
        for i in 0..n {
            let t = (i as f64 + 0.5) * h;
            s += (-t * t).exp();
        }
        s * h * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn activations_match_their_formulas() {
        let xs = [-3.0f32, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5];
        let t = Tensor::<B, 1>::from_floats(xs, &default_device());
        for act in [
            Activation::QuickGelu,
            Activation::Gelu,
            Activation::GeluTanh,
        ] {
            let got: Vec<f32> = act.forward(t.clone()).into_data().to_vec().unwrap();
            for (x, y) in xs.iter().zip(got) {
                let x = *x as f64;
                let want = match act {
                    Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
                    Activation::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
                    Activation::GeluTanh => {
                        let k = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
                    }
                };
                assert!(
                    (y as f64 - want).abs() < 1e-5,
                    "{act:?}({x}) = {y}, want {want}"
                );
            }
        }
    }

    #[test]
    fn parses_hf_names() {
        assert_eq!(
            Activation::from_hf_name("quick_gelu"),
            Some(Activation::QuickGelu)
        );
        assert_eq!(Activation::from_hf_name("gelu"), Some(Activation::Gelu));
        assert_eq!(
            Activation::from_hf_name("gelu_pytorch_tanh"),
            Some(Activation::GeluTanh)
        );
        assert_eq!(
            Activation::from_hf_name("gelu_new"),
            Some(Activation::GeluTanh)
        );
        assert_eq!(Activation::from_hf_name("relu"), None);
    }
    }
}
