//! `bce` (shaders/bce.wgsl): per-sample binary cross-entropy terms and `dlogit`, one invocation
//! per sample; the mean is summed here in f64 in sample order (the CPU's order). Samples are
//! processed in groups whose buffers each fit one storage binding.

use super::{grid, words_f32, Readback, WgpuBackend, B};
use crate::backend::{BceDev, Elem, F32Slot, LossForm, Staged, Tensor};
use crate::error::Result;

const SRC: &str = include_str!("../../../shaders/bce.wgsl");
/// logits, labels (read); loss, dlogit (read-write).
const BINDS: &[B] = &[B::R, B::R, B::W, B::W];

/// Mirrors `Params` in shaders/bce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    n_groups: u32,
    inv_b: f32,
    pad: u32,
}

pub(crate) fn bce(be: &WgpuBackend, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)> {
    let n = logits.len();
    let inv = 1.0 / n.max(1) as f64;
    // Every buffer holds one f32 per sample: a group of `per` samples fits one binding.
    let per = ((be.max_binding() / 4) as usize).max(1);
    let mut sum = 0f64;
    let mut d = Vec::with_capacity(n);
    be.scoped("bce", || {
        let pipe = be.pipe("bce", SRC, "bce_fwd", 0, BINDS)?;
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        let mut i0 = 0;
        while i0 < n {
            let i1 = (i0 + per).min(n);
            let m = i1 - i0;
            let sb = be.upload("logits", &logits[i0..i1]);
            let yb = be.upload("labels", &labels[i0..i1]);
            let lb = be.output("bce loss terms", m);
            let db = be.output("dlogit", m);
            let n_groups = m.div_ceil(64);
            let p = be.uniform(&Params { n: m as u32, n_groups: n_groups as u32, inv_b: inv as f32, pad: 0 });
            be.dispatch(&mut enc, &pipe, &p, &[&sb, &yb, &lb, &db], grid(n_groups as u64));
            outs.push((lb, db, m));
            i0 = i1;
        }
        let mut reads = Vec::with_capacity(2 * outs.len());
        for (lb, db, m) in &outs {
            reads.push(Readback { buf: lb, bytes: (*m * 4) as u64 });
            reads.push(Readback { buf: db, bytes: (*m * 4) as u64 });
        }
        let bytes = be.finish("bce", enc, &reads)?;
        for pair in bytes.chunks(2) {
            for x in words_f32(&pair[0]) {
                sum += x as f64;
            }
            d.extend(words_f32(&pair[1]));
        }
        Ok(())
    })?;
    Ok((sum * inv, d))
}

impl WgpuBackend {
    /// `bce` on tensors (checked by `Backend::bce_dev`): the per-sample terms and `dlogit` stay on
    /// the device; the mean is summed when the terms are read (`LossForm::TermsF32`).
    pub(crate) fn bce_dev(&self, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
        let n = labels.len();
        if (n * 4) as u64 > self.max_binding() || (staged.tensor.len() * 4) as u64 > self.max_binding() {
            return crate::backend::host_tensor::bce(self, logits, labels, staged);
        }
        let (lb, sb) = (self.tensor_storage(logits)?, self.tensor_storage(&staged.tensor)?);
        self.scoped("bce_dev", || {
            let pipe = self.pipe("bce", SRC, "bce_fwd", 0, BINDS)?;
            let terms = self.pooled_output("bce loss terms", n);
            let dl = self.pooled_output("dlogit", n);
            let n_groups = n.div_ceil(64);
            let p = self.uniform(&Params { n: n as u32, n_groups: n_groups as u32, inv_b: (1.0 / n.max(1) as f64) as f32, pad: 0 });
            let mut enc = self.encoder();
            let binds = [
                lb.as_entire_buffer_binding(),
                wgpu::BufferBinding { buffer: sb, offset: (labels.range.start * 4) as u64, size: wgpu::BufferSize::new((n * 4) as u64) },
                terms.as_entire_buffer_binding(),
                dl.as_entire_buffer_binding(),
            ];
            self.dispatch_bound(&mut enc, &pipe, &p, &binds, grid(n_groups as u64));
            self.queue.submit([enc.finish()]);
            Ok(BceDev {
                loss: self.tensor_of("bce loss terms", n, 1, Elem::F32, terms),
                dlogit: self.tensor_of("bce dlogit", n, 1, Elem::F32, dl),
                form: LossForm::TermsF32,
            })
        })
    }
}
