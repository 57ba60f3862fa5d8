//! `Real`: the float type the training reference is generic over. Training runs in f32; the
//! gradient check runs the very same code in f64 against central finite differences.

use std::fmt::Debug;
use std::iter::Sum;

pub trait Real: ndarray::LinalgScalar + num_traits::Float + Default + Debug + Send + Sync + Sum + 'static {
    fn of(x: f64) -> Self;
    fn of_f32(x: f32) -> Self;
    fn f64(self) -> f64;
}

impl Real for f32 {
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn of_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn of_f32(x: f32) -> Self {
        x as f64
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
}

/// `Σ a_i b_i` with eight independent accumulators combined in a fixed order: vectorises, and
/// the result does not depend on anything but the inputs.
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let n8 = n / 8 * 8;
    let mut acc = [T::zero(); 8];
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for j in 0..8 {
            acc[j] = acc[j] + ca[j] * cb[j];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for i in n8..n {
        s = s + a[i] * b[i];
    }
    s
}
