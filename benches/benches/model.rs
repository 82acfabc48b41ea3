//! The model's pieces on the CPU backend: self-attention, the contrastive losses with their
//! gradients, and whole-tower forwards at ViT-B/32 size and at the default ShapesWorld size.
//!
//! `cargo bench -p vlp-bench --bench model`. End-to-end training and encoding throughput, with
//! peak memory and on any backend, is `cargo xtask bench` (`vlp bench`). Numbers are in
//! `benches/RESULTS.md`.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vlp_align::ClipConfig;
use vlp_align::loss::{clip_loss, siglip_loss};
use vlp_core::backend::{DefaultBackend as B, default_device};
use vlp_core::nn::AttentionConfig;

type Ad = Autodiff<B>;

fn attention(c: &mut Criterion) {
    let dev = default_device();
    // ViT-B/32 at 224 px: 50 tokens of width 768, 12 heads, open_clip's fused in_proj.
    let layer = AttentionConfig::new(768, 12)
        .with_fused_qkv(true)
        .init::<B>(&dev);
    let x = Tensor::<B, 3>::random([32, 50, 768], Distribution::Normal(0.0, 1.0), &dev);
    let mut g = c.benchmark_group("self_attention_vit_b32");
    g.throughput(Throughput::Elements(32));
    g.sample_size(20);
    g.bench_function("batch32_forward", |b| {
        b.iter(|| {
            layer
                .forward(x.clone(), None)
                .slice([0..1, 0..1, 0..1])
                .into_scalar()
        })
    });
    g.finish();
}

fn losses(c: &mut Criterion) {
    let dev = default_device();
    let mut g = c.benchmark_group("contrastive_loss_forward_backward");
    for n in [256usize, 1024] {
        let img =
            Tensor::<Ad, 2>::random([n, 512], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let txt =
            Tensor::<Ad, 2>::random([n, 512], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let scale = Tensor::<Ad, 1>::from_floats([100f32.ln()], &dev).require_grad();
        let bias = Tensor::<Ad, 1>::from_floats([-10.0f32], &dev).require_grad();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("clip_batch{n}_dim512"), |b| {
            b.iter(|| {
                let grads = clip_loss(img.clone(), txt.clone(), scale.clone()).backward();
                img.grad(&grads)
                    .map(|g| g.slice([0..1, 0..1]).into_scalar())
            })
        });
        g.bench_function(format!("siglip_batch{n}_dim512"), |b| {
            b.iter(|| {
                let grads =
                    siglip_loss(img.clone(), txt.clone(), scale.clone(), bias.clone()).backward();
                img.grad(&grads)
                    .map(|g| g.slice([0..1, 0..1]).into_scalar())
            })
        });
    }
    g.finish();
}

fn towers(c: &mut Criterion) {
    let dev = default_device();
    let vit_b32 = ClipConfig::vit_b_32().init::<B>(&dev);
    let mut g = c.benchmark_group("tower_forward_vit_b32");
    g.sample_size(10);
    let pixels = Tensor::<B, 4>::random([8, 3, 224, 224], Distribution::Normal(0.0, 1.0), &dev);
    g.throughput(Throughput::Elements(8));
    g.bench_function("encode_image_batch8", |b| {
        b.iter(|| {
            vit_b32
                .encode_image(pixels.clone())
                .slice([0..1, 0..1])
                .into_scalar()
        })
    });
    let ids = Tensor::<B, 2, Int>::random([8, 77], Distribution::Uniform(1.0, 49406.0), &dev);
    g.bench_function("encode_text_batch8_ctx77", |b| {
        b.iter(|| {
            vit_b32
                .encode_text(ids.clone(), None)
                .slice([0..1, 0..1])
                .into_scalar()
        })
    });
    g.finish();
}

criterion_group!(benches, attention, losses, towers);
criterion_main!(benches);
