//! `root/<class>/<image>` classification trees.

use std::path::{Path, PathBuf};

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::{DataError, Result};

/// Extensions treated as images; other files (READMEs, labels) are not samples, as in
/// torchvision's `ImageFolder`.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

/// An ImageFolder dataset: classes are the sorted subdirectory names.
pub struct ImageFolderSource {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::Io {
            path: dir.into(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
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
            for f in list(d)? {
                let ext = f
                    .extension()
                    .map(|e| e.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                if f.is_file() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                    samples.push((f, label));
                }
            }
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
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(RawSample {
            key: format!("{class}/{stem}"),
            image: RawImage::Path(path.clone()),
            captions: vec![format!("a photo of a {}.", readable(class))],
            label: Some(*label),
        })
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(self.classes.iter().map(|c| readable(c)).collect())
    }
}
