//! Optimizers (issue: Adam for dense parameters, sparse updates for embedding rows).
//!
//! - Dense tensors: Adam (β1 0.9, β2 0.999, ε 1e-8) with bias correction.
//! - Embedding tables (`step::ROW_TABLES`): row-sparse Adagrad: only the rows present in the
//!   gradient are touched, accumulator and value alike, so a step costs O(rows touched).
//! Updates are elementwise in a fixed order: the same gradients give the same parameters.

use super::step::{Grad, ROW_TABLES};
use crate::backend::cpu::{self, optim::AdamStep};
use crate::error::{Error, Result};
use crate::fileio::{Reader, Writer};
use crate::model::Model;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    /// Adam learning rate (dense parameters).
    pub lr: f32,
    /// Adagrad learning rate (embedding rows).
    pub lr_emb: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Adagrad's initial accumulator (keeps the first steps bounded).
    pub adagrad_init: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig { lr: 1e-3, lr_emb: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, adagrad_init: 0.1 }
    }
}

/// Per-tensor optimizer state, in `param_shapes` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub cfg: OptimConfig,
    pub step: u64,
    /// Adam: `(m, v)`; Adagrad: `(accumulator, empty)`.
    state: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Optimizer {
    pub fn new(model: &Model, cfg: OptimConfig) -> Optimizer {
        let state = model
            .params()
            .enumerate()
            .map(|(i, (_, t))| {
                if ROW_TABLES.contains(&i) {
                    (vec![cfg.adagrad_init; t.numel()], Vec::new())
                } else {
                    (vec![0.0; t.numel()], vec![0.0; t.numel()])
                }
            })
            .collect();
        Optimizer { cfg, step: 0, state }
    }

    /// Apply one step of gradients (as `step::step` returns them).
    pub fn update(&mut self, model: &mut Model, grads: &[Grad<f32>]) -> Result<()> {
        if grads.len() != self.state.len() {
            return Err(Error::LengthMismatch {
                field: "grads",
                got: grads.len(),
                expected: self.state.len(),
                expected_what: "parameter count",
            });
        }
        self.step += 1;
        let c = self.cfg;
        let t = self.step as f64;
        let hp = AdamStep {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            bc1: (1.0 - (c.beta1 as f64).powf(t)) as f32,
            bc2: (1.0 - (c.beta2 as f64).powf(t)) as f32,
        };
        for (i, ((_, p), (g, (s1, s2)))) in model.params_mut().zip(grads.iter().zip(self.state.iter_mut())).enumerate() {
            let cols: usize = p.shape.iter().skip(1).product();
            match g {
                Grad::Dense(g) => {
                    if g.len() != p.data.len() {
                        return Err(Error::LengthMismatch {
                            field: "dense gradient",
                            got: g.len(),
                            expected: p.data.len(),
                            expected_what: "tensor size",
                        });
                    }
                    if ROW_TABLES.contains(&i) {
                        return Err(Error::Incompatible {
                            what: "gradient",
                            why: format!("tensor {i} is an embedding table: it takes row gradients (Grad::Rows), not a dense one"),
                        });
                    }
                    cpu::optim::adam(&mut p.data, g, s1, s2, &hp);
                }
                Grad::Rows { rows, values } => {
                    if values.len() != rows.len() * cols {
                        return Err(Error::LengthMismatch {
                            field: "row gradient",
                            got: values.len(),
                            expected: rows.len() * cols,
                            expected_what: "rows * cols",
                        });
                    }
                    let n_rows = p.data.len() / cols.max(1);
                    if let Some(bad) = rows.iter().position(|&r| r as usize >= n_rows) {
                        return Err(Error::OutOfRange { field: "gradient row", index: bad, value: rows[bad] as u64, limit: n_rows as u64 });
                    }
                    cpu::optim::adagrad_rows(&mut p.data, s1, cols, rows, values, c.lr_emb, c.eps);
                }
            }
        }
        Ok(())
    }

    /// Tensor `i`'s state: Adam `(m, v)`, Adagrad `(accumulator, empty)`.
    pub(crate) fn state_of(&self, i: usize) -> Option<(&[f32], &[f32])> {
        self.state.get(i).map(|(a, b)| (a.as_slice(), b.as_slice()))
    }

    /// Replace tensor `i`'s state (same sizes; the device trainer syncs it back).
    pub(crate) fn set_state(&mut self, i: usize, s1: Vec<f32>, s2: Vec<f32>) -> Result<()> {
        let slot = self.state.get_mut(i).ok_or(Error::OutOfRange { field: "optimizer tensor", index: i, value: i as u64, limit: 0 })?;
        if s1.len() != slot.0.len() || s2.len() != slot.1.len() {
            return Err(Error::LengthMismatch {
                field: "optimizer state",
                got: s1.len(),
                expected: slot.0.len(),
                expected_what: "tensor size",
            });
        }
        *slot = (s1, s2);
        Ok(())
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.str(&serde_json::to_string(&self.cfg).unwrap_or_default());
        w.u64(self.step);
        w.u64(self.state.len() as u64);
        for (a, b) in &self.state {
            w.f32s(a);
            w.f32s(b);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, model: &Model) -> Result<Optimizer> {
        let json = r.str("optimizer config")?;
        let cfg: OptimConfig = serde_json::from_str(&json).map_err(|e| Error::corrupt(r.path(), format!("optimizer config: {e}")))?;
        let step = r.u64("optimizer step")?;
        let n = r.u64("optimizer tensors")? as usize;
        let fresh = Optimizer::new(model, cfg);
        if n != fresh.state.len() {
            return Err(Error::corrupt(r.path(), format!("optimizer has {n} tensors, the model {}", fresh.state.len())));
        }
        let mut state = Vec::with_capacity(n);
        for (i, (a0, b0)) in fresh.state.iter().enumerate() {
            let a = r.f32s("optimizer state")?;
            let b = r.f32s("optimizer state")?;
            if a.len() != a0.len() || b.len() != b0.len() {
                return Err(Error::corrupt(r.path(), format!("optimizer state of tensor {i} has the wrong size")));
            }
            state.push((a, b));
        }
        Ok(Optimizer { cfg, step, state })
    }
}
