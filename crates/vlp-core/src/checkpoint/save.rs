//! Collecting module parameters and writing safetensors files.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};
use safetensors::{Dtype, View};

use super::host::HostTensor;
use super::store::StoredDType;
use crate::error::{CoreError, Result};

struct Collect {
    names: Vec<String>,
    containers: Vec<String>,
    out: BTreeMap<String, HostTensor>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.names.pop();
        self.containers.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut t = HostTensor::from_tensor(param.val());
        let linear = self.names.last().is_some_and(|n| n == "weight")
            && self.containers.last().is_some_and(|c| c == "Struct:Linear");
        if linear {
            t = t.transpose2();
        }
        self.out.insert(self.names.join("."), t);
    }
}

/// Every float parameter of `module`, by dotted path, in PyTorch orientation.
pub fn collect_params<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, HostTensor> {
    let mut c = Collect {
        names: Vec::new(),
        containers: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut c);
    c.out
}

struct HostView<'a>(&'a HostTensor, StoredDType);

impl View for HostView<'_> {
    fn dtype(&self) -> Dtype {
        match self.1 {
            StoredDType::F16 => Dtype::F16,
            StoredDType::BF16 => Dtype::BF16,
            StoredDType::F64 => Dtype::F64,
            StoredDType::F32 | StoredDType::Other => Dtype::F32,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let d = &self.0.data;
        let bytes: Vec<u8> = match self.1 {
            StoredDType::F16 => d
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            StoredDType::BF16 => d
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            StoredDType::F64 => d.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect(),
            StoredDType::F32 | StoredDType::Other => {
                d.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        };
        bytes.into()
    }
    fn data_len(&self) -> usize {
        let width = match self.1 {
            StoredDType::F16 | StoredDType::BF16 => 2,
            StoredDType::F64 => 8,
            StoredDType::F32 | StoredDType::Other => 4,
        };
        self.0.data.len() * width
    }
}

/// Writes `tensors` as a safetensors file stored in `dtype` (f32, f16, bf16 or f64; values are
/// rounded to nearest), atomically: a temporary file, then a rename.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoredDType,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let views: Vec<(&str, HostView)> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), HostView(v, dtype)))
        .collect();
    let bytes = safetensors::serialize(views, metadata).map_err(|e| CoreError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    crate::io::write_atomic(path, &bytes)
}
