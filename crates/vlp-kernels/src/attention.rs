//! Scaled dot-product attention for training on the CPU: one pass per head forward and one
//! backward, reading q, k and v through their strides (no head-splitting copies).
//!
//! On `Autodiff<Flex>`, Burn 0.21 differentiates attention through its fallback composition:
//! a transpose, two batched matmuls over strided views (each made contiguous first), a scale,
//! mask fills, and a softmax of six element-wise passes (with a scalar `exp`), every one of
//! them recorded and replayed backward. Here the forward keeps only the probabilities `P`, and
//! the backward is the closed form
//! `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = s dS K`, `dK = s dSᵀ Q`.
//! Batch elements run in parallel; each head's products are `gemm` calls on strided views of
//! the packed `[batch, tokens, heads·d]` projections, so heads are never split into copies
//! and the gradients come back packed too. Inference on Flex runs the same forward without
//! keeping `P` (Flex's own kernel wants the heads split into copies first); the GPU backends
//! keep Burn's fused kernels.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;
use std::any::TypeId;
use std::sync::Arc;

use crate::dispatch::{AdFlexTensor, Float, from_ad_flex, from_flex};
use crate::matmul::{Mat, MatMut, matmul};
use crate::simd::{self, multiversion};

/// A `[b, l, h·d]` f32 tensor read in place as heads: row `i` of head `h` of batch `b` is `d`
/// consecutive values.
#[derive(Debug, Clone)]
struct Rows {
    /// Keeps the storage alive (a contiguous copy when the input's last axis was strided).
    tensor: FlexTensor,
    offset: usize,
    /// Strides of b and l (the last axis has stride 1).
    strides: [usize; 2],
    /// Head width.
    d: usize,
}

impl Rows {
    fn new(t: &FlexTensor, heads: usize) -> Self {
        let readable = |t: &FlexTensor| {
            let s = t.layout().strides();
            s.len() == 3 && s[2] == 1 && s.iter().all(|&x| x >= 0)
        };
        let tensor = if readable(t) {
            t.clone()
        } else {
            t.to_contiguous()
        };
        let s = tensor.layout().strides().to_vec();
        let d = tensor.shape().dims::<3>()[2] / heads;
        Self {
            offset: tensor.layout().start_offset(),
            strides: [s[0] as usize, s[1] as usize],
            d,
            tensor,
        }
    }

    fn data(&self) -> &[f32] {
        self.tensor.storage::<f32>()
    }
}

/// Shapes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    heads: usize,
    lq: usize,
    lk: usize,
    /// Head width.
    d: usize,
    scale: f32,
}

impl Dims {
    /// Width of a packed row, `heads · d`.
    fn width(&self) -> usize {
        self.heads * self.d
    }
}

impl Rows {
    /// Head `h` of batch `b` as an `[n, d]` matrix.
    fn head(&self, b: usize, h: usize, n: usize) -> Mat<'_> {
        Mat {
            data: self.data(),
            off: self.offset + b * self.strides[0] + h * self.d,
            rs: self.strides[1],
            cs: 1,
            rows: n,
            cols: self.d,
        }
    }
}

/// Head `h`'s `[n, d]` block of a packed `[n, width]` buffer.
fn block(data: &mut [f32], h: usize, n: usize, d: usize, width: usize) -> MatMut<'_> {
    MatMut {
        data,
        off: h * d,
        rs: width,
        cs: 1,
        rows: n,
        cols: d,
    }
}

multiversion! {
    /// Scores to probabilities in place, row by row (`lk` per row): masked keys (true) get
    /// exactly 0, and a row whose every key is masked gets all zeros.
    pub fn softmax_rows(p: &mut [f32], lk: usize, mask: Option<&[bool]>) {
        for (i, row) in p.chunks_exact_mut(lk).enumerate() {
            if let Some(m) = mask {
                for (x, &hidden) in row.iter_mut().zip(&m[i * lk..(i + 1) * lk]) {
                    if hidden {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            if max == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let mut sum = 0.0;
            for x in row.iter_mut() {
                // `simd::exp` clamps its input, so exp(−inf) would be ~1e-38: keep it 0.
                *x = if *x == f32::NEG_INFINITY { 0.0 } else { simd::exp(*x - max) };
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

multiversion! {
    /// `dp ← scale · P ⊙ (dP − rowsum(P ⊙ dP))`, the gradient of the scores, in place.
    pub fn softmax_backward_rows(p: &[f32], dp: &mut [f32], lk: usize, scale: f32) {
        for (prow, drow) in p.chunks_exact(lk).zip(dp.chunks_exact_mut(lk)) {
            let mut acc = [0f32; 8];
            let (pc, dc) = (prow.chunks_exact(8), drow.chunks_exact(8));
            let (pr, dr) = (pc.remainder(), dc.remainder());
            for (x, y) in pc.zip(dc) {
                for l in 0..8 {
                    acc[l] += x[l] * y[l];
                }
            }
            let mut w = acc.iter().sum::<f32>();
            for (x, y) in pr.iter().zip(dr) {
                w += x * y;
            }
            for (d, &pij) in drow.iter_mut().zip(prow) {
                *d = scale * pij * (*d - w);
            }
        }
    }
}

/// One batch element's heads: probabilities into `p` (`[heads, lq, lk]`), output into `o`
/// (`[lq, heads·d]`).
fn forward_one(
    [q, k, v]: [&Rows; 3],
    mask: Option<&[bool]>,
    dims: Dims,
    bi: usize,
    p: &mut [f32],
    o: &mut [f32],
) {
    let Dims {
        lq, lk, d, scale, ..
    } = dims;
    for (h, p) in p.chunks_exact_mut(lq * lk).enumerate() {
        // S = scale · Q Kᵀ, then softmax.
        matmul(
            MatMut::dense(p, lq, lk),
            q.head(bi, h, lq),
            k.head(bi, h, lk).t(),
            scale,
            false,
        );
        // The mask has one head (shared by all) or one per head.
        let m = mask.map(|m| {
            let mask_heads = m.len() / (dims.b * lq * lk);
            let i = bi * mask_heads + h.min(mask_heads - 1);
            &m[i * lq * lk..(i + 1) * lq * lk]
        });
        softmax_rows(p, lk, m);
        // O = P V.
        matmul(
            block(o, h, lq, d, dims.width()),
            Mat::dense(p, lq, lk),
            v.head(bi, h, lk),
            1.0,
            false,
        );
    }
}

/// The forward over all heads, in parallel over the batch: returns the output
/// `[b, lq, h·d]` and, when `keep` (for the backward), the probabilities `[b, h, lq, lk]`.
fn forward(
    q: &Rows,
    k: &Rows,
    v: &Rows,
    mask: Option<&[bool]>,
    dims: Dims,
    keep: bool,
) -> (FlexTensor, Option<Vec<f32>>) {
    let Dims {
        b, heads, lq, lk, ..
    } = dims;
    let width = dims.width();
    let mut o = vec![0f32; b * lq * width];
    let per_batch = heads * lq * lk;
    let p = if keep {
        let mut p = vec![0f32; b * per_batch];
        p.par_chunks_mut(per_batch)
            .zip(o.par_chunks_mut(lq * width))
            .enumerate()
            .for_each(|(bi, (p, o))| forward_one([q, k, v], mask, dims, bi, p, o));
        Some(p)
    } else {
        // Inference: one batch element's probabilities at a time per thread.
        o.par_chunks_mut(lq * width).enumerate().for_each_init(
            || vec![0f32; per_batch],
            |p, (bi, o)| forward_one([q, k, v], mask, dims, bi, p, o),
        );
        None
    };
    (FlexTensor::from_data(TensorData::new(o, [b, lq, width])), p)
}

#[derive(Debug, Clone)]
struct Saved {
    q: Rows,
    k: Rows,
    v: Rows,
    p: Arc<Vec<f32>>,
    dims: Dims,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let Dims {
            b,
            heads,
            lq,
            lk,
            d,
            scale,
        } = s.dims;
        let width = s.dims.width();
        let go = Rows::new(&grads.consume::<Flex>(&ops.node), heads);
        let mut gq = vec![0f32; b * lq * width];
        let mut gk = vec![0f32; b * lk * width];
        let mut gv = vec![0f32; b * lk * width];
        gq.par_chunks_mut(lq * width)
            .zip(gk.par_chunks_mut(lk * width))
            .zip(gv.par_chunks_mut(lk * width))
            .enumerate()
            .for_each(|(bi, ((gq, gk), gv))| {
                let mut ds = vec![0f32; lq * lk];
                for h in 0..heads {
                    let bh = bi * heads + h;
                    let p = &s.p[bh * lq * lk..(bh + 1) * lq * lk];
                    let go = go.head(bi, h, lq);
                    // dV = Pᵀ dO.
                    matmul(
                        block(gv, h, lk, d, width),
                        Mat::dense(p, lq, lk).t(),
                        go,
                        1.0,
                        false,
                    );
                    // dP = dO Vᵀ, then dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)).
                    matmul(
                        MatMut::dense(&mut ds, lq, lk),
                        go,
                        s.v.head(bi, h, lk).t(),
                        1.0,
                        false,
                    );
                    softmax_backward_rows(p, &mut ds, lk, scale);
                    // dQ = dS K, dK = dSᵀ Q.
                    let dsm = Mat::dense(&ds, lq, lk);
                    matmul(
                        block(gq, h, lq, d, width),
                        dsm,
                        s.k.head(bi, h, lk),
                        1.0,
                        false,
                    );
                    matmul(
                        block(gk, h, lk, d, width),
                        dsm.t(),
                        s.q.head(bi, h, lq),
                        1.0,
                        false,
                    );
                }
            });
        let [pq, pk, pv] = ops.parents;
        for (parent, g, l) in [(pq, gq, lq), (pk, gk, lk), (pv, gv, lk)] {
            if let Some(node) = parent {
                let t = FlexTensor::from_data(TensorData::new(g, [b, l, width]));
                grads.register::<Flex>(node.id, t);
            }
        }
    }
}

fn forward_tracked(
    q: AdFlexTensor,
    k: AdFlexTensor,
    v: AdFlexTensor,
    mask: Option<&[bool]>,
    dims: Dims,
) -> AdFlexTensor {
    let (rq, rk, rv) = (
        Rows::new(&q.primitive, dims.heads),
        Rows::new(&k.primitive, dims.heads),
        Rows::new(&v.primitive, dims.heads),
    );
    let prep = AttentionBackward
        .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful();
    match prep {
        OpsKind::Tracked(prep) => {
            let (out, p) = forward(&rq, &rk, &rv, mask, dims, true);
            let saved = Saved {
                q: rq,
                k: rk,
                v: rv,
                p: Arc::new(p.expect("kept")),
                dims,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&rq, &rk, &rv, mask, dims, false).0),
    }
}

/// `[b, l, h·d]` → `[b, h, l, d]` (a view).
fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, l, w] = x.dims();
    x.reshape([b, l, heads, w / heads]).swap_dims(1, 2)
}

/// Multi-head scaled dot-product attention on packed projections:
/// `softmax(scale · q_h k_hᵀ, masked) v_h` for every head `h`, heads side by side in the
/// output as they were in the inputs (`mask`: true = the key is hidden from the query).
///
/// On Flex and `Autodiff<Flex>` (f32) this is the kernel above (with its own backward under
/// autodiff), reading the heads in place; everywhere else it splits the heads and calls
/// Burn's `attention` (CubeCL's fused kernel on GPUs).
///
/// # Shapes
/// - `q`: `[batch, lq, heads·d]`; `k`, `v`: `[batch, lk, heads·d]` (any strides)
/// - `mask`: `[batch, heads, lq, lk]`, or `[batch, 1, lq, lk]` for one mask shared by every
///   head (read once rather than once per head)
/// - returns: `[batch, lq, heads·d]`
pub fn attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    mask: Option<Tensor<B, 4, Bool>>,
    scale: f64,
) -> Tensor<B, 3> {
    let [b, lq, width] = q.dims();
    let lk = k.dims()[1];
    assert!(
        heads > 0 && width % heads == 0,
        "attention: width {width} is not a multiple of {heads} heads"
    );
    assert_eq!(k.dims(), [b, lk, width], "attention: key shape");
    assert_eq!(v.dims(), [b, lk, width], "attention: value shape");
    if let Some(m) = &mask {
        let [mb, mh, mq, mk] = m.dims();
        assert!(
            [mb, mq, mk] == [b, lq, lk] && (mh == 1 || mh == heads),
            "attention: mask shape {:?} for batch {b}, {heads} heads, {lq} queries, {lk} keys",
            m.dims()
        );
    }
    if b == 0 || lq == 0 || lk == 0 || width == 0 {
        // Nothing to attend to (or nobody asking): zeros, as for a fully masked query. The
        // row-wise kernels below need at least one key per row.
        return Tensor::zeros([b, lq, width], &q.device());
    }
    let f32s = [&q, &k, &v].iter().all(|t| t.dtype() == DType::F32);
    let flex = TypeId::of::<B>() == TypeId::of::<Flex>();
    let ad_flex = TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>();
    if !(f32s && (flex || ad_flex) && crate::dispatch::enabled()) {
        let opts = AttentionModuleOptions {
            scale: Some(scale),
            ..Default::default()
        };
        let (q, k, v) = (
            split_heads(q, heads),
            split_heads(k, heads),
            split_heads(v, heads),
        );
        let mask = mask.map(|m| m.expand([b, heads, lq, lk]));
        let out = burn_attention(q, k, v, mask, None, opts);
        return out.swap_dims(1, 2).reshape([b, lq, width]);
    }
    let mask: Option<Vec<bool>> =
        mask.map(|m| m.into_data().to_vec::<bool>().expect("a bool mask"));
    let dims = Dims {
        b,
        heads,
        lq,
        lk,
        d: width / heads,
        scale: scale as f32,
    };
    let prims = [q, k, v].map(|t| Float::<B>::of(t.into_primitive().tensor()));
    let out = match prims {
        [Float::Flex(q), Float::Flex(k), Float::Flex(v)] => {
            let rows = |t: &FlexTensor| Rows::new(t, heads);
            let (out, _) = forward(
                &rows(&q),
                &rows(&k),
                &rows(&v),
                mask.as_deref(),
                dims,
                false,
            );
            from_flex::<B>(out)
        }
        [Float::AdFlex(q), Float::AdFlex(k), Float::AdFlex(v)] => {
            from_ad_flex::<B>(forward_tracked(q, k, v, mask.as_deref(), dims))
        }
        _ => unreachable!("B is Flex or Autodiff<Flex>"),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;

    use crate::testing::values;

    type Ad = Autodiff<Flex>;

    fn flat<const D: usize>(t: Tensor<Ad, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Runs the kernel and Burn's composition on the same inputs; returns the largest
    /// difference of the outputs and of the gradients of q, k and v.
    fn compare(
        b: usize,
        h: usize,
        lq: usize,
        lk: usize,
        d: usize,
        masked: Option<&[bool]>,
    ) -> [f32; 4] {
        crate::testing::require_kernels();
        let dev = Default::default();
        let fused_qkv = |seed| {
            // q, k, v as slices of one `[b, l, 3·h·d]` projection (the fused in_proj layout).
            Tensor::<Ad, 3>::from_data(
                TensorData::new(values(b * lk * 3 * h * d, 1.5, seed), [b, lk, 3 * h * d]),
                &dev,
            )
            .require_grad()
        };
        let qx = Tensor::<Ad, 3>::from_data(
            TensorData::new(values(b * lq * h * d, 1.5, 1), [b, lq, h * d]),
            &dev,
        )
        .require_grad();
        let kv = fused_qkv(2);
        let w = Tensor::<Ad, 3>::from_data(
            TensorData::new(values(b * lq * h * d, 1.0, 3), [b, lq, h * d]),
            &dev,
        );
        let mask = masked.map(|m| {
            Tensor::<Ad, 4, Bool>::from_data(TensorData::new(m.to_vec(), [b, h, lq, lk]), &dev)
        });
        let run = |fused: bool| {
            let q = qx.clone();
            let k = kv.clone().slice([0..b, 0..lk, h * d..2 * h * d]);
            let v = kv.clone().slice([0..b, 0..lk, 2 * h * d..3 * h * d]);
            let scale = 1.0 / (d as f64).sqrt();
            let out = if fused {
                attention(q, k, v, h, mask.clone(), scale)
            } else {
                let opts = AttentionModuleOptions {
                    scale: Some(scale),
                    ..Default::default()
                };
                let (q, k, v) = (split_heads(q, h), split_heads(k, h), split_heads(v, h));
                burn_attention(q, k, v, mask.clone(), None, opts)
                    .swap_dims(1, 2)
                    .reshape([b, lq, h * d])
            };
            let grads = (out.clone() * w.clone()).sum().backward();
            let gq: Vec<f32> = qx.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let gkv: Vec<f32> = kv.grad(&grads).unwrap().into_data().to_vec().unwrap();
            (flat(out), gq, gkv)
        };
        let (o1, q1, kv1) = run(true);
        let (o2, q2, kv2) = run(false);
        // Split the k and v gradients out of the fused projection's gradient.
        let part = |g: &[f32], which: usize| -> Vec<f32> {
            g.chunks(3 * h * d)
                .flat_map(|row| row[which * h * d..(which + 1) * h * d].to_vec())
                .collect()
        };
        [
            max_diff(&o1, &o2),
            max_diff(&q1, &q2),
            max_diff(&part(&kv1, 1), &part(&kv2, 1)),
            max_diff(&part(&kv1, 2), &part(&kv2, 2)),
        ]
    }

    #[test]
    fn matches_burns_composition_forward_and_backward() {
        // Odd sizes miss the 8-wide dot product; lq ≠ lk exercises cross-attention shapes.
        for (b, h, lq, lk, d) in [
            (2, 3, 5, 5, 8),
            (1, 2, 7, 4, 13),
            (3, 1, 1, 9, 33),
            (2, 4, 17, 17, 32),
        ] {
            let errs = compare(b, h, lq, lk, d, None);
            for (what, e) in ["output", "dq", "dk", "dv"].iter().zip(errs) {
                assert!(e < 2e-6, "{b}x{h}x{lq}x{lk}x{d}: {what} differs by {e}");
            }
        }
    }

    #[test]
    fn masked_keys_get_no_weight_and_no_gradient() {
        let (b, h, lq, lk, d) = (2, 2, 6, 6, 8);
        // Causal plus, in batch 1, a different hidden key per head (the last for head 0, the
        // one before for head 1), so that a head reading another head's mask would differ.
        let mut m = vec![false; b * h * lq * lk];
        for bb in 0..b {
            for hh in 0..h {
                for i in 0..lq {
                    for j in 0..lk {
                        m[((bb * h + hh) * lq + i) * lk + j] =
                            j > i || (bb == 1 && j == lk - 1 - hh);
                    }
                }
            }
        }
        let errs = compare(b, h, lq, lk, d, Some(&m));
        for (what, e) in ["output", "dq", "dk", "dv"].iter().zip(errs) {
            assert!(e < 2e-6, "masked: {what} differs by {e}");
        }
    }

    #[test]
    fn a_mask_shared_by_all_heads_equals_it_repeated_per_head() {
        crate::testing::require_kernels();
        let (b, h, lq, lk, d) = (2, 3, 5, 7, 4);
        let dev = Default::default();
        let t = |seed, l| {
            Tensor::<Flex, 3>::from_data(
                TensorData::new(values(b * l * h * d, 1.0, seed), [b, l, h * d]),
                &dev,
            )
        };
        // Key j hidden from query i when (i + 2j + batch) is divisible by 3.
        let shared: Vec<bool> = (0..b * lq * lk)
            .map(|n| {
                let (bb, i, j) = (n / (lq * lk), n / lk % lq, n % lk);
                (i + 2 * j + bb) % 3 == 0
            })
            .collect();
        let repeated: Vec<bool> = shared
            .chunks(lq * lk)
            .flat_map(|m| std::iter::repeat_n(m, h).flatten().copied())
            .collect();
        let run = |m: Vec<bool>, mh| {
            let mask =
                Tensor::<Flex, 4, Bool>::from_data(TensorData::new(m, [b, mh, lq, lk]), &dev);
            attention(t(1, lq), t(2, lk), t(3, lk), h, Some(mask), 0.5)
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(run(shared, 1), run(repeated, h));
    }

    #[test]
    fn a_fully_masked_query_gets_zeros() {
        let (b, h, lq, lk, d) = (1, 1, 3, 4, 8);
        let mut m = vec![false; lq * lk];
        m[4..8].fill(true); // query 1 sees nothing
        let dev = Default::default();
        let t = |seed| {
            Tensor::<Ad, 3>::from_data(
                TensorData::new(values(b * 4 * h * d, 1.0, seed), [b, 4, h * d]),
                &dev,
            )
        };
        let q = t(1).slice([0..1, 0..3, 0..d]);
        let mask = Tensor::<Ad, 4, Bool>::from_data(TensorData::new(m, [b, h, lq, lk]), &dev);
        let out = flat(attention(q, t(2), t(3), h, Some(mask), 0.5));
        assert!(
            out[d..2 * d].iter().all(|&x| x == 0.0),
            "{:?}",
            &out[d..2 * d]
        );
        assert!(out[..d].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn empty_sequences_give_empty_or_zero_outputs() {
        let dev = Default::default();
        let t = |l: usize| Tensor::<Ad, 3>::zeros([2, l, 8], &dev);
        assert_eq!(attention(t(0), t(3), t(3), 2, None, 0.5).dims(), [2, 0, 8]);
        let out = attention(t(4).add_scalar(1.0), t(0), t(0), 2, None, 0.5);
        assert_eq!(out.dims(), [2, 4, 8]);
        assert!(flat(out).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn flex_inference_and_untracked_inputs_match_burns_attention() {
        let dev = Default::default();
        let t = |seed| {
            Tensor::<Flex, 3>::from_data(
                TensorData::new(values(2 * 5 * 16, 1.0, seed), [2, 5, 16]),
                &dev,
            )
        };
        let opts = AttentionModuleOptions {
            scale: Some(0.3),
            ..Default::default()
        };
        // Key 4 hidden from every query of batch 1 (padding), on both heads.
        let m: Vec<bool> = (0..2 * 2 * 5 * 5).map(|i| i >= 50 && i % 5 == 4).collect();
        let mask =
            || Tensor::<Flex, 4, Bool>::from_data(TensorData::new(m.clone(), [2, 2, 5, 5]), &dev);
        let want: Vec<f32> = burn_attention(
            split_heads(t(1), 2),
            split_heads(t(2), 2),
            split_heads(t(3), 2),
            Some(mask()),
            None,
            opts,
        )
        .swap_dims(1, 2)
        .reshape([2, 5, 16])
        .into_data()
        .to_vec()
        .unwrap();
        let got: Vec<f32> = attention(t(1), t(2), t(3), 2, Some(mask()), 0.3)
            .into_data()
            .to_vec()
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-6);
        // Autodiff without gradients: the kernel's untracked branch, same values.
        let ad = |x: Tensor<Flex, 3>| Tensor::<Ad, 3>::from_inner(x);
        let ad_mask = Tensor::<Ad, 4, Bool>::from_inner(mask());
        let got = flat(attention(
            ad(t(1)),
            ad(t(2)),
            ad(t(3)),
            2,
            Some(ad_mask),
            0.3,
        ));
        assert!(max_diff(&got, &want) < 1e-6);
    }
}
