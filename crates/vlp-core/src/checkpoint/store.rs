//! Reading tensors out of checkpoint files, whatever their format and stored precision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn_store::TensorSnapshot;
use burn_store::pytorch::PytorchReader;
use safetensors::{Dtype, SafeTensors};

use super::host::HostTensor;
use crate::error::{CoreError, Result};

/// Precision a tensor is stored with in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// Anything else (integers, bools, 8-bit floats): not loadable as a parameter.
    Other,
}

enum Entry {
    /// Safetensors: a byte range of the file.
    Raw {
        dtype: Dtype,
        shape: Vec<usize>,
        range: (usize, usize),
    },
    /// PyTorch pickle: Burn's lazy snapshot.
    Snapshot(TensorSnapshot),
}

/// An opened checkpoint: a map from key to tensor, read lazily and converted to f32 on access.
///
/// The format is detected from the content, not the extension: safetensors (`model.safetensors`,
/// `open_clip_model.safetensors`) or PyTorch (`pytorch_model.bin`, `*.pt`, zip or legacy pickle).
/// PyTorch files that wrap the weights in `{"state_dict": ...}` or carry DDP's `module.` prefix
/// are unwrapped.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    entries: BTreeMap<String, Entry>,
    /// The safetensors header's `__metadata__` (empty for PyTorch files).
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> CoreError {
    CoreError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl TensorFile {
    /// Opens `path`; fails with the file's name if it is missing, truncated or not a checkpoint.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
        if bytes.is_empty() {
            return Err(bad(path, "empty file"));
        }
        // A safetensors file starts with its header's length (u64, little-endian) and the
        // header's `{`. Checked first: a header of 128 bytes (or 384, …) starts with the same
        // byte, 0x80, as a legacy pickle.
        let header = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let is_safetensors = header.is_some_and(|n| {
            n.checked_add(8)
                .is_some_and(|end| end <= bytes.len() as u64 && bytes.get(8) == Some(&b'{'))
        });
        let is_zip = bytes.starts_with(b"PK\x03\x04");
        let is_pickle = bytes[0] == 0x80; // pickle protocol marker of legacy torch.save
        if !is_safetensors && (is_zip || is_pickle) {
            return Self::open_pytorch(path);
        }
        Self::from_safetensors_bytes(path, bytes)
    }

    /// Parses safetensors bytes already in memory; `path` is used in messages only.
    pub fn from_safetensors_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        let path = path.as_ref();
        let (header, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(path, format!("not a readable safetensors file ({e})")))?;
        let base = 8 + header;
        let entries = meta
            .tensors()
            .into_iter()
            .map(|(k, info)| {
                let range = (base + info.data_offsets.0, base + info.data_offsets.1);
                (
                    k,
                    Entry::Raw {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range,
                    },
                )
            })
            .collect();
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            entries,
            metadata,
        })
    }

    fn open_pytorch(path: &Path) -> Result<Self> {
        let reader = PytorchReader::new(path)
            .map_err(|e| bad(path, format!("not a readable PyTorch file ({e})")))?;
        let mut tensors = reader.into_tensors();
        for wrapper in ["state_dict.", "model.", "module."] {
            if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(wrapper)) {
                tensors = tensors
                    .into_iter()
                    .map(|(k, v)| (k[wrapper.len()..].to_string(), v))
                    .collect();
            }
        }
        let entries = tensors
            .into_iter()
            .map(|(k, v)| (k, Entry::Snapshot(v)))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            bytes: Vec::new(),
            entries,
            metadata: BTreeMap::new(),
        })
    }

    /// The string metadata of a safetensors header (`vlp embed` keeps its keys there).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Shape of `key` as stored.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.entries.get(key).map(|e| match e {
            Entry::Raw { shape, .. } => shape.clone(),
            Entry::Snapshot(s) => s.shape.to_vec(),
        })
    }

    /// Precision of `key` as stored.
    pub fn dtype(&self, key: &str) -> Option<StoredDType> {
        use burn::tensor::DType as D;
        self.entries.get(key).map(|e| match e {
            Entry::Raw {
                dtype: Dtype::F32, ..
            }
            | Entry::Snapshot(TensorSnapshot { dtype: D::F32, .. }) => StoredDType::F32,
            Entry::Raw {
                dtype: Dtype::F16, ..
            }
            | Entry::Snapshot(TensorSnapshot { dtype: D::F16, .. }) => StoredDType::F16,
            Entry::Raw {
                dtype: Dtype::BF16, ..
            }
            | Entry::Snapshot(TensorSnapshot { dtype: D::BF16, .. }) => StoredDType::BF16,
            Entry::Raw {
                dtype: Dtype::F64, ..
            }
            | Entry::Snapshot(TensorSnapshot { dtype: D::F64, .. }) => StoredDType::F64,
            _ => StoredDType::Other,
        })
    }

    /// Reads `key` as f32 (f16, bf16 and f64 are converted).
    pub fn get(&self, key: &str) -> Result<HostTensor> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| bad(&self.path, format!("no tensor named \"{key}\"")))?;
        match entry {
            Entry::Raw {
                dtype,
                shape,
                range,
            } => {
                let raw = &self.bytes[range.0..range.1];
                let data: Vec<f32> = match dtype {
                    Dtype::F32 => raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    Dtype::F16 => raw
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    Dtype::BF16 => raw
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    Dtype::F64 => raw
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                        .collect(),
                    other => {
                        return Err(bad(
                            &self.path,
                            format!("tensor \"{key}\" has dtype {other:?}, not a float type"),
                        ));
                    }
                };
                Ok(HostTensor::new(shape.clone(), data))
            }
            Entry::Snapshot(s) => {
                let data = s
                    .to_data()
                    .map_err(|e| bad(&self.path, format!("tensor \"{key}\": {e}")))?;
                if !data.dtype.is_float() {
                    return Err(bad(
                        &self.path,
                        format!(
                            "tensor \"{key}\" has dtype {:?}, not a float type",
                            data.dtype
                        ),
                    ));
                }
                let shape = data.shape.to_vec();
                let values = data
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| bad(&self.path, format!("tensor \"{key}\": {e:?}")))?;
                Ok(HostTensor::new(shape, values))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file whose header is exactly 128 bytes starts with 0x80, the byte that
    /// also marks a legacy pickle: it must still open as safetensors (found when a linear
    /// probe's two tensors gave that header).
    #[test]
    fn a_safetensors_header_of_128_bytes_is_not_taken_for_a_pickle() {
        let mut header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_string();
        while header.len() < 128 {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        assert_eq!(bytes[0], 0x80);
        bytes.extend(header.as_bytes());
        for v in [1.5f32, -2.0] {
            bytes.extend(v.to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let f = TensorFile::open(&path).unwrap();
        assert_eq!(f.get("w").unwrap().data, vec![1.5, -2.0]);
        // A real pickle marker (protocol 2) without a safetensors header still goes to the
        // PyTorch reader, whose error names the file.
        std::fs::write(&path, [0x80, 0x02, b'}', b'q']).unwrap();
        let err = TensorFile::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("x.safetensors") && err.contains("PyTorch"),
            "{err}"
        );
    }
}
