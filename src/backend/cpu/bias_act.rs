//! Bias and activation in place (the reference of `kernels/bias_act.cu`): `x [m, n]`,
//! `x[i, j] = act(x[i, j] + bias[j])` with the sum rounded to f32 first. ReLU sets negative sums to
//! `+0.0` (a `-0.0` sum stays, as in the training step); σ is evaluated in f64 and rounded to f32 (the CTR the engine returns).

use crate::backend::Act;

pub fn bias_act(x: &mut [f32], bias: &[f32], act: Act) {
    let n = bias.len().max(1);
    for row in x.chunks_mut(n) {
        for (v, &b) in row.iter_mut().zip(bias) {
            let s = *v + b;
            *v = match act {
                Act::None => s,
                Act::Relu => {
                    if s < 0.0 {
                        0.0
                    } else {
                        s
                    }
                }
                Act::Sigmoid => sigmoid(s),
            };
        }
    }
}

/// `1 / (1 + e^{-s})` in f64, rounded to f32.
pub fn sigmoid(s: f32) -> f32 {
    (1.0 / (1.0 + (-(s as f64)).exp())) as f32
}
