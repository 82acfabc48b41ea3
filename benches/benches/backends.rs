//! The CPU backend choice: Flex against NdArray on a matmul and a CLIP transformer block.
//!
//! `cargo bench -p vlp-bench --features backend-comparison --bench backends` (or
//! `--features ndarray-blas` with libopenblas-dev installed to include NdArray + OpenBLAS). Numbers are in CONTRIBUTING.md.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vlp_core::nn::{Activation, EncoderLayer, TransformerEncoderConfig};

fn matmul<B: Backend>(c: &mut Criterion, name: &str) {
    let dev = Default::default();
    let mut g = c.benchmark_group(format!("matmul_f32/{name}"));
    for n in [512usize, 1024] {
        let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &dev);
        g.throughput(Throughput::Elements((2 * n * n * n) as u64)); // FLOP
        g.bench_function(format!("{n}x{n}"), |bench| {
            bench.iter(|| {
                a.clone()
                    .matmul(b.clone())
                    .slice([0..1, 0..1])
                    .into_scalar()
            })
        });
    }
    g.finish();
}

fn block<B: Backend>(dev: &B::Device) -> EncoderLayer<B> {
    // One ViT-B/32 block (width 768, 12 heads, MLP 3072), as CLIP runs it.
    let mut enc = TransformerEncoderConfig::new(768, 1, 12, 3072)
        .with_activation(Activation::QuickGelu)
        .init(dev);
    enc.layers.remove(0)
}

fn transformer_block<B: Backend>(c: &mut Criterion, name: &str) {
    let dev = Default::default();
    let layer = block::<B>(&dev);
    // Batch 8 images of 50 tokens (ViT-B/32 at 224 px).
    let x = Tensor::<B, 3>::random([8, 50, 768], Distribution::Normal(0.0, 1.0), &dev);
    let mut g = c.benchmark_group(format!("vit_b32_block_forward/{name}"));
    g.throughput(Throughput::Elements(8));
    g.sample_size(20);
    g.bench_function("batch8", |b| {
        b.iter(|| {
            layer
                .forward(x.clone(), None)
                .slice([0..1, 0..1, 0..1])
                .into_scalar()
        })
    });
    g.finish();
}

fn transformer_block_train<B: Backend>(c: &mut Criterion, name: &str) {
    let dev = Default::default();
    let layer = block::<Autodiff<B>>(&dev);
    let x = Tensor::<Autodiff<B>, 3>::random([8, 50, 768], Distribution::Normal(0.0, 1.0), &dev);
    let mut g = c.benchmark_group(format!("vit_b32_block_forward_backward/{name}"));
    g.throughput(Throughput::Elements(8));
    g.sample_size(10);
    g.bench_function("batch8", |b| {
        b.iter(|| {
            let grads = layer.forward(x.clone(), None).mean().backward();
            layer
                .mlp
                .fc1
                .weight
                .grad(&grads)
                .map(|g| g.slice([0..1, 0..1]).into_scalar())
        })
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    matmul::<Flex>(c, "flex");
    matmul::<NdArray>(c, "ndarray");
    transformer_block::<Flex>(c, "flex");
    transformer_block::<NdArray>(c, "ndarray");
    transformer_block_train::<Flex>(c, "flex");
    transformer_block_train::<NdArray>(c, "ndarray");
}

criterion_group!(benches, all);
criterion_main!(benches);
