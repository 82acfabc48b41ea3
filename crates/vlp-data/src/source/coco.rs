//! COCO-style caption files: the official `captions_*.json` and Karpathy's split file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::{DataError, Result};

/// Images with all their captions, for retrieval evaluation.
pub struct CocoSource {
    name: String,
    images: Vec<(String, PathBuf, Vec<String>)>,
}

impl CocoSource {
    /// Opens `FILE[#split][@IMAGE_ROOT]` (see [`super::open_source`]).
    pub fn open(spec: &str) -> Result<Self> {
        let (spec, root) = match spec.split_once('@') {
            Some((s, r)) => (s, Some(PathBuf::from(r))),
            None => (spec, None),
        };
        let (file, split) = match spec.split_once('#') {
            Some((f, s)) => (f, s.to_string()),
            None => (spec, "test".to_string()),
        };
        let path = Path::new(file);
        let name = format!("coco:{file}");
        let bad = |reason: String| DataError::Dataset {
            source_name: name.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.into(),
            source: e,
        })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let images_json = v["images"]
            .as_array()
            .ok_or_else(|| bad("no `images` array".into()))?;
        let mut images = Vec::new();
        if v.get("annotations").is_some() {
            // Official format: images[{id, file_name}], annotations[{image_id, caption}].
            let split_dir = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("captions_"))
                .map(|s| parent.parent().unwrap_or(&parent).join(s));
            let base = root.or(split_dir.filter(|d| d.is_dir())).unwrap_or(parent);
            let mut caps: BTreeMap<u64, Vec<String>> = BTreeMap::new();
            for a in v["annotations"]
                .as_array()
                .ok_or_else(|| bad("`annotations` is not an array".into()))?
            {
                let id = a["image_id"]
                    .as_u64()
                    .ok_or_else(|| bad("an annotation has no `image_id`".into()))?;
                caps.entry(id)
                    .or_default()
                    .push(a["caption"].as_str().unwrap_or("").trim().to_string());
            }
            for im in images_json {
                let id = im["id"]
                    .as_u64()
                    .ok_or_else(|| bad("an image has no `id`".into()))?;
                let file = im["file_name"]
                    .as_str()
                    .ok_or_else(|| bad(format!("image {id} has no `file_name`")))?;
                images.push((
                    file.to_string(),
                    base.join(file),
                    caps.remove(&id).unwrap_or_default(),
                ));
            }
        } else {
            // Karpathy: images[{filepath, filename, split, sentences[{raw}]}].
            let base = root.unwrap_or(parent);
            for im in images_json {
                if im["split"]
                    .as_str()
                    .is_some_and(|s| s != split && !(split == "train" && s == "restval"))
                {
                    continue;
                }
                let file = im["filename"]
                    .as_str()
                    .ok_or_else(|| bad("an image has no `filename`".into()))?;
                let dir = im["filepath"].as_str().unwrap_or("");
                let sentences = im["sentences"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x["raw"].as_str())
                            .map(|x| x.trim().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                images.push((file.to_string(), base.join(dir).join(file), sentences));
            }
        }
        if images.is_empty() {
            return Err(bad(format!("no images (split \"{split}\")")));
        }
        Ok(Self { name, images })
    }

    /// Number of captions per image.
    pub fn captions_per_image(&self) -> Vec<usize> {
        self.images.iter().map(|(_, _, c)| c.len()).collect()
    }
}

impl IndexedSource for CocoSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn len(&self) -> usize {
        self.images.len()
    }

    fn get(&self, index: usize) -> Result<RawSample, Skip> {
        let (key, path, captions) = &self.images[index];
        if captions.iter().all(|c| c.is_empty()) {
            return Err(Skip {
                key: key.clone(),
                reason: "no caption".into(),
                detail: "the annotation file has no caption for this image".into(),
            });
        }
        Ok(RawSample {
            key: key.clone(),
            image: RawImage::Path(path.clone()),
            captions: captions.clone(),
            label: None,
        })
    }
}
