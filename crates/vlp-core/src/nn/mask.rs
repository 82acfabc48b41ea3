//! Boolean attention masks: causal, key padding, and their combination.

use burn::tensor::{Bool, Int, Tensor, backend::Backend};

/// Which (query, key) pairs must not attend: `true` = masked out.
///
/// Stored as `[batch or 1, 1, queries, keys]` and broadcast over heads (and batch, when the first
/// dimension is 1). Masks combine with [`AttentionMask::or`], so a causal mask and a padding mask
/// give the text-encoder mask of Hugging Face CLIP.
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    mask: Tensor<B, 4, Bool>,
}

impl<B: Backend> AttentionMask<B> {
    /// Wraps a boolean tensor, `true` where attention is forbidden.
    ///
    /// # Shapes
    /// - `mask`: `[batch or 1, 1, queries, keys]`
    pub fn new(mask: Tensor<B, 4, Bool>) -> Self {
        Self { mask }
    }

    /// Causal mask: query `i` may attend to keys `0..=i` only.
    pub fn causal(len: usize, device: &B::Device) -> Self {
        // Burn's `tril_mask(_, 0)` marks what a lower-triangular fill would remove: the
        // entries strictly above the diagonal, i.e. the future keys.
        let m = Tensor::<B, 2, Bool>::tril_mask([len, len], 0, device);
        Self {
            mask: m.reshape([1, 1, len, len]),
        }
    }

    /// Key-padding mask from a boolean padding tensor, `true` at padded keys.
    ///
    /// # Shapes
    /// - `padding`: `[batch, keys]`
    pub fn key_padding(padding: Tensor<B, 2, Bool>) -> Self {
        let [b, k] = padding.dims();
        Self {
            mask: padding.reshape([b, 1, 1, k]),
        }
    }

    /// Key-padding mask from a Hugging Face `attention_mask` (`1` = real token, `0` = padding).
    ///
    /// # Shapes
    /// - `attention_mask`: `[batch, keys]`
    pub fn from_attention_mask(attention_mask: Tensor<B, 2, Int>) -> Self {
        Self::key_padding(attention_mask.equal_elem(0))
    }

    /// Union of two masks: a pair is masked when either mask forbids it.
    pub fn or(self, other: Self) -> Self {
        let [b1, _, q1, k1] = self.mask.dims();
        let [b2, _, q2, k2] = other.mask.dims();
        let shape = [b1.max(b2), 1, q1.max(q2), k1.max(k2)];
        Self {
            mask: self.mask.expand(shape).bool_or(other.mask.expand(shape)),
        }
    }

    /// The mask tensor, `[batch or 1, 1, queries or 1, keys]`.
    pub fn tensor(&self) -> &Tensor<B, 4, Bool> {
        &self.mask
    }

    /// The mask broadcast to `[batch, heads, queries, keys]`.
    pub fn expand(&self, shape: [usize; 4]) -> Tensor<B, 4, Bool> {
        self.mask.clone().expand(shape)
    }
}

#[cfg(test)]
mod tests {
    crate::backend_tests! {
    use super::super::*;

    fn bools(t: Tensor<B, 4, Bool>) -> Vec<bool> {
        // Backends store bools differently (bytes, u32 on wgpu): compare as integers.
        t.int()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v != 0)
            .collect()
    }

    #[test]
    fn causal_masks_future_keys() {
        let m = AttentionMask::<B>::causal(3, &default_device());
        #[rustfmt::skip]
        let want = vec![false, true, true,
                        false, false, true,
                        false, false, false];
        assert_eq!(bools(m.tensor().clone()), want);
    }

    #[test]
    fn combined_mask_is_the_union() {
        let dev = default_device();
        let am = Tensor::<B, 2, Int>::from_ints([[1, 1, 0], [1, 0, 0]], &dev);
        let m = AttentionMask::causal(3, &dev).or(AttentionMask::from_attention_mask(am));
        assert_eq!(m.tensor().dims(), [2, 1, 3, 3]);
        #[rustfmt::skip]
        let want = vec![
            false, true, true,   false, false, true,   false, false, true,
            false, true, true,   false, true, true,    false, true, true,
        ];
        assert_eq!(bools(m.tensor().clone()), want);
    }
    }
}
