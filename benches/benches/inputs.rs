//! Input-side throughput: captions/s of the tokenizers, images/s of decode + preprocess.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use vlp_data::{ImagePipeline, Preprocess};
use vlp_text::{ClipTokenizer, Tokenizer};

fn tokenizer(c: &mut Criterion) {
    let caps = vlp_bench::captions(10_000);
    let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
    let tok = ClipTokenizer::default();
    let mut g = c.benchmark_group("tokenize_10k_captions");
    g.throughput(Throughput::Elements(refs.len() as u64));
    g.sample_size(10);
    g.bench_function("clip_bpe_one_thread", |b| {
        b.iter(|| {
            refs.iter()
                .map(|t| tok.encode(t).expect("encodes").ids[1])
                .sum::<u32>()
        })
    });
    g.bench_function("clip_bpe_all_cores", |b| {
        b.iter(|| tok.encode_batch(&refs).expect("encodes").ids.len())
    });
    g.finish();
}

fn preprocess(c: &mut Criterion) {
    let jpeg = vlp_bench::jpeg_500x375();
    let pipe = ImagePipeline::clip(224);
    let mut g = c.benchmark_group("decode_preprocess_500x375_jpeg_to_224");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_thread", |b| {
        b.iter(|| pipe.process_bytes(&jpeg, "bench").expect("decodes").len())
    });
    let many = vec![jpeg.clone(); 64];
    g.throughput(Throughput::Elements(many.len() as u64));
    g.bench_function("all_cores_64_images", |b| {
        b.iter(|| {
            many.par_iter()
                .map(|j| pipe.process_bytes(j, "bench").expect("decodes").len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn loader(c: &mut Criterion) {
    use vlp_data::loader::{Loader, LoaderConfig};
    use vlp_data::source::open_source;
    use vlp_data::writer::ShardWriter;
    // 256 JPEG samples (500×375, quality 90) in 4 WebDataset shards.
    let dir = std::env::temp_dir().join(format!("vlp-bench-wds-{}", std::process::id()));
    let jpeg = vlp_bench::jpeg_500x375();
    let mut w = ShardWriter::new(&dir, "bench", 64).expect("writable temp dir");
    for i in 0..256 {
        w.write(
            &format!("{i:05}"),
            &[("jpg", &jpeg), ("txt", b"a photo of a smooth pattern")],
        )
        .expect("writes");
    }
    w.finish().expect("writes");
    let spec = format!("wds:{}", dir.display());
    let mut g = c.benchmark_group("loader_wds_jpeg_224");
    g.throughput(Throughput::Elements(256));
    g.sample_size(10);
    for workers in [1usize, 2] {
        let cfg = LoaderConfig {
            batch_size: 32,
            workers,
            shuffle: true,
            drop_last: false,
            shuffle_buffer: 64,
            ..Default::default()
        };
        let l = Loader::new(
            open_source(&spec, &Default::default()).expect("shards"),
            ImagePipeline::clip(224),
            None,
            cfg,
        )
        .expect("loader");
        g.bench_function(format!("{workers}_workers"), |b| {
            b.iter(|| {
                l.epoch(0, 0)
                    .map(|x| x.expect("clean data").len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn shapes_world(c: &mut Criterion) {
    use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};
    let mut g = c.benchmark_group("shapesworld_generate");
    for size in [32usize, 64] {
        let w = ShapesWorld::new(ShapesWorldConfig {
            image_size: size,
            ..Default::default()
        })
        .expect("valid config");
        g.throughput(Throughput::Elements(256));
        g.bench_function(format!("{size}px_one_thread"), |b| {
            b.iter(|| {
                (0..256u64)
                    .map(|i| w.sample(Split::Train, i).objects.len())
                    .sum::<usize>()
            })
        });
        g.bench_function(format!("{size}px_all_cores"), |b| {
            b.iter(|| {
                (0..256u64)
                    .into_par_iter()
                    .map(|i| w.sample(Split::Train, i).objects.len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tokenizer, preprocess, loader, shapes_world);
criterion_main!(benches);
