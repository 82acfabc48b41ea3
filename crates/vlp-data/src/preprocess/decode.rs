//! Decoding any supported image file to RGB, with its EXIF orientation applied.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::error::{DataError, Result};

/// Largest image decoded: 16384 pixels a side and 64 megapixels, so that a few bytes claiming a
/// gigapixel cannot exhaust memory. Larger real photos are rare in training data; raise the limit
/// with [`decode_image_with_limit`].
pub const MAX_IMAGE_PIXELS: u64 = 64 << 20;
/// Largest side decoded (see [`MAX_IMAGE_PIXELS`]).
pub const MAX_IMAGE_SIDE: u32 = 16384;

fn fail(name: &str, reason: impl std::fmt::Display) -> DataError {
    DataError::Image {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Decodes JPEG, PNG or WebP bytes (format sniffed from the content) to 8-bit RGB.
///
/// EXIF orientation is applied, as PIL's `exif_transpose` and camera viewers do; grayscale,
/// palette, CMYK and 16-bit images are converted to RGB; an alpha channel is dropped (what PIL's
/// `convert("RGB")` does). `name` (path or sample key) is used in errors.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<RgbImage> {
    decode_image_with_limit(bytes, name, MAX_IMAGE_PIXELS)
}

fn check_size(name: &str, w: u32, h: u32, max_pixels: u64) -> Result<()> {
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || (w as u64) * (h as u64) > max_pixels {
        return Err(fail(
            name,
            format!(
                "{w}x{h} pixels is over the limit ({MAX_IMAGE_SIDE} a side, {max_pixels} in all; \
                 decode_image_with_limit raises it)"
            ),
        ));
    }
    Ok(())
}

/// [`decode_image`] with another bound on the pixel count (the side stays ≤ 16384).
pub fn decode_image_with_limit(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(fail(name, "empty file"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(name, e))?;
    if reader.format().is_none() {
        return Err(fail(
            name,
            "not a recognised image format (JPEG, PNG or WebP)",
        ));
    }
    // The size from the header first, without limits (reading a header allocates nothing):
    // the decoders' own limit errors do not say what size the file claimed.
    let (w, h) = {
        let mut header = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| fail(name, e))?;
        header.no_limits();
        header
            .into_dimensions()
            .map_err(|e| fail(name, format!("cannot read the header: {e}")))?
    };
    check_size(name, w, h, max_pixels)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    // The decoder's own buffers plus the RGB copy: 4 bytes a pixel is a safe bound.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    let mut reader = reader;
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| fail(name, format!("cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    check_size(name, w, h, max_pixels)?;
    let orientation = decoder
        .orientation()
        .map_err(|e| fail(name, format!("cannot read orientation: {e}")))?;
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| fail(name, format!("cannot decode: {e}")))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(fail(name, "image has no pixels"));
    }
    Ok(img.to_rgb8())
}

/// Reads and decodes an image file.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.into(),
        source: e,
    })?;
    decode_image(&bytes, &path.display().to_string())
}
