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

/// Backward of [`bias_act`] for none / ReLU, in place: where ReLU's output `y` is not positive the
/// gradient is zeroed (`dy [m, n]`), then `db[j] = Σ_i dy[i, j]` summed in row order in f32 (the
/// training step's order). Returns `db [n]`.
pub fn bias_act_bwd(dy: &mut [f32], y: &[f32], n: usize, act: Act) -> Vec<f32> {
    if act == Act::Relu {
        for (g, &a) in dy.iter_mut().zip(y) {
            if a <= 0.0 {
                *g = 0.0;
            }
        }
    }
    let mut db = vec![0f32; n];
    for row in dy.chunks(n.max(1)) {
        for (x, &v) in db.iter_mut().zip(row) {
            *x += v;
        }
    }
    db
}
