//! Host side of `kernels/gsu_topk.cu`: the work plan (v1 score-row offsets, v2/v3 tiles × chunks),
//! the launches, and the standalone `gsu_topk` op.

use cudarc::driver::LaunchConfig;

use super::buffers::{Buf, View};
use super::launch::KernelParam;
use super::{device_err, push_u64, u32_of, CudaBackend, GsuVersion, Packer};
use crate::backend::{OnlineBatch, OnlineTables, TopK};
use crate::error::{Error, Result};

/// Candidates per v2 tile and behaviours per sub-tile (`V2_TB`, `V2_LT` in the kernel).
pub(crate) const V2_TB: usize = 64;
pub(crate) const V2_LT: usize = 64;
const V2_KS: usize = V2_LT + 4;
const V2_SS: usize = V2_LT + 4;
/// u32 words per v2 work item (`WORK_WORDS` in the kernel).
const WORK_WORDS: usize = 10;
/// Shortest sequence chunk a v2 block takes (more chunks = more partial lists to merge).
const MIN_CHUNK: usize = 512;
/// Blocks per SM the v2/v3 planner aims for.
const V2_BLOCKS_PER_SM: usize = 2;
/// Candidates per v3 tile, behaviours per v3 sub-tile, score-tile stride (`V3_TB`, `V3_LT`,
/// `V3_SS` in the kernel).
pub(crate) const V3_TB: usize = 32;
const V3_LT: usize = 64;
const V3_SS: usize = V3_LT + 4;

/// Mirrors `GsuScoreParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsuScoreParams {
    pub n_cand: u32,
    pub dim: u32,
    pub heads: u32,
    pub q_f16: u32,
    pub k_f16: u32,
    pub scale: f32,
}
// SAFETY: `#[repr(C)]` of 4-byte fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GsuScoreParams {}

/// Mirrors `GsuSelectParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsuSelectParams {
    pub n_cand: u32,
    pub k: u32,
}
// SAFETY: as above.
unsafe impl KernelParam for GsuSelectParams {}

/// Mirrors `GsuV2Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsuV2Params {
    pub n_work: u32,
    pub dim: u32,
    pub heads: u32,
    pub q_f16: u32,
    pub k: u32,
    pub scale: f32,
}
// SAFETY: as above.
unsafe impl KernelParam for GsuV2Params {}

/// Mirrors `GsuV3Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsuV3Params {
    pub n_work: u32,
    pub dim: u32,
    pub dpad: u32,
    pub heads: u32,
    pub q_f16: u32,
    pub k: u32,
    pub kp: u32,
    pub scale: f32,
}
// SAFETY: as above.
unsafe impl KernelParam for GsuV3Params {}

/// Dynamic shared memory of `gsu_topk_fwd_v2_*` (layout in the kernel).
pub(crate) fn v2_smem_bytes(dim: usize, k: usize) -> usize {
    8 * V2_TB * k + 4 * dim * V2_TB + 4 * dim * V2_KS + 4 * V2_TB * V2_SS + 4 * V2_LT + 4 * V2_TB
}

/// v3's list slots per candidate: the power of two >= K, at least 32 (one per lane), <= 256.
pub(crate) fn v3_kp(k: usize) -> usize {
    k.next_power_of_two().max(32)
}

/// D rounded up to the WMMA k-step (16).
pub(crate) fn v3_dpad(dim: usize) -> usize {
    dim.div_ceil(16) * 16
}

/// Dynamic shared memory of `gsu_topk_fwd_v3_*` (layout in the kernel): lists, pending keys,
/// the f16 query and key tiles (row stride dpad + 8 halves), the f32 score tile, bias sums,
/// pending counts, and 32 bytes to align the carve-up. D = 128: 74.4 KiB at K <= 128, 106.4 KiB
/// at K = 256 (two blocks fit the 228 KiB of an sm_90 SM).
pub(crate) fn v3_smem_bytes(dim: usize, k: usize) -> usize {
    let ds = v3_dpad(dim) + 8;
    32 + 8 * V3_TB * v3_kp(k) + 8 * V3_TB * 32 + 2 * V3_TB * ds + 2 * V3_LT * ds + 4 * V3_TB * V3_SS + 4 * V3_LT + 4 * V3_TB
}

/// Candidate → request, `[ΣB]`.
pub(crate) fn cand_req(batch: &OnlineBatch) -> Vec<u32> {
    let mut v = vec![0u32; batch.cands.len()];
    for r in 0..batch.n_requests() {
        for c in batch.cand_range(r) {
            v[c] = r as u32;
        }
    }
    v
}

/// How the GSU runs for one batch. Depends only on shapes; the result does not depend on the
/// plan (top-K of distinct keys is unique), so a request's output is the same in any batch.
pub(crate) struct GsuPlan {
    pub version: GsuVersion,
    pub k: usize,
    /// v1: per candidate (lo, hi) of its score-row offset; total floats; longest sequence.
    pub score_off: Vec<u32>,
    pub score_len: usize,
    pub max_l: usize,
    /// v2: work items, per-request chunk counts and partial offsets (lo, hi), partial keys.
    pub work: Vec<u32>,
    pub n_work: usize,
    pub req_nch: Vec<u32>,
    pub req_part: Vec<u32>,
    pub partial_len: usize,
    pub smem: usize,
}

pub(crate) fn plan(be: &CudaBackend, batch: &OnlineBatch, dim: usize, k: usize) -> Result<GsuPlan> {
    // The asked version where its shared memory fits the device, else the next older one.
    let optin = be.smem_optin() as usize;
    let (v2s, v3s) = (v2_smem_bytes(dim, k), v3_smem_bytes(dim, k));
    let (version, smem) = match be.gsu_version() {
        GsuVersion::V3 if v3s <= optin => (GsuVersion::V3, v3s),
        GsuVersion::V3 | GsuVersion::V2 if v2s <= optin => (GsuVersion::V2, v2s),
        _ => (GsuVersion::V1, 0),
    };
    let n_req = batch.n_requests();
    let mut p = GsuPlan {
        version,
        k,
        score_off: Vec::new(),
        score_len: 0,
        max_l: 0,
        work: Vec::new(),
        n_work: 0,
        req_nch: vec![0; n_req],
        req_part: Vec::with_capacity(2 * n_req),
        partial_len: 0,
        smem,
    };
    match version {
        GsuVersion::V1 => {
            let mut acc = 0usize;
            for r in 0..n_req {
                let l = batch.seq_range(r).len();
                p.max_l = p.max_l.max(l);
                for _ in batch.cand_range(r) {
                    push_u64(&mut p.score_off, acc as u64);
                    acc += l;
                }
            }
            p.score_len = acc;
        }
        GsuVersion::V2 | GsuVersion::V3 => {
            let tb = if version == GsuVersion::V3 { V3_TB } else { V2_TB };
            let tiles: usize = (0..n_req).map(|r| batch.cand_range(r).len().div_ceil(tb)).sum();
            let target = V2_BLOCKS_PER_SM * be.sm_count().max(1) as usize;
            let nch_base = target.div_ceil(tiles.max(1)).max(1);
            let mut part = 0usize;
            for r in 0..n_req {
                let seq = batch.seq_range(r);
                let cands = batch.cand_range(r);
                let (l, b) = (seq.len(), cands.len());
                let nch0 = nch_base.min(l.div_ceil(MIN_CHUNK)).max(1);
                let lt = if version == GsuVersion::V3 { V3_LT } else { V2_LT };
                let chunk = l.div_ceil(nch0).div_ceil(lt) * lt;
                let nch = l.div_ceil(chunk);
                p.req_nch[r] = nch as u32;
                push_u64(&mut p.req_part, part as u64);
                for tile in 0..b.div_ceil(tb) {
                    let tile_part = part + tile * tb * nch * k;
                    for ch in 0..nch {
                        let (pos0, pos1) = (ch * chunk, ((ch + 1) * chunk).min(l));
                        p.work.extend_from_slice(&[
                            seq.start as u32,
                            pos0 as u32,
                            pos1 as u32,
                            (cands.start + tile * tb) as u32,
                            (b - tile * tb).min(tb) as u32,
                            ch as u32,
                            nch as u32,
                        ]);
                        push_u64(&mut p.work, tile_part as u64);
                        p.work.push(0);
                        p.n_work += 1;
                    }
                }
                part += b * nch * k;
            }
            debug_assert_eq!(p.work.len(), p.n_work * WORK_WORDS);
            p.partial_len = part;
        }
    }
    Ok(p)
}

/// Where the batch arrays sit in the packed upload.
pub(crate) struct BatchRanges {
    pub seq_off: std::ops::Range<usize>,
    pub items: std::ops::Range<usize>,
    pub cross: std::ops::Range<usize>,
    pub sizes: std::ops::Range<usize>,
    pub cand_off: std::ops::Range<usize>,
    pub cands: std::ops::Range<usize>,
    pub cand_req: std::ops::Range<usize>,
}

pub(crate) fn pack_batch(pk: &mut Packer, batch: &OnlineBatch, cand_req: &[u32]) -> BatchRanges {
    BatchRanges {
        seq_off: pk.push(batch.seq_offsets),
        items: pk.push(batch.items),
        cross: pk.push(batch.cross),
        sizes: pk.push_f32(batch.sizes),
        cand_off: pk.push(batch.cand_offsets),
        cands: pk.push(batch.cands),
        cand_req: pk.push(cand_req),
    }
}

pub(crate) struct PlanRanges {
    pub score_off: std::ops::Range<usize>,
    pub work: std::ops::Range<usize>,
    pub req_nch: std::ops::Range<usize>,
    pub req_part: std::ops::Range<usize>,
}

pub(crate) fn pack_plan(pk: &mut Packer, p: &GsuPlan) -> PlanRanges {
    PlanRanges { score_off: pk.push(&p.score_off), work: pk.push(&p.work), req_nch: pk.push(&p.req_nch), req_part: pk.push(&p.req_part) }
}

/// A view of `len` words at `r.start` (at least one word, so empty sections still give a valid
/// pointer; kernels never read an empty section).
pub(crate) fn view<'a>(buf: &'a Buf<u32>, r: &std::ops::Range<usize>) -> View<'a, u32> {
    let end = if r.end > r.start { r.end } else { (r.start + 1).min(buf.len()) };
    let start = r.start.min(end.saturating_sub(1));
    buf.slice(start..end)
}

/// Outputs of the GSU, as views into caller buffers: idx [ΣB*K], score [ΣB*K] (f32 bits),
/// count [ΣB], flag [1] (set to 1 by a NaN score; zeroed by the caller).
pub(crate) struct GsuOut<'a> {
    pub idx: View<'a, u32>,
    pub score: View<'a, u32>,
    pub count: View<'a, u32>,
    pub flag: View<'a, u32>,
}

/// Run the planned GSU. `buf` holds the packed batch and plan; `bias` is [ΣL, h] f32.
pub(crate) fn launch(
    be: &CudaBackend,
    t: &OnlineTables,
    p: &GsuPlan,
    buf: &Buf<u32>,
    br: &BatchRanges,
    pr: &PlanRanges,
    bias: &View<u32>,
    out: &GsuOut,
) -> Result<()> {
    let n_cand = br.cands.len();
    if n_cand == 0 {
        return Ok(());
    }
    let q = be.table_ptr(&t.p_q)?;
    let kt = be.table_ptr(&t.p_k)?;
    let dim = t.d_model();
    let scale = (1.0 / (t.d_head() as f64).sqrt()) as f32;
    let n_cand32 = u32_of("candidates", n_cand)?;
    let (seq_off, items, cand_off, cand_req, cands) =
        (view(buf, &br.seq_off), view(buf, &br.items), view(buf, &br.cand_off), view(buf, &br.cand_req), view(buf, &br.cands));
    let sel = GsuSelectParams { n_cand: n_cand32, k: u32_of("top_k", p.k)? };
    match p.version {
        GsuVersion::V1 => {
            let scores = be.zeros::<f32>("gsu v1: alloc scores", p.score_len)?;
            let score_off = view(buf, &pr.score_off);
            let sp = GsuScoreParams {
                n_cand: n_cand32,
                dim: u32_of("D", dim)?,
                heads: u32_of("heads", t.heads)?,
                q_f16: q.f16,
                k_f16: kt.f16,
                scale,
            };
            let gy = p.max_l.div_ceil(256).clamp(1, 65535) as u32;
            let cfg = LaunchConfig { grid_dim: (n_cand32, gy, 1), block_dim: (256, 1, 1), shared_mem_bytes: u32_of("D", 4 * dim)? };
            be.allow_smem("gsu_topk_fwd_v1_score", cfg.shared_mem_bytes)?;
            let mut b = be.launcher("gsu_topk_fwd_v1_score");
            b.arg(&sp)
                .arg(&q.ptr)
                .arg(&kt.ptr)
                .arg(&seq_off)
                .arg(&items)
                .arg(&cand_req)
                .arg(&cands)
                .arg(bias)
                .arg(&score_off)
                .arg(&scores)
                .arg(&out.flag);
            // SAFETY: kernel (GsuScoreParams, P_Q, P_K, seq_off [R+1], items [ΣL], cand_req [ΣB],
            // cands [ΣB], bias [ΣL*h], score_off [ΣB] u64, scores [Σ L_r(c)], flag [1]); ids and
            // offsets checked by check::online; score_off built from the same offsets, so every
            // row write stays inside `scores`; dyn smem = 4*D for q.
            unsafe { b.launch(cfg) }.map_err(device_err("gsu v1 score launch"))?;
            let cfg = LaunchConfig { grid_dim: (n_cand32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let mut b = be.launcher("gsu_topk_fwd_v1_select");
            b.arg(&sel).arg(&seq_off).arg(&cand_req).arg(&score_off).arg(&scores).arg(&out.idx).arg(&out.score).arg(&out.count);
            // SAFETY: kernel (GsuSelectParams, seq_off, cand_req, score_off, scores, idx [ΣB*K],
            // score [ΣB*K], count [ΣB]); K ≤ 256 = blockDim (check::online); writes rows c only.
            unsafe { b.launch(cfg) }.map_err(device_err("gsu v1 select launch"))?;
        }
        GsuVersion::V2 | GsuVersion::V3 => {
            if p.n_work == 0 {
                return Err(Error::Device { backend: "cuda", op: "gsu v2/v3 plan", message: "no work items for a non-empty batch".into() });
            }
            let partial = be.zeros::<u64>("gsu v2/v3: alloc partial", p.partial_len)?;
            let (work, req_nch, req_part) = (view(buf, &pr.work), view(buf, &pr.req_nch), view(buf, &pr.req_part));
            let n_work = u32_of("gsu work items", p.n_work)?;
            let cfg = LaunchConfig {
                grid_dim: (n_work, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: u32_of("gsu v2/v3 shared memory", p.smem)?,
            };
            if p.version == GsuVersion::V3 {
                let name = if kt.f16 == 1 { "gsu_topk_fwd_v3_f16" } else { "gsu_topk_fwd_v3_f32" };
                let vp = GsuV3Params {
                    n_work,
                    dim: u32_of("D", dim)?,
                    dpad: u32_of("D", v3_dpad(dim))?,
                    heads: u32_of("heads", t.heads)?,
                    q_f16: q.f16,
                    k: u32_of("top_k", p.k)?,
                    kp: u32_of("top_k", v3_kp(p.k))?,
                    scale,
                };
                be.allow_smem(name, cfg.shared_mem_bytes)?;
                let mut b = be.launcher(name);
                b.arg(&vp).arg(&q.ptr).arg(&kt.ptr).arg(&items).arg(&cands).arg(bias).arg(&work).arg(&partial).arg(&out.flag);
                // SAFETY: kernel (GsuV3Params, P_Q, P_K (dtype = name), items, cands, bias [ΣL*h],
                // work [n_work*10], partial [partial_len] u64, flag); work items come from `plan`
                // over checked offsets: chunks are non-empty and inside their request, tiles hold
                // ≤ 32 candidates of one request, partial slots are disjoint and < partial_len;
                // K ≤ 256 so kp ≤ 256; dyn smem = v3_smem_bytes(D, K) ≤ the device's opt-in limit
                // (else v2 or v1 was planned).
                unsafe { b.launch(cfg) }.map_err(device_err("gsu v3 launch"))?;
            } else {
                let name = if kt.f16 == 1 { "gsu_topk_fwd_v2_f16" } else { "gsu_topk_fwd_v2_f32" };
                let vp = GsuV2Params {
                    n_work,
                    dim: u32_of("D", dim)?,
                    heads: u32_of("heads", t.heads)?,
                    q_f16: q.f16,
                    k: u32_of("top_k", p.k)?,
                    scale,
                };
                be.allow_smem(name, cfg.shared_mem_bytes)?;
                let mut b = be.launcher(name);
                b.arg(&vp).arg(&q.ptr).arg(&kt.ptr).arg(&items).arg(&cands).arg(bias).arg(&work).arg(&partial).arg(&out.flag);
                // SAFETY: kernel (GsuV2Params, P_Q, P_K (dtype = name), items, cands, bias [ΣL*h],
                // work [n_work*10], partial [partial_len] u64, flag); work items come from `plan`
                // over checked offsets: chunks are non-empty and inside their request, tiles hold
                // ≤ 64 candidates of one request, partial slots are disjoint and < partial_len;
                // dyn smem = v2_smem_bytes(D, K) ≤ the device's opt-in limit (else v1 was planned).
                unsafe { b.launch(cfg) }.map_err(device_err("gsu v2 launch"))?;
            }
            let cfg = LaunchConfig { grid_dim: (n_cand32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let mut b = be.launcher("gsu_topk_fwd_v2_merge");
            b.arg(&sel)
                .arg(&seq_off)
                .arg(&cand_off)
                .arg(&cand_req)
                .arg(&req_nch)
                .arg(&req_part)
                .arg(&partial)
                .arg(&out.idx)
                .arg(&out.score)
                .arg(&out.count);
            // SAFETY: kernel (GsuSelectParams, seq_off, cand_off, cand_req, req_nch [R], req_part
            // [2R], partial, idx, score, count); each candidate reads its nch*K partial keys at
            // the offsets `plan` assigned, writes its own output row.
            unsafe { b.launch(cfg) }.map_err(device_err("gsu v2 merge launch"))?;
        }
    }
    Ok(())
}

/// Turn downloaded words into a `TopK`; a raised NaN flag is an input error, as on the CPU.
/// Bit 2 (v3 only): an f32 P_Q/P_K value beyond the f16 range v3 computes in (|x| ≥ 65520).
pub(crate) fn finish_topk(k: usize, idx: Vec<u32>, score_bits: &[u32], count: Vec<u32>, flag: u32) -> Result<TopK> {
    if flag & 2 != 0 {
        return Err(Error::NonFinite { field: "p_q/p_k row staged as f16 by GSU v3 (|value| >= 65520)", index: 0, value: f32::INFINITY });
    }
    if flag != 0 {
        return Err(Error::NonFinite { field: "gsu score (candidate, position)", index: 0, value: f32::NAN });
    }
    Ok(TopK { k, idx, score: score_bits.iter().map(|&b| f32::from_bits(b)).collect(), count })
}

pub(crate) fn gsu_topk(be: &CudaBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
    let n_cand = batch.cands.len();
    if n_cand == 0 {
        return Ok(TopK { k, idx: Vec::new(), score: Vec::new(), count: Vec::new() });
    }
    let creq = cand_req(batch);
    let p = plan(be, batch, t.d_model(), k)?;
    let mut pk = Packer::default();
    let br = pack_batch(&mut pk, batch, &creq);
    let pr = pack_plan(&mut pk, &p);
    let rb = pk.push_f32(bias);
    let buf = be.htod("gsu: upload", &pk.words)?;
    // One output buffer: idx | score | count | flag.
    let nk = n_cand * k;
    let outbuf = be.output_with_flags("gsu: alloc out", 2 * nk + n_cand, 1)?;
    let out = GsuOut {
        idx: outbuf.slice(0..nk),
        score: outbuf.slice(nk..2 * nk),
        count: outbuf.slice(2 * nk..2 * nk + n_cand),
        flag: outbuf.slice(2 * nk + n_cand..2 * nk + n_cand + 1),
    };
    launch(be, t, &p, &buf, &br, &pr, &view(&buf, &rb), &out)?;
    let words = be.dtoh("gsu: download", &outbuf, 2 * nk + n_cand + 1)?;
    finish_topk(k, words[0..nk].to_vec(), &words[nk..2 * nk], words[2 * nk..2 * nk + n_cand].to_vec(), words[2 * nk + n_cand])
}
