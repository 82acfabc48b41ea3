//! WebDataset tar shards: `{key}.{jpg,png,webp}` next to `{key}.{txt,json,cls}`.
//!
//! As webdataset reads them: plain (`.tar`) or gzip-compressed (`.tar.gz`, `.tgz`) shards, and
//! gzip-compressed members (`0001.txt.gz` is the `txt` member). Sizes come from untrusted
//! headers, so every member is bounded before anything is allocated: by the bytes left in a
//! plain shard, and by [`MAX_MEMBER_BYTES`] after decompression.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use super::braces::expand_braces;
use super::{RawImage, RawSample, Skip};
use crate::error::{DataError, Result};

const IMAGE_EXT: &[&str] = &["jpg", "jpeg", "png", "webp"];

/// Largest member read (after decompression): 256 MiB. A header claiming more is corrupt or
/// hostile, not an image or a caption.
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;

/// Whether `path` names a shard: `.tar`, `.tar.gz` or `.tgz`.
pub fn is_shard(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

fn is_gzip(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".gz") || name.ends_with(".tgz")
}

/// A list of shards, read one sample at a time.
#[derive(Debug, Clone)]
pub struct WdsSource {
    pattern: String,
    shards: Vec<PathBuf>,
}

/// Whether a tar member name is safe: relative, no `..`. Unsafe members are reported and never
/// used, whatever they would have been.
pub fn is_safe_member(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

impl WdsSource {
    /// Shards from a file, a directory (its `*.tar`, `*.tar.gz`, `*.tgz`, sorted) or a brace
    /// pattern.
    pub fn open(pattern: &str) -> Result<Self> {
        let bad = |reason: String| DataError::Dataset {
            source_name: format!("wds:{pattern}"),
            reason,
        };
        let p = Path::new(pattern);
        let shards: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| DataError::Io {
                    path: p.into(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_shard(p))
                .collect();
            v.sort();
            v
        } else {
            expand_braces(pattern)
                .map_err(bad)?
                .into_iter()
                .map(PathBuf::from)
                .collect()
        };
        if shards.is_empty() {
            return Err(bad("no .tar, .tar.gz or .tgz shards".into()));
        }
        let missing: Vec<String> = shards
            .iter()
            .filter(|s| !s.is_file())
            .map(|s| s.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!("missing shard(s): {}", missing.join(", "))));
        }
        Ok(Self {
            pattern: pattern.to_string(),
            shards,
        })
    }

    /// Source spec.
    pub fn name(&self) -> String {
        format!("wds:{}", self.pattern)
    }

    /// The shard files, in pattern order.
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }
}

/// The parts of one sample collected so far.
#[derive(Default)]
struct Parts {
    files: BTreeMap<String, Vec<u8>>,
    /// A member that could not be read (the sample is skipped with this reason).
    bad: Option<String>,
}

impl Parts {
    fn finish(self, key: &str) -> Result<RawSample, Skip> {
        let skip = |reason: &str, detail: String| Skip {
            key: key.to_string(),
            reason: reason.into(),
            detail,
        };
        if let Some(why) = self.bad {
            return Err(skip("corrupt member", why));
        }
        let image = IMAGE_EXT.iter().find_map(|e| self.files.get(*e)).cloned();
        let Some(image) = image else {
            let have: Vec<&str> = self.files.keys().map(String::as_str).collect();
            return Err(skip(
                "missing image",
                format!("members: {}", have.join(", ")),
            ));
        };
        let json: Option<serde_json::Value> = match self.files.get("json") {
            Some(b) => {
                Some(serde_json::from_slice(b).map_err(|e| skip("invalid json", e.to_string()))?)
            }
            None => None,
        };
        let caption = match self.files.get("txt") {
            Some(b) => Some(
                String::from_utf8(b.clone())
                    .map_err(|_| skip("unreadable caption", "caption is not UTF-8".into()))?,
            ),
            None => json.as_ref().and_then(|j| {
                ["caption", "text"]
                    .iter()
                    .find_map(|k| j[*k].as_str().map(str::to_string))
            }),
        };
        let Some(caption) = caption else {
            return Err(skip(
                "missing caption",
                "no .txt member and no caption in .json".into(),
            ));
        };
        if caption.trim().is_empty() {
            return Err(skip("empty caption", String::new()));
        }
        let label = match self.files.get("cls") {
            Some(b) => {
                let text = std::str::from_utf8(b).unwrap_or("").trim();
                Some(text.parse::<usize>().map_err(|_| {
                    skip(
                        "invalid class label",
                        format!(".cls holds \"{}\", not a class index", text.escape_debug()),
                    )
                })?)
            }
            None => match json.as_ref().map(|j| &j["label"]) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(v.as_u64().map(|l| l as usize).ok_or_else(|| {
                    skip(
                        "invalid class label",
                        format!("json label {v} is not a class index"),
                    )
                })?),
            },
        };
        Ok(RawSample::new(
            key.to_string(),
            RawImage::Encoded(image),
            vec![caption.trim().to_string()],
            label,
        ))
    }
}

/// Splits a member name into (key, extension) the way webdataset does: the key is everything
/// up to the first dot of the file name.
fn split_member(name: &str) -> (String, String) {
    let (dir, file) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    match file.find('.') {
        Some(i) => (format!("{dir}{}", &file[..i]), file[i + 1..].to_lowercase()),
        None => (name.to_string(), String::new()),
    }
}

/// Streams the samples of one shard to `emit`, in order; stops early when `emit` returns false.
///
/// Problems are emitted as [`Skip`]s and reading goes on: an unsafe member name (absolute or
/// with `..`), a sample without image or caption, an unreadable member. A truncated or corrupt
/// archive, or a member whose header claims more bytes than the shard holds (or than
/// [`MAX_MEMBER_BYTES`]), ends the shard with one skip naming the shard, the member and how many
/// samples it gave before the damage.
pub fn read_shard(path: &Path, mut emit: impl FnMut(Result<RawSample, Skip>) -> bool) {
    let shard_skip = |reason: &str, detail: String| Skip {
        key: path.display().to_string(),
        reason: reason.into(),
        detail,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            emit(Err(shard_skip("unreadable shard", e.to_string())));
            return;
        }
    };
    let gzip = is_gzip(path);
    // In a plain shard a member cannot hold more than the file; a compressed one only bounds
    // the decompressed size.
    let file_len = if gzip {
        u64::MAX
    } else {
        file.metadata().map(|m| m.len()).unwrap_or(u64::MAX)
    };
    let reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            emit(Err(shard_skip("corrupt shard", e.to_string())));
            return;
        }
    };
    let mut current: Option<(String, Parts)> = None;
    let mut emitted = 0usize;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // The sample being assembled is incomplete: it is part of the damage.
                emit(Err(shard_skip(
                    "truncated shard",
                    format!("stopped after {emitted} samples: {e}"),
                )));
                return;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = match entry.path() {
            Ok(p) => p.into_owned(),
            Err(e) => {
                if !emit(Err(shard_skip("unreadable member name", e.to_string()))) {
                    return;
                }
                continue;
            }
        };
        if !is_safe_member(&name) {
            if !emit(Err(Skip {
                key: name.display().to_string(),
                reason: "unsafe path".into(),
                detail: format!("in {}", path.display()),
            })) {
                return;
            }
            continue;
        }
        let (key, mut ext) = split_member(&name.to_string_lossy());
        // A new key completes the sample before it, whatever happens to this member.
        if current.as_ref().is_some_and(|(k, _)| *k != key) {
            let (k, parts) = current.take().expect("checked");
            emitted += 1;
            if !emit(parts.finish(&k)) {
                return;
            }
        }
        let size = entry.size();
        let left = file_len.saturating_sub(entry.raw_file_position());
        if size > left || size > MAX_MEMBER_BYTES {
            emit(Err(shard_skip(
                if size > left {
                    "truncated shard"
                } else {
                    "corrupt shard"
                },
                format!(
                    "member \"{}\" claims {size} bytes ({}); stopped after {emitted} samples",
                    name.display(),
                    if size > left {
                        format!("only {left} remain in the shard")
                    } else {
                        format!("the limit is {MAX_MEMBER_BYTES}")
                    }
                ),
            )));
            return;
        }
        let mut data = Vec::with_capacity(size as usize);
        if let Err(e) = entry.read_to_end(&mut data) {
            emit(Err(shard_skip(
                "truncated shard",
                format!("stopped after {emitted} samples: {e}"),
            )));
            return;
        }
        // webdataset decompresses `.gz` members: `0001.txt.gz` is the `txt` member.
        if let Some(inner) = ext.strip_suffix(".gz").map(str::to_string) {
            let mut plain = Vec::new();
            let r = GzDecoder::new(data.as_slice())
                .take(MAX_MEMBER_BYTES + 1)
                .read_to_end(&mut plain);
            match r {
                Ok(n) if (n as u64) <= MAX_MEMBER_BYTES => {
                    data = plain;
                    ext = inner;
                }
                other => {
                    let why = match other {
                        Ok(_) => format!("decompresses past {MAX_MEMBER_BYTES} bytes"),
                        Err(e) => e.to_string(),
                    };
                    let (_, parts) = current.get_or_insert_with(|| (key.clone(), Parts::default()));
                    parts.bad = Some(format!("member \"{}\": {why}", name.display()));
                    continue;
                }
            }
        }
        let (_, parts) = current.get_or_insert_with(|| (key, Parts::default()));
        parts.files.insert(ext, data);
    }
    if let Some((k, parts)) = current {
        emit(parts.finish(&k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            split_member("a/b/0001.jpg"),
            ("a/b/0001".into(), "jpg".into())
        );
        assert_eq!(
            split_member("0001.seg.PNG"),
            ("0001".into(), "seg.png".into())
        );
        assert!(is_safe_member(Path::new("a/b.jpg")));
        assert!(!is_safe_member(Path::new("../evil.jpg")));
        assert!(!is_safe_member(Path::new("a/../../evil.jpg")));
        assert!(!is_safe_member(Path::new("/etc/passwd")));
    }
}
