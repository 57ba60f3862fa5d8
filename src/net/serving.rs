//! The serving forward pass over device tensors (SPEC §3, §5): for a batch of requests,
//! GSU + ESU over the long sequences, attention over the short ones, the MLP input assembled from
//! embedding rows and the two modules' outputs, the MLP and σ.
//!
//! Transfers per batch: the requests' ids, cross buckets, sizes and candidate features are staged
//! on the host and go up in one upload; the CTRs (with the GSU's NaN flags, and the top-K when a
//! request asks for debug output) come down in one download. The parameters are uploaded once
//! per model version ([`ServingNet::new`]). Exceptions, said where they happen: `sim-soft` ranks
//! on the host (no device kernel for its GSU yet) and uploads its module output separately.

use super::mlp::{self, DeviceDense};
use super::request::{Behaviour, CandidateDebug, ScoreRequest};
use super::{Variant, AUTHOR_EMB, CONTEXT_EMB, DURATION_EMB, ITEM_EMB, MLP0, TOPIC_EMB};
use crate::backend::cpu::{dot_f64, gemm::mm, gsu_topk::select_topk};
use crate::backend::{
    f32s, Act, Backend, DType, Elem, HostTable, IdSlot, OnlineBatch, OnlineDev, OnlineRequests, OnlineSlot, OnlineTables, Rows, Staging,
    Tensor, TopK,
};
use crate::error::{Error, Result};
use crate::features;
use crate::model::Model;

/// One model version's parameters, resident on a backend.
pub struct ServingNet {
    pub tables: OnlineTables,
    context: Tensor,
    /// Item, author, topic and duration embeddings: the parts of `x_h`.
    inherent: [Tensor; 4],
    layers: Vec<(Tensor, Tensor)>,
}

/// One candidate's answer: its CTR, and the debug output when its request asked.
pub type Scored = (Vec<f32>, Option<Vec<CandidateDebug>>);

/// A sequence module's batch: the staged requests and where their candidates go in the batch.
struct Module {
    which: Vec<usize>,
    reqs: OnlineRequests,
    /// Row of each of the module's candidates in the batch's `[ΣB, ·]` matrices.
    dst_rows: Vec<u32>,
}

impl Module {
    fn new() -> Module {
        Module { which: Vec::new(), reqs: OnlineRequests::new(), dst_rows: Vec::new() }
    }
}

fn cross_of(b: &Behaviour, t: i64) -> [u32; features::N_CROSS] {
    features::cross_rows_from_ratio(b.completion, b.play_time, b.timestamp, t)
}

impl ServingNet {
    /// Upload `model`'s serving parameters: the precomputed online tables (stored as `dtype`), the
    /// embeddings of `x_h` and the context, and the MLP.
    pub fn new(be: &dyn Backend, model: &Model, dtype: DType) -> Result<ServingNet> {
        let c = &model.config;
        let tables = model.online_tables(be, dtype)?;
        let up = |name: &'static str, i: usize, cols: usize| -> Result<Tensor> {
            let data = &model.param_at(i).data;
            be.tensor_f32(name, data.len() / cols.max(1), cols, data)
        };
        let inherent = [
            up("item_emb", ITEM_EMB, c.id_dim)?,
            up("author_emb", AUTHOR_EMB, c.id_dim)?,
            up("topic_emb", TOPIC_EMB, c.small_dim)?,
            up("duration_emb", DURATION_EMB, c.small_dim)?,
        ];
        let context = up("context_emb", CONTEXT_EMB, c.small_dim)?;
        let widths = mlp::widths(c.mlp_input(), &c.mlp_hidden);
        let mut layers = Vec::with_capacity(widths.len() - 1);
        for i in 0..widths.len() - 1 {
            layers.push((up("mlp_w", MLP0 + 2 * i, widths[i + 1])?, up("mlp_b", MLP0 + 2 * i + 1, widths[i + 1])?));
        }
        Ok(ServingNet { tables, context, inherent, layers })
    }

    /// Score validated requests (ids below the model's catalogue, finite features, non-empty
    /// candidates): per request its CTRs and, when asked, the debug output.
    pub fn forward(&self, be: &dyn Backend, model: &Model, variant: Variant, reqs: &[&ScoreRequest]) -> Result<Vec<Scored>> {
        let _range = crate::nvtx::range("serve: forward");
        let c = &model.config;
        let (d, hd, sd, id) = (c.d_model(), c.inherent_dim(), c.small_dim, c.id_dim);
        let mut cand_start = Vec::with_capacity(reqs.len());
        let mut all_cands = Vec::new();
        let mut hours = Vec::new();
        for r in reqs {
            cand_start.push(all_cands.len());
            all_cands.extend_from_slice(&r.candidates);
            let hour = features::hour_of_day(r.request_time) % c.n_context as u32;
            hours.extend(std::iter::repeat(hour).take(r.candidates.len()));
        }
        let n_cand = all_cands.len();
        if n_cand == 0 {
            return Err(Error::Empty { field: "candidates", index: 0 });
        }

        // Stage everything the batch needs.
        let mut st = Staging::new();
        let feat = |map: &[u32]| -> Vec<u32> { all_cands.iter().map(|&i| map.get(i as usize).copied().unwrap_or(u32::MAX)).collect() };
        let s_hour = st.ids("context hour", &hours, c.n_context)?;
        let s_feat = [
            st.ids("candidates", &all_cands, c.n_items)?,
            st.ids("candidate author", &feat(&model.item_author), c.n_authors)?,
            st.ids("candidate topic", &feat(&model.item_topic), c.n_topics)?,
            st.ids("candidate duration bucket", &feat(&model.item_duration_bucket), c.n_duration_buckets)?,
        ];
        let mut long = Module::new();
        let mut short = Module::new();
        for (i, r) in reqs.iter().enumerate() {
            let cands = cand_start[i] as u32..(cand_start[i] + r.candidates.len()) as u32;
            if variant.uses_long() && !r.long.is_empty() {
                let items: Vec<u32> = r.long.iter().map(|b| b.item).collect();
                let cross: Vec<u32> = r.long.iter().flat_map(|b| cross_of(b, r.request_time)).collect();
                let sizes: Vec<f32> = r.long.iter().map(|b| if variant.uses_clusters() { b.size.max(1) as f32 } else { 1.0 }).collect();
                long.reqs.push(&items, &cross, &sizes, &r.candidates);
                long.which.push(i);
                long.dst_rows.extend(cands.clone());
            }
            // Short-term: attention over every one of the last `short_len` behaviours (the GSU
            // with K = short_len keeps them all; sizes 1, so no `ln n`).
            if variant.uses_short() && !r.short.is_empty() {
                let seq = &r.short[r.short.len().saturating_sub(c.short_len)..];
                let items: Vec<u32> = seq.iter().map(|b| b.item).collect();
                let cross: Vec<u32> = seq.iter().flat_map(|b| cross_of(b, r.request_time)).collect();
                short.reqs.push(&items, &cross, &vec![1.0; items.len()], &r.candidates);
                short.which.push(i);
                short.dst_rows.extend(cands);
            }
        }
        let stage = |st: &mut Staging, m: &Module, k: usize| -> Result<Option<(OnlineSlot, IdSlot)>> {
            if m.which.is_empty() {
                return Ok(None);
            }
            let slot = be.stage_online(st, &self.tables, &m.reqs.as_batch(), k)?;
            Ok(Some((slot, st.ids("module candidate rows", &m.dst_rows, n_cand)?)))
        };
        // sim-soft ranks on the host; its module output goes up on its own.
        let sim_soft = variant == Variant::SimSoft && !long.which.is_empty();
        let (long_slot, sim) = if sim_soft {
            let batch = long.reqs.as_batch();
            let topk = sim_soft_topk(model, &batch, c.top_k);
            let cross = be.cross_bias(&self.tables.cross_bias, batch.cross, self.tables.n_cross())?;
            let out = be.esu(&self.tables, &batch, &cross, &topk)?;
            let t = be.tensor_f32("sim-soft module out", batch.cands.len(), d, &out)?;
            (None, Some((t, topk, st.ids("module candidate rows", &long.dst_rows, n_cand)?)))
        } else {
            (stage(&mut st, &long, c.top_k)?, None)
        };
        let short_slot = stage(&mut st, &short, c.short_len)?;
        let staged = be.upload_staging(st)?;

        // The sequence modules, then the MLP input [context, x_h(candidate), out_long, out_short].
        let run = |s: &Option<(OnlineSlot, IdSlot)>| -> Result<Option<OnlineDev>> {
            s.as_ref().map(|(slot, _)| be.online_dev(&self.tables, &staged, slot)).transpose()
        };
        let long_dev = run(&long_slot)?;
        let short_dev = run(&short_slot)?;
        let z = be.tensor_zeros("mlp input", n_cand, c.mlp_input(), Elem::F32)?;
        be.copy_rows(&z, 0, Rows::All, &self.context, Rows::Ids(&s_hour), &staged)?;
        let cols = [sd, sd + id, sd + 2 * id, sd + 2 * id + c.small_dim];
        for ((table, slot), col) in self.inherent.iter().zip(&s_feat).zip(cols) {
            be.copy_rows(&z, col, Rows::All, table, Rows::Ids(slot), &staged)?;
        }
        if let (Some(o), Some((_, rows))) = (&long_dev, &long_slot) {
            be.copy_rows(&z, sd + hd, Rows::Ids(rows), &o.out, Rows::All, &staged)?;
        }
        if let Some((t, _, rows)) = &sim {
            be.copy_rows(&z, sd + hd, Rows::Ids(rows), t, Rows::All, &staged)?;
        }
        if let (Some(o), Some((_, rows))) = (&short_dev, &short_slot) {
            be.copy_rows(&z, sd + hd + d, Rows::Ids(rows), &o.out, Rows::All, &staged)?;
        }
        let widths = mlp::widths(c.mlp_input(), &c.mlp_hidden);
        let layers: Vec<(&Tensor, &Tensor)> = self.layers.iter().map(|(w, b)| (w, b)).collect();
        let acts = mlp::forward(&DeviceDense(be), &layers, z, n_cand, &widths, Act::Sigmoid)?;
        let ctr_t = acts.last().ok_or(Error::Empty { field: "mlp layers", index: 0 })?;

        // One download: CTRs, the GSU NaN flags, the long top-K when debug output is asked.
        let want_debug = reqs.iter().any(|r| r.debug);
        let mut reads: Vec<&Tensor> = vec![ctr_t];
        let devs: Vec<&OnlineDev> = long_dev.iter().chain(short_dev.iter()).collect();
        let n_flags = devs.len();
        reads.extend(devs.iter().map(|o| &o.flag));
        if want_debug {
            reads.extend(long_dev.iter().map(|o| &o.topk));
        }
        let got = be.tensor_read(&reads)?;
        for (o, f) in devs.iter().zip(&got[1..1 + n_flags]) {
            if f.first().is_some_and(|&w| w != o.flag_ok) {
                return Err(Error::NonFinite { field: "gsu score (candidate, position)", index: 0, value: f32::NAN });
            }
        }
        let ctr = f32s(&got[0]);

        // Debug output per long-module candidate.
        let mut debug: Vec<Option<CandidateDebug>> = vec![None; if want_debug { n_cand } else { 0 }];
        if want_debug {
            let topk = match (&sim, got.get(1 + n_flags)) {
                (Some((_, t, _)), _) => Some(t.clone()),
                (None, Some(w)) => Some(topk_of(w, c.top_k)),
                _ => None,
            };
            if let Some(topk) = topk {
                let cb = model.cross_tables()?.0;
                for (ci, &row) in long.dst_rows.iter().enumerate() {
                    let ri = reqs_of(&cand_start, row as usize);
                    if !reqs[ri].debug {
                        continue;
                    }
                    let (idx, sc) = topk.row(ci);
                    let att = attention_weights(model, &cb, reqs[ri], idx, all_cands[row as usize], variant.uses_clusters());
                    debug[row as usize] = Some(CandidateDebug { topk_positions: idx.to_vec(), topk_scores: sc.to_vec(), attention: att });
                }
            }
        }
        Ok(reqs
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                let range = cand_start[ri]..cand_start[ri] + r.candidates.len();
                let dbg = r.debug.then(|| {
                    range
                        .clone()
                        .map(|cg| {
                            debug[cg].clone().unwrap_or(CandidateDebug { topk_positions: vec![], topk_scores: vec![], attention: vec![] })
                        })
                        .collect()
                });
                (ctr[range].to_vec(), dbg)
            })
            .collect())
    }
}

/// The request a batch candidate row belongs to.
fn reqs_of(cand_start: &[usize], row: usize) -> usize {
    cand_start.partition_point(|&s| s <= row).saturating_sub(1)
}

/// Positions `[ΣB K]`, score bits `[ΣB K]`, counts `[ΣB]` as a [`TopK`].
fn topk_of(w: &[u32], k: usize) -> TopK {
    let n = w.len() / (2 * k + 1);
    let (nk, c) = (n * k, w.len().min(n * (2 * k + 1)));
    TopK {
        k,
        idx: w[..nk].to_vec(),
        score: w[nk..2 * nk].iter().map(|&b| f32::from_bits(b)).collect(),
        count: w[2 * nk..c].iter().map(|&x| x.min(k as u32)).collect(),
    }
}

/// SIM soft search: relevance = item-embedding inner product, top-K under SPEC's tie rule.
fn sim_soft_topk(m: &Model, batch: &OnlineBatch<'_>, k: usize) -> TopK {
    let id = m.config.id_dim;
    let emb = m.item_embeddings();
    let n = batch.cands.len();
    let mut t = TopK { k, idx: vec![u32::MAX; n * k], score: vec![f32::NEG_INFINITY; n * k], count: vec![0; n] };
    for r in 0..batch.n_requests() {
        let seq = batch.seq_range(r);
        for ci in batch.cand_range(r) {
            let c = batch.cands[ci] as usize;
            let ec = &emb[c * id..(c + 1) * id];
            let s: Vec<f32> =
                batch.items[seq.clone()].iter().map(|&it| dot_f64(ec, &emb[it as usize * id..(it as usize + 1) * id]) as f32).collect();
            let top = select_topk(&s, k);
            t.count[ci] = top.len() as u32;
            for (j, (p, sc)) in top.into_iter().enumerate() {
                t.idx[ci * k + j] = p;
                t.score[ci * k + j] = sc;
            }
        }
    }
    t
}

/// Debug only: the ESU's per-head softmax weights over the finalists, on the host.
fn attention_weights(m: &Model, cb: &HostTable, req: &ScoreRequest, idx: &[u32], cand: u32, log_n: bool) -> Vec<f32> {
    let c = &m.config;
    let (h, d, dk) = (c.heads, c.d_model(), c.d_head);
    let rows: Vec<&Behaviour> = idx.iter().filter_map(|&p| req.long.get(p as usize)).collect();
    let items: Vec<u32> = rows.iter().map(|b| b.item).collect();
    let (Ok(xq), Ok(xk)) = (m.inherent_features_of(&[cand]), m.inherent_features_of(&items)) else { return Vec::new() };
    let (Ok(wq), Ok(wk)) = (m.param("w_q"), m.param("w_k")) else { return Vec::new() };
    let hd = c.inherent_dim();
    let q = mm(xq.as_slice().unwrap_or(&[]), 1, hd, &wq.data, d);
    let k = mm(xk.as_slice().unwrap_or(&[]), items.len(), hd, &wk.data, d);
    let mut att = vec![0f32; items.len() * h];
    for a in 0..h {
        let logits: Vec<f64> = rows
            .iter()
            .enumerate()
            .map(|(r, b)| {
                let dot: f64 = (0..dk).map(|t| q[a * dk + t] as f64 * k[r * d + a * dk + t] as f64).sum();
                let bias: f64 = cross_of(b, req.request_time).iter().map(|&row| cb.get(row as usize * h + a) as f64).sum();
                dot / (dk as f64).sqrt() + bias + if log_n { (b.size.max(1) as f64).ln() } else { 0.0 }
            })
            .collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for (r, l) in logits.iter().enumerate() {
            att[r * h + a] = ((l - mx).exp() / z) as f32;
        }
    }
    att
}
