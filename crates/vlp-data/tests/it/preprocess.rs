//! Preprocessing against `CLIPImageProcessor`, and decoding of awkward files.

use image::{Rgb, RgbImage};
use vlp_core::checkpoint::TensorFile;
use vlp_data::preprocess::{ImagePipeline, Preprocess, decode_image, load_image};

use crate::reference;

#[test]
fn clip_pipeline_matches_clip_image_processor() {
    let expected = TensorFile::open(reference("preprocess/expected.safetensors")).unwrap();
    let pipe = ImagePipeline::clip(224);
    for name in ["chelsea", "astronaut"] {
        let got = pipe
            .load(reference(&format!("preprocess/{name}.png")))
            .unwrap();
        let want = expected.get(name).unwrap();
        assert_eq!(want.shape, vec![3, 224, 224]);
        let diffs: Vec<f32> = got
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        println!("{name}: max abs err {max:.4}, mean {mean:.5} (one grey level ~ 0.015)");
        assert!(max <= 0.05, "{name}: max {max}");
        assert!(mean <= 0.01, "{name}: mean {mean}");
    }
}

#[test]
fn exif_orientation_is_applied() {
    let upright = load_image(reference("images/upright.jpg")).unwrap();
    let rotated = load_image(reference("images/exif_rotated.jpg")).unwrap();
    assert_eq!(
        rotated.dimensions(),
        upright.dimensions(),
        "EXIF orientation 6 not applied"
    );
    let err: f64 = upright
        .as_raw()
        .iter()
        .zip(rotated.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / upright.as_raw().len() as f64;
    assert!(
        err < 4.0,
        "mean abs difference {err} grey levels (JPEG noise only expected)"
    );
}

#[test]
fn other_colour_types_become_rgb() {
    let upright = load_image(reference("images/upright.png")).unwrap();
    let close = |a: &RgbImage, b: &RgbImage, tol: f64| {
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.as_raw().len() as f64
            <= tol
    };
    // RGBA: alpha is dropped, colour kept exactly.
    assert_eq!(load_image(reference("images/rgba.png")).unwrap(), upright);
    // Lossless WebP.
    assert_eq!(
        load_image(reference("images/lossless.webp")).unwrap(),
        upright
    );
    // Grayscale: three equal channels.
    let gray = load_image(reference("images/gray.png")).unwrap();
    assert!(gray.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    // Palette and CMYK come back close to the original colours.
    assert!(close(
        &load_image(reference("images/palette.png")).unwrap(),
        &upright,
        25.0
    ));
    let cmyk = load_image(reference("images/cmyk.jpg")).unwrap();
    assert_eq!(cmyk.dimensions(), upright.dimensions());
    assert!(close(&cmyk, &upright, 12.0), "CMYK colours off");
}

#[test]
fn bad_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(reference("images/upright.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero.jpg", vec![]),
        (
            "random.jpg",
            (0..500u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("notes.txt", b"this is not an image\n".to_vec()),
        ("truncated.jpg", jpeg[..jpeg.len() / 3].to_vec()),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load_image(&p).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
        assert!(ImagePipeline::clip(32).load(&p).is_err());
    }
    let e = load_image(dir.path().join("missing.png"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.png"), "{e}");
    // Batch loading keeps going past bad files.
    let paths = [reference("images/upright.png"), dir.path().join("zero.jpg")];
    let out = ImagePipeline::clip(32).load_batch(&paths);
    assert!(out[0].is_ok() && out[1].is_err());
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn extreme_sizes_are_handled() {
    let one = RgbImage::from_pixel(1, 1, Rgb([200, 10, 30]));
    let out = ImagePipeline::clip(224)
        .process_bytes(&png(&one), "1x1")
        .unwrap();
    assert_eq!(out.len(), 3 * 224 * 224);
    // A single pixel upsampled stays that colour everywhere.
    let want_r = (200.0 / 255.0 - 0.481_454_66) / 0.268_629_54;
    assert!(out[..224 * 224].iter().all(|v| (v - want_r).abs() < 1e-4));
    let wide = RgbImage::from_fn(10_000, 40, |x, _| Rgb([(x % 256) as u8, 0, 0]));
    for pipe in [ImagePipeline::clip(224), ImagePipeline::siglip(224)] {
        let out = pipe.process_bytes(&png(&wide), "10000x40").unwrap();
        assert_eq!(out.len(), 3 * 224 * 224);
        assert!(out.iter().all(|v| v.is_finite()));
    }
    let decoded = decode_image(&png(&wide), "wide").unwrap();
    assert_eq!(decoded.dimensions(), (10_000, 40));
}

#[test]
fn siglip_squashes_without_cropping() {
    // Left half red, right half blue: squashing keeps both halves, a centre crop of the CLIP
    // pipeline at the same size would too, but a 4:1 image shows the difference.
    let img = RgbImage::from_fn(400, 100, |x, _| {
        if x < 200 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let s = ImagePipeline::siglip(20).resize_crop(&img);
    assert_eq!(s.get_pixel(0, 10)[0], 255);
    assert_eq!(s.get_pixel(19, 10)[2], 255);
    // CLIP: shortest side to 20 gives 80x20, the centre crop spans x = 30..50, half and half.
    let c = ImagePipeline::clip(20).resize_crop(&img);
    assert_eq!(c.get_pixel(0, 10)[0], 255);
    assert_eq!(c.get_pixel(19, 10)[2], 255);
    let tall = RgbImage::from_fn(100, 400, |_, y| {
        if y < 100 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    // The top quarter is red; the centre crop (rows 30..50 of 80) only sees blue.
    let c = ImagePipeline::clip(20).resize_crop(&tall);
    assert!(c.pixels().all(|p| p[2] > 200));
}
