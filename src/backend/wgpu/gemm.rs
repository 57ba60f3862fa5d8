//! `gemm` (shaders/gemm.wgsl): dense row-major f32 GEMM, one workgroup per 64x64 output tile,
//! every output element reduced over k by one invocation in increasing order.
//!
//! - llvmpipe's 65,535-iteration loop cap: one dispatch adds at most `K_CHUNK` positions of k;
//!   longer reductions run as several dispatches in k order, each continuing from the partial
//!   sums the previous one stored (same additions, same order: the result does not depend on
//!   the chunking).
//! - Storage-binding limits: every kind processes groups of output rows whose `out` fits one
//!   binding. `NN` / `NT` bind the same rows of `a` (whole k) and `b` whole; `TN` takes those
//!   columns of `a [k, m]` (gathered on the host when `out` is cut) and walks k in slices whose
//!   rows of `a` and `b` fit one binding. A buffer that cannot be cut that way (`b` for NN/NT, or
//!   a single row) is `Error::TooLarge` naming it.

use std::borrow::Cow;

use super::{grid, words_f32, Readback, WgpuBackend, B};
use crate::backend::{host_tensor, Elem, GemmKind, Tensor};
use crate::error::{Error, Result};

const SRC: &str = include_str!("../../../shaders/gemm.wgsl");
/// a, b (read); out (read-write: later k chunks continue from it).
const BINDS: &[B] = &[B::R, B::R, B::W];
/// Output tile edge (64x64 tiles, as in the shader).
const TILE: usize = 64;
/// k positions one dispatch adds: 1,024 tiles of 16, 17 loop trips each, far below 65,535.
const K_CHUNK: usize = 16_384;

/// Mirrors `Params` in shaders/gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    p0: u32,
    p1: u32,
    tiles_n: u32,
    n_tiles: u32,
    first: u32,
}

fn entry(kind: GemmKind) -> &'static str {
    match kind {
        GemmKind::NN => "gemm_fwd_nn",
        GemmKind::NT => "gemm_fwd_nt",
        GemmKind::TN => "gemm_fwd_tn",
    }
}

/// `n` items of `bytes` each fit one binding of `lim` bytes? Else a typed error naming `field`.
pub(crate) fn fits(field: &'static str, n: usize, bytes: usize, lim: u64) -> Result<()> {
    let v = (n as u64).saturating_mul(bytes as u64);
    if v > lim {
        return Err(Error::TooLarge { field, value: v, limit: lim });
    }
    Ok(())
}

/// How many of the rows costing `row_bytes` each fit `lim`, rounded down to a multiple of `align`
/// when that leaves at least one multiple (so tiles / k tiles stay whole), at most `cap`.
fn rows_per(lim: u64, row_bytes: usize, align: usize, cap: usize) -> usize {
    let r = ((lim / row_bytes.max(1) as u64) as usize).clamp(1, cap.max(1));
    if r >= align {
        r / align * align
    } else {
        r
    }
}

/// Encode the k chunks `[p0, p1)` of one bound problem (`m` rows of out) into `enc`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    kind: GemmKind,
    bufs: [&wgpu::Buffer; 3],
    m: usize,
    n: usize,
    k_stride: usize,
    (p0, p1): (usize, usize),
    first: bool,
) -> Result<()> {
    let pipe = be.pipe("gemm", SRC, entry(kind), 0, BINDS)?;
    let tiles_n = n.div_ceil(TILE);
    let n_tiles = m.div_ceil(TILE) * tiles_n;
    let mut p = p0;
    let mut first = first;
    while p < p1 {
        let e = (p + K_CHUNK).min(p1);
        let prm = Params {
            m: m as u32,
            n: n as u32,
            k: k_stride as u32,
            p0: p as u32,
            p1: e as u32,
            tiles_n: tiles_n as u32,
            n_tiles: n_tiles as u32,
            first: first as u32,
        };
        let pu = be.uniform(&prm);
        be.dispatch(enc, &pipe, &pu, &bufs, grid(n_tiles as u64));
        first = false;
        p = e;
    }
    Ok(())
}

pub(crate) fn gemm(be: &WgpuBackend, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
    if m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k == 0 {
        return Ok(vec![0.0; m * n]);
    }
    let lim = be.max_binding();
    match kind {
        GemmKind::NN | GemmKind::NT => {
            fits("gemm b (k * n)", k * n, 4, lim)?;
            fits("gemm a row (k values)", k, 4, lim)?;
            fits("gemm out row (n values)", n, 4, lim)?;
            let rows = rows_per(lim, k.max(n) * 4, TILE, m);
            let mut out = vec![0f32; m * n];
            be.scoped("gemm", || {
                let bb = be.upload("gemm b", b);
                let mut i0 = 0;
                while i0 < m {
                    let i1 = (i0 + rows).min(m);
                    let ab = be.upload("gemm a rows", &a[i0 * k..i1 * k]);
                    let ob = be.output("gemm out rows", (i1 - i0) * n);
                    let mut enc = be.encoder();
                    encode(be, &mut enc, kind, [&ab, &bb, &ob], i1 - i0, n, k, (0, k), true)?;
                    let bytes = be.finish("gemm", enc, &[Readback { buf: &ob, bytes: ((i1 - i0) * n * 4) as u64 }])?;
                    out[i0 * n..i1 * n].copy_from_slice(&words_f32(&bytes[0]));
                    i0 = i1;
                }
                Ok(())
            })?;
            Ok(out)
        }
        GemmKind::TN => {
            fits("gemm out row (n values)", n, 4, lim)?;
            // Groups of output rows i (columns of a [k, m], gathered here when out is cut), each
            // walked in slices of k rows of a and b.
            let rows_m = rows_per(lim, n * 4, TILE, m);
            let mut out = vec![0f32; m * n];
            be.scoped("gemm", || {
                let mut i0 = 0;
                while i0 < m {
                    let i1 = (i0 + rows_m).min(m);
                    let mc = i1 - i0;
                    let cols: Cow<[f32]> =
                        if mc == m { Cow::Borrowed(a) } else { Cow::Owned(a.chunks(m).flat_map(|r| r[i0..i1].iter().copied()).collect()) };
                    let ks = rows_per(lim, mc.max(n) * 4, 16, k);
                    let ob = be.output("gemm out rows", mc * n);
                    let mut enc = be.encoder();
                    let mut p0 = 0;
                    while p0 < k {
                        let p1 = (p0 + ks).min(k);
                        let ab = be.upload("gemm a k-rows", &cols[p0 * mc..p1 * mc]);
                        let bb = be.upload("gemm b k-rows", &b[p0 * n..p1 * n]);
                        encode(be, &mut enc, kind, [&ab, &bb, &ob], mc, n, 0, (0, p1 - p0), p0 == 0)?;
                        p0 = p1;
                    }
                    let bytes = be.finish("gemm", enc, &[Readback { buf: &ob, bytes: (mc * n * 4) as u64 }])?;
                    out[i0 * n..i1 * n].copy_from_slice(&words_f32(&bytes[0]));
                    i0 = i1;
                }
                Ok(())
            })?;
            Ok(out)
        }
    }
}

impl WgpuBackend {
    /// `DeviceOps::gemm_dev` on resident tensors (host form when an operand exceeds a binding).
    pub(crate) fn gemm_dev_enc(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        let lim = self.max_binding();
        if [a.len(), b.len(), m * n].iter().any(|&w| (w * 4) as u64 > lim) {
            return host_tensor::gemm_dev(self, kind, a, b, m, k, n);
        }
        let (ab, bb) = (self.mem(a)?, self.mem(b)?);
        self.scoped("gemm_dev", || {
            // k = 0: the product is zeros (a pooled buffer must be cleared).
            let out = if k == 0 { self.pooled_zeroed("gemm out", m * n) } else { self.pooled_output("gemm out", m * n) };
            if m > 0 && n > 0 && k > 0 {
                let mut enc = self.encoder();
                let k_stride = if kind == GemmKind::TN { 0 } else { k };
                encode(self, &mut enc, kind, [ab, bb, &out], m, n, k_stride, (0, k), true)?;
                self.queue.submit([enc.finish()]);
            }
            Ok(self.wrap("gemm out", m, n, Elem::F32, out))
        })
    }
}
