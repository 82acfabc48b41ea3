//! Picking the Flex kernels for a tensor of an arbitrary backend.
//!
//! The towers are generic over `B: Backend`. Rather than adding a kernel trait bound to every
//! generic signature in the workspace (and in users' code), an entry point asks whether `B` is
//! Flex or `Autodiff<Flex>` and, if so, takes the primitive as that concrete type. The check is
//! a comparison of two `TypeId` constants that the compiler folds away.

use std::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn_flex::{Flex, FlexTensor};

/// The autodiff tensor of the CPU training backend.
pub type AdFlexTensor = FloatTensor<Autodiff<Flex>>;

/// `x` as a `U` when `T` and `U` are the same type; `x` back otherwise.
pub fn cast<T: 'static, U: 'static>(x: T) -> Result<U, T> {
    if TypeId::of::<T>() != TypeId::of::<U>() {
        return Err(x);
    }
    let mut slot = Some(x);
    let slot = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .expect("TypeIds are equal");
    Ok(slot.take().expect("filled above"))
}

/// A float primitive of `B`, sorted by which kernels can run on it.
pub enum Float<B: Backend> {
    /// Flex without autodiff: the kernel runs directly.
    Flex(FlexTensor),
    /// `Autodiff<Flex>`: the kernel runs and records its own backward.
    AdFlex(AdFlexTensor),
    /// Any other backend: the caller composes Burn's operations.
    Other(FloatTensor<B>),
}

impl<B: Backend> Float<B> {
    /// Sorts `x`.
    pub fn of(x: FloatTensor<B>) -> Self {
        match cast::<_, FlexTensor>(x) {
            Ok(f) => Self::Flex(f),
            Err(x) => match cast::<_, AdFlexTensor>(x) {
                Ok(a) => Self::AdFlex(a),
                Err(x) => Self::Other(x),
            },
        }
    }
}

impl<B: Backend> Float<B> {
    /// Back to `B`'s primitive, unchanged.
    pub fn into_primitive(self) -> FloatTensor<B> {
        match self {
            Self::Flex(f) => from_flex::<B>(f),
            Self::AdFlex(a) => from_ad_flex::<B>(a),
            Self::Other(p) => p,
        }
    }
}

/// A Flex result as `B`'s primitive (`B` is Flex).
pub fn from_flex<B: Backend>(x: FlexTensor) -> FloatTensor<B> {
    cast(x).unwrap_or_else(|_| unreachable!("only called when B is Flex"))
}

/// An `Autodiff<Flex>` result as `B`'s primitive (`B` is `Autodiff<Flex>`).
pub fn from_ad_flex<B: Backend>(x: AdFlexTensor) -> FloatTensor<B> {
    cast(x).unwrap_or_else(|_| unreachable!("only called when B is Autodiff<Flex>"))
}

/// Whether the kernels are on: `VLP_CPU_KERNELS=0` in the environment turns them off (read
/// once), so that one binary can be timed or checked against Burn's own composition.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("VLP_CPU_KERNELS").map_or(true, |v| v != "0"))
}
