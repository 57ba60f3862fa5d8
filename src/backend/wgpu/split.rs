//! Tables larger than one storage binding on the online path (`gsu_topk`, `esu`, `online`).
//!
//! The scoring kernels bind each table whole. When P_Q / P_K / P_V / the cross-value table
//! is stored as several row chunks, the rows a call needs are first compacted on the device
//! with the chunked gather (f32, exactly the stored values widened, as the kernels widen them)
//! into a small per-call table; the ids are remapped on the host to rows of it (sorted unique
//! ids, so the mapping is deterministic) and the unchanged kernels run on the compact tables.
//!
//! - GSU: work units are (request, slice of its candidates, segment of its sequence), each
//!   within one binding; units are packed into groups. Every score `g_{b,l}` is computed by the
//!   same code on the same values, and the top-K is exact for the (key, position) order, so
//!   merging the segments' top-K lists on the host gives the unsplit result bit for bit.
//! - ESU: one unit per candidate, its finalists laid out as a pseudo-sequence in rank order
//!   (the kernel then reads the same rows in the same order); units are packed into groups.
//! - online: bias on the device (same kernels as the fused path), then the two above.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use super::{esu, gather, gsu_topk, pack, words_f32, words_u32, Readback, WgpuBackend, WgpuTable};
use crate::backend::{BackendKind, DType, DeviceTable, OnlineBatch, OnlineOutput, OnlineTables, TopK};
use crate::error::{Error, Result};

fn split(be: &WgpuBackend, t: &DeviceTable) -> Result<bool> {
    Ok(be.table(t)?.chunks.len() > 1)
}

/// Whether the online path must compact tables (some table it binds whole is split).
pub(crate) fn needed(be: &WgpuBackend, t: &OnlineTables, esu: bool) -> Result<bool> {
    Ok(split(be, &t.p_q)? || split(be, &t.p_k)? || (esu && (split(be, &t.p_v)? || split(be, &t.cross_value)?)))
}

fn uniq(ids: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = ids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn remap(u: &[u32], id: u32) -> u32 {
    u.binary_search(&id).expect("id in its compact table") as u32
}

/// Encode the gather of rows `ids` (ascending) of `t` into a new single-binding f32 table.
fn compact(be: &WgpuBackend, enc: &mut wgpu::CommandEncoder, t: &DeviceTable, ids: &[u32]) -> Result<DeviceTable> {
    let idb = be.upload("compact ids", ids);
    let out = be.output("compact rows", ids.len() * t.cols);
    if !ids.is_empty() && t.cols > 0 {
        gather::encode_sorted(be, enc, t, &idb, ids, &out)?;
    }
    Ok(DeviceTable {
        name: t.name,
        rows: ids.len(),
        cols: t.cols,
        dtype: DType::F32,
        backend: BackendKind::Wgpu,
        device_id: be.id,
        inner: Arc::new(WgpuTable { chunks: vec![out], rows_per_chunk: ids.len().max(1), f16: false }),
    })
}

fn too_large(field: &'static str, value: u64, limit: u64) -> Error {
    Error::TooLarge { field, value, limit }
}

/// Order-preserving key of a score, as in shaders/gsu_topk.wgsl.
fn key_of(s: f32) -> u32 {
    let mut b = s.to_bits();
    if b & 0x7fff_ffff == 0 {
        b = 0;
    }
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Cut `range` into consecutive pieces of at most `max_len` ids and at most `max_uniq`
/// distinct `id(i)` (when `dedup`); an empty range gives one empty piece.
fn pieces(range: Range<usize>, max_len: usize, max_uniq: usize, dedup: bool, id: impl Fn(usize) -> u32) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    let mut seen = HashSet::new();
    for i in range.clone() {
        let fresh = dedup && !seen.contains(&id(i));
        if i > start && (i - start >= max_len || (fresh && seen.len() >= max_uniq)) {
            out.push(start..i);
            start = i;
            seen.clear();
        }
        if dedup {
            seen.insert(id(i));
        }
    }
    out.push(start..range.end);
    out
}

struct GsuUnit {
    r: usize,
    cands: Range<usize>,
    seq: Range<usize>,
}

pub(crate) fn gsu_topk(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
    let (d, h) = (t.d_model(), t.heads);
    let lim = be.max_binding();
    let row = (d * 4).max(1) as u64;
    let rows_lim = (lim / row) as usize;
    if rows_lim == 0 {
        return Err(too_large("p_k row", row, lim));
    }
    let (cq, ck) = (split(be, &t.p_q)?, split(be, &t.p_k)?);
    let max_c = (lim / (k.max(3) as u64 * 4)) as usize;
    let max_l = (lim / (h.max(1) as u64 * 4)) as usize;
    if max_c == 0 || max_l == 0 {
        return Err(too_large("gsu per-candidate buffers", (k.max(3).max(h) * 4) as u64, lim));
    }
    let mut units = Vec::new();
    for r in 0..batch.n_requests() {
        let cr = batch.cand_range(r);
        if cr.is_empty() {
            continue;
        }
        let segs = pieces(batch.seq_range(r), max_l, rows_lim, ck, |i| batch.items[i]);
        for cs in pieces(cr, max_c, rows_lim, cq, |i| batch.cands[i]) {
            for s in &segs {
                units.push(GsuUnit { r, cands: cs.clone(), seq: s.clone() });
            }
        }
    }
    let costs: Vec<[u64; 6]> = units
        .iter()
        .map(|u| {
            let (nc, nl) = (u.cands.len() as u64, u.seq.len() as u64);
            let uq = if cq { uniq(batch.cands[u.cands.clone()].iter().copied()).len() as u64 * row } else { 0 };
            let uk = if ck { uniq(batch.items[u.seq.clone()].iter().copied()).len() as u64 * row } else { 0 };
            [uq, uk, nl * h as u64 * 4, nl * 4, nc * k as u64 * 4, nc * 12]
        })
        .collect();
    let n_cand = batch.cands.len();
    // Per candidate: (key, position local to its request, score) from every segment.
    let mut parts: Vec<Vec<(u32, u32, f32)>> = vec![Vec::new(); n_cand];
    let mut n_parts = vec![0u32; n_cand];
    let mut count = vec![0u32; n_cand];
    for g in pack(&costs, lim) {
        let us = &units[g];
        let uq = if cq { uniq(us.iter().flat_map(|u| batch.cands[u.cands.clone()].iter().copied())) } else { Vec::new() };
        let uk = if ck { uniq(us.iter().flat_map(|u| batch.items[u.seq.clone()].iter().copied())) } else { Vec::new() };
        let (mut info, mut items, mut bb, mut orig) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for u in us {
            let s0 = items.len() as u32;
            for &it in &batch.items[u.seq.clone()] {
                items.push(if ck { remap(&uk, it) } else { it });
            }
            bb.extend_from_slice(&bias[u.seq.start * h..u.seq.end * h]);
            let local = (u.seq.start - batch.seq_offsets[u.r] as usize) as u32;
            for c in u.cands.clone() {
                let q = batch.cands[c];
                info.extend_from_slice(&[s0, u.seq.len() as u32, if cq { remap(&uq, q) } else { q }]);
                orig.push((c, local));
            }
        }
        let nc = orig.len();
        let bytes = be.scoped("gsu_topk", || {
            let mut enc = be.encoder();
            let mut tt = t.clone();
            if cq {
                tt.p_q = compact(be, &mut enc, &t.p_q, &uq)?;
            }
            if ck {
                tt.p_k = compact(be, &mut enc, &t.p_k, &uk)?;
            }
            let info = be.upload("cand info", &info);
            let items = be.upload("items", &items);
            let bb = be.upload("bias", &bb);
            let o = gsu_topk::encode(be, &mut enc, &tt, &info, &items, &bb, nc, k, None)?;
            let reads = o.readbacks(nc, k);
            be.finish("gsu_topk", enc, &reads)
        })?;
        let nan = words_u32(&bytes[3])[0];
        if nan != u32::MAX {
            return Err(gsu_topk::nan_error(batch, orig[nan as usize].0));
        }
        let (idx, score, cnt) = (words_u32(&bytes[0]), words_f32(&bytes[1]), words_u32(&bytes[2]));
        for (p, &(c, local)) in orig.iter().enumerate() {
            n_parts[c] += 1;
            count[c] += cnt[p];
            for f in 0..cnt[p] as usize {
                let s = score[p * k + f];
                parts[c].push((key_of(s), idx[p * k + f] + local, s));
            }
        }
    }
    let mut res = TopK { k, idx: vec![u32::MAX; n_cand * k], score: vec![f32::NEG_INFINITY; n_cand * k], count: vec![0; n_cand] };
    for r in 0..batch.n_requests() {
        let kk = k.min(batch.seq_range(r).len());
        for c in batch.cand_range(r) {
            let p = &mut parts[c];
            if n_parts[c] > 1 {
                // Descending key, ties to the larger position: the kernels' order.
                p.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
            }
            debug_assert!(n_parts[c] != 1 || count[c] as usize == kk);
            for (f, &(_, pos, s)) in p.iter().take(kk).enumerate() {
                res.idx[c * k + f] = pos;
                res.score[c * k + f] = s;
            }
            res.count[c] = kk.min(p.len()) as u32;
        }
    }
    Ok(res)
}

pub(crate) fn esu(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
    let (d, h, j, k) = (t.d_model(), t.heads, t.n_cross(), topk.k);
    let lim = be.max_binding();
    let row = (d * 4).max(1) as u64;
    let (cq, cs) = (split(be, &t.p_q)?, split(be, &t.p_k)? || split(be, &t.p_v)?);
    let cv = split(be, &t.cross_value)?;
    let n_cand = batch.cands.len();
    // Finalist behaviours (global positions) of candidate c.
    let mut req_of = vec![0usize; n_cand];
    for r in 0..batch.n_requests() {
        for c in batch.cand_range(r) {
            req_of[c] = r;
        }
    }
    let fin = |c: usize| -> Vec<usize> {
        let s0 = batch.seq_offsets[req_of[c]] as usize;
        (0..topk.count[c] as usize).map(|f| s0 + topk.idx[c * k + f] as usize).collect()
    };
    let mut costs = Vec::with_capacity(n_cand);
    for c in 0..n_cand {
        let n = topk.count[c] as u64;
        let c_ = [
            if cq { row } else { 0 },
            if cs { n * row } else { 0 },
            if cv { (n * j as u64).min(t.cross_value.rows as u64) * row } else { 0 },
            n * h as u64 * 4,
            n * j as u64 * 4,
            n * 4,
            k as u64 * 4,
            (k * h + d) as u64 * 4,
            d as u64 * 4,
            12,
        ];
        if let Some(&v) = c_.iter().find(|&&v| v > lim) {
            return Err(too_large("esu rows of one candidate", v, lim));
        }
        costs.push(c_);
    }
    let mut res = vec![0f32; n_cand * d];
    for g in pack(&costs, lim) {
        let fins: Vec<Vec<usize>> = g.clone().map(fin).collect();
        let uq = if cq { uniq(g.clone().map(|c| batch.cands[c])) } else { Vec::new() };
        let us = if cs { uniq(fins.iter().flatten().map(|&l| batch.items[l])) } else { Vec::new() };
        let uc = if cv { uniq(fins.iter().flatten().flat_map(|&l| batch.cross[l * j..(l + 1) * j].iter().copied())) } else { Vec::new() };
        let (mut info, mut items, mut cross, mut bb, mut ti, mut tc) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (c, fl) in g.clone().zip(&fins) {
            let q = batch.cands[c];
            info.extend_from_slice(&[items.len() as u32, fl.len() as u32, if cq { remap(&uq, q) } else { q }]);
            for (f, &l) in fl.iter().enumerate() {
                items.push(if cs { remap(&us, batch.items[l]) } else { batch.items[l] });
                for &x in &batch.cross[l * j..(l + 1) * j] {
                    cross.push(if cv { remap(&uc, x) } else { x });
                }
                bb.extend_from_slice(&bias[l * h..(l + 1) * h]);
                ti.push(f as u32);
            }
            ti.resize(ti.len() + (k - fl.len()), u32::MAX);
            tc.push(fl.len() as u32);
        }
        let nc = g.len();
        let bytes = be.scoped("esu", || {
            let mut enc = be.encoder();
            let mut tt = t.clone();
            if cq {
                tt.p_q = compact(be, &mut enc, &t.p_q, &uq)?;
            }
            if cs {
                tt.p_k = compact(be, &mut enc, &t.p_k, &us)?;
                tt.p_v = compact(be, &mut enc, &t.p_v, &us)?;
            }
            if cv {
                tt.cross_value = compact(be, &mut enc, &t.cross_value, &uc)?;
            }
            let info = be.upload("cand info", &info);
            let items = be.upload("items", &items);
            let cross = be.upload("cross", &cross);
            let bb = be.upload("bias", &bb);
            let ti = be.upload("topk idx", &ti);
            let tc = be.upload("topk count", &tc);
            let s = esu::Seq { info: &info, items: &items, cross: &cross, bias: &bb };
            let out = esu::encode(be, &mut enc, &tt, &s, &ti, &tc, nc, k)?;
            be.finish("esu", enc, &[Readback { buf: &out, bytes: (nc * d * 4) as u64 }])
        })?;
        res[g.start * d..g.end * d].copy_from_slice(&words_f32(&bytes[0]));
    }
    Ok(res)
}

pub(crate) fn online(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
    let cb = super::cross_bias::gather_sum(be, &t.cross_bias, batch.cross, t.n_cross())?;
    let bias = super::log_size_bias::log_size_bias(be, &cb, batch.sizes, t.heads)?;
    let topk = gsu_topk(be, t, batch, &bias, k)?;
    let out = esu(be, t, batch, &bias, &topk)?;
    Ok(OnlineOutput { topk, out })
}
