//! Host implementations of the training step's sequence ops (the `DeviceOps` defaults): read the
//! tensors, run the CPU reference (`cpu::gsu_train`, `cpu::twin_rows`, `cpu::cross_bias`,
//! `cpu::segment_sum`), write the results back. On the CPU backend that moves nothing.

use super::cpu::gsu_train::{self, GsuTrainRef};
use super::cpu::{cross_bias, segment_sum, twin_rows};
use super::host_tensor::put;
use super::train_rows::{CrossGradsDev, CrossParams, FeatTables, GsuTrainIn, GsuTrainOut, TwinRowsSlot};
use super::{f32s, words, Backend, Elem, IdSlot, OffsetsSlot, Staged, Tensor};
use crate::error::Result;

fn read_tables<B: Backend + ?Sized>(be: &B, f: &FeatTables<'_>) -> Result<[Vec<f32>; 4]> {
    let r = be.tensor_read(&f.tables)?;
    Ok([f32s(&r[0]), f32s(&r[1]), f32s(&r[2]), f32s(&r[3])])
}

pub(crate) fn cross_tables<B: Backend + ?Sized>(be: &B, p: &CrossParams<'_>, d: usize, staged: &Staged) -> Result<(Tensor, Tensor)> {
    let r = be.tensor_read(&[p.e, p.w_c, p.beta, p.w_vc, &staged.tensor])?;
    let offs = &r[4][p.offsets.range.clone()];
    let (cb, cv) = cross_bias::cross_tables(&f32s(&r[0]), &f32s(&r[1]), &f32s(&r[2]), &f32s(&r[3]), offs, p.dims, d);
    let v = p.offsets.rows;
    Ok((put(be, "cross bias table", v, p.dims.heads, Elem::F32, words(&cb))?, put(be, "cross value table", v, d, Elem::F32, words(&cv))?))
}

pub(crate) fn cross_tables_bwd<B: Backend + ?Sized>(
    be: &B,
    p: &CrossParams<'_>,
    dcb: &Tensor,
    dcv: &Tensor,
    staged: &Staged,
) -> Result<CrossGradsDev> {
    let r = be.tensor_read(&[dcb, dcv, p.e, p.w_c, p.beta, p.w_vc, &staged.tensor])?;
    let offs = &r[6][p.offsets.range.clone()];
    let [dcb, dcv, e, w_c, beta, w_vc] = [0, 1, 2, 3, 4, 5].map(|i| f32s(&r[i]));
    let g = cross_bias::cross_tables_bwd(&dcb, &dcv, &e, &w_c, &beta, &w_vc, offs, p.dims);
    Ok(CrossGradsDev {
        de: put(be, "cross e grad", p.e.rows, p.e.cols, Elem::F32, words(&g.de))?,
        dw_c: put(be, "cross w_c grad", p.w_c.rows, p.w_c.cols, Elem::F32, words(&g.dw_c))?,
        dbeta: put(be, "cross beta grad", p.beta.rows, p.beta.cols, Elem::F32, words(&g.dbeta))?,
        dw_vc: put(be, "cross w_vc grad", p.w_vc.rows, p.w_vc.cols, Elem::F32, words(&g.dw_vc))?,
    })
}

pub(crate) fn gsu_train<B: Backend + ?Sized>(be: &B, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<GsuTrainOut> {
    let tables = read_tables(be, &x.feats)?;
    let r = be.tensor_read(&[x.qbar, x.cb, &staged.tensor])?;
    let w = &r[2];
    let log_n = f32s(&w[slot.log_n.clone()]);
    let long_offsets = &w[slot.long_offsets.clone()];
    let cb = f32s(&r[1]);
    let scores = gsu_train::scores(&GsuTrainRef {
        qbar: &f32s(&r[0]),
        tables: [&tables[0], &tables[1], &tables[2], &tables[3]],
        dims: x.feats.dims,
        cb: &cb,
        heads: x.heads,
        n_cross: slot.bounds.n_cross,
        feat: &w[slot.feat.clone()],
        cross: &w[slot.cross.clone()],
        log_n: &log_n,
        long_offsets,
        q_scale: x.q_scale,
        bias: x.bias,
    });
    let (_, sel) = gsu_train::select(&scores, long_offsets, slot.k);
    let map = gsu_train::row_map(&sel, slot.n_long, slot.n_short + slot.extra_tail);
    Ok(GsuTrainOut {
        scores: put(be, "gsu scores", slot.n_long, 1, Elem::F32, words(&scores))?,
        sel: put(be, "gsu finalists", slot.n_fin, 1, Elem::U32, sel)?,
        map: put(be, "gsu row map", slot.map_len(), 1, Elem::U32, map)?,
        staging: slot.staging,
    })
}

fn rows_in<'a>(
    tables: [&'a [f32]; 4],
    feats: &FeatTables<'_>,
    heads: usize,
    slot: &TwinRowsSlot,
    w: &'a [u32],
    log_n: &'a [f32],
) -> twin_rows::RowsIn<'a, f32> {
    twin_rows::RowsIn {
        tables,
        dims: feats.dims,
        heads,
        n_cross: slot.bounds.n_cross,
        feat: &w[slot.feat.clone()],
        cross: &w[slot.cross.clone()],
        log_n,
        n_long: slot.n_long,
    }
}

pub(crate) fn twin_rows<B: Backend + ?Sized>(
    be: &B,
    feats: &FeatTables<'_>,
    cb: &Tensor,
    heads: usize,
    gsu: &GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
) -> Result<(Tensor, Tensor)> {
    let tables = read_tables(be, feats)?;
    let r = be.tensor_read(&[cb, &gsu.sel, &staged.tensor])?;
    let log_n = f32s(&r[2][slot.log_n.clone()]);
    let x = rows_in([&tables[0], &tables[1], &tables[2], &tables[3]], feats, heads, slot, &r[2], &log_n);
    let (xs, bias) = twin_rows::rows(&x, &f32s(&r[0]), &r[1], slot.n_short);
    let n = slot.n_att();
    Ok((
        put(be, "attention rows x_h", n, feats.dims.width(), Elem::F32, words(&xs))?,
        put(be, "attention bias", n, heads, Elem::F32, words(&bias))?,
    ))
}

pub(crate) fn twin_rows_value<B: Backend + ?Sized>(
    be: &B,
    v: &Tensor,
    cv: &Tensor,
    gsu: &GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
) -> Result<()> {
    let r = be.tensor_read(&[v, cv, &gsu.sel, &staged.tensor])?;
    let mut vv = f32s(&r[0]);
    twin_rows::add_values(&mut vv, v.cols, &f32s(&r[1]), &r[3][slot.cross.clone()], slot.bounds.n_cross, &r[2], slot.n_long);
    be.tensor_write(v, &words(&vv))
}

pub(crate) fn segment_sum_mapped<B: Backend + ?Sized>(
    be: &B,
    src: &Tensor,
    perm: &IdSlot,
    segs: &OffsetsSlot,
    gsu: &GsuTrainOut,
    staged: &Staged,
) -> Result<Tensor> {
    let r = be.tensor_read(&[src, &gsu.map, &staged.tensor])?;
    let out = segment_sum::segment_sum_mapped(&f32s(&r[0]), src.cols, &r[2][perm.range.clone()], &r[2][segs.range.clone()], &r[1]);
    put(be, "segment sum (mapped)", segs.segments, src.cols, Elem::F32, words(&out))
}
