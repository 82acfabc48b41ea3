//! Shared set-up for vlp's criterion benchmarks (`cargo bench -p vlp-bench`).
//!
//! The benchmarks themselves live in `benches/`; results and their history are in
//! `benches/RESULTS.md`.

/// `n` deterministic captions in ShapesWorld's style, 5–15 words each.
pub fn captions(n: usize) -> Vec<String> {
    const SIZES: [&str; 3] = ["small", "large", "tiny"];
    const COLOURS: [&str; 6] = ["red", "green", "blue", "yellow", "purple", "orange"];
    const SHAPES: [&str; 5] = ["circle", "square", "triangle", "star", "cross"];
    const RELS: [&str; 4] = ["to the left of", "above", "below", "to the right of"];
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = |k: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % k as u64) as usize
    };
    (0..n)
        .map(|_| {
            let mut c = format!(
                "a {} {} {}",
                SIZES[next(3)],
                COLOURS[next(6)],
                SHAPES[next(5)]
            );
            if next(2) == 0 {
                c += &format!(
                    " {} a {} {}",
                    RELS[next(4)],
                    COLOURS[next(6)],
                    SHAPES[next(5)]
                );
            }
            if next(3) == 0 {
                c += " on a noisy background.";
            }
            c
        })
        .collect()
}

/// A 500×375 JPEG (quality 90) made from a smooth synthetic scene, like a small photo.
pub fn jpeg_500x375() -> Vec<u8> {
    let img = image::RgbImage::from_fn(500, 375, |x, y| {
        let r = ((x as f32 * 0.05).sin() * 100.0 + 128.0) as u8;
        let g = ((y as f32 * 0.07).cos() * 100.0 + 128.0) as u8;
        let b = (((x + y) as f32 * 0.03).sin() * 100.0 + 128.0) as u8;
        image::Rgb([r, g, b])
    });
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
        .encode_image(&img)
        .expect("encodes");
    buf
}
