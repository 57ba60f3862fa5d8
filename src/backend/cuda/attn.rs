//! Host side of `kernels/attn.cu`: training attention forward and backward, one block per
//! (sample, head). Inputs are validated by `check::attn` in the trait's provided methods.

use cudarc::driver::LaunchConfig;

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use crate::backend::{AttnDev, AttnGrads, AttnGradsDev, AttnOut, AttnSaved, OffsetsSlot, Staged, Tensor};
use crate::error::{Error, Result};

/// Threads per block (mirrors `ATTN_THREADS` in kernels/attn.cu).
const ATTN_THREADS: u32 = 128;

/// Mirrors `AttnParams` in kernels/attn.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnParams {
    pub n_samples: u32,
    pub dim: u32,
    pub heads: u32,
    pub dk: u32,
    pub group: u32,
    pub scale: f32,
    pub pad0: u32,
    pub pad1: u32,
}
// SAFETY: `#[repr(C)]` of 4-byte fields, the same layout as the CUDA struct.
unsafe impl KernelParam for AttnParams {}

/// Shapes of one call: `(B, N, D)` and the launch parameters.
fn params(heads: usize, q_len: usize, bias_len: usize, offsets: &[u32]) -> Result<(usize, usize, usize, AttnParams, LaunchConfig)> {
    shape(heads, q_len, bias_len, offsets.len() - 1)
}

/// [`params`] from the segment count `b_n`.
fn shape(heads: usize, q_len: usize, bias_len: usize, b_n: usize) -> Result<(usize, usize, usize, AttnParams, LaunchConfig)> {
    let n = bias_len / heads;
    let d = q_len.checked_div(b_n).unwrap_or(heads);
    let dk = d / heads;
    let blocks = b_n * heads;
    if blocks > i32::MAX as usize {
        return Err(Error::TooLarge { field: "attn blocks (B * h)", value: blocks as u64, limit: i32::MAX as u64 });
    }
    let p = AttnParams {
        n_samples: u32_of("B", b_n)?,
        dim: u32_of("D", d)?,
        heads: u32_of("heads", heads)?,
        dk: u32_of("d_k", dk)?,
        group: dk.next_power_of_two().min(32) as u32,
        scale: (1.0 / (dk as f64).sqrt()) as f32,
        pad0: 0,
        pad1: 0,
    };
    let cfg = LaunchConfig { grid_dim: (blocks.max(1) as u32, 1, 1), block_dim: (ATTN_THREADS, 1, 1), shared_mem_bytes: 0 };
    Ok((b_n, n, d, p, cfg))
}

pub(crate) fn attn_fwd(be: &CudaBackend, heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<AttnOut> {
    let (b_n, n, d, p, cfg) = params(heads, q.len(), bias.len(), offsets)?;
    if b_n == 0 {
        return Ok(AttnOut { p: vec![0.0; n * heads], pooled: Vec::new() });
    }
    let (qd, kd, vd, bd, od) = (
        be.htod("attn_fwd: upload q", q)?,
        be.htod("attn_fwd: upload k", k)?,
        be.htod("attn_fwd: upload v", v)?,
        be.htod("attn_fwd: upload bias", bias)?,
        be.htod("attn_fwd: upload offsets", offsets)?,
    );
    let pd = be.output::<f32>("attn_fwd: alloc p", n * heads)?;
    let pooled = be.output::<f32>("attn_fwd: alloc pooled", b_n * d)?;
    let mut b = be.launcher("attn_fwd");
    b.arg(&p).arg(&qd).arg(&kd).arg(&vd).arg(&bd).arg(&od).arg(&pd).arg(&pooled);
    // SAFETY: kernel (AttnParams, q [B*D], k [N*D], v [N*D], bias [N*h], offsets [B+1], p [N*h],
    // pooled [B*D]); check::attn validated every length, the offsets (0 .. N, non-decreasing) and
    // D = h * d_k; grid B*h blocks of ATTN_THREADS threads, each block writing only its sample's
    // rows of p and its (sample, head) slice of pooled. Buffers of length 0 are one element.
    unsafe { b.launch(cfg) }.map_err(device_err("attn_fwd launch"))?;
    Ok(AttnOut { p: be.dtoh("attn_fwd: download p", &pd, n * heads)?, pooled: be.dtoh("attn_fwd: download pooled", &pooled, b_n * d)? })
}

pub(crate) fn attn_bwd(be: &CudaBackend, heads: usize, x: AttnSaved<'_>, dpooled: &[f32]) -> Result<AttnGrads> {
    let (b_n, n, d, p, cfg) = params(heads, x.q.len(), x.bias.len(), x.offsets)?;
    if b_n == 0 {
        return Ok(AttnGrads { dq: Vec::new(), dk: vec![0.0; n * d], dv: vec![0.0; n * d], dbias: vec![0.0; n * heads] });
    }
    let (qd, kd, vd, od, pd, dpd) = (
        be.htod("attn_bwd: upload q", x.q)?,
        be.htod("attn_bwd: upload k", x.k)?,
        be.htod("attn_bwd: upload v", x.v)?,
        be.htod("attn_bwd: upload offsets", x.offsets)?,
        be.htod("attn_bwd: upload p", x.p)?,
        be.htod("attn_bwd: upload dpooled", dpooled)?,
    );
    let dq = be.output::<f32>("attn_bwd: alloc dq", b_n * d)?;
    let dk = be.output::<f32>("attn_bwd: alloc dk", n * d)?;
    let dv = be.output::<f32>("attn_bwd: alloc dv", n * d)?;
    let dbias = be.output::<f32>("attn_bwd: alloc dbias", n * heads)?;
    let mut b = be.launcher("attn_bwd");
    b.arg(&p).arg(&qd).arg(&kd).arg(&vd).arg(&od).arg(&pd).arg(&dpd).arg(&dq).arg(&dk).arg(&dv).arg(&dbias);
    // SAFETY: kernel (AttnParams, q [B*D], k [N*D], v [N*D], offsets [B+1], p [N*h], dpooled [B*D],
    // dq [B*D], dk [N*D], dv [N*D], dbias [N*h]); lengths and offsets validated by check::attn and
    // the trait's p / dpooled checks; grid B*h blocks of ATTN_THREADS, each block writing only its
    // sample's rows (its head's columns) of dk, dv, dbias and its slice of dq.
    unsafe { b.launch(cfg) }.map_err(device_err("attn_bwd launch"))?;
    Ok(AttnGrads {
        dq: be.dtoh("attn_bwd: download dq", &dq, b_n * d)?,
        dk: be.dtoh("attn_bwd: download dk", &dk, n * d)?,
        dv: be.dtoh("attn_bwd: download dv", &dv, n * d)?,
        dbias: be.dtoh("attn_bwd: download dbias", &dbias, n * heads)?,
    })
}

impl CudaBackend {
    /// `attn_fwd` on tensors (`check::attn_dev` passed): nothing crosses to the host.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_fwd_dev(
        &self,
        heads: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnDev> {
        let (b_n, n, d, p, cfg) = shape(heads, q.len(), bias.len(), offs.segments)?;
        let pd = self.tensor_output("attn p", n, heads)?;
        let pooled = self.tensor_output("attn pooled", b_n, d)?;
        if b_n > 0 {
            let od = self.tensor_buf(&staged.tensor)?.slice(offs.range.clone());
            let mut b = self.launcher("attn_fwd");
            b.arg(&p)
                .arg(self.tensor_buf(q)?)
                .arg(self.tensor_buf(k)?)
                .arg(self.tensor_buf(v)?)
                .arg(self.tensor_buf(bias)?)
                .arg(&od)
                .arg(self.tensor_buf(&pd)?)
                .arg(self.tensor_buf(&pooled)?);
            // SAFETY: kernel (AttnParams, q [B*D], k [N*D], v [N*D], bias [N*h], offsets [B+1],
            // p [N*h], pooled [B*D]); check::attn_dev matched every shape to the staged offsets
            // (checked when staged: 0 .. N, non-decreasing); each block writes only its sample's
            // rows of p and its (sample, head) slice of pooled.
            unsafe { b.launch(cfg) }.map_err(device_err("attn_fwd launch"))?;
        }
        Ok(AttnDev { p: pd, pooled })
    }

    /// `attn_bwd` on tensors (`check::attn_dev` and the p / dpooled shapes passed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_bwd_dev(
        &self,
        heads: usize,
        (q, k, v, bias): (&Tensor, &Tensor, &Tensor, &Tensor),
        p_t: &Tensor,
        dpooled: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnGradsDev> {
        let (b_n, n, d, p, cfg) = shape(heads, q.len(), bias.len(), offs.segments)?;
        let dq = self.tensor_output("attn dq", b_n, d)?;
        let dk = self.tensor_output("attn dk", n, d)?;
        let dv = self.tensor_output("attn dv", n, d)?;
        let dbias = self.tensor_output("attn dbias", n, heads)?;
        if b_n > 0 {
            let od = self.tensor_buf(&staged.tensor)?.slice(offs.range.clone());
            let mut b = self.launcher("attn_bwd");
            b.arg(&p)
                .arg(self.tensor_buf(q)?)
                .arg(self.tensor_buf(k)?)
                .arg(self.tensor_buf(v)?)
                .arg(&od)
                .arg(self.tensor_buf(p_t)?)
                .arg(self.tensor_buf(dpooled)?)
                .arg(self.tensor_buf(&dq)?)
                .arg(self.tensor_buf(&dk)?)
                .arg(self.tensor_buf(&dv)?)
                .arg(self.tensor_buf(&dbias)?);
            // SAFETY: kernel (AttnParams, q, k, v, offsets [B+1], p [N*h], dpooled [B*D], dq, dk,
            // dv, dbias); shapes matched by the trait's checks; each block writes only its
            // sample's rows (its head's columns) of dk, dv, dbias and its slice of dq. The offsets
            // cover every row, so every element is written (outputs are poisoned before).
            unsafe { b.launch(cfg) }.map_err(device_err("attn_bwd launch"))?;
        }
        Ok(AttnGradsDev { dq, dk, dv, dbias })
    }
}
