//! CSV / TSV / JSONL lists of (image path, caption) rows.

use std::path::{Path, PathBuf};

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::{DataError, Result};

/// Column names tried, in order, when none is given (open_clip's defaults first).
const IMAGE_KEYS: &[&str] = &["filepath", "image", "image_path", "file", "path", "img"];
const CAPTION_KEYS: &[&str] = &["title", "caption", "text", "captions"];

/// A table of image paths and captions; paths are relative to the table's directory.
pub struct TableSource {
    name: String,
    rows: Vec<(PathBuf, String)>,
}

fn pick(
    columns: &[String],
    wanted: Option<&str>,
    defaults: &[&str],
    what: &str,
    source: &str,
) -> Result<usize> {
    let names: Vec<&str> = match wanted {
        Some(w) => vec![w],
        None => defaults.to_vec(),
    };
    names
        .iter()
        .find_map(|n| columns.iter().position(|c| c == n))
        .ok_or_else(|| DataError::Dataset {
            source_name: source.to_string(),
            reason: format!(
                "no {what} column (looked for {}; columns are {})",
                names.join(", "),
                columns.join(", ")
            ),
        })
}

impl TableSource {
    /// Opens `path` as `csv` (comma), `tsv` (tab) or `jsonl`, guessing the columns.
    pub fn open(kind: &str, path: &str) -> Result<Self> {
        Self::open_with(kind, Path::new(path), None, None)
    }

    /// Opens with explicit column names (open_clip's `--csv-img-key` / `--csv-caption-key`).
    pub fn open_with(
        kind: &str,
        path: &Path,
        image_key: Option<&str>,
        caption_key: Option<&str>,
    ) -> Result<Self> {
        let name = format!("{kind}:{}", path.display());
        let bad = |reason: String| DataError::Dataset {
            source_name: name.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.into(),
            source: e,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut rows = Vec::new();
        if kind == "jsonl" {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
                let obj = v
                    .as_object()
                    .ok_or_else(|| bad(format!("line {}: not a JSON object", i + 1)))?;
                let cols: Vec<String> = obj.keys().cloned().collect();
                let ik = &cols[pick(&cols, image_key, IMAGE_KEYS, "image", &name)?];
                let ck = &cols[pick(&cols, caption_key, CAPTION_KEYS, "caption", &name)?];
                let img = obj[ik]
                    .as_str()
                    .ok_or_else(|| bad(format!("line {}: `{ik}` is not a string", i + 1)))?;
                let cap = match &obj[ck] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => {
                        a.first().and_then(|x| x.as_str()).unwrap_or("").to_string()
                    }
                    _ => String::new(),
                };
                rows.push((base.join(img), cap));
            }
        } else {
            let delimiter = if kind == "tsv" { b'\t' } else { b',' };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .flexible(false)
                .from_reader(text.as_bytes());
            let cols: Vec<String> = reader
                .headers()
                .map_err(|e| bad(e.to_string()))?
                .iter()
                .map(str::to_string)
                .collect();
            let ii = pick(&cols, image_key, IMAGE_KEYS, "image", &name)?;
            let ci = pick(&cols, caption_key, CAPTION_KEYS, "caption", &name)?;
            for (i, rec) in reader.records().enumerate() {
                let rec = rec.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
                rows.push((
                    base.join(rec.get(ii).unwrap_or("")),
                    rec.get(ci).unwrap_or("").to_string(),
                ));
            }
        }
        if rows.is_empty() {
            return Err(bad("no rows".into()));
        }
        Ok(Self { name, rows })
    }
}

impl IndexedSource for TableSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn get(&self, index: usize) -> Result<RawSample, Skip> {
        let (path, caption) = &self.rows[index];
        let key = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("row{index}"));
        Ok(RawSample::new(
            key,
            RawImage::Path(path.clone()),
            vec![caption.clone()],
            None,
        ))
    }
}
