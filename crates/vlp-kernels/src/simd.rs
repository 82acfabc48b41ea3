//! Element-wise math that the compiler vectorises: `exp`, `erf` and `tanh` written without
//! branches or library calls, so that a loop over a slice becomes AVX2/AVX-512/NEON code.
//!
//! Burn's Flex backend evaluates transcendental functions one scalar at a time through `libm`
//! (exact GELU's `erff` alone was a tenth of a training step, benches/RESULTS.md). These
//! approximations are accurate to a few units in the last place of f32 over the range that
//! matters, which the tests beside them check against `f64` references.
//!
//! Each slice kernel is compiled twice: for the baseline target and, on x86-64, with AVX2 and
//! FMA enabled, chosen at run time (`is_x86_feature_detected!`), so that one binary runs
//! everywhere and uses the wide registers where the CPU has them.

/// `exp(x)` for f32, Cephes' polynomial after reduction by powers of two; relative error
/// below 3e-7 on [-87, 88]. Inputs are clamped to that range (so `exp(-100)` gives about 1e-38,
/// not 0, and `exp(100)` gives about 1.6e38, not infinity): fine for the activations and
/// softmax-like uses here, where such values are multiplied away.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · ln2` is exact in the high part.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, the nearest f32 is 0.5
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// The error function for f32: Eigen's rational approximation on [-4, 4] (erf is ±1 to f32
/// precision beyond); absolute error below 4e-7 when evaluated in f32 (libm's `erff`
/// is within 1e-7; the difference is far below what a GELU's output can resolve).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `tanh(x)` for f32 as `1 − 2 / (exp(2x) + 1)`; absolute error below 3e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `1 / (1 + exp(−x))`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX2 + FMA when the CPU has them
/// and for the baseline target otherwise. The body must be a plain loop over slices.
macro_rules! multiversion {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features `wide` was compiled for are present on this CPU.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by Simpson integration in f64 (no `erf` in std).
    fn erf_ref(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        // Clamped, not infinite or NaN.
        assert!(exp(1000.0).is_finite() && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_is_accurate_to_four_e_minus_seven() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst = worst.max((erf(x) as f64 - erf_ref(x as f64)).abs());
        }
        assert!(worst < 4e-7, "max absolute error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan() && exp(f32::NAN).is_nan());
        assert!((erf(9.0) - 1.0).abs() < 4e-7 && (erf(-9.0) + 1.0).abs() < 4e-7);
    }

    #[test]
    fn tanh_and_sigmoid_match_std() {
        let mut worst = 0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 / 1000.0;
            worst = worst.max((tanh(x) - x.tanh()).abs());
            worst = worst.max((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs());
        }
        assert!(worst < 3e-7, "max absolute error {worst}");
    }

    multiversion! {
        /// Test kernel: `dst = exp(src)`.
        pub fn exp_slice(src: &[f32], dst: &mut [f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = exp(s);
            }
        }
    }

    #[test]
    fn multiversioned_kernel_equals_scalar_code() {
        let src: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) / 37.0).collect();
        let mut dst = vec![0.0; src.len()];
        exp_slice(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            assert_eq!(*d, exp(*s), "exp({s})");
        }
    }
}
