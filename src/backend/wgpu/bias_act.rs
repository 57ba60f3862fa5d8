//! `bias_act` (shaders/bias_act.wgsl) on device tensors: the bias and activation in place, and
//! its backward (the bias gradient).

use super::{grid, WgpuBackend, B};
use crate::backend::{host_tensor, Act, Elem, Tensor};
use crate::error::Result;

const BIAS_SRC: &str = include_str!("../../../shaders/bias_act.wgsl");
const BIAS_BINDS: &[B] = &[B::W, B::R];

/// Mirrors `Params` in shaders/bias_act.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasParams {
    m: u32,
    n: u32,
    act: u32,
    pad0: u32,
}

impl WgpuBackend {
    pub(crate) fn bias_act_bwd_dev(&self, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
        if (dy.len() * 4) as u64 > self.max_binding() {
            return host_tensor::bias_act_bwd(self, dy, y, act);
        }
        let (db_buf, yb) = (self.mem(dy)?, self.mem(y)?);
        self.scoped("bias_act_bwd", || {
            let db = self.pooled_output("bias grad", dy.cols);
            if dy.cols > 0 {
                let pipe = self.pipe("bias_act", BIAS_SRC, "bias_act_bwd", 0, &[B::W, B::R, B::W])?;
                let pu = self.uniform(&BiasParams { m: dy.rows as u32, n: dy.cols as u32, act: act.code(), pad0: 0 });
                let mut enc = self.encoder();
                self.dispatch(&mut enc, &pipe, &pu, &[db_buf, yb, &db], grid((dy.cols as u64).div_ceil(64)));
                self.queue.submit([enc.finish()]);
            }
            Ok(self.wrap("bias grad", 1, dy.cols, Elem::F32, db))
        })
    }

    pub(crate) fn bias_act_dev(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        if (x.len() * 4) as u64 > self.max_binding() {
            return host_tensor::bias_act_op(self, x, bias, act);
        }
        if x.is_empty() {
            return Ok(());
        }
        let (xb, bb) = (self.mem(x)?, self.mem(bias)?);
        self.scoped("bias_act", || {
            let pipe = self.pipe("bias_act", BIAS_SRC, "bias_act_fwd", 0, BIAS_BINDS)?;
            let pu = self.uniform(&BiasParams { m: x.rows as u32, n: x.cols as u32, act: act.code(), pad0: 0 });
            let mut enc = self.encoder();
            self.dispatch(&mut enc, &pipe, &pu, &[xb, bb], grid((x.len() as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }
}
