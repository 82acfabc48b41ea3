//! OpenBLAS's `sgemm` on strided views, split over rayon's threads (feature `openblas`).
//!
//! Measured on this project's 2-core AVX2 machine (benches/RESULTS.md, 2026-11-30), OpenBLAS's
//! single-precision product is 1.1–1.7× the `gemm` crate's (which Flex multiplies with) at the
//! shapes of CLIP's linear layers, and on par with the MKL inside PyTorch. OpenBLAS is told to
//! run single-threaded and the product is split into row (or column) blocks over rayon's pool
//! instead: with OpenBLAS's own threads, its spinning workers and rayon's would fight over the
//! same cores between products, and the split was as fast or faster on every shape measured.

use std::os::raw::c_int;
use std::sync::Once;

use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE, cblas_sgemm};
use rayon::prelude::*;

use crate::matmul::Mat;

// The link to the system's OpenBLAS, for this function and `cblas-sys`'s declarations (which
// link nothing themselves). `openblas-src` would do it, but its 0.10 compiles an HTTPS
// downloader with a TLS stack even when told to use the system's library.
#[link(name = "openblas")]
unsafe extern "C" {
    /// OpenBLAS's own thread count (all of its builds export it).
    fn openblas_set_num_threads(n: c_int);
}

/// Makes OpenBLAS single-threaded, once per process (the parallelism is rayon's, above).
fn single_threaded() {
    static ONCE: Once = Once::new();
    // SAFETY: a plain setter with no preconditions.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}

/// How BLAS reads a view, if it can: row-major with leading dimension `ld`, transposed or not.
/// BLAS needs one of the two strides to be 1 and the other to cover a whole row (column).
fn operand(m: &Mat<'_>) -> Option<(CBLAS_TRANSPOSE, usize)> {
    if m.cs == 1 && (m.rows == 1 || m.rs >= m.cols) {
        Some((CBLAS_TRANSPOSE::CblasNoTrans, m.rs.max(m.cols).max(1)))
    } else if m.rs == 1 && (m.cols == 1 || m.cs >= m.rows) {
        Some((CBLAS_TRANSPOSE::CblasTrans, m.cs.max(m.rows).max(1)))
    } else {
        None
    }
}

/// Whether [`sgemm`] can read `m` in place (otherwise copy it to a dense buffer first).
pub fn readable(m: &Mat<'_>) -> bool {
    operand(m).is_some()
}

/// What the output holds before the product is added to it.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    /// Zeros: `dst = lhs · rhs`.
    Zero,
    /// `bias` in every row: `dst = lhs · rhs + bias` (a linear layer).
    Rows(&'a [f32]),
}

/// A raw output pointer that crosses to rayon's threads; each thread writes its own block.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the blocks handed to different threads are disjoint (see `sgemm`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Smallest block a thread gets: below this a split costs more than it saves.
const MIN_BLOCK: usize = 32;

/// `dst = lhs · rhs (+ bias rows)`, `dst` a dense row-major `[lhs.rows, rhs.cols]` slice.
///
/// # Panics
/// If the shapes disagree, a view reaches past its slice, or a view is not [`readable`].
pub fn sgemm(dst: &mut [f32], lhs: Mat<'_>, rhs: Mat<'_>, init: Init<'_>) {
    assert_eq!(dst.len(), lhs.rows * rhs.cols, "sgemm: output length");
    // SAFETY: `dst` holds exactly the `m·n` values the call writes.
    unsafe { sgemm_into(dst.as_mut_ptr(), lhs, rhs, init) }
}

/// `lhs · rhs (+ bias rows)` as a new dense row-major `[lhs.rows, rhs.cols]` buffer, written
/// once: no zero-fill first (BLAS with β = 0 writes every element, as does the bias fill).
///
/// # Panics
/// As [`sgemm`].
pub fn product(lhs: Mat<'_>, rhs: Mat<'_>, init: Init<'_>) -> Vec<f32> {
    let len = lhs.rows * rhs.cols;
    let mut out = Vec::with_capacity(len);
    // SAFETY: the buffer has room for `len` values, and `sgemm_into` writes each of them
    // (or panics before `set_len`, leaving the vector empty).
    unsafe {
        sgemm_into(out.as_mut_ptr(), lhs, rhs, init);
        out.set_len(len);
    }
    out
}

/// The product into `m·n` values at `dst`, which may be uninitialised: every one is written.
///
/// # Safety
/// `dst` must be valid for writes of `lhs.rows · rhs.cols` values and not alias the views.
unsafe fn sgemm_into(dst: *mut f32, lhs: Mat<'_>, rhs: Mat<'_>, init: Init<'_>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "sgemm: inner dimension");
    if let Init::Rows(bias) = init {
        assert_eq!(bias.len(), n, "sgemm: bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    let base = Out(dst);
    // Writes the initial value into rows `r0..r0+rows`, columns `j0..j0+cols` (raw writes: the
    // memory may be uninitialised).
    let fill = |r0: usize, rows: usize, j0: usize, cols: usize| {
        let out = base;
        for r in r0..r0 + rows {
            // SAFETY: the block is inside the `m·n` output (callers tile it).
            unsafe {
                let row = out.0.add(r * n + j0);
                match init {
                    Init::Zero => row.write_bytes(0, cols),
                    Init::Rows(bias) => row.copy_from_nonoverlapping(bias[j0..].as_ptr(), cols),
                }
            }
        }
    };
    if k == 0 {
        fill(0, m, 0, n);
        return;
    }
    let (ta, lda) = operand(&lhs).expect("sgemm: left view not readable by BLAS");
    let (tb, ldb) = operand(&rhs).expect("sgemm: right view not readable by BLAS");
    assert!(
        lhs.last() < lhs.data.len(),
        "sgemm: left view out of bounds"
    );
    assert!(
        rhs.last() < rhs.data.len(),
        "sgemm: right view out of bounds"
    );
    single_threaded();
    // β = 0 makes BLAS write the block without reading it; β = 1 adds to the bias rows.
    let beta = match init {
        Init::Zero => 0.0,
        Init::Rows(_) => 1.0,
    };
    // One product of rows `r0..r0+rows` and columns `j0..j0+cols` into its block of the output.
    let block = |r0: usize, rows: usize, j0: usize, cols: usize| {
        if beta != 0.0 {
            fill(r0, rows, j0, cols);
        }
        let out = base;
        // SAFETY: shapes agree (asserted above); the left view's rows `r0..r0+rows` and the
        // right view's columns `j0..j0+cols` are inside their slices (their last elements are,
        // and strides are non-negative); the leading dimensions come from `operand`, which
        // checked them against the views' extents; the output block lies inside the `m·n`
        // output, and no other thread writes it (callers below tile the output).
        unsafe {
            cblas_sgemm(
                CBLAS_LAYOUT::CblasRowMajor,
                ta,
                tb,
                rows as c_int,
                cols as c_int,
                k as c_int,
                1.0,
                lhs.data.as_ptr().add(lhs.off + r0 * lhs.rs),
                lda as c_int,
                rhs.data.as_ptr().add(rhs.off + j0 * rhs.cs),
                ldb as c_int,
                beta,
                out.0.add(r0 * n + j0),
                n as c_int,
            );
        }
    };
    let threads = rayon::current_num_threads();
    let split = |len: usize| {
        // Blocks of a multiple of 16 (the kernels' register tile), one per thread.
        let per = len.div_ceil(threads).div_ceil(16) * 16;
        (0..len.div_ceil(per)).map(move |i| (i * per, per.min(len - i * per)))
    };
    if threads > 1 && m >= threads * MIN_BLOCK {
        split(m)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(r0, rows)| block(r0, rows, 0, n));
    } else if threads > 1 && n >= threads * MIN_BLOCK {
        split(n)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(j0, cols)| block(0, m, j0, cols));
    } else {
        block(0, m, 0, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// `lhs · rhs (+ bias)` by loops, in f64.
    fn naive(lhs: &Mat<'_>, rhs: &Mat<'_>, bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; lhs.rows * rhs.cols];
        for r in 0..lhs.rows {
            for c in 0..rhs.cols {
                let mut s = bias.map_or(0.0, |b| b[c] as f64);
                for i in 0..lhs.cols {
                    s += lhs.data[lhs.off + r * lhs.rs + i * lhs.cs] as f64
                        * rhs.data[rhs.off + i * rhs.rs + c * rhs.cs] as f64;
                }
                out[r * rhs.cols + c] = s as f32;
            }
        }
        out
    }

    fn check(m: usize, k: usize, n: usize, threads: usize) {
        // The left operand sits inside a wider buffer (leading dimension k + 3, offset 2); the
        // right one is read transposed from an `[n, k]` buffer: both BLAS layouts.
        let a = values(2 + m * (k + 3), 1.0, (m * 31 + k) as u64);
        let b = values(n * k, 1.0, (n * 17 + k) as u64);
        let bias = values(n, 1.0, n as u64);
        let lhs = Mat {
            data: &a,
            off: 2,
            rs: k + 3,
            cs: 1,
            rows: m,
            cols: k,
        };
        let rhs = Mat::dense(&b, n, k).t();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for bias in [None, Some(&bias[..])] {
            let mut out = vec![f32::NAN; m * n];
            let init = bias.map_or(Init::Zero, Init::Rows);
            pool.install(|| sgemm(&mut out, lhs, rhs, init));
            let fresh = pool.install(|| product(lhs, rhs, init));
            assert_eq!(fresh, out, "product() and sgemm() disagree");
            let want = naive(&lhs, &rhs, bias);
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + k as f32).sqrt(),
                    "{m}x{k}x{n} on {threads} threads, bias {}: element {i}: {g} vs {w}",
                    bias.is_some()
                );
            }
        }
    }

    #[test]
    fn products_equal_loops_at_odd_sizes_and_every_split() {
        // Single block, row split (m ≥ threads·32), column split (few rows, many columns), ragged
        // last blocks, an empty inner dimension.
        for (m, k, n) in [
            (1, 1, 1),
            (7, 5, 3),
            (129, 33, 17),
            (3, 70, 301),
            (250, 0, 9),
        ] {
            for threads in [1, 3] {
                check(m, k, n, threads);
            }
        }
    }

    #[test]
    #[should_panic(expected = "not readable by BLAS")]
    fn a_view_with_no_unit_stride_is_refused() {
        let a = vec![0f32; 64];
        let lhs = Mat {
            data: &a,
            off: 0,
            rs: 8,
            cs: 2,
            rows: 3,
            cols: 3,
        };
        let mut out = vec![0f32; 9];
        sgemm(&mut out, lhs, Mat::dense(&a, 3, 3), Init::Zero);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_past_its_slice_is_refused() {
        let a = vec![0f32; 8];
        let mut out = vec![0f32; 9];
        sgemm(
            &mut out,
            Mat::dense(&a, 3, 3),
            Mat::dense(&a, 3, 3),
            Init::Zero,
        );
    }
}
