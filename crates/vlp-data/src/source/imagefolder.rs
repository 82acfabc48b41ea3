//! `root/<class>/<image>` classification trees.

use std::path::{Path, PathBuf};

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::{DataError, Result};

/// Extensions treated as images (torchvision's `IMG_EXTENSIONS`); other files (READMEs, labels)
/// are not samples. Formats vlp cannot decode (BMP, PPM, TIFF) are still samples, so that they
/// are counted as skipped with their reason rather than lost without a word.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// An ImageFolder dataset, as torchvision reads it: classes are the sorted subdirectory names,
/// images are found at any depth below a class directory, hidden entries (`.ipynb_checkpoints`,
/// `.DS_Store`) are ignored.
pub struct ImageFolderSource {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::Io {
            path: dir.into(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !hidden(p))
        .collect();
    out.sort();
    Ok(out)
}

/// Image files below `dir` at any depth (symbolic links followed, hidden entries skipped), in
/// sorted path order.
fn images_below(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > 64 {
        return Err(DataError::Dataset {
            source_name: format!("imagefolder:{}", dir.display()),
            reason: "directories nested more than 64 deep (a link cycle?)".into(),
        });
    }
    for p in list(dir)? {
        if p.is_dir() {
            images_below(&p, out, depth + 1)?;
        } else {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if p.is_file() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                out.push(p);
            }
        }
    }
    Ok(())
}

impl ImageFolderSource {
    /// Scans `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let name = format!("imagefolder:{}", root.display());
        let dirs: Vec<PathBuf> = list(&root)?.into_iter().filter(|p| p.is_dir()).collect();
        if dirs.is_empty() {
            return Err(DataError::Dataset {
                source_name: name,
                reason: "no class subdirectories".into(),
            });
        }
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        for (label, d) in dirs.iter().enumerate() {
            classes.push(
                d.file_name()
                    .expect("a directory entry has a name")
                    .to_string_lossy()
                    .into_owned(),
            );
            let mut files = Vec::new();
            images_below(d, &mut files, 0)?;
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        if samples.is_empty() {
            return Err(DataError::Dataset {
                source_name: name,
                reason: "no images in any class folder".into(),
            });
        }
        Ok(Self {
            root,
            classes,
            samples,
        })
    }

    /// Class names as written on disk.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for (_, l) in &self.samples {
            c[*l] += 1;
        }
        c
    }
}

/// "red_circle" → "red circle": folder names to prompt words.
pub fn readable(class: &str) -> String {
    class.replace(['_', '-'], " ")
}

impl IndexedSource for ImageFolderSource {
    fn name(&self) -> String {
        format!("imagefolder:{}", self.root.display())
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> Result<RawSample, Skip> {
        let (path, label) = &self.samples[index];
        let class = &self.classes[*label];
        // The key is the path below the root, without extension: unique even when sub-folders
        // of a class hold files of the same name.
        let rel = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .with_extension("");
        Ok(RawSample::new(
            rel.to_string_lossy().replace('\\', "/"),
            RawImage::Path(path.clone()),
            vec![format!("a photo of a {}.", readable(class))],
            Some(*label),
        ))
    }

    fn provides(&self) -> Vec<crate::sample::Field> {
        vec![crate::sample::Field::Captions, crate::sample::Field::Labels]
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(self.classes.iter().map(|c| readable(c)).collect())
    }
}
