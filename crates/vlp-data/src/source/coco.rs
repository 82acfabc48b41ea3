//! COCO-style caption files: the official `captions_*.json` and Karpathy's split file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::{DataError, Result};
use crate::sample::{Field, ObjectBox};

/// Images with all their captions (for retrieval evaluation and training) and, when the COCO
/// `instances_*.json` next to the captions file is there, their object boxes.
pub struct CocoSource {
    name: String,
    images: Vec<(String, PathBuf, Vec<String>)>,
    /// Boxes per image (same order as `images`), when an instances file was found.
    boxes: Option<Vec<Vec<ObjectBox>>>,
    /// Category names in label order, when boxes were loaded.
    categories: Vec<String>,
}

/// Reads COCO's `instances_*.json`: boxes per image id and the category names, labels being the
/// index of the category in id order.
/// Boxes by COCO image id.
type BoxesById = BTreeMap<u64, Vec<ObjectBox>>;

fn read_instances(path: &Path) -> Result<(BoxesById, Vec<String>)> {
    let name = format!("coco:{}", path.display());
    let bad = |reason: String| DataError::Dataset {
        source_name: name.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
        path: path.into(),
        source: e,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let mut cats: Vec<(u64, String)> = v["categories"]
        .as_array()
        .ok_or_else(|| bad("no `categories` array".into()))?
        .iter()
        .map(|c| {
            Ok((
                c["id"]
                    .as_u64()
                    .ok_or_else(|| bad("a category has no `id`".into()))?,
                c["name"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect::<Result<_>>()?;
    cats.sort();
    let index: BTreeMap<u64, usize> = cats
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut boxes: BTreeMap<u64, Vec<ObjectBox>> = BTreeMap::new();
    for (k, a) in v["annotations"]
        .as_array()
        .ok_or_else(|| bad("no `annotations` array".into()))?
        .iter()
        .enumerate()
    {
        let what = |f: &str| bad(format!("annotation {k}: no valid `{f}`"));
        let id = a["image_id"].as_u64().ok_or_else(|| what("image_id"))?;
        let b: Vec<f64> = a["bbox"]
            .as_array()
            .map(|b| b.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if b.len() != 4 || b.iter().any(|x| !x.is_finite()) || b[2] < 0.0 || b[3] < 0.0 {
            return Err(what("bbox"));
        }
        let cat = a["category_id"]
            .as_u64()
            .ok_or_else(|| what("category_id"))?;
        let label = *index
            .get(&cat)
            .ok_or_else(|| bad(format!("annotation {k}: category {cat} is not listed")))?;
        boxes.entry(id).or_default().push(ObjectBox {
            bbox: [
                b[0] as f32,
                b[1] as f32,
                (b[0] + b[2]) as f32,
                (b[1] + b[3]) as f32,
            ],
            label: Some(label),
            name: cats[label].1.clone(),
        });
    }
    Ok((boxes, cats.into_iter().map(|(_, n)| n).collect()))
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
        let mut boxes = None;
        let mut categories = Vec::new();
        if v.get("annotations").is_some() {
            // Official format: images[{id, file_name}], annotations[{image_id, caption}].
            let split_dir = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("captions_"))
                .map(|s| parent.parent().unwrap_or(&parent).join(s));
            let base = root
                .or(split_dir.filter(|d| d.is_dir()))
                .unwrap_or(parent.clone());
            // COCO ships instances_X.json next to captions_X.json; boxes come from there.
            let instances = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_prefix("captions_"))
                .map(|rest| parent.join(format!("instances_{rest}")))
                .filter(|p| p.is_file());
            let mut by_id = match &instances {
                Some(p) => {
                    let (b, c) = read_instances(p)?;
                    categories = c;
                    Some(b)
                }
                None => None,
            };
            let mut per_image = Vec::new();
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
                if let Some(b) = by_id.as_mut() {
                    per_image.push(b.remove(&id).unwrap_or_default());
                }
            }
            if by_id.is_some() {
                boxes = Some(per_image);
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
        Ok(Self {
            name,
            images,
            boxes,
            categories,
        })
    }

    /// Category names in label order (empty without an instances file).
    pub fn categories(&self) -> &[String] {
        &self.categories
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
        let mut s = RawSample::new(
            key.clone(),
            RawImage::Path(path.clone()),
            captions.clone(),
            None,
        );
        if let Some(b) = &self.boxes {
            s.annotations.boxes = b[index].clone();
        }
        Ok(s)
    }

    fn provides(&self) -> Vec<Field> {
        let mut f = vec![Field::Captions];
        if self.boxes.is_some() {
            f.push(Field::Boxes);
        }
        f
    }
}
