//! Host side of `kernels/attn.cu`: training attention forward and backward, one block per
//! (sample, head). Inputs are validated by `check::attn` in the trait's provided methods.

use cudarc::driver::LaunchConfig;

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use crate::backend::{AttnGrads, AttnOut, AttnSaved};
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
    let b_n = offsets.len() - 1;
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
