//! Collecting module parameters and writing safetensors files.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};
use safetensors::{Dtype, View};

use super::host::HostTensor;
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
    let mut c = Collect { names: Vec::new(), containers: Vec::new(), out: BTreeMap::new() };
    module.visit(&mut c);
    c.out
}

struct F32View<'a>(&'a HostTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// Writes `tensors` as an f32 safetensors file, atomically (temporary file, then rename).
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let views: Vec<(&str, F32View)> = tensors.iter().map(|(k, v)| (k.as_str(), F32View(v))).collect();
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| CoreError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| CoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e))
}
