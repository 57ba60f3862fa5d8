//! The sequence modules of the device training step (TWIN module and short-term attention,
//! SPEC §5 steps 1-4 and their backward), over device tensors. Staged on the host with the
//! rest of the batch (positions, their ids, the gradient segments); everything the host cannot
//! know (which long rows the GSU keeps) stays on the device, read through the GSU's row map.
//!
//! Forward, as `train::step` computes it:
//! 1. `q = x_t W^q`; the cross tables `cb, cv` from the current cross parameters.
//! 2. GSU (`gsu_train_dev`): `twin`/`twin-v2` score `x_h(l)·(W^k q)/(h√d_k) + bias + ln n`,
//!    `sim-soft` scores `e_item(target)·e_item(l)`; top K per sample in sequence order.
//! 3. Attention rows (finalists, then short rows): `x_h`, `bias = ln n + Σ cb`
//!    (`twin_rows_dev`), `K = X W^k`, `V = X W^v + Σ cv`. Projections per row, not per unique
//!    item as the host step does: the same values, the weight gradients summed in another order.
//! 4. One attention call for both blocks: `q` stacked twice (`[2B, D]`), offsets `[fin | short]`,
//!    pooled `[2B, D]` times `W^o` once; its halves go to the MLP input's long and short columns.
//!
//! Backward: `dW^o`, attention backward, `dq` folded from its two halves (`segment_sum`),
//! `dW^q, dW^k, dW^v` and `dX = [dK | dV] [W^k | W^v]^T`; cross tables' gradients through the row
//! map (`segment_sum_mapped_dev`, every ΣV row a segment, empty ones zero) and
//! `cross_tables_bwd_dev`; embedding rows from `[dX_att | dx_t (MLP) | dx_t (q)]` grouped by item
//! over every position the batch holds (a superset of the rows used: a dropped long row adds
//! nothing, and Adagrad leaves a zero-gradient row exactly where it is).

use super::Batch;
use crate::backend::cpu::segment_sum::segments_of;
use crate::backend::{
    Backend, CrossDims, CrossParams, Elem, FeatTables, GemmKind, GsuTrainIn, GsuTrainOut, IdSlot, OffsetsSlot, Rows, Staged, Staging,
    Tensor, TwinBounds, TwinRowsIn, TwinRowsSlot,
};
use crate::error::Result;
use crate::model::ModelConfig;
use crate::net::Variant;

/// The batch's sequence inputs as staged.
pub(super) struct SeqStage {
    pub slot: TwinRowsSlot,
    pub cross_offsets: OffsetsSlot,
    /// Rows `0..B` and `B..2B` of a `[2B, ·]` tensor.
    pub lo: IdSlot,
    pub hi: IdSlot,
    /// Rows of `[n_att + 2B, H]`: the attention rows, then the two target blocks.
    pub src_att: IdSlot,
    pub src_t1: IdSlot,
    pub src_t2: IdSlot,
    /// `dq = dq2[b] + dq2[B + b]`.
    pub dq_perm: IdSlot,
    pub dq_segs: OffsetsSlot,
    /// Every ΣV cross row's positions.
    pub cross_perm: IdSlot,
    pub cross_segs: OffsetsSlot,
    /// Every position grouped by item: `(item rows, positions, segments)`.
    pub item_rows: Vec<u32>,
    pub item_perm: IdSlot,
    pub item_segs: OffsetsSlot,
}

/// Item → feature maps of the catalogue.
pub(super) struct ItemMaps<'a> {
    pub author: &'a [u32],
    pub topic: &'a [u32],
    pub duration: &'a [u32],
}

pub(super) fn stage(st: &mut Staging, cfg: &ModelConfig, variant: Variant, batch: &Batch, m: &ItemMaps<'_>) -> Result<SeqStage> {
    let bn = batch.target.len();
    let j = cfg.n_cross();
    let zeros = vec![0u32; bn + 1];
    let (long_offsets, n_long) = if variant.uses_long() { (&batch.long_offsets[..], batch.long_item.len()) } else { (&zeros[..], 0) };
    let (short_offsets, n_short) = if variant.uses_short() { (&batch.short_offsets[..], batch.short_item.len()) } else { (&zeros[..], 0) };
    let items: Vec<u32> = batch.long_item[..n_long].iter().chain(&batch.short_item[..n_short]).copied().collect();
    let mut feat = Vec::with_capacity(items.len() * 4);
    for &it in &items {
        let i = it as usize;
        feat.extend([it, m.author[i], m.topic[i], m.duration[i]]);
    }
    let cross: Vec<u32> = batch.long_cross[..n_long * j].iter().chain(&batch.short_cross[..n_short * j]).copied().collect();
    let mut log_n = batch.long_log_n[..n_long].to_vec();
    log_n.resize(n_long + n_short, 0.0);
    let bounds =
        TwinBounds { tables: [cfg.n_items, cfg.n_authors, cfg.n_topics, cfg.n_duration_buckets], cross_rows: cfg.cross_rows(), n_cross: j };
    let x = TwinRowsIn { long_offsets, short_offsets, feat: &feat, cross: &cross, log_n: &log_n, k: cfg.top_k, extra_tail: 2 * bn };
    let slot = st.twin_rows(&x, bounds)?;
    let n_att = slot.n_att();
    let range = |a: usize, b: usize| (a as u32..b as u32).collect::<Vec<u32>>();

    // Cross rows: position p's J rows; every ΣV row is a segment (empty ones sum to zero).
    let v_n = cfg.cross_rows();
    let mut counts = vec![0u32; v_n + 1];
    for &c in &cross {
        counts[c as usize + 1] += 1;
    }
    for v in 0..v_n {
        counts[v + 1] += counts[v];
    }
    let mut fill = counts.clone();
    let mut cross_perm = vec![0u32; cross.len()];
    for (flat, &c) in cross.iter().enumerate() {
        cross_perm[fill[c as usize] as usize] = (flat / j) as u32;
        fill[c as usize] += 1;
    }
    // Items over positions [long | short | targets | targets].
    let keys: Vec<u32> = items.iter().chain(&batch.target).chain(&batch.target).copied().collect();
    let (item_rows, item_perm, item_segs) = segments_of(&keys);
    let dq_perm: Vec<u32> = (0..bn as u32).flat_map(|b| [b, bn as u32 + b]).collect();
    let dq_segs: Vec<u32> = (0..=bn as u32).map(|b| 2 * b).collect();
    Ok(SeqStage {
        cross_offsets: st.offsets("cross offsets", &cfg.cross_offsets())?,
        lo: st.ids("rows 0..B", &range(0, bn), 2 * bn)?,
        hi: st.ids("rows B..2B", &range(bn, 2 * bn), 2 * bn)?,
        src_att: st.ids("attention rows", &range(0, n_att), n_att + 2 * bn)?,
        src_t1: st.ids("target rows (mlp)", &range(n_att, n_att + bn), n_att + 2 * bn)?,
        src_t2: st.ids("target rows (q)", &range(n_att + bn, n_att + 2 * bn), n_att + 2 * bn)?,
        dq_perm: st.ids("dq halves", &dq_perm, 2 * bn)?,
        dq_segs: st.offsets("dq segments", &dq_segs)?,
        cross_perm: st.ids("cross positions", &cross_perm, n_long + n_short)?,
        cross_segs: st.offsets("cross segments", &counts)?,
        item_perm: st.ids("item positions", &item_perm, slot.map_len())?,
        item_segs: st.offsets("item segments", &item_segs)?,
        item_rows,
        slot,
    })
}

/// Parameters the sequence modules read.
pub(super) struct SeqParams<'a> {
    pub tables: [&'a Tensor; 4],
    pub cross_emb: &'a Tensor,
    pub w_q: &'a Tensor,
    pub w_k: &'a Tensor,
    pub w_v: &'a Tensor,
    pub w_c: &'a Tensor,
    pub beta: &'a Tensor,
    pub w_vc: &'a Tensor,
    pub w_o: &'a Tensor,
}

/// What the forward keeps for the backward.
pub(super) struct SeqAct {
    x_t: Tensor,
    q2: Tensor,
    x_att: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor,
    p: Tensor,
    pooled: Tensor,
    gsu: GsuTrainOut,
}

/// Gradients of the dense sequence parameters, and `dX` of every position source.
pub(super) struct SeqGrads {
    pub w_q: Tensor,
    pub w_k: Tensor,
    pub w_v: Tensor,
    pub w_o: Tensor,
    pub cross_emb: Tensor,
    pub w_c: Tensor,
    pub beta: Tensor,
    pub w_vc: Tensor,
    /// `[unique items, H]`, rows `SeqStage::item_rows`.
    pub dx_items: Tensor,
}

pub(super) struct Seq<'a> {
    pub be: &'a dyn Backend,
    pub cfg: &'a ModelConfig,
    pub variant: Variant,
    pub s: &'a SeqStage,
    pub staged: &'a Staged,
    pub w: SeqParams<'a>,
}

impl Seq<'_> {
    fn feats(&self) -> FeatTables<'_> {
        let c = self.cfg;
        FeatTables { tables: self.w.tables, dims: crate::backend::cpu::gsu_train::FeatDims { id: c.id_dim, small: c.small_dim } }
    }

    fn cross(&self) -> CrossParams<'_> {
        let c = self.cfg;
        CrossParams {
            e: self.w.cross_emb,
            w_c: self.w.w_c,
            beta: self.w.beta,
            w_vc: self.w.w_vc,
            offsets: &self.s.cross_offsets,
            dims: CrossDims { heads: c.heads, n_cross: c.n_cross(), dim: c.cross_dim },
        }
    }

    /// `gemm_dev` that tolerates an empty side (no rows: zeros, no launch).
    fn gemm(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        if m == 0 || n == 0 || k == 0 {
            return self.be.tensor_zeros("gemm out", m, n, Elem::F32);
        }
        self.be.gemm_dev(kind, a, b, m, k, n)
    }

    /// Forward: writes the long and short outputs into `z`'s columns; returns the activations.
    pub fn forward(&self, z: &Tensor) -> Result<SeqAct> {
        let (be, c, s, st) = (self.be, self.cfg, self.s, self.staged);
        let bn = z.rows;
        let (sm, hd, d, h) = (c.small_dim, c.inherent_dim(), c.d_model(), c.heads);
        let x_t = be.tensor_zeros("x_t", bn, hd, Elem::F32)?;
        be.copy_cols(&x_t, 0, Rows::All, z, sm..sm + hd, Rows::All, st)?;
        let q = self.gemm(GemmKind::NN, &x_t, self.w.w_q, bn, hd, d)?;
        let (cb, cv) = be.cross_tables_dev(&self.cross(), st)?;
        let (qbar, q_scale, bias) = match self.variant {
            Variant::SimSoft => {
                let qb = be.tensor_zeros("gsu query", bn, hd, Elem::F32)?;
                be.copy_cols(&qb, 0, Rows::All, z, sm..sm + c.id_dim, Rows::All, st)?;
                (qb, 1.0, false)
            }
            Variant::Twin | Variant::TwinV2 => {
                let scale = 1.0 / ((d / h) as f64).sqrt();
                (self.gemm(GemmKind::NT, &q, self.w.w_k, bn, d, hd)?, (scale / h as f64) as f32, true)
            }
            _ => (be.tensor_zeros("gsu query", bn, hd, Elem::F32)?, 1.0, false),
        };
        let gx = GsuTrainIn { qbar: &qbar, feats: self.feats(), cb: &cb, heads: h, q_scale, bias };
        let gsu = be.gsu_train_dev(&gx, &s.slot, st)?;
        let (x_att, abias) = be.twin_rows_dev(&self.feats(), &cb, h, &gsu, &s.slot, st)?;
        let n_att = s.slot.n_att();
        let k = self.gemm(GemmKind::NN, &x_att, self.w.w_k, n_att, hd, d)?;
        let v = self.gemm(GemmKind::NN, &x_att, self.w.w_v, n_att, hd, d)?;
        be.twin_rows_value_dev(&v, &cv, &gsu, &s.slot, st)?;
        let q2 = be.tensor_zeros("q stacked", 2 * bn, d, Elem::F32)?;
        be.copy_rows(&q2, 0, Rows::Ids(&s.lo), &q, Rows::All, st)?;
        be.copy_rows(&q2, 0, Rows::Ids(&s.hi), &q, Rows::All, st)?;
        let (p, pooled) = if n_att == 0 {
            (be.tensor_zeros("attn p", 0, h, Elem::F32)?, be.tensor_zeros("attn pooled", 2 * bn, d, Elem::F32)?)
        } else {
            let a = be.attn_fwd_dev(h, &q2, &k, &v, &abias, &s.slot.att_offsets, st)?;
            (a.p, a.pooled)
        };
        let out2 = self.gemm(GemmKind::NN, &pooled, self.w.w_o, 2 * bn, d, d)?;
        if self.variant.uses_long() {
            be.copy_rows(z, sm + hd, Rows::All, &out2, Rows::Ids(&s.lo), st)?;
        }
        if self.variant.uses_short() {
            be.copy_rows(z, sm + hd + d, Rows::All, &out2, Rows::Ids(&s.hi), st)?;
        }
        Ok(SeqAct { x_t, q2, x_att, k, v, bias: abias, p, pooled, gsu })
    }

    /// Backward from the MLP input's gradient `dz [B, zin]`.
    pub fn backward(&self, a: &SeqAct, dz: &Tensor) -> Result<SeqGrads> {
        let (be, c, s, st) = (self.be, self.cfg, self.s, self.staged);
        let bn = dz.rows;
        let (sm, hd, d, h) = (c.small_dim, c.inherent_dim(), c.d_model(), c.heads);
        let n_att = s.slot.n_att();
        let dout2 = be.tensor_zeros("d out stacked", 2 * bn, d, Elem::F32)?;
        if self.variant.uses_long() {
            be.copy_cols(&dout2, 0, Rows::Ids(&s.lo), dz, sm + hd..sm + hd + d, Rows::All, st)?;
        }
        if self.variant.uses_short() {
            be.copy_cols(&dout2, 0, Rows::Ids(&s.hi), dz, sm + hd + d..sm + hd + 2 * d, Rows::All, st)?;
        }
        let w_o = self.gemm(GemmKind::TN, &a.pooled, &dout2, d, 2 * bn, d)?;
        let (dq, dk, dv, dbias) = if n_att == 0 {
            let z = |r, w| be.tensor_zeros("attn grad", r, w, Elem::F32);
            (z(bn, d)?, z(0, d)?, z(0, d)?, z(0, h)?)
        } else {
            let dpooled = self.gemm(GemmKind::NT, &dout2, self.w.w_o, 2 * bn, d, d)?;
            let g = be.attn_bwd_dev(h, (&a.q2, &a.k, &a.v, &a.bias), &a.p, &dpooled, &s.slot.att_offsets, st)?;
            (be.segment_sum_dev(&g.dq, &s.dq_perm, &s.dq_segs, st)?, g.dk, g.dv, g.dbias)
        };
        let w_q = self.gemm(GemmKind::TN, &a.x_t, &dq, hd, bn, d)?;
        let dx_q = self.gemm(GemmKind::NT, &dq, self.w.w_q, bn, d, hd)?;
        let w_k = self.gemm(GemmKind::TN, &a.x_att, &dk, hd, n_att, d)?;
        let w_v = self.gemm(GemmKind::TN, &a.x_att, &dv, hd, n_att, d)?;
        // dX = dK W^k^T + dV W^v^T as one product over [dK | dV] and [W^k | W^v].
        let dkv = be.tensor_zeros("d [K | V]", n_att, 2 * d, Elem::F32)?;
        let wkv = be.tensor_zeros("[W^k | W^v]", hd, 2 * d, Elem::F32)?;
        if n_att > 0 {
            be.copy_rows(&dkv, 0, Rows::All, &dk, Rows::All, st)?;
            be.copy_rows(&dkv, d, Rows::All, &dv, Rows::All, st)?;
        }
        be.copy_rows(&wkv, 0, Rows::All, self.w.w_k, Rows::All, st)?;
        be.copy_rows(&wkv, d, Rows::All, self.w.w_v, Rows::All, st)?;
        let dx_att = self.gemm(GemmKind::NT, &dkv, &wkv, n_att, 2 * d, hd)?;
        // Cross tables through the row map, then into the cross parameters.
        let dcb = be.segment_sum_mapped_dev(&dbias, &s.cross_perm, &s.cross_segs, &a.gsu, &s.slot, st)?;
        let dcv = be.segment_sum_mapped_dev(&dv, &s.cross_perm, &s.cross_segs, &a.gsu, &s.slot, st)?;
        let cg = be.cross_tables_bwd_dev(&self.cross(), &dcb, &dcv, st)?;
        // Embedding rows: [dX_att | dx_t from the MLP | dx_t from q], grouped by item.
        let src = be.tensor_zeros("x_h gradient sources", n_att + 2 * bn, hd, Elem::F32)?;
        if n_att > 0 {
            be.copy_rows(&src, 0, Rows::Ids(&s.src_att), &dx_att, Rows::All, st)?;
        }
        be.copy_cols(&src, 0, Rows::Ids(&s.src_t1), dz, sm..sm + hd, Rows::All, st)?;
        be.copy_rows(&src, 0, Rows::Ids(&s.src_t2), &dx_q, Rows::All, st)?;
        let dx_items = be.segment_sum_mapped_dev(&src, &s.item_perm, &s.item_segs, &a.gsu, &s.slot, st)?;
        Ok(SeqGrads { w_q, w_k, w_v, w_o, cross_emb: cg.de, w_c: cg.dw_c, beta: cg.dbeta, w_vc: cg.dw_vc, dx_items })
    }
}
