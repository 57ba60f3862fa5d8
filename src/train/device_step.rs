//! A training step resident on the device (issue 12, item 3), for every variant: parameters and
//! optimizer state live on the backend as tensors; per step the batch's ids, cross rows, sizes,
//! labels and gradient segments go up in one upload and the loss comes down in one download.
//!
//! The step follows `train::step` operation for operation, so it tracks the host step's loss
//! curve:
//! 1. `z = [context, x_h(target), out_long, out_short]`: the embedding rows gathered
//!    (`copy_rows`); the sequence modules (`device_seq`: cross tables, GSU, attention rows,
//!    attention, `W^o`) write their columns; zeros where a variant has no module.
//! 2. The MLP (`net::mlp` over `DeviceDense`), BCE with its mean on the device (`bce_dev`).
//! 3. The MLP backward; the sequence modules' backward; row gradients summed per unique row
//!    (`segment_sum_dev`, `segment_sum_mapped_dev`): context rows, then items, and from the
//!    items' sums the author, topic and duration rows.
//! 4. Row-sparse Adagrad on the touched rows, Adam on every dense parameter.
//!
//! `no-seq` leaves the sequence parameters out (zero gradients: Adam from zero state leaves them
//! exactly where they are), so they are not uploaded at all.

use super::device_seq::{self, ItemMaps, Seq, SeqParams};
use super::optim::{OptimConfig, Optimizer};
use super::Batch;
use crate::backend::cpu::optim::AdamStep;
use crate::backend::cpu::segment_sum::segments_of;
use crate::backend::{f32s, Act, Backend, Elem, IdSlot, OffsetsSlot, Rows, Staging, Tensor};
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::net::mlp::{self, DeviceDense};
use crate::net::{
    Variant, AUTHOR_EMB, BETA, CONTEXT_EMB, CROSS_EMB, DURATION_EMB, ITEM_EMB, MLP0, ROW_TABLES, TOPIC_EMB, W_C, W_K, W_O, W_Q, W_V, W_VC,
};

/// One parameter on the device with its optimizer state.
struct Param {
    index: usize,
    w: Tensor,
    /// Adam: `(m, v)`; Adagrad: `(accumulator, None)`.
    s1: Tensor,
    s2: Option<Tensor>,
}

/// The trainer: parameters and state resident on one backend.
pub struct DeviceTrainer {
    cfg: ModelConfig,
    variant: Variant,
    opt: OptimConfig,
    step: u64,
    params: Vec<Param>,
    item_author: Vec<u32>,
    item_topic: Vec<u32>,
    item_duration: Vec<u32>,
}

/// One table's row gradient: which rows, and how the gradient rows sum into them.
struct RowGrad {
    rows: IdSlot,
    perm: IdSlot,
    segs: OffsetsSlot,
}

fn stage_rows(st: &mut Staging, field: &'static str, keys: &[u32], bound: usize) -> Result<RowGrad> {
    let (rows, perm, segs) = segments_of(keys);
    Ok(RowGrad {
        rows: st.rows(field, &rows, bound)?,
        perm: st.ids("segment perm", &perm, keys.len())?,
        segs: st.offsets("segments", &segs)?,
    })
}

impl DeviceTrainer {
    /// Upload `model`'s parameters that `variant` trains, with fresh optimizer state (Adam zeros,
    /// Adagrad at `adagrad_init`), as `train::Optimizer::new` starts.
    pub fn new(be: &dyn Backend, model: &Model, variant: Variant, opt: OptimConfig) -> Result<DeviceTrainer> {
        DeviceTrainer::resume(be, model, variant, &Optimizer::new(model, opt))
    }

    /// Upload `model`'s parameters that `variant` trains with the state of `optim` (a
    /// checkpoint's): the device run continues the host optimizer's.
    pub fn resume(be: &dyn Backend, model: &Model, variant: Variant, optim: &Optimizer) -> Result<DeviceTrainer> {
        let cfg = model.config.clone();
        let n_layers = cfg.mlp_hidden.len() + 1;
        let used: Vec<usize> = if variant == Variant::NoSeq {
            ROW_TABLES.iter().copied().chain(MLP0..MLP0 + 2 * n_layers).collect()
        } else {
            (0..MLP0 + 2 * n_layers).collect()
        };
        let mut params = Vec::with_capacity(used.len());
        for i in used {
            let t = model.param_at(i);
            let (rows, cols) = match t.shape.as_slice() {
                [n] => (1, *n),
                [r, c] => (*r, *c),
                [a, b, c] => (*a, b * c),
                _ => return Err(Error::BadShape { field: "parameter rank", value: t.shape.len() as u64, why: "expected 1, 2 or 3" }),
            };
            let (s1, s2) = optim.state_of(i).ok_or_else(|| Error::Incompatible {
                what: "optimizer state",
                why: format!("none for tensor {i} (an optimizer made for another model?)"),
            })?;
            let w = be.tensor_f32("param", rows, cols, &t.data)?;
            let s1t = be.tensor_f32(if s2.is_empty() { "adagrad acc" } else { "adam m" }, rows, cols, s1)?;
            let s2t = if ROW_TABLES.contains(&i) { None } else { Some(be.tensor_f32("adam v", rows, cols, s2)?) };
            params.push(Param { index: i, w, s1: s1t, s2: s2t });
        }
        Ok(DeviceTrainer {
            cfg,
            variant,
            opt: optim.cfg,
            step: optim.step,
            params,
            item_author: model.item_author.clone(),
            item_topic: model.item_topic.clone(),
            item_duration: model.item_duration_bucket.clone(),
        })
    }

    /// Copy the trained parameters and the optimizer state back (one download per parameter):
    /// `model` and `optim` then hold what a host run would (a checkpoint can be written).
    pub fn sync_into(&self, be: &dyn Backend, model: &mut Model, optim: &mut Optimizer) -> Result<()> {
        self.download_into(be, model)?;
        for p in &self.params {
            let mut ts = vec![&p.s1];
            ts.extend(p.s2.as_ref());
            let got = be.tensor_read(&ts)?;
            optim.set_state(p.index, f32s(&got[0]), got.get(1).map(|w| f32s(w)).unwrap_or_default())?;
        }
        optim.step = self.step;
        Ok(())
    }

    fn param(&self, index: usize) -> Result<&Param> {
        self.params
            .iter()
            .find(|p| p.index == index)
            .ok_or_else(|| Error::Incompatible { what: "parameter", why: format!("tensor {index} is not trained by this device step") })
    }

    fn seq_params(&self) -> Result<SeqParams<'_>> {
        let w = |i: usize| -> Result<&Tensor> { Ok(&self.param(i)?.w) };
        Ok(SeqParams {
            tables: [w(ITEM_EMB)?, w(AUTHOR_EMB)?, w(TOPIC_EMB)?, w(DURATION_EMB)?],
            cross_emb: w(CROSS_EMB)?,
            w_q: w(W_Q)?,
            w_k: w(W_K)?,
            w_v: w(W_V)?,
            w_c: w(W_C)?,
            beta: w(BETA)?,
            w_vc: w(W_VC)?,
            w_o: w(W_O)?,
        })
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One training step on `batch` (validated like `train::step`): returns the mean BCE.
    pub fn step(&mut self, be: &dyn Backend, batch: &Batch) -> Result<f64> {
        self.run(be, batch, true).map(|(loss, _)| loss)
    }

    /// The forward pass alone on the current parameters: `(mean BCE, σ(logit) per sample)`, one
    /// upload and one download (loss and logits together). Nothing is updated.
    pub fn predict(&mut self, be: &dyn Backend, batch: &Batch) -> Result<(f64, Vec<f32>)> {
        self.run(be, batch, false)
    }

    /// One forward pass, and with `train` the backward and the optimizer updates.
    fn run(&mut self, be: &dyn Backend, batch: &Batch, train: bool) -> Result<(f64, Vec<f32>)> {
        super::step::check_batch(&self.cfg, batch)?;
        let bn = batch.target.len();
        if bn == 0 {
            return Err(Error::Empty { field: "batch", index: 0 });
        }
        let _range = crate::nvtx::range("train step (device)");
        let c = &self.cfg;
        let (id, sm, hd) = (c.id_dim, c.small_dim, c.inherent_dim());
        let map = |m: &[u32], ids: &[u32]| -> Vec<u32> { ids.iter().map(|&i| m[i as usize]).collect() };

        // Stage the batch: ids, labels, and the segments of every row gradient.
        let mut st = Staging::new();
        let authors = map(&self.item_author, &batch.target);
        let topics = map(&self.item_topic, &batch.target);
        let durations = map(&self.item_duration, &batch.target);
        let s_ctx = st.ids("context", &batch.context, c.n_context)?;
        let s_feat = [
            st.ids("target", &batch.target, c.n_items)?,
            st.ids("target author", &authors, c.n_authors)?,
            st.ids("target topic", &topics, c.n_topics)?,
            st.ids("target duration bucket", &durations, c.n_duration_buckets)?,
        ];
        let labels = st.f32s("label", &batch.label)?;
        let g_ctx = stage_rows(&mut st, "context rows", &batch.context, c.n_context)?;
        let seq_stage = if self.variant == Variant::NoSeq {
            None
        } else {
            let maps = ItemMaps { author: &self.item_author, topic: &self.item_topic, duration: &self.item_duration };
            Some(device_seq::stage(&mut st, c, self.variant, batch, &maps)?)
        };
        // The item rows: the targets' (no-seq), or every item the batch holds (a superset of the
        // rows the GSU keeps, grouped over the row map's positions).
        let (g_item, item_rows) = match &seq_stage {
            None => (stage_rows(&mut st, "item rows", &batch.target, c.n_items)?, segments_of(&batch.target).0),
            Some(s) => {
                let rows = st.rows("item rows", &s.item_rows, c.n_items)?;
                (RowGrad { rows, perm: s.item_perm.clone(), segs: s.item_segs.clone() }, s.item_rows.clone())
            }
        };
        let g_author = stage_rows(&mut st, "author rows", &map(&self.item_author, &item_rows), c.n_authors)?;
        let g_topic = stage_rows(&mut st, "topic rows", &map(&self.item_topic, &item_rows), c.n_topics)?;
        let g_duration = stage_rows(&mut st, "duration rows", &map(&self.item_duration, &item_rows), c.n_duration_buckets)?;
        let staged = be.upload_staging(st)?;
        let seq = match &seq_stage {
            None => None,
            Some(s) => Some(Seq { be, cfg: c, variant: self.variant, s, staged: &staged, w: self.seq_params()? }),
        };

        // Forward.
        let zin = c.mlp_input();
        let z = be.tensor_zeros("mlp input", bn, zin, Elem::F32)?;
        be.copy_rows(&z, 0, Rows::All, &self.param(CONTEXT_EMB)?.w, Rows::Ids(&s_ctx), &staged)?;
        let cols = [sm, sm + id, sm + 2 * id, sm + 2 * id + sm];
        for ((table, slot), col) in [ITEM_EMB, AUTHOR_EMB, TOPIC_EMB, DURATION_EMB].iter().zip(&s_feat).zip(cols) {
            be.copy_rows(&z, col, Rows::All, &self.param(*table)?.w, Rows::Ids(slot), &staged)?;
        }
        let seq_act = match &seq {
            None => None,
            Some(q) => Some(q.forward(&z)?),
        };
        let widths = mlp::widths(zin, &c.mlp_hidden);
        let n_layers = widths.len() - 1;
        let layer = |i: usize| -> Result<(&Tensor, &Tensor)> { Ok((&self.param(MLP0 + 2 * i)?.w, &self.param(MLP0 + 2 * i + 1)?.w)) };
        let layers: Vec<(&Tensor, &Tensor)> = (0..n_layers).map(layer).collect::<Result<_>>()?;
        let dev = DeviceDense(be);
        let acts = mlp::forward(&dev, &layers, z, bn, &widths, Act::None)?;
        let logits = acts.last().ok_or(Error::Empty { field: "mlp layers", index: 0 })?;
        let bce = be.bce_dev(logits, &labels, &staged)?;
        let (loss, dlogit) = (&bce.loss, bce.dlogit.clone());
        if !train {
            let got = be.tensor_read(&[loss, logits])?;
            let l = bce.loss_of(&got[0]);
            let prob = f32s(&got[1]).iter().map(|&s| (1.0 / (1.0 + (-(s as f64)).exp())) as f32).collect();
            return Ok((l, prob));
        }

        // Backward: the MLP, then dz's context and x_t parts into row gradients.
        let ws: Vec<&Tensor> = layers.iter().map(|l| l.0).collect();
        let (layer_grads, dz) = mlp::backward(&dev, &ws, &acts, dlogit, bn, &widths)?;
        let part = |src: &Tensor, cols: std::ops::Range<usize>| -> Result<Tensor> {
            let t = be.tensor_zeros("gradient part", src.rows, cols.len(), Elem::F32)?;
            be.copy_cols(&t, 0, Rows::All, src, cols, Rows::All, &staged)?;
            Ok(t)
        };
        let (lr, eps) = (self.opt.lr_emb, self.opt.eps);
        let adagrad = |index: usize, g: &RowGrad, src: &Tensor| -> Result<()> {
            let sum = be.segment_sum_dev(src, &g.perm, &g.segs, &staged)?;
            let p = self.param(index)?;
            be.adagrad_rows(&p.w, &p.s1, &g.rows, &sum, &staged, lr, eps)
        };
        adagrad(CONTEXT_EMB, &g_ctx, &part(&dz, 0..sm)?)?;
        let seq_grads = match (&seq, &seq_act) {
            (Some(q), Some(a)) => Some(q.backward(a, &dz)?),
            _ => None,
        };
        let dxi = match &seq_grads {
            Some(g) => g.dx_items.clone(),
            None => be.segment_sum_dev(&part(&dz, sm..sm + hd)?, &g_item.perm, &g_item.segs, &staged)?,
        };
        {
            let p = self.param(ITEM_EMB)?;
            be.adagrad_rows(&p.w, &p.s1, &g_item.rows, &part(&dxi, 0..id)?, &staged, lr, eps)?;
        }
        adagrad(AUTHOR_EMB, &g_author, &part(&dxi, id..2 * id)?)?;
        adagrad(TOPIC_EMB, &g_topic, &part(&dxi, 2 * id..2 * id + sm)?)?;
        adagrad(DURATION_EMB, &g_duration, &part(&dxi, 2 * id + sm..hd)?)?;

        // Adam on the MLP, with the host optimizer's bias corrections for this step.
        self.step += 1;
        let t = self.step as f64;
        let o = self.opt;
        let hp = AdamStep {
            lr: o.lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            bc1: (1.0 - (o.beta1 as f64).powf(t)) as f32,
            bc2: (1.0 - (o.beta2 as f64).powf(t)) as f32,
        };
        let mut dense: Vec<(usize, &Tensor)> = Vec::new();
        for (i, (dw, db)) in layer_grads.iter().enumerate() {
            dense.push((MLP0 + 2 * i, dw));
            dense.push((MLP0 + 2 * i + 1, db));
        }
        if let Some(g) = &seq_grads {
            dense.extend([
                (CROSS_EMB, &g.cross_emb),
                (W_Q, &g.w_q),
                (W_K, &g.w_k),
                (W_V, &g.w_v),
                (W_C, &g.w_c),
                (BETA, &g.beta),
                (W_VC, &g.w_vc),
                (W_O, &g.w_o),
            ]);
        }
        for (index, g) in dense {
            let p = self.param(index)?;
            let v = p.s2.as_ref().ok_or_else(|| Error::Incompatible {
                what: "adam state",
                why: format!("tensor {index} has no second moment (it is trained with Adagrad)"),
            })?;
            be.adam(&p.w, g, &p.s1, v, &hp)?;
        }

        // The one download: the loss.
        let got = be.tensor_read(&[loss])?;
        let l = bce.loss_of(&got[0]);
        if !l.is_finite() {
            return Err(Error::NonFinite { field: "loss", index: 0, value: l as f32 });
        }
        Ok((l, Vec::new()))
    }

    /// Copy the trained parameters back into `model` (one download per tensor).
    pub fn download_into(&self, be: &dyn Backend, model: &mut Model) -> Result<()> {
        for p in &self.params {
            let words = be.tensor_read(&[&p.w])?.remove(0);
            let name = model.params().nth(p.index).map(|(n, _)| n).ok_or_else(|| Error::Incompatible {
                what: "parameter",
                why: format!("tensor {} is not in the model downloaded into (another model's config?)", p.index),
            })?;
            model.param_mut(name)?.data = f32s(&words);
        }
        Ok(())
    }
}
