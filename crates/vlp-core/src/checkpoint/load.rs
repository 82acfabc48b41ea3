//! Checking a checkpoint against a module, then loading it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

use super::host::HostTensor;
use super::store::TensorFile;
use crate::error::{CoreError, Result};

/// A float parameter of a module, as the checkpoint machinery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted path, e.g. `vision_model.encoder.layers.0.self_attn.q_proj.weight`.
    pub path: String,
    /// Shape in PyTorch orientation (`nn.Linear` weights `[out, in]`).
    pub shape: Vec<usize>,
    /// Whether this is the weight of a Burn `Linear` (stored `[in, out]` in the module).
    pub linear_weight: bool,
}

/// Where the value of one module parameter comes from in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The tensor stored under this key, as is.
    Key(String),
    /// The transpose of a stored matrix (open_clip's `visual.proj` is used as `x @ W`).
    Transposed(String),
    /// Rows `start..start + len` of a stored tensor (one of q, k, v in a fused `in_proj`).
    Rows {
        /// The stored tensor.
        key: String,
        /// First row.
        start: usize,
        /// Number of rows.
        len: usize,
    },
}

impl Source {
    /// The checkpoint key this source reads.
    pub fn key(&self) -> &str {
        match self {
            Self::Key(k) | Self::Transposed(k) | Self::Rows { key: k, .. } => k,
        }
    }

    fn shape_from(&self, stored: &[usize]) -> Option<Vec<usize>> {
        match self {
            Self::Key(_) => Some(stored.to_vec()),
            Self::Transposed(_) => (stored.len() == 2).then(|| vec![stored[1], stored[0]]),
            Self::Rows { start, len, .. } => (stored.first().is_some_and(|&n| start + len <= n))
                .then(|| {
                    let mut s = stored.to_vec();
                    s[0] = *len;
                    s
                }),
        }
    }

    fn read(&self, file: &TensorFile) -> Result<HostTensor> {
        let t = file.get(self.key())?;
        Ok(match self {
            Self::Key(_) => t,
            Self::Transposed(_) => t.transpose2(),
            Self::Rows { start, len, .. } => t.rows(*start, *len),
        })
    }
}

/// Everything that keeps a checkpoint from loading into a module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module parameters whose key is absent: (parameter path, expected checkpoint key).
    pub missing: Vec<(String, String)>,
    /// Checkpoint keys no parameter reads.
    pub unused: Vec<String>,
    /// Shape disagreements: (checkpoint key, parameter path, expected shape, shape in the file).
    pub mismatched: Vec<(String, String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// Whether the checkpoint fits exactly.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unused.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, key) in &self.missing {
            writeln!(f, "  missing key \"{key}\" (for parameter {path})")?;
        }
        for (key, path, want, got) in &self.mismatched {
            writeln!(
                f,
                "  key \"{key}\" has shape {got:?}, expected {want:?} (for parameter {path})"
            )?;
        }
        for key in &self.unused {
            writeln!(f, "  unused key \"{key}\"")?;
        }
        Ok(())
    }
}

/// Tracks the dotted path and the innermost container while walking a module.
#[derive(Default)]
struct PathStack {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }
    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }
    fn path(&self) -> String {
        self.names.join(".")
    }
    /// Burn's derive reports the *parent* struct as container: `weight` inside `Struct:Linear`.
    fn is_linear_weight(&self) -> bool {
        self.names.last().is_some_and(|n| n == "weight")
            && self.containers.last().is_some_and(|c| c == "Struct:Linear")
    }
}

struct InfoVisitor {
    stack: PathStack,
    out: Vec<ParamInfo>,
}

impl<B: Backend> ModuleVisitor<B> for InfoVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let linear_weight = self.stack.is_linear_weight();
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if linear_weight {
            shape.reverse();
        }
        self.out.push(ParamInfo {
            path: self.stack.path(),
            shape,
            linear_weight,
        });
    }
}

/// Lists a module's float parameters without materialising lazily-initialised ones, so the
/// layout of a full-size model can be inspected without allocating its weights.
pub fn param_infos<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    let mut v = InfoVisitor {
        stack: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct Loader<'a> {
    stack: PathStack,
    values: BTreeMap<String, HostTensor>,
    _file: &'a TensorFile,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.stack.path();
        let Some(mut value) = self.values.remove(&path) else {
            return param; // checked beforehand: every parameter has a value
        };
        if self.stack.is_linear_weight() {
            value = value.transpose2();
        }
        let shape = param.lazy_shape().dims::<D>().to_vec();
        let tensor: Tensor<B, D> = value.reshape(shape).into_tensor(&param.lazy_device());
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Loads every float parameter of `module` from `file`.
///
/// `resolve` maps a parameter path to its [`Source`] in the file (for a checkpoint laid out
/// exactly like the module, `|p| Source::Key(p.to_string())`). The whole file is checked first:
/// if any parameter's key is missing, any key is left unused, or any shape disagrees, nothing is
/// loaded and the error lists them all. A stored scalar `[]` fills a `[1]` parameter. Keys for
/// which `is_buffer` holds (non-parameter buffers some files carry) are neither loaded nor
/// reported as unused.
pub fn load_params<B: Backend, M: Module<B>>(
    module: M,
    file: &TensorFile,
    resolve: impl Fn(&str) -> Source,
    is_buffer: impl Fn(&str) -> bool,
) -> Result<M> {
    let infos = param_infos(&module);
    let mut report = LoadReport::default();
    let mut used = BTreeSet::new();
    let mut plan = Vec::with_capacity(infos.len());
    for info in &infos {
        let source = resolve(&info.path);
        let key = source.key().to_string();
        used.insert(key.clone());
        let Some(stored) = file.shape(&key) else {
            report.missing.push((info.path.clone(), key));
            continue;
        };
        let got = source.shape_from(&stored);
        let fits = got
            .as_ref()
            .is_some_and(|g| *g == info.shape || (g.is_empty() && info.shape == [1]));
        if !fits {
            report.mismatched.push((
                key,
                info.path.clone(),
                info.shape.clone(),
                got.unwrap_or(stored),
            ));
            continue;
        }
        plan.push((info.path.clone(), source));
    }
    report.unused = file
        .keys()
        .filter(|k| !used.contains(*k) && !is_buffer(k))
        .map(str::to_string)
        .collect();
    if !report.is_clean() {
        return Err(CoreError::CheckpointMismatch {
            path: file.path().to_path_buf(),
            report,
        });
    }
    let mut values = BTreeMap::new();
    for (path, source) in plan {
        let t = source.read(file)?;
        // NaN or infinite weights would give wrong numbers everywhere downstream, reported as
        // success: refuse them here, naming the tensor.
        if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
            return Err(CoreError::Checkpoint {
                path: file.path().to_path_buf(),
                reason: format!(
                    "tensor \"{}\" holds a non-finite value ({bad}); the checkpoint is corrupt",
                    source.key()
                ),
            });
        }
        values.insert(path, t);
    }
    let mut loader = Loader {
        stack: PathStack::default(),
        values,
        _file: file,
    };
    Ok(module.map(&mut loader))
}
