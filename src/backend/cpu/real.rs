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
