//! Writing datasets: WebDataset shards, ImageFolder trees and CSV tables, from ShapesWorld or
//! any other samples.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{DataError, Result};
use crate::shapes::{ShapesWorld, Split, class_name};

fn io(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Encodes an RGB image as PNG bytes.
pub fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .expect("PNG encoding of an RGB buffer cannot fail");
    buf.into_inner()
}

/// Writes samples into `{prefix}-{00000}.tar` shards of `shard_size` samples each.
///
/// Members get fixed metadata (mtime 0, mode 0644), so the same samples give the same bytes.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    shard_size: usize,
    current: Option<tar::Builder<std::io::BufWriter<std::fs::File>>>,
    in_shard: usize,
    shards: Vec<PathBuf>,
}

impl ShardWriter {
    /// A writer into `dir` (created if needed).
    pub fn new(dir: impl AsRef<Path>, prefix: &str, shard_size: usize) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if shard_size == 0 {
            return Err(DataError::Config {
                field: "shard_size".into(),
                reason: "must be positive".into(),
            });
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self {
            dir,
            prefix: prefix.into(),
            shard_size,
            current: None,
            in_shard: 0,
            shards: Vec::new(),
        })
    }

    /// Adds one sample: `members` are (extension, bytes), e.g. `("png", ..)`, `("txt", ..)`.
    pub fn write(&mut self, key: &str, members: &[(&str, &[u8])]) -> Result<()> {
        if self.current.is_none() || self.in_shard == self.shard_size {
            self.close_shard()?;
            let path = self
                .dir
                .join(format!("{}-{:05}.tar", self.prefix, self.shards.len()));
            let f = std::fs::File::create(&path).map_err(io(&path))?;
            self.current = Some(tar::Builder::new(std::io::BufWriter::new(f)));
            self.shards.push(path);
            self.in_shard = 0;
        }
        let path = self.shards.last().expect("a shard is open").clone();
        let builder = self.current.as_mut().expect("a shard is open");
        for (ext, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut h, format!("{key}.{ext}"), *bytes)
                .map_err(io(&path))?;
        }
        self.in_shard += 1;
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(b) = self.current.take() {
            let path = self.shards.last().expect("open shard has a path").clone();
            let mut w = b.into_inner().map_err(io(&path))?;
            w.flush().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Finishes the last shard; returns every shard written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close_shard()?;
        Ok(std::mem::take(&mut self.shards))
    }
}

/// Output format of [`write_shapes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tar shards with `{key}.png`, `.txt` (short caption), `.json` (full ground truth),
    /// `.seg.png` (instance mask) and `.cls` (label).
    Wds {
        /// Samples per shard.
        shard_size: usize,
    },
    /// `DIR/<colour>_<shape>/<key>.png`, the class being the main object's.
    ImageFolder,
    /// `DIR/images/<key>.png` and `DIR/<split>.csv` with `filepath,title` columns (open_clip's).
    Csv,
}

/// Writes samples `0..n` of `split` in `format` under `dir`; returns the files written (shards,
/// the CSV, or class folders).
pub fn write_shapes(
    world: &ShapesWorld,
    split: Split,
    n: usize,
    dir: impl AsRef<Path>,
    format: Format,
) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Generate in parallel, write in order, a chunk at a time to bound memory.
    let mut out = Vec::new();
    let mut shards = match format {
        Format::Wds { shard_size } => Some(ShardWriter::new(
            dir,
            &format!("shapes-{}", split.name()),
            shard_size,
        )?),
        _ => None,
    };
    let mut csv_rows = String::from("filepath,title\n");
    for start in (0..n).step_by(1024) {
        let scenes: Vec<_> = (start..(start + 1024).min(n))
            .into_par_iter()
            .map(|i| world.sample(split, i as u64))
            .collect();
        for s in scenes {
            let png = png_bytes(&s.image);
            match format {
                Format::Wds { .. } => {
                    let size = world.config().image_size as u32;
                    let mask = image::GrayImage::from_raw(size, size, s.instance_mask.clone())
                        .expect("size² mask");
                    let mut mask_png = std::io::Cursor::new(Vec::new());
                    mask.write_to(&mut mask_png, image::ImageFormat::Png)
                        .expect("PNG encoding");
                    let json = serde_json::to_vec(&s).expect("scenes serialise");
                    let w = shards.as_mut().expect("wds writer");
                    w.write(
                        &s.key,
                        &[
                            ("png", &png),
                            ("txt", s.captions.short.as_bytes()),
                            ("json", &json),
                            ("seg.png", mask_png.get_ref()),
                            ("cls", s.label.to_string().as_bytes()),
                        ],
                    )?;
                }
                Format::ImageFolder => {
                    let class_dir = dir.join(class_name(s.label).replace(' ', "_"));
                    std::fs::create_dir_all(&class_dir).map_err(io(&class_dir))?;
                    let p = class_dir.join(format!("{}.png", s.key));
                    std::fs::write(&p, &png).map_err(io(&p))?;
                    if !out.contains(&class_dir) {
                        out.push(class_dir);
                    }
                }
                Format::Csv => {
                    let img_dir = dir.join("images");
                    std::fs::create_dir_all(&img_dir).map_err(io(&img_dir))?;
                    let p = img_dir.join(format!("{}.png", s.key));
                    std::fs::write(&p, &png).map_err(io(&p))?;
                    csv_rows += &format!(
                        "images/{}.png,\"{}\"\n",
                        s.key,
                        s.captions.short.replace('"', "\"\"")
                    );
                }
            }
        }
    }
    match format {
        Format::Wds { .. } => out = shards.expect("wds writer").finish()?,
        Format::Csv => {
            let p = dir.join(format!("{}.csv", split.name()));
            std::fs::write(&p, csv_rows).map_err(io(&p))?;
            out.push(p);
        }
        Format::ImageFolder => out.sort(),
    }
    Ok(out)
}
