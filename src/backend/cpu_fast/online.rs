//! The fast CPU online path (SPEC §3): GSU and, when asked, ESU per request, parallel over
//! requests, candidate tiles and (for few candidates over a long sequence) chunks of the
//! sequence whose partial top-Ks are merged afterwards.
//!
//! A request whose sequence is no longer than `B·K` (every behaviour is likely a finalist of
//! some candidate) gathers its key and value rows once into shared buffers that both stages
//! read; a longer one gathers keys tile by tile in the GSU and only the finalists' rows in ESU.

use rayon::prelude::*;

use crate::backend::{HostTable, OnlineBatch, TopK};
use crate::error::{Error, Result};

use super::esu::{self, EsuTabs, Rows};
use super::gsu_topk::{bias_term, cap, score_tile, Sel, BT, LT};
use super::scratch::{row_f32, sized, with_scratch, Pool};

/// Buffers shared across calls (no allocation per call once warm).
pub(crate) struct Pools {
    pub f32s: Pool<f32>,
    pub pairs: Pool<(u32, f32)>,
}

/// What one call runs on.
pub(crate) struct Ctx<'a> {
    pub p_q: &'a HostTable,
    pub esu: EsuTabs<'a>,
    pub batch: &'a OnlineBatch<'a>,
    pub bias: &'a [f32],
    pub k: usize,
    pub with_esu: bool,
}

/// One request's slice of the outputs.
struct Out<'o> {
    idx: &'o mut [u32],
    score: &'o mut [f32],
    count: &'o mut [u32],
    out: &'o mut [f32],
}

/// GSU top-K for every candidate, and ESU's `[ΣB, D]` output when `with_esu`.
pub(crate) fn run(pools: &Pools, x: &Ctx) -> Result<(TopK, Vec<f32>)> {
    let (b, k) = (x.batch, x.k);
    let d = x.esu.p_k.cols;
    let n_cand = b.cands.len();
    let mut idx = vec![u32::MAX; n_cand * k];
    let mut score = vec![f32::NEG_INFINITY; n_cand * k];
    let mut count = vec![0u32; n_cand];
    let mut out = vec![0f32; if x.with_esu { n_cand * d } else { 0 }];
    let od = if x.with_esu { d } else { 0 };
    let mut parts = Vec::with_capacity(b.n_requests());
    {
        let (mut ri, mut rs, mut rc, mut ro) = (&mut idx[..], &mut score[..], &mut count[..], &mut out[..]);
        for r in 0..b.n_requests() {
            let nb = b.cand_range(r).len();
            let (i0, i1) = std::mem::take(&mut ri).split_at_mut(nb * k);
            let (s0, s1) = std::mem::take(&mut rs).split_at_mut(nb * k);
            let (c0, c1) = std::mem::take(&mut rc).split_at_mut(nb);
            let (o0, o1) = std::mem::take(&mut ro).split_at_mut(nb * od);
            (ri, rs, rc, ro) = (i1, s1, c1, o1);
            if nb > 0 {
                parts.push((r, Out { idx: i0, score: s0, count: c0, out: o0 }));
            }
        }
    }
    parts.into_par_iter().try_for_each(|(r, o)| request(pools, x, r, o))?;
    Ok((TopK { k, idx, score, count }, out))
}

fn request(pools: &Pools, x: &Ctx, r: usize, o: Out) -> Result<()> {
    let b = x.batch;
    let seq = b.seq_range(r);
    let cands = b.cand_range(r);
    let (l, nb, d) = (seq.len(), cands.len(), x.esu.p_k.cols);
    let shared = l <= nb * x.k;
    let mut keys = pools.f32s.take(if shared { l * d } else { 0 });
    let mut vals = pools.f32s.take(if shared && x.with_esu { l * d } else { 0 });
    if shared {
        let (seq0, dm) = (seq.start, d.max(1));
        keys.par_chunks_mut(dm * 64).enumerate().for_each(|(ch, kc)| {
            for (i, kr) in kc.chunks_exact_mut(dm).enumerate() {
                row_f32(x.esu.p_k, b.items[seq0 + ch * 64 + i] as usize, kr);
            }
        });
        vals.par_chunks_mut(dm * 64).enumerate().for_each(|(ch, vc)| {
            with_scratch(|s| {
                let tmp = sized(&mut s.pooled, dm);
                for (i, vr) in vc.chunks_exact_mut(dm).enumerate() {
                    esu::value_row(&x.esu, b, seq0 + ch * 64 + i, vr, tmp);
                }
            })
        });
    }
    let rows = if shared { Rows::Shared { keys: &keys, vals: &vals } } else { Rows::Gather };
    let tiles = nb.div_ceil(BT);
    let threads = rayon::current_num_threads();
    let chunks = if tiles >= threads { 1 } else { (2 * threads).div_ceil(tiles).min(l.div_ceil(2048)).max(1) };
    let res = if chunks == 1 { tiled(x, r, rows, o) } else { split(pools, x, r, rows, chunks, o) };
    pools.f32s.give(keys);
    pools.f32s.give(vals);
    res
}

fn nan_error(c: usize, l: usize, pos: u32) -> Error {
    Error::NonFinite { field: "gsu score (candidate, position)", index: c * l + pos as usize, value: f32::NAN }
}

/// Candidate rows `c0..c0+m` of `p_q` into `q [m, D]`.
fn gather_q(x: &Ctx, c0: usize, m: usize, d: usize, q: &mut [f32]) {
    for i in 0..m {
        row_f32(x.p_q, x.batch.cands[c0 + i] as usize, &mut q[i * d..(i + 1) * d]);
    }
}

/// Score positions `p0..p1` for the `m` candidates whose queries are in `s.q`, into `sels`.
fn score_range(x: &Ctx, r: usize, rows: Rows, p0: usize, p1: usize, m: usize, sels: &mut [Sel], s: &mut super::scratch::Scratch) {
    let (b, d, h, k) = (x.batch, x.esu.p_k.cols, x.esu.heads, x.k);
    let seq0 = b.seq_offsets[r] as usize;
    let alpha = 1.0 / (h as f32 * ((d / h) as f32).sqrt());
    let c = sized(&mut s.alpha, LT);
    let scores = sized(&mut s.scores, m * LT);
    let selbuf = sized(&mut s.selk, m * cap(k));
    let mut p = p0;
    while p < p1 {
        let n = LT.min(p1 - p);
        bias_term(&x.bias[(seq0 + p) * h..(seq0 + p + n) * h], h, &mut c[..n]);
        let kt: &[f32] = match rows {
            Rows::Shared { keys, .. } => &keys[p * d..(p + n) * d],
            Rows::Gather => {
                let kb = sized(&mut s.keys, n * d);
                for j in 0..n {
                    row_f32(x.esu.p_k, b.items[seq0 + p + j] as usize, &mut kb[j * d..(j + 1) * d]);
                }
                &s.keys[..n * d]
            }
        };
        score_tile(&s.q[..m * d], kt, c, m, n, d, alpha, scores);
        for i in 0..m {
            sels[i].push_row(&mut selbuf[i * cap(k)..(i + 1) * cap(k)], k, p as u32, &scores[i * n..(i + 1) * n]);
        }
        p += n;
    }
}

/// One pass over the sequence per tile of candidates; each tile finishes its top-Ks and, with
/// ESU, its outputs.
fn tiled(x: &Ctx, r: usize, rows: Rows, o: Out) -> Result<()> {
    let (b, k, d) = (x.batch, x.k, x.esu.p_k.cols);
    let (seq, cands) = (b.seq_range(r), b.cand_range(r));
    let l = seq.len();
    let od = if x.with_esu { d } else { 0 };
    let mut items = Vec::with_capacity(cands.len().div_ceil(BT));
    let (mut ri, mut rs, mut rc, mut ro) = (o.idx, o.score, o.count, o.out);
    let mut c0 = cands.start;
    while c0 < cands.end {
        let m = BT.min(cands.end - c0);
        let (i0, i1) = std::mem::take(&mut ri).split_at_mut(m * k);
        let (s0, s1) = std::mem::take(&mut rs).split_at_mut(m * k);
        let (n0, n1) = std::mem::take(&mut rc).split_at_mut(m);
        let (o0, o1) = std::mem::take(&mut ro).split_at_mut(m * od);
        (ri, rs, rc, ro) = (i1, s1, n1, o1);
        items.push((c0, m, Out { idx: i0, score: s0, count: n0, out: o0 }));
        c0 += m;
    }
    items.into_par_iter().try_for_each(|(c0, m, o)| {
        with_scratch(|s| {
            gather_q(x, c0, m, d, sized(&mut s.q, m * d));
            let mut sels = [Sel::EMPTY; BT];
            score_range(x, r, rows, 0, l, m, &mut sels, s);
            let super::scratch::Scratch { q, keys, sel, selk, vals, alpha, pooled, .. } = s;
            let pooled = sized(pooled, m * od);
            for i in 0..m {
                let fin = sels[i].finish(&mut selk[i * cap(k)..(i + 1) * cap(k)], k, sized(sel, k));
                if let Some(pos) = sels[i].nan() {
                    return Err(nan_error(c0 + i, l, pos));
                }
                o.count[i] = fin.len() as u32;
                for (j, &(p, sc)) in fin.iter().enumerate() {
                    o.idx[i * k + j] = p;
                    o.score[i * k + j] = sc;
                }
                if x.with_esu {
                    let qi = &q[i * d..(i + 1) * d];
                    let sc = esu::Bufs { keys: &mut *keys, vals: &mut *vals, alpha: &mut *alpha };
                    esu::pool_one(&x.esu, b, x.bias, seq.start, qi, fin, rows, sc, &mut pooled[i * d..(i + 1) * d]);
                }
            }
            if x.with_esu {
                esu::project(x.esu.w_o, pooled, m, d, o.out);
            }
            Ok(())
        })
    })
}

/// Few candidates, long sequence: `chunks` pieces of the sequence per tile run in parallel,
/// each keeping its own top-K; the pieces are merged per candidate, then ESU runs.
fn split(pools: &Pools, x: &Ctx, r: usize, rows: Rows, chunks: usize, o: Out) -> Result<()> {
    let (b, k, d) = (x.batch, x.k, x.esu.p_k.cols);
    let (seq, cands) = (b.seq_range(r), b.cand_range(r));
    let (l, nb) = (seq.len(), cands.len());
    let step = l.div_ceil(chunks).div_ceil(LT) * LT;
    let mut part = pools.pairs.take(chunks * nb * k);
    let mut items = Vec::with_capacity(chunks * nb.div_ceil(BT));
    for (cj, pc) in part.chunks_mut(nb * k).enumerate() {
        for (ti, pt) in pc.chunks_mut(BT * k).enumerate() {
            items.push((cj, ti, pt));
        }
    }
    let res = items.into_par_iter().try_for_each(|(cj, ti, pt)| {
        let (p0, p1) = ((cj * step).min(l), ((cj + 1) * step).min(l));
        let c0 = cands.start + ti * BT;
        let m = pt.len() / k;
        with_scratch(|s| {
            gather_q(x, c0, m, d, sized(&mut s.q, m * d));
            let mut sels = [Sel::EMPTY; BT];
            score_range(x, r, rows, p0, p1, m, &mut sels, s);
            let super::scratch::Scratch { sel, selk, .. } = s;
            for i in 0..m {
                let fin = sels[i].finish(&mut selk[i * cap(k)..(i + 1) * cap(k)], k, sized(sel, k));
                if let Some(pos) = sels[i].nan() {
                    return Err(nan_error(c0 + i, l, pos));
                }
                let dst = &mut pt[i * k..(i + 1) * k];
                dst.fill((u32::MAX, f32::NEG_INFINITY));
                dst[..fin.len()].copy_from_slice(fin);
            }
            Ok(())
        })
    });
    if res.is_ok() {
        let part = &part;
        o.idx.par_chunks_mut(k).zip(o.score.par_chunks_mut(k)).zip(o.count.par_iter_mut()).enumerate().for_each(|(ci, ((ri, rs), rc))| {
            with_scratch(|s| {
                let super::scratch::Scratch { sel: out, selk, .. } = s;
                let buf = sized(selk, cap(k));
                let mut sel = Sel::EMPTY;
                for cj in 0..chunks {
                    let e = &part[(cj * nb + ci) * k..(cj * nb + ci + 1) * k];
                    let n = e.iter().take_while(|p| p.0 != u32::MAX).count();
                    sel.push_all(buf, k, &e[..n]);
                }
                let fin = sel.finish(buf, k, sized(out, k));
                *rc = fin.len() as u32;
                for (j, &(p, sc)) in fin.iter().enumerate() {
                    ri[j] = p;
                    rs[j] = sc;
                }
            })
        });
        if x.with_esu {
            let (idx, count) = (&*o.idx, &*o.count);
            o.out.par_chunks_mut(d).enumerate().for_each(|(ci, dst)| {
                with_scratch(|s| {
                    let super::scratch::Scratch { q, keys, sel, vals, alpha, pooled, .. } = s;
                    let q = sized(q, d);
                    row_f32(x.p_q, b.cands[cands.start + ci] as usize, q);
                    let n = count[ci] as usize;
                    let fin = sized(sel, n);
                    for (f, e) in fin.iter_mut().enumerate() {
                        *e = (idx[ci * k + f], 0.0);
                    }
                    let sc = esu::Bufs { keys, vals, alpha };
                    let pooled = sized(pooled, d);
                    esu::pool_one(&x.esu, b, x.bias, seq.start, q, fin, rows, sc, pooled);
                    esu::project(x.esu.w_o, pooled, 1, d, dst);
                })
            });
        }
    }
    pools.pairs.give(part);
    res
}
