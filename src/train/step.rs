//! The CTR model's forward and backward pass on the CPU (SPEC §5): the training reference.
//! Generic over [`Real`]: training runs it in f32, the gradient check in f64.
//!
//! One step, for a batch of `B` samples:
//! 1. `x_t = x_h(target)`, `q = x_t W^q`; cross tables `cb [ΣV, h]`, `cv [ΣV, D]` from the
//!    current `E_j`, `w^c`, `β`, `W^{vc}` (SPEC §3.2).
//! 2. GSU on the long sequence (no gradient): `twin`/`twin-v2` rank by the head mean of
//!    `α = q_a·k_{l,a}/√d_k + bias + ln n`, computed as `x_h(l)·(W^k_a q_a)` so no per-row
//!    projection is needed; `sim-soft` ranks by `e_item(target)·e_item(l)`. Top-K with SPEC's
//!    tie rule; finalists keep sequence order.
//! 3. Projections once per unique item of the finalists and short-term rows (`K = X_u W^k`,
//!    `V = X_u W^v`), gathered per row; `v_r += Σ_j cv[row_j]`; `bias_r = Σ_j cb[row_j] + ln n_r`.
//! 4. Attention (`cpu::attn`) for the long finalists and the short-term rows, `· W^o`.
//! 5. MLP over `[context, x_t, out_long, out_short]` (zeros for a variant's missing parts), BCE.
//! The backward runs the same steps in reverse. Row gradients are scatter-added with
//! `segment_sum` in a fixed order, so the gradients are the same run to run.

use rayon::prelude::*;

use super::{Batch, Variant};
use crate::backend::cpu::attn::AttnIn;
use crate::backend::cpu::cross_bias;
use crate::backend::cpu::gsu_train::{self, FeatDims, GsuTrainRef};
use crate::backend::cpu::segment_sum::segments_of;
use crate::backend::cpu::Real;
use crate::backend::{Act, CrossBwdIn, CrossDims, GemmKind};
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::net::mlp::{self, HostDense};

pub use crate::net::{
    BackendOps, CpuOps, Ops, AUTHOR_EMB, BETA, CONTEXT_EMB, CROSS_EMB, DURATION_EMB, ITEM_EMB, MLP0, ROW_TABLES, TOPIC_EMB, W_C, W_K, W_O,
    W_Q, W_V, W_VC,
};

/// Borrowed parameters plus the item → feature maps of the catalogue.
pub struct Weights<'a, T> {
    pub cfg: &'a ModelConfig,
    pub p: Vec<&'a [T]>,
    pub item_author: &'a [u32],
    pub item_topic: &'a [u32],
    pub item_duration: &'a [u32],
}

impl<'a> Weights<'a, f32> {
    pub fn of(model: &'a Model) -> Weights<'a, f32> {
        Weights {
            cfg: &model.config,
            p: model.params().map(|(_, t)| t.data.as_slice()).collect(),
            item_author: &model.item_author,
            item_topic: &model.item_topic,
            item_duration: &model.item_duration_bucket,
        }
    }
}

/// Gradient of one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Grad<T> {
    Dense(Vec<T>),
    /// `rows` ascending and unique; `values [rows.len(), cols]`.
    Rows {
        rows: Vec<u32>,
        values: Vec<T>,
    },
}

impl<T: Real> Grad<T> {
    /// As a dense tensor of `numel` elements with `cols` per row.
    pub fn to_dense(&self, numel: usize, cols: usize) -> Vec<T> {
        match self {
            Grad::Dense(v) => v.clone(),
            Grad::Rows { rows, values } => {
                let mut d = vec![T::zero(); numel];
                for (i, &r) in rows.iter().enumerate() {
                    d[r as usize * cols..(r as usize + 1) * cols].copy_from_slice(&values[i * cols..(i + 1) * cols]);
                }
                d
            }
        }
    }
}

/// What a forward (and optionally backward) pass returns.
pub struct StepOut<T> {
    pub loss: f64,
    /// `σ(logit)` per sample.
    pub prob: Vec<f32>,
    /// Per parameter, in `param_shapes` order; `None` for an inference-only pass.
    pub grads: Option<Vec<Grad<T>>>,
    /// GSU input rows (sum over the batch) and finalists kept.
    pub gsu_rows: usize,
}

/// Rows of one attention block (long finalists or short-term), flattened over the batch.
struct Rows {
    offsets: Vec<u32>,
    item: Vec<u32>,
    /// `[N, J]` stacked cross-table rows.
    cross: Vec<u32>,
    log_n: Vec<f32>,
}

impl Rows {
    fn len(&self) -> usize {
        self.item.len()
    }
}

/// Saved activations of one attention block.
struct AttnAct<T> {
    rows: Rows,
    k: Vec<T>,
    v: Vec<T>,
    bias: Vec<T>,
    p: Vec<T>,
    pooled: Vec<T>,
}

/// Validate a batch against the model before any indexing.
pub fn check_batch(cfg: &ModelConfig, b: &Batch) -> Result<()> {
    use crate::backend::check;
    let n = b.target.len();
    check::len("label", b.label.len(), n, "target length")?;
    check::len("context", b.context.len(), n, "target length")?;
    check::ids_below("target", &b.target, cfg.n_items)?;
    check::ids_below("context", &b.context, cfg.n_context)?;
    check::finite("label", &b.label)?;
    for (name, off, item, cross, log_n) in [
        ("long", &b.long_offsets, &b.long_item, &b.long_cross, Some(&b.long_log_n)),
        ("short", &b.short_offsets, &b.short_item, &b.short_cross, None),
    ] {
        check::len(if name == "long" { "long_offsets" } else { "short_offsets" }, off.len(), n + 1, "samples + 1")?;
        check::offsets(if name == "long" { "long_offsets" } else { "short_offsets" }, off, item.len())?;
        check::ids_below(if name == "long" { "long_item" } else { "short_item" }, item, cfg.n_items)?;
        check::len(if name == "long" { "long_cross" } else { "short_cross" }, cross.len(), item.len() * cfg.n_cross(), "rows * J")?;
        let offs = cfg.cross_offsets();
        for (i, &c) in cross.iter().enumerate() {
            let j = i % cfg.n_cross();
            if c < offs[j] || c >= offs[j + 1] {
                return Err(Error::OutOfRange {
                    field: if name == "long" { "long_cross" } else { "short_cross" },
                    index: i,
                    value: c as u64,
                    limit: offs[j + 1] as u64,
                });
            }
        }
        if let Some(ln) = log_n {
            check::len("long_log_n", ln.len(), item.len(), "long rows")?;
            check::finite("long_log_n", ln)?;
        }
    }
    Ok(())
}

struct Ctx<'a, 'w, T> {
    w: &'a Weights<'w, T>,
    h: usize,
    d: usize,
    hd: usize,
    j_n: usize,
    cd: usize,
}

impl<T: Real> Ctx<'_, '_, T> {
    /// `x_h(i)` into `out` (`H` values).
    fn inherent(&self, i: usize, out: &mut [T]) {
        let (id, sm) = (self.w.cfg.id_dim, self.w.cfg.small_dim);
        let p = &self.w.p;
        let (a, t, du) = (self.w.item_author[i] as usize, self.w.item_topic[i] as usize, self.w.item_duration[i] as usize);
        out[..id].copy_from_slice(&p[ITEM_EMB][i * id..(i + 1) * id]);
        out[id..2 * id].copy_from_slice(&p[AUTHOR_EMB][a * id..(a + 1) * id]);
        out[2 * id..2 * id + sm].copy_from_slice(&p[TOPIC_EMB][t * sm..(t + 1) * sm]);
        out[2 * id + sm..2 * id + 2 * sm].copy_from_slice(&p[DURATION_EMB][du * sm..(du + 1) * sm]);
    }

    fn inherent_rows(&self, ids: &[u32]) -> Vec<T> {
        let hd = self.hd;
        let mut x = vec![T::zero(); ids.len() * hd];
        x.par_chunks_mut(hd).zip(ids.par_iter()).for_each(|(row, &i)| self.inherent(i as usize, row));
        x
    }
}

/// Forward pass, plus the backward when `grad` is set. `loss` is the mean BCE.
pub fn step<T: Real, O: Ops<T>>(ops: &O, w: &Weights<'_, T>, variant: Variant, batch: &Batch, grad: bool) -> Result<StepOut<T>> {
    let cfg = w.cfg;
    check_batch(cfg, batch)?;
    let _range = crate::nvtx::range("train step");
    let bn = batch.target.len();
    if bn == 0 {
        return Err(Error::Empty { field: "batch", index: 0 });
    }
    let cx = Ctx { w, h: cfg.heads, d: cfg.d_model(), hd: cfg.inherent_dim(), j_n: cfg.n_cross(), cd: cfg.cross_dim };
    let (h, d, hd, j_n) = (cx.h, cx.d, cx.hd, cx.j_n);
    let dk = d / h;
    let scale = T::of(1.0 / (dk as f64).sqrt());

    // 1. Targets and the cross tables.
    let x_t = cx.inherent_rows(&batch.target);
    let q = ops.gemm(GemmKind::NN, &x_t, w.p[W_Q], bn, hd, d)?;
    let (cb, cv) = cross_bias::cross_tables(
        w.p[CROSS_EMB],
        w.p[W_C],
        w.p[BETA],
        w.p[W_VC],
        &cfg.cross_offsets(),
        CrossDims { heads: h, n_cross: j_n, dim: cfg.cross_dim },
        d,
    );

    // 2. GSU over the long sequence.
    let use_long = variant.uses_long();
    let use_short = variant.uses_short();
    let k_top = cfg.top_k;
    let long_rows = if use_long { *batch.long_offsets.last().unwrap_or(&0) as usize } else { 0 };
    let finals: Vec<Vec<u32>> = if use_long {
        // Per long row: its inherent feature ids (the tables x_h is gathered from).
        let n_long = *batch.long_offsets.last().unwrap_or(&0) as usize;
        let mut feat = Vec::with_capacity(n_long * 4);
        for &it in &batch.long_item[..n_long] {
            let i = it as usize;
            feat.extend([it, w.item_author[i], w.item_topic[i], w.item_duration[i]]);
        }
        let (id, sm) = (cfg.id_dim, cfg.small_dim);
        let (qbar, q_scale, bias) = match variant {
            // SIM soft search: e_item(target) · e_item(l), the item columns of x_h only.
            Variant::SimSoft => {
                let mut qb = vec![T::zero(); bn * hd];
                for (b, &t) in batch.target.iter().enumerate() {
                    qb[b * hd..b * hd + id].copy_from_slice(&w.p[ITEM_EMB][t as usize * id..(t as usize + 1) * id]);
                }
                (qb, T::one(), false)
            }
            // The head mean of q_a·k_{l,a}/√d_k is x_h(l)·(W^k q)/(h√d_k) (cpu::gsu_train).
            _ => (ops.gemm(GemmKind::NT, &q, w.p[W_K], bn, d, hd)?, scale / T::of(h as f64), true),
        };
        let scores = gsu_train::scores(&GsuTrainRef {
            qbar: &qbar,
            tables: [w.p[ITEM_EMB], w.p[AUTHOR_EMB], w.p[TOPIC_EMB], w.p[DURATION_EMB]],
            dims: FeatDims { id, small: sm },
            cb: &cb,
            heads: h,
            n_cross: j_n,
            feat: &feat,
            cross: &batch.long_cross,
            log_n: &batch.long_log_n,
            long_offsets: &batch.long_offsets,
            q_scale,
            bias,
        });
        let (fin, sel) = gsu_train::select(&scores, &batch.long_offsets, k_top);
        (0..bn).map(|b| sel[fin[b] as usize..fin[b + 1] as usize].iter().map(|&p| p - batch.long_offsets[b]).collect()).collect()
    } else {
        vec![Vec::new(); bn]
    };

    // 3. Attention rows and unique items.
    let mut long = Rows { offsets: vec![0], item: Vec::new(), cross: Vec::new(), log_n: Vec::new() };
    for (b, f) in finals.iter().enumerate() {
        let r0 = batch.long_offsets[b] as usize;
        for &pos in f {
            let r = r0 + pos as usize;
            long.item.push(batch.long_item[r]);
            long.cross.extend_from_slice(&batch.long_cross[r * j_n..(r + 1) * j_n]);
            long.log_n.push(batch.long_log_n[r]);
        }
        long.offsets.push(long.item.len() as u32);
    }
    let short = if use_short {
        Rows {
            offsets: batch.short_offsets.clone(),
            item: batch.short_item.clone(),
            cross: batch.short_cross.clone(),
            log_n: vec![0.0; batch.short_item.len()],
        }
    } else {
        Rows { offsets: vec![0; bn + 1], item: Vec::new(), cross: Vec::new(), log_n: Vec::new() }
    };
    let all_items: Vec<u32> = long.item.iter().chain(&short.item).copied().collect();
    let (uniq, perm_u, seg_u) = segments_of(&all_items);
    let mut uidx_all = vec![0u32; all_items.len()];
    for s in 0..uniq.len() {
        for &r in &perm_u[seg_u[s] as usize..seg_u[s + 1] as usize] {
            uidx_all[r as usize] = s as u32;
        }
    }
    let nu = uniq.len();
    let x_u = cx.inherent_rows(&uniq);
    let kp = ops.gemm(GemmKind::NN, &x_u, w.p[W_K], nu, hd, d)?;
    let vp = ops.gemm(GemmKind::NN, &x_u, w.p[W_V], nu, hd, d)?;

    // 4. Attention per block.
    let n_long = long.len();
    // `uidx`: each row's index in the unique-item list.
    let attend = |rows: Rows, uidx: &[u32]| -> Result<AttnAct<T>> {
        let n = rows.len();
        let mut k = vec![T::zero(); n * d];
        let mut v = vec![T::zero(); n * d];
        let mut bias = vec![T::zero(); n * h];
        k.par_chunks_mut(d).zip(v.par_chunks_mut(d)).zip(bias.par_chunks_mut(h)).enumerate().for_each(|(r, ((kr, vr), br))| {
            let u = uidx[r] as usize;
            kr.copy_from_slice(&kp[u * d..(u + 1) * d]);
            vr.copy_from_slice(&vp[u * d..(u + 1) * d]);
            for a in 0..h {
                br[a] = T::of_f32(rows.log_n[r]);
            }
            for j in 0..j_n {
                let c = rows.cross[r * j_n + j] as usize;
                for (x, &y) in vr.iter_mut().zip(&cv[c * d..(c + 1) * d]) {
                    *x = *x + y;
                }
                for a in 0..h {
                    br[a] = br[a] + cb[c * h + a];
                }
            }
        });
        let (p, pooled) = if n == 0 {
            (Vec::new(), vec![T::zero(); bn * d])
        } else {
            ops.attn_fwd(AttnIn { heads: h, q: &q, k: &k, v: &v, bias: &bias, offsets: &rows.offsets })?
        };
        Ok(AttnAct { rows, k, v, bias, p, pooled })
    };
    let long_act = attend(long, &uidx_all[..n_long])?;
    let short_act = attend(short, &uidx_all[n_long..])?;
    let out_long = ops.gemm(GemmKind::NN, &long_act.pooled, w.p[W_O], bn, d, d)?;
    let out_short = ops.gemm(GemmKind::NN, &short_act.pooled, w.p[W_O], bn, d, d)?;

    // 5. MLP input: [context, x_t, out_long, out_short].
    let sd = cfg.small_dim;
    let zin = cfg.mlp_input();
    let mut z = vec![T::zero(); bn * zin];
    z.par_chunks_mut(zin).enumerate().for_each(|(b, zr)| {
        let c = batch.context[b] as usize;
        zr[..sd].copy_from_slice(&w.p[CONTEXT_EMB][c * sd..(c + 1) * sd]);
        zr[sd..sd + hd].copy_from_slice(&x_t[b * hd..(b + 1) * hd]);
        if use_long {
            zr[sd + hd..sd + hd + d].copy_from_slice(&out_long[b * d..(b + 1) * d]);
        }
        if use_short {
            zr[sd + hd + d..].copy_from_slice(&out_short[b * d..(b + 1) * d]);
        }
    });
    let widths = mlp::widths(zin, &cfg.mlp_hidden);
    let n_layers = widths.len() - 1;
    let layers: Vec<(&[T], &[T])> = (0..n_layers).map(|i| (w.p[MLP0 + 2 * i], w.p[MLP0 + 2 * i + 1])).collect();
    let acts = mlp::forward(&HostDense::new(ops), &layers, z, bn, &widths, Act::None)?;
    let logits = &acts[n_layers];
    let (loss, dlogit) = ops.bce(logits, &batch.label)?;
    let prob: Vec<f32> = logits.iter().map(|&s| (1.0 / (1.0 + (-s.f64()).exp())) as f32).collect();
    if !loss.is_finite() {
        return Err(Error::NonFinite { field: "loss", index: 0, value: loss as f32 });
    }
    if !grad {
        return Ok(StepOut { loss, prob, grads: None, gsu_rows: long_rows });
    }

    // ---- Backward ----
    let _backward = crate::nvtx::range("train step: backward");
    let mut grads: Vec<Option<Grad<T>>> = (0..MLP0 + 2 * n_layers).map(|_| None).collect();
    let mlp_w: Vec<&[T]> = layers.iter().map(|l| l.0).collect();
    let (layer_grads, dz) = mlp::backward(&HostDense::new(ops), &mlp_w, &acts, dlogit, bn, &widths)?;
    for (i, (dw, db)) in layer_grads.into_iter().enumerate() {
        grads[MLP0 + 2 * i] = Some(Grad::Dense(dw));
        grads[MLP0 + 2 * i + 1] = Some(Grad::Dense(db));
    }
    let mut dx_t = vec![T::zero(); bn * hd];
    let mut dctx = vec![T::zero(); bn * sd];
    let mut dout_long = vec![T::zero(); bn * d];
    let mut dout_short = vec![T::zero(); bn * d];
    for b in 0..bn {
        let zr = &dz[b * zin..(b + 1) * zin];
        dctx[b * sd..(b + 1) * sd].copy_from_slice(&zr[..sd]);
        dx_t[b * hd..(b + 1) * hd].copy_from_slice(&zr[sd..sd + hd]);
        if use_long {
            dout_long[b * d..(b + 1) * d].copy_from_slice(&zr[sd + hd..sd + hd + d]);
        }
        if use_short {
            dout_short[b * d..(b + 1) * d].copy_from_slice(&zr[sd + hd + d..]);
        }
    }
    // Context rows.
    let (ctx_rows, ctx_perm, ctx_seg) = segments_of(&batch.context);
    grads[CONTEXT_EMB] = Some(Grad::Rows { rows: ctx_rows, values: ops.segment_sum(&dctx, sd, &ctx_perm, &ctx_seg)? });

    // W^o and the attention blocks.
    let mut dwo = ops.gemm(GemmKind::TN, &long_act.pooled, &dout_long, d, bn, d)?;
    let dwo_s = ops.gemm(GemmKind::TN, &short_act.pooled, &dout_short, d, bn, d)?;
    dwo.iter_mut().zip(&dwo_s).for_each(|(x, &y)| *x = *x + y);
    grads[W_O] = Some(Grad::Dense(dwo));
    let mut dq = vec![T::zero(); bn * d];
    // Per-row gradients of both blocks, concatenated long then short (the `all_items` order).
    let n_all = all_items.len();
    let mut dk_all = vec![T::zero(); n_all * d];
    let mut dv_all = vec![T::zero(); n_all * d];
    let mut dbias_all = vec![T::zero(); n_all * h];
    for (act, dout, row0) in [(&long_act, &dout_long, 0usize), (&short_act, &dout_short, n_long)] {
        if act.rows.len() == 0 {
            continue;
        }
        let dpooled = ops.gemm(GemmKind::NT, dout, w.p[W_O], bn, d, d)?;
        let g =
            ops.attn_bwd(AttnIn { heads: h, q: &q, k: &act.k, v: &act.v, bias: &act.bias, offsets: &act.rows.offsets }, &act.p, &dpooled)?;
        dq.iter_mut().zip(&g.dq).for_each(|(x, &y)| *x = *x + y);
        let n = act.rows.len();
        dk_all[row0 * d..(row0 + n) * d].copy_from_slice(&g.dk);
        dv_all[row0 * d..(row0 + n) * d].copy_from_slice(&g.dv);
        dbias_all[row0 * h..(row0 + n) * h].copy_from_slice(&g.dbias);
    }
    // Per unique item: dK, dV (rows grouped by item in `segments_of(all_items)` order = uniq).
    let dkp = ops.segment_sum(&dk_all, d, &perm_u, &seg_u)?;
    let dvp = ops.segment_sum(&dv_all, d, &perm_u, &seg_u)?;
    // Cross tables: every (row, j) adds its dv to cv[row_j] and its dbias to cb[row_j].
    let all_cross: Vec<u32> = long_act.rows.cross.iter().chain(&short_act.rows.cross).copied().collect();
    let (c_rows, c_perm, c_seg) = segments_of(&all_cross);
    // Source row of (r, j) is r: expand dv/dbias by J (index r*J + j → r).
    let src_row: Vec<u32> = c_perm.iter().map(|&i| i / j_n as u32).collect();
    let dcv_rows = ops.segment_sum(&dv_all, d, &src_row, &c_seg)?;
    let dcb_rows = ops.segment_sum(&dbias_all, h, &src_row, &c_seg)?;

    // Projections.
    grads[W_Q] = Some(Grad::Dense(ops.gemm(GemmKind::TN, &x_t, &dq, hd, bn, d)?));
    grads[W_K] = Some(Grad::Dense(ops.gemm(GemmKind::TN, &x_u, &dkp, hd, nu, d)?));
    grads[W_V] = Some(Grad::Dense(ops.gemm(GemmKind::TN, &x_u, &dvp, hd, nu, d)?));
    let dx_q = ops.gemm(GemmKind::NT, &dq, w.p[W_Q], bn, d, hd)?;
    dx_t.iter_mut().zip(&dx_q).for_each(|(x, &y)| *x = *x + y);
    let mut dx_u = ops.gemm(GemmKind::NT, &dkp, w.p[W_K], nu, d, hd)?;
    let dx_v = ops.gemm(GemmKind::NT, &dvp, w.p[W_V], nu, d, hd)?;
    dx_u.iter_mut().zip(&dx_v).for_each(|(x, &y)| *x = *x + y);

    // Cross parameters from dcb / dcv (scattered into full [ΣV, ·] tables; ΣV is tiny).
    {
        let v_n = cfg.cross_rows();
        let mut dcb = vec![T::zero(); v_n * h];
        let mut dcv = vec![T::zero(); v_n * d];
        for (si, &c) in c_rows.iter().enumerate() {
            let c = c as usize;
            dcb[c * h..(c + 1) * h].copy_from_slice(&dcb_rows[si * h..(si + 1) * h]);
            dcv[c * d..(c + 1) * d].copy_from_slice(&dcv_rows[si * d..(si + 1) * d]);
        }
        let offs = cfg.cross_offsets();
        let g = ops.cross_tables_bwd(CrossBwdIn {
            dcb: &dcb,
            dcv: &dcv,
            e: w.p[CROSS_EMB],
            w_c: w.p[W_C],
            beta: w.p[BETA],
            w_vc: w.p[W_VC],
            offsets: &offs,
            dims: CrossDims { heads: h, n_cross: j_n, dim: cx.cd },
        })?;
        grads[CROSS_EMB] = Some(Grad::Dense(g.de));
        grads[W_C] = Some(Grad::Dense(g.dw_c));
        grads[BETA] = Some(Grad::Dense(g.dbeta));
        grads[W_VC] = Some(Grad::Dense(g.dw_vc));
    }

    // Embedding rows from dx_t (targets) and dx_u (unique row items).
    let x_items: Vec<u32> = batch.target.iter().chain(&uniq).copied().collect();
    let dx_all: Vec<T> = dx_t.into_iter().chain(dx_u).collect();
    let (it_rows, it_perm, it_seg) = segments_of(&x_items);
    let dxi = ops.segment_sum(&dx_all, hd, &it_perm, &it_seg)?; // [unique items, H]
    let (id, sm) = (cfg.id_dim, cfg.small_dim);
    let part = |lo: usize, wdt: usize| -> Vec<T> {
        let mut o = vec![T::zero(); it_rows.len() * wdt];
        for (i, row) in o.chunks_mut(wdt).enumerate() {
            row.copy_from_slice(&dxi[i * hd + lo..i * hd + lo + wdt]);
        }
        o
    };
    grads[ITEM_EMB] = Some(Grad::Rows { rows: it_rows.clone(), values: part(0, id) });
    for (pi, keys, lo, wdt) in
        [(AUTHOR_EMB, w.item_author, id, id), (TOPIC_EMB, w.item_topic, 2 * id, sm), (DURATION_EMB, w.item_duration, 2 * id + sm, sm)]
    {
        let k: Vec<u32> = it_rows.iter().map(|&i| keys[i as usize]).collect();
        let (rows, perm, seg) = segments_of(&k);
        grads[pi] = Some(Grad::Rows { rows, values: ops.segment_sum(&part(lo, wdt), wdt, &perm, &seg)? });
    }
    let grads: Vec<Grad<T>> = grads.into_iter().map(|g| g.unwrap_or(Grad::Dense(Vec::new()))).collect();
    Ok(StepOut { loss, prob, grads: Some(grads), gsu_rows: long_rows })
}
