//! Input-side throughput: captions/s of the tokenizers, images/s of decode + preprocess.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use vlp_data::ImagePipeline;
use vlp_text::{ClipTokenizer, Tokenizer};

fn tokenizer(c: &mut Criterion) {
    let caps = vlp_bench::captions(10_000);
    let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
    let tok = ClipTokenizer::default();
    let mut g = c.benchmark_group("tokenize_10k_captions");
    g.throughput(Throughput::Elements(refs.len() as u64));
    g.sample_size(10);
    g.bench_function("clip_bpe_one_thread", |b| b.iter(|| refs.iter().map(|t| tok.encode(t).ids[1]).sum::<u32>()));
    g.bench_function("clip_bpe_all_cores", |b| b.iter(|| tok.encode_batch(&refs).ids.len()));
    g.finish();
}

fn preprocess(c: &mut Criterion) {
    let jpeg = vlp_bench::jpeg_500x375();
    let pipe = ImagePipeline::clip(224);
    let mut g = c.benchmark_group("decode_preprocess_500x375_jpeg_to_224");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_thread", |b| b.iter(|| pipe.process_bytes(&jpeg, "bench").expect("decodes").len()));
    let many = vec![jpeg.clone(); 64];
    g.throughput(Throughput::Elements(many.len() as u64));
    g.bench_function("all_cores_64_images", |b| {
        b.iter(|| many.par_iter().map(|j| pipe.process_bytes(j, "bench").expect("decodes").len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, tokenizer, preprocess);
criterion_main!(benches);
