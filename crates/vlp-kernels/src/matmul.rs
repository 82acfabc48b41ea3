//! A safe, single-threaded strided matrix product over slices, on the `gemm` crate (the
//! kernels Burn's Flex backend multiplies with). The attention kernel calls it per head on
//! views of packed `[batch, tokens, heads·d]` buffers, so no head is ever copied out.

use gemm::{Parallelism, gemm};

/// A read-only strided matrix in a slice: element `(r, c)` is `data[off + r·rs + c·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    /// The storage.
    pub data: &'a [f32],
    /// Index of element (0, 0).
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl<'a> Mat<'a> {
    /// An `[rows, cols]` row-major buffer.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            off: 0,
            rs: cols,
            cs: 1,
            rows,
            cols,
        }
    }

    /// The transpose (a view).
    pub fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            rows: self.cols,
            cols: self.rows,
            ..self
        }
    }

    pub(crate) fn last(&self) -> usize {
        self.off + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
    }
}

/// A writable strided matrix in a slice (same layout as [`Mat`]).
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The storage.
    pub data: &'a mut [f32],
    /// Index of element (0, 0).
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl<'a> MatMut<'a> {
    /// An `[rows, cols]` row-major buffer.
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            off: 0,
            rs: cols,
            cs: 1,
            rows,
            cols,
        }
    }
}

/// `dst = scale · lhs · rhs`, or `dst += scale · lhs · rhs` when `accumulate`.
///
/// # Panics
/// If the shapes disagree or a view reaches past its slice.
pub fn matmul(dst: MatMut<'_>, lhs: Mat<'_>, rhs: Mat<'_>, scale: f32, accumulate: bool) {
    assert_eq!(
        (lhs.rows, rhs.cols),
        (dst.rows, dst.cols),
        "matmul: output shape"
    );
    assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimension");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let last = dst.off + (dst.rows - 1) * dst.rs + (dst.cols - 1) * dst.cs;
    assert!(last < dst.data.len(), "matmul: output view out of bounds");
    if lhs.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                for c in 0..dst.cols {
                    dst.data[dst.off + r * dst.rs + c * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(
        lhs.last() < lhs.data.len(),
        "matmul: left view out of bounds"
    );
    assert!(
        rhs.last() < rhs.data.len(),
        "matmul: right view out of bounds"
    );
    // SAFETY: every index the product touches is inside its slice (checked above: strides
    // are non-negative, so the last element is the furthest); `dst` is a unique borrow, so it
    // cannot overlap the shared `lhs` and `rhs`.
    unsafe {
        gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr().add(dst.off),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.off),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.off),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_equal_loops() {
        // A 3×5 matrix inside a wider buffer times the transpose of a 4×5 one.
        let a: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..60).map(|i| (i as f32 * 0.11).cos()).collect();
        let lhs = Mat {
            data: &a,
            off: 2,
            rs: 8,
            cs: 1,
            rows: 3,
            cols: 5,
        };
        let rhs = Mat {
            data: &b,
            off: 1,
            rs: 12,
            cs: 2,
            rows: 4,
            cols: 5,
        }
        .t();
        let mut out = vec![1.0f32; 3 * 7];
        for accumulate in [false, true] {
            let before = out.clone();
            let dst = MatMut {
                data: &mut out,
                off: 1,
                rs: 7,
                cs: 1,
                rows: 3,
                cols: 4,
            };
            matmul(dst, lhs, rhs, 0.5, accumulate);
            for r in 0..3 {
                for c in 0..4 {
                    let want: f32 = (0..5)
                        .map(|k| a[2 + r * 8 + k] * b[1 + c * 12 + k * 2])
                        .sum::<f32>()
                        * 0.5
                        + if accumulate {
                            before[1 + r * 7 + c]
                        } else {
                            0.0
                        };
                    let got = out[1 + r * 7 + c];
                    assert!((got - want).abs() < 1e-5, "({r},{c}): {got} vs {want}");
                }
            }
            // Elements outside the view are untouched.
            assert_eq!(out[0], before[0]);
            assert_eq!(out[5], before[5]);
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_past_its_slice_is_refused() {
        let a = vec![0.0f32; 10];
        let mut out = vec![0.0f32; 4];
        let lhs = Mat {
            data: &a,
            off: 0,
            rs: 5,
            cs: 1,
            rows: 3,
            cols: 2,
        };
        let rhs = Mat {
            data: &a,
            off: 0,
            rs: 2,
            cs: 1,
            rows: 2,
            cols: 2,
        };
        matmul(
            MatMut {
                data: &mut out,
                off: 0,
                rs: 2,
                cs: 1,
                rows: 3,
                cols: 2,
            },
            lhs,
            rhs,
            1.0,
            false,
        );
    }
}
