//! The optimisers (shaders/optim.wgsl) on device tensors: Adam over a whole tensor and row-wise
//! Adagrad over the rows a step touched (their ids bound at their section of the staged batch).

use super::tensor::bytes;
use super::{grid, WgpuBackend, B};
use crate::backend::{host_tensor, AdamStep, IdSlot, Staged, Tensor};
use crate::error::Result;

const OPTIM_SRC: &str = include_str!("../../../shaders/optim.wgsl");
/// w (rw), g (r), s1 (rw), s2 (rw), rows (r).
const OPTIM_BINDS: &[B] = &[B::W, B::R, B::W, B::W, B::R];

/// Mirrors `Params` in shaders/optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimParams {
    n: u32,
    cols: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,
    bc2: f32,
}

impl WgpuBackend {
    pub(crate) fn adam_dev(&self, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
        if (w.len() * 4) as u64 > self.max_binding() {
            return host_tensor::adam(self, w, g, m, v, s);
        }
        if w.is_empty() {
            return Ok(());
        }
        let (wb, gb, mb, vb) = (self.mem(w)?, self.mem(g)?, self.mem(m)?, self.mem(v)?);
        let spare = self.zeroed("unused rows", 4);
        self.scoped("adam", || {
            let pipe = self.pipe("optim", OPTIM_SRC, "optim_adam_fwd", 0, OPTIM_BINDS)?;
            let pu = self.uniform(&OptimParams {
                n: w.len() as u32,
                cols: 1,
                lr: s.lr,
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
                bc1: s.bc1,
                bc2: s.bc2,
            });
            let mut enc = self.encoder();
            self.dispatch(&mut enc, &pipe, &pu, &[wb, gb, mb, vb, &spare], grid((w.len() as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adagrad_rows_dev(
        &self,
        w: &Tensor,
        acc: &Tensor,
        rows: &IdSlot,
        g: &Tensor,
        staged: &Staged,
        lr: f32,
        eps: f32,
    ) -> Result<()> {
        let lim = self.max_binding();
        if [w.len(), g.len(), staged.tensor.len()].iter().any(|&n| (n * 4) as u64 > lim) {
            return host_tensor::adagrad_rows(self, w, acc, rows, g, staged, lr, eps);
        }
        if rows.is_empty() || w.cols == 0 {
            return Ok(());
        }
        let (wb, ab, gb, ib) = (self.mem(w)?, self.mem(acc)?, self.mem(g)?, self.mem(&staged.tensor)?);
        let spare = self.zeroed("unused s2", 4);
        let (off, len) = bytes(&rows.range);
        self.scoped("adagrad", || {
            let pipe = self.pipe("optim", OPTIM_SRC, "optim_adagrad_fwd", 0, OPTIM_BINDS)?;
            let n = rows.len() * w.cols;
            let pu = self.uniform(&OptimParams { n: n as u32, cols: w.cols as u32, lr, beta1: 0.0, beta2: 0.0, eps, bc1: 1.0, bc2: 1.0 });
            let mut enc = self.encoder();
            let binds = [
                wb.as_entire_buffer_binding(),
                gb.as_entire_buffer_binding(),
                ab.as_entire_buffer_binding(),
                spare.as_entire_buffer_binding(),
                wgpu::BufferBinding { buffer: ib, offset: off, size: wgpu::BufferSize::new(len) },
            ];
            self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid((n as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }
}
