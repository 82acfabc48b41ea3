//! Host-side f32 tensors used while converting checkpoints.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// A dense f32 tensor on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Values, row-major; `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Creates a tensor; `data.len()` must equal the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?}"
        );
        Self { shape, data }
    }

    /// Copies a Burn tensor to the host (any float dtype is converted to f32).
    pub fn from_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let data = t.into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        Self {
            shape,
            data: data.into_vec::<f32>().expect("converted to f32"),
        }
    }

    /// Uploads to `device` as a rank-`D` tensor (f32, or the device's default float type).
    pub fn into_tensor<B: Backend, const D: usize>(self, device: &B::Device) -> Tensor<B, D> {
        let shape: Vec<usize> = if self.shape.is_empty() {
            vec![1]
        } else {
            self.shape
        };
        Tensor::from_data(TensorData::new(self.data, shape), device)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Transpose of a matrix (`[r, c] → [c, r]`).
    pub fn transpose2(&self) -> Self {
        assert_eq!(self.shape.len(), 2, "transpose2 of shape {:?}", self.shape);
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        Self {
            shape: vec![c, r],
            data: out,
        }
    }

    /// Rows `start..start + len` of the first dimension.
    pub fn rows(&self, start: usize, len: usize) -> Self {
        let inner: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Self {
            shape,
            data: self.data[start * inner..(start + len) * inner].to_vec(),
        }
    }

    /// Concatenation along the first dimension (all parts must agree on the others).
    pub fn cat_rows(parts: &[HostTensor]) -> Self {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        Self {
            shape,
            data: parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
        }
    }

    /// Same values, another shape with as many elements.
    pub fn reshape(mut self, shape: Vec<usize>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.numel(),
            "reshape {:?} -> {shape:?}",
            self.shape
        );
        self.shape = shape;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_rows_and_cat() {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(
            t.transpose2(),
            HostTensor::new(vec![3, 2], vec![1., 4., 2., 5., 3., 6.])
        );
        assert_eq!(t.rows(1, 1), HostTensor::new(vec![1, 3], vec![4., 5., 6.]));
        assert_eq!(HostTensor::cat_rows(&[t.rows(0, 1), t.rows(1, 1)]), t);
    }
}
