//! The features a method computes per micro-batch: named tensors whose first axis is the batch,
//! so the runner can gather them across ranks and stack micro-batches without knowing what they
//! mean.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, FloatDType, Tensor};

use crate::error::{Result, TrainError};

/// Token sets `[n, tokens, d]` with their padding `[n, tokens]` (`true` = not a token).
pub type Tokens<B> = (Tensor<B, 3>, Option<Tensor<B, 2, Bool>>);

/// One named feature.
#[derive(Debug, Clone)]
pub enum Entry<B: Backend> {
    /// One vector per sample, `[n, d]`.
    Rows(Tensor<B, 2>),
    /// A set of vectors per sample, `[n, tokens, d]`, with padding `[n, tokens]` (`true` = not a
    /// token). Sets of different sizes (across ranks or micro-batches) are padded to the largest.
    Tokens(Tensor<B, 3>, Option<Tensor<B, 2, Bool>>),
}

impl<B: Backend> Entry<B> {
    /// Rows (samples) of the entry.
    pub fn len(&self) -> usize {
        match self {
            Entry::Rows(t) => t.dims()[0],
            Entry::Tokens(t, _) => t.dims()[0],
        }
    }

    /// Whether the entry has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Named features of a batch, batch axis first.
#[derive(Debug, Clone)]
pub struct Embeddings<B: Backend> {
    entries: Vec<(String, Entry<B>)>,
}

impl<B: Backend> Default for Embeddings<B> {
    fn default() -> Self {
        Self::new()
    }
}

fn missing(name: &str, what: &str) -> TrainError {
    TrainError::Config(format!("method feature `{name}` is not a {what} entry"))
}

impl<B: Backend> Embeddings<B> {
    /// No features.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Adds `[n, d]` rows.
    pub fn with_rows(mut self, name: &str, rows: Tensor<B, 2>) -> Self {
        self.entries.push((name.to_string(), Entry::Rows(rows)));
        self
    }

    /// Adds `[n, tokens, d]` token sets with their padding.
    pub fn with_tokens(
        mut self,
        name: &str,
        tokens: Tensor<B, 3>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Self {
        self.entries
            .push((name.to_string(), Entry::Tokens(tokens, padding)));
        self
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(String, Entry<B>)] {
        &self.entries
    }

    /// Takes the entries.
    pub fn into_entries(self) -> Vec<(String, Entry<B>)> {
        self.entries
    }

    /// From entries.
    pub fn from_entries(entries: Vec<(String, Entry<B>)>) -> Self {
        Self { entries }
    }

    fn get(&self, name: &str) -> Option<&Entry<B>> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// The rows named `name`.
    pub fn rows(&self, name: &str) -> Result<Tensor<B, 2>> {
        match self.get(name) {
            Some(Entry::Rows(t)) => Ok(t.clone()),
            _ => Err(missing(name, "rows")),
        }
    }

    /// The token sets named `name` and their padding.
    pub fn tokens(&self, name: &str) -> Result<Tokens<B>> {
        match self.get(name) {
            Some(Entry::Tokens(t, p)) => Ok((t.clone(), p.clone())),
            _ => Err(missing(name, "token")),
        }
    }

    /// Samples in the batch (rows of the first entry; 0 without entries).
    pub fn len(&self) -> usize {
        self.entries.first().map_or(0, |(_, e)| e.len())
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every float tensor in f32 (mixed precision computes features in half precision; the
    /// objective runs in f32).
    pub fn to_f32(self) -> Self {
        let entries = self
            .entries
            .into_iter()
            .map(|(n, e)| {
                let e = match e {
                    Entry::Rows(t) => Entry::Rows(t.cast(FloatDType::F32)),
                    Entry::Tokens(t, p) => Entry::Tokens(t.cast(FloatDType::F32), p),
                };
                (n, e)
            })
            .collect();
        Self { entries }
    }

    /// Stacks micro-batches along the batch axis; token sets are padded to the largest.
    pub fn cat(parts: Vec<Self>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Ok(Self::new());
        };
        let names: Vec<String> = first.entries.iter().map(|(n, _)| n.clone()).collect();
        let mut columns: Vec<Vec<Entry<B>>> = vec![Vec::new(); names.len()];
        for p in parts {
            let got: Vec<&String> = p.entries.iter().map(|(n, _)| n).collect();
            if got.len() != names.len() || got.iter().zip(&names).any(|(a, b)| *a != b) {
                return Err(TrainError::Config(format!(
                    "a method returned features {got:?} for one micro-batch and {names:?} for another"
                )));
            }
            for (k, (_, e)) in p.entries.into_iter().enumerate() {
                columns[k].push(e);
            }
        }
        let mut entries = Vec::with_capacity(names.len());
        for (name, col) in names.into_iter().zip(columns) {
            let e = match &col[0] {
                Entry::Rows(_) => {
                    let mut ts = Vec::with_capacity(col.len());
                    for e in col {
                        match e {
                            Entry::Rows(t) => ts.push(t),
                            Entry::Tokens(..) => return Err(missing(&name, "rows")),
                        }
                    }
                    Entry::Rows(Tensor::cat(ts, 0))
                }
                Entry::Tokens(..) => {
                    let mut sets = Vec::with_capacity(col.len());
                    for e in col {
                        match e {
                            Entry::Tokens(t, p) => sets.push((t, p)),
                            Entry::Rows(_) => return Err(missing(&name, "token")),
                        }
                    }
                    let (t, p) = cat_tokens(sets);
                    Entry::Tokens(t, Some(p))
                }
            };
            entries.push((name, e));
        }
        Ok(Self { entries })
    }
}

/// Token sets padded to a common length and stacked, with their padding.
pub(crate) fn cat_tokens<B: Backend>(sets: Vec<Tokens<B>>) -> (Tensor<B, 3>, Tensor<B, 2, Bool>) {
    let t_max = sets.iter().map(|(t, _)| t.dims()[1]).max().unwrap_or(0);
    let mut toks = Vec::with_capacity(sets.len());
    let mut pads = Vec::with_capacity(sets.len());
    for (t, p) in sets {
        let [n, len, d] = t.dims();
        let device = t.device();
        let p = p.unwrap_or_else(|| Tensor::<B, 2, Bool>::full([n, len], false, &device));
        if len < t_max {
            toks.push(Tensor::cat(
                vec![t, Tensor::zeros([n, t_max - len, d], &device)],
                1,
            ));
            pads.push(Tensor::cat(
                vec![
                    p,
                    Tensor::<B, 2, Bool>::full([n, t_max - len], true, &device),
                ],
                1,
            ));
        } else {
            toks.push(t);
            pads.push(p);
        }
    }
    (Tensor::cat(toks, 0), Tensor::cat(pads, 0))
}

impl<B: AutodiffBackend> Embeddings<B> {
    /// The features without their autodiff history (the cached micro-batches of accumulation).
    pub fn inner(self) -> Embeddings<B::InnerBackend> {
        Embeddings {
            entries: self
                .entries
                .into_iter()
                .map(|(n, e)| {
                    let e = match e {
                        Entry::Rows(t) => Entry::Rows(t.inner()),
                        Entry::Tokens(t, p) => Entry::Tokens(t.inner(), p.map(|p| p.inner())),
                    };
                    (n, e)
                })
                .collect(),
        }
    }

    /// Constant features on the autodiff backend (no gradient flows into them).
    pub fn from_inner(e: Embeddings<B::InnerBackend>) -> Self {
        Self {
            entries: e
                .entries
                .into_iter()
                .map(|(n, e)| {
                    let e = match e {
                        Entry::Rows(t) => Entry::Rows(Tensor::from_inner(t)),
                        Entry::Tokens(t, p) => {
                            Entry::Tokens(Tensor::from_inner(t), p.map(Tensor::from_inner))
                        }
                    };
                    (n, e)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn tokens(n: usize, t: usize, base: f32) -> Tensor<B, 3> {
        let v: Vec<f32> = (0..n * t * 2).map(|i| base + i as f32).collect();
        Tensor::from_data(TensorData::new(v, [n, t, 2]), &default_device())
    }

    #[test]
    fn micro_batches_stack_and_ragged_token_sets_pad() {
        let dev = default_device();
        let pad = Tensor::<B, 2, Bool>::from_data(
            TensorData::new(vec![false, true, false, false], [2, 2]),
            &dev,
        );
        let a = Embeddings::new()
            .with_rows("r", Tensor::<B, 2>::ones([2, 3], &dev))
            .with_tokens("t", tokens(2, 2, 0.0), Some(pad));
        let b = Embeddings::new()
            .with_rows("r", Tensor::<B, 2>::zeros([1, 3], &dev))
            .with_tokens("t", tokens(1, 3, 100.0), None);
        let c = Embeddings::cat(vec![a, b]).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.rows("r").unwrap().dims(), [3, 3]);
        let (t, p) = c.tokens("t").unwrap();
        assert_eq!(t.dims(), [3, 3, 2]);
        let p: Vec<bool> = p
            .unwrap()
            .int()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v != 0)
            .collect();
        // Row 0: token 2 added as padding; row 1 kept its own padding; row 2 (no mask) all real.
        assert_eq!(
            p,
            vec![false, true, true, false, false, true, false, false, false]
        );
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        assert_eq!(&v[4..6], &[0.0, 0.0], "padded token is zero");
        assert_eq!(&v[12..14], &[100.0, 101.0]);
        // Mismatched names are an error, not a silent mix.
        let x = Embeddings::new().with_rows("r", Tensor::<B, 2>::ones([1, 3], &dev));
        let y = Embeddings::new().with_rows("s", Tensor::<B, 2>::ones([1, 3], &dev));
        assert!(Embeddings::cat(vec![x, y]).is_err());
        assert!(c.rows("t").is_err() && c.tokens("r").is_err());
    }
}
