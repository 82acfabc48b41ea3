//! The one place where a concrete Burn backend is named.
//!
//! Every other crate is generic over `B: Backend` (or `B: AutodiffBackend` where it trains) and
//! asks this module for the backend the binary was compiled with. When several backend features
//! are enabled (e.g. `--features cuda` on top of the default `cpu`), the accelerator wins:
//! `cuda` over `wgpu` over `cpu`.
//!
//! The `wgpu-runtime` and `cuda-runtime` features compile a GPU backend in *without* making it
//! the default. The test build uses them so that one build runs the backend tests on every
//! backend ([`backend_tests!`](crate::backend_tests)), the backend being chosen by the test name
//! (`on_cpu::`, `on_wgpu::`, `on_cuda::`) at run time.

use burn::tensor::backend::Backend;

#[cfg(not(any(feature = "cpu", feature = "wgpu", feature = "cuda")))]
compile_error!("vlp-core needs one backend feature: `cpu` (default), `wgpu` or `cuda`");

/// The backend selected at compile time (inference; no autodiff graph).
#[cfg(feature = "cuda")]
pub type DefaultBackend = burn::backend::Cuda<f32, i32>;
/// The backend selected at compile time (inference; no autodiff graph).
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type DefaultBackend = burn::backend::Wgpu<f32, i32>;
/// The backend selected at compile time (inference; no autodiff graph).
#[cfg(all(feature = "cpu", not(any(feature = "wgpu", feature = "cuda"))))]
pub type DefaultBackend = burn::backend::Flex;

/// The selected backend wrapped for training (records the autodiff graph).
pub type TrainBackend = burn::backend::Autodiff<DefaultBackend>;

/// Device type of the selected backend.
pub type DefaultDevice = burn::tensor::Device<DefaultBackend>;

/// Name of the selected backend, as accepted by `--backend` on the command line.
pub const fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "cpu"
    }
}

/// Every backend compiled into this build (the selected one is [`backend_name`]).
pub fn compiled_backends() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "cpu") {
        out.push("cpu");
    }
    if cfg!(feature = "wgpu-runtime") {
        out.push("wgpu");
    }
    if cfg!(feature = "cuda-runtime") {
        out.push("cuda");
    }
    out
}

/// Human-readable description of the concrete Burn backend behind [`DefaultBackend`].
pub fn backend_description() -> &'static str {
    if cfg!(feature = "cuda") {
        "burn Cuda<f32> (CubeCL, fusion + autotune)"
    } else if cfg!(feature = "wgpu") {
        "burn Wgpu<f32> (CubeCL over Vulkan/Metal/DX12, fusion + autotune)"
    } else {
        "burn Flex<f32> (pure-Rust CPU, SIMD + rayon)"
    }
}

/// The default device of the selected backend (the first GPU, or the CPU).
pub fn default_device() -> DefaultDevice {
    DefaultDevice::default()
}

/// Data-parallel rank threads worth running on the selected backend when a run leaves the
/// choice to the binary (`distributed.devices = 0`): the CPU's cores on the CPU backend, where
/// one rank's training step keeps only about one core busy (1.2 of 2 measured), and one device
/// on a GPU backend (more GPUs are asked for explicitly).
pub fn auto_ranks() -> usize {
    if cfg!(any(feature = "cuda", feature = "wgpu")) {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Device `index` of the wgpu backend (`0` is the default adapter).
#[cfg(feature = "wgpu-runtime")]
pub fn wgpu_device(index: usize) -> burn::backend::wgpu::WgpuDevice {
    if index == 0 {
        burn::backend::wgpu::WgpuDevice::DefaultDevice
    } else {
        burn::backend::wgpu::WgpuDevice::DiscreteGpu(index)
    }
}

/// Device `index` of the CUDA backend.
#[cfg(feature = "cuda-runtime")]
pub fn cuda_device(index: usize) -> burn::backend::cuda::CudaDevice {
    burn::backend::cuda::CudaDevice::new(index)
}

/// Device `index` of the selected backend (`0`, `1`, ... for GPUs; the CPU has one).
pub fn device(index: usize) -> DefaultDevice {
    #[cfg(feature = "cuda")]
    {
        cuda_device(index)
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        wgpu_device(index)
    }
    #[cfg(all(feature = "cpu", not(any(feature = "wgpu", feature = "cuda"))))]
    {
        let _ = index;
        DefaultDevice::default()
    }
}

/// Number of devices the selected backend can see, or an error message when the runtime could
/// not be initialised (no driver, no GPU).
pub fn device_count() -> Result<usize, String> {
    use burn::prelude::DeviceOps;
    let type_id = default_device().to_id().type_id;
    // CubeCL runtimes panic when no driver is present; report that instead of aborting.
    std::panic::catch_unwind(|| <DefaultBackend as Backend>::device_count(type_id)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the backend runtime panicked while listing devices".to_string())
    })
}

/// Seeds backend `B`'s random generator and runs `draw` while no other caller of this function
/// can seed or draw.
///
/// Burn's backends keep one generator per process (Flex: a static behind a mutex, consumed and
/// put back by each random op), so two threads that seed and then draw (parallel tests, seeds
/// trained side by side, ranks that are threads) interleave: a model initialised from seed 0 in
/// one thread can take values from another thread's seed. Every seeded draw in vlp (model
/// initialisation, the trainer's per-step seed) goes through here, so the same seed gives the
/// same values whatever runs beside it. Draws made outside (an unlocked `Tensor::random`,
/// dropout inside a forward) still share the generator; our methods train without dropout.
pub fn seeded<B: Backend, T>(device: &B::Device, seed: u64, draw: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic while drawing leaves nothing half-written that a later caller could read.
    let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, seed);
    draw()
}

/// Makes every lazily-initialised parameter concrete, so clones share values (a clone of an
/// uninitialised parameter would draw its own).
pub fn materialize<B: Backend, M: burn::module::Module<B>>(model: &M) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let _ = p.val();
        }
    }
    model.visit(&mut Touch);
}

/// Expands its input when the wgpu backend is compiled in (used by [`backend_tests!`]; the
/// feature is checked here, in vlp-core, so crates using the macro need no feature of their own).
#[doc(hidden)]
#[cfg(feature = "wgpu-runtime")]
#[macro_export]
macro_rules! __if_wgpu_runtime {
    ($($t:tt)*) => { $($t)* };
}
#[doc(hidden)]
#[cfg(not(feature = "wgpu-runtime"))]
#[macro_export]
macro_rules! __if_wgpu_runtime {
    ($($t:tt)*) => {};
}

/// Expands its input when the CUDA copies of the backend tests are wanted (feature
/// `cuda-tests`; see [`__if_wgpu_runtime!`]).
#[doc(hidden)]
#[cfg(feature = "cuda-tests")]
#[macro_export]
macro_rules! __if_cuda_tests {
    ($($t:tt)*) => { $($t)* };
}
#[doc(hidden)]
#[cfg(not(feature = "cuda-tests"))]
#[macro_export]
macro_rules! __if_cuda_tests {
    ($($t:tt)*) => {};
}

/// Tests that must hold on every backend: the body is compiled once per compiled backend, in
/// modules `on_cpu`, `on_wgpu` (feature `wgpu-runtime`) and `on_cuda` (feature `cuda-tests`),
/// each of which defines `B` (the backend), `TrainBackend` (`Autodiff<B>`) and
/// `default_device()`. The body also sees the enclosing module's items (`use super::*`).
///
/// One test build thus serves every backend; the test filter chooses where they run
/// (`cargo xtask test --backend wgpu` runs `on_wgpu::`, the CPU tier skips the GPU modules).
///
/// ```ignore
/// #[cfg(test)]
/// mod tests {
///     use super::*;
///     vlp_core::backend_tests! {
///         #[test]
///         fn adds() {
///             let t = Tensor::<B, 1>::from_floats([1.0], &default_device());
///             assert_eq!((t.clone() + t).into_scalar(), 2.0);
///         }
///     }
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($body:tt)*) => {
        /// The tests on Burn's Flex CPU backend.
        mod on_cpu {
            #[allow(unused_imports)]
            use super::*;
            /// The backend under test.
            #[allow(dead_code)]
            pub type B = burn::backend::Flex;
            /// The backend under test, with autodiff.
            #[allow(dead_code)]
            pub type TrainBackend = burn::backend::Autodiff<B>;
            /// The device under test.
            #[allow(dead_code)]
            pub fn default_device() -> burn::tensor::Device<B> {
                Default::default()
            }
            $($body)*
        }
        $crate::__if_wgpu_runtime! {
            /// The tests on Burn's wgpu backend (lavapipe in CI).
            mod on_wgpu {
                #[allow(unused_imports)]
                use super::*;
                /// The backend under test.
                #[allow(dead_code)]
                pub type B = burn::backend::Wgpu<f32, i32>;
                /// The backend under test, with autodiff.
                #[allow(dead_code)]
                pub type TrainBackend = burn::backend::Autodiff<B>;
                /// The device under test.
                #[allow(dead_code)]
                pub fn default_device() -> burn::tensor::Device<B> {
                    $crate::backend::wgpu_device(0)
                }
                $($body)*
            }
        }
        $crate::__if_cuda_tests! {
            /// The tests on Burn's CUDA backend.
            mod on_cuda {
                #[allow(unused_imports)]
                use super::*;
                /// The backend under test.
                #[allow(dead_code)]
                pub type B = burn::backend::Cuda<f32, i32>;
                /// The backend under test, with autodiff.
                #[allow(dead_code)]
                pub type TrainBackend = burn::backend::Autodiff<B>;
                /// The device under test.
                #[allow(dead_code)]
                pub fn default_device() -> burn::tensor::Device<B> {
                    $crate::backend::cuda_device(0)
                }
                $($body)*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_backend_is_compiled() {
        assert!(compiled_backends().contains(&backend_name()));
    }

    #[test]
    fn default_device_runs_a_matmul() {
        let dev = default_device();
        let a =
            burn::tensor::Tensor::<DefaultBackend, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &dev);
        let b = a.clone().matmul(a);
        let v: Vec<f32> = b.into_data().to_vec().unwrap();
        assert_eq!(v, vec![7.0, 10.0, 15.0, 22.0]);
    }

    /// Eight draws after seeding, as a model's lazy initialisation makes them.
    fn draws(seed: u64) -> Vec<f32> {
        use burn::tensor::{Distribution, Tensor};
        let dev = default_device();
        seeded::<DefaultBackend, _>(&dev, seed, || {
            (0..8)
                .flat_map(|_| {
                    Tensor::<DefaultBackend, 1>::random([16], Distribution::Default, &dev)
                        .into_data()
                        .to_vec::<f32>()
                        .unwrap()
                })
                .collect()
        })
    }

    #[test]
    fn seeded_draws_do_not_depend_on_threads_drawing_beside_them() {
        let alone: Vec<Vec<f32>> = (0..4).map(draws).collect();
        assert_ne!(alone[0], alone[1], "different seeds must draw differently");
        assert_eq!(
            alone[0],
            draws(0),
            "one seed must draw the same values twice"
        );
        // Four threads, each seeding and drawing 20 times: every draw equals the lone one.
        let together: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64)
                .map(|seed| s.spawn(move || (0..20).map(|_| draws(seed)).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(together.len(), 4);
        for (seed, runs) in together.iter().enumerate() {
            assert_eq!(runs.len(), 20);
            for run in runs {
                assert_eq!(
                    run, &alone[seed],
                    "seed {seed} drew other values in a thread"
                );
            }
        }
    }
}
