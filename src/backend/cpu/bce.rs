//! Mean binary cross-entropy on logits and its gradient (SPEC §5, TWIN eq. 2):
//! `loss = (1/B) Σ_b [max(s_b, 0) - s_b y_b + ln(1 + e^{-|s_b|})]` (the stable form of
//! `-y ln σ(s) - (1-y) ln(1-σ(s))`), `dlogit_b = (σ(s_b) - y_b) / B` (written with `=`).
//! The sum runs in f64 in sample order.

use super::Real;

/// Returns `(loss, dlogit [B])`.
pub fn bce<T: Real>(logits: &[T], labels: &[f32]) -> (f64, Vec<T>) {
    let n = logits.len();
    let inv = 1.0 / n.max(1) as f64;
    let mut loss = 0f64;
    let mut d = Vec::with_capacity(n);
    for (&s, &y) in logits.iter().zip(labels) {
        let (s, y) = (s.f64(), y as f64);
        loss += s.max(0.0) - s * y + (-s.abs()).exp().ln_1p();
        d.push(T::of((1.0 / (1.0 + (-s).exp()) - y) * inv));
    }
    (loss * inv, d)
}
