//! The device-side inputs and outputs of a TWIN training step's sequence part (issue 12, item 3):
//! the staged per-position rows ([`TwinRowsSlot`]), the training GSU's inputs ([`GsuTrainIn`])
//! and results ([`GsuTrainOut`], whose row map only the GSU writes), the cross tables' tensors
//! ([`CrossParams`]) and their gradients ([`CrossGradsDev`]). The math is in `cpu::gsu_train`,
//! `cpu::twin_rows`, `cpu::cross_bias` and `cpu::segment_sum::segment_sum_mapped`.
//!
//! Positions: a sample's long rows first (`long_offsets`, `n_long` in all), then the short rows
//! (`short_offsets`, `n_short`); the row map covers `n_long + n_short + extra_tail` positions so
//! a caller can append more gradient sources (the step appends the targets).

use std::ops::Range;

use super::cpu::gsu_train::{fin_offsets, FeatDims};
use super::tensor::{Elem, OffsetsSlot, Staged, Staging, Tensor};
use super::{check, words, CrossBwdIn, CrossDims, CrossTableGrads};
use crate::error::{Error, Result};

/// The host's description of one batch's attention positions.
pub struct TwinRowsIn<'a> {
    /// `[B + 1]` over the long positions.
    pub long_offsets: &'a [u32],
    /// `[B + 1]` over the short positions.
    pub short_offsets: &'a [u32],
    /// `[P, 4]`: item, author, topic, duration of every position (long then short).
    pub feat: &'a [u32],
    /// `[P, J]` stacked cross-table rows.
    pub cross: &'a [u32],
    /// `[P]`: `ln n` (0 for raw behaviours and short rows).
    pub log_n: &'a [f32],
    /// GSU keeps `min(L_b, k)` long rows per sample.
    pub k: usize,
    /// Row-map positions after the short ones.
    pub extra_tail: usize,
}

/// Bounds the staged ids were checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwinBounds {
    /// Rows of the item, author, topic and duration tables.
    pub tables: [usize; 4],
    /// `ΣV`.
    pub cross_rows: usize,
    /// `J`.
    pub n_cross: usize,
}

/// [`TwinRowsIn`] staged and validated.
#[derive(Clone, Debug)]
pub struct TwinRowsSlot {
    pub(crate) staging: u64,
    pub(crate) feat: Range<usize>,
    pub(crate) cross: Range<usize>,
    pub(crate) log_n: Range<usize>,
    pub(crate) long_offsets: Range<usize>,
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // read by the GPU backends only
    pub(crate) fin_offsets: Range<usize>,
    /// The attention blocks' offsets, `[2B + 1]`: finalists per sample, then `n_fin` + the short
    /// offsets (so one attention call covers both blocks with `q` stacked twice).
    pub att_offsets: OffsetsSlot,
    pub bounds: TwinBounds,
    pub samples: usize,
    pub n_long: usize,
    pub n_short: usize,
    pub n_fin: usize,
    pub k: usize,
    pub extra_tail: usize,
}

impl TwinRowsSlot {
    /// Attention rows: finalists then short rows.
    pub fn n_att(&self) -> usize {
        self.n_fin + self.n_short
    }
    /// Positions the row map covers.
    pub fn map_len(&self) -> usize {
        self.n_long + self.n_short + self.extra_tail
    }
    /// Source rows the row map points into.
    pub fn map_rows(&self) -> usize {
        self.n_fin + self.n_short + self.extra_tail
    }
}

impl Staging {
    /// Stage a batch's attention positions, each id checked against `bounds`.
    pub fn twin_rows(&mut self, x: &TwinRowsIn<'_>, bounds: TwinBounds) -> Result<TwinRowsSlot> {
        let b = x.long_offsets.len().saturating_sub(1);
        check::len("short_offsets", x.short_offsets.len(), b + 1, "long_offsets length")?;
        let n_long = *x.long_offsets.last().ok_or(Error::Empty { field: "long_offsets", index: 0 })? as usize;
        let n_short = *x.short_offsets.last().ok_or(Error::Empty { field: "short_offsets", index: 0 })? as usize;
        check::offsets("long_offsets", x.long_offsets, n_long)?;
        check::offsets("short_offsets", x.short_offsets, n_short)?;
        let p = n_long + n_short;
        check::len("feat", x.feat.len(), p * 4, "positions * 4")?;
        check::len("cross", x.cross.len(), p * bounds.n_cross, "positions * J")?;
        check::len("log_n", x.log_n.len(), p, "positions")?;
        check::finite("log_n", x.log_n)?;
        check::ids_below("cross", x.cross, bounds.cross_rows)?;
        for (i, &f) in x.feat.iter().enumerate() {
            let bound = bounds.tables[i % 4];
            if f as usize >= bound {
                let field = ["feat item", "feat author", "feat topic", "feat duration"][i % 4];
                return Err(Error::OutOfRange { field, index: i / 4, value: f as u64, limit: bound as u64 });
            }
        }
        if x.k == 0 {
            return Err(Error::BadShape { field: "gsu k", value: 0, why: "must be at least 1" });
        }
        if p + x.extra_tail > u32::MAX as usize / 2 {
            return Err(Error::TooLarge { field: "positions", value: (p + x.extra_tail) as u64, limit: u32::MAX as u64 / 2 });
        }
        let fin = fin_offsets(x.long_offsets, x.k);
        let n_fin = *fin.last().unwrap_or(&0) as usize;
        let mut att: Vec<u32> = fin.clone();
        att.extend(x.short_offsets[1..].iter().map(|&o| o + n_fin as u32));
        Ok(TwinRowsSlot {
            staging: self.id,
            feat: self.push(x.feat),
            cross: self.push(x.cross),
            log_n: self.push(&words(x.log_n)),
            long_offsets: self.push(x.long_offsets),
            fin_offsets: self.push(&fin),
            att_offsets: self.offsets("attention offsets", &att)?,
            bounds,
            samples: b,
            n_long,
            n_short,
            n_fin,
            k: x.k,
            extra_tail: x.extra_tail,
        })
    }
}

/// The inherent-feature tables `x_h` is gathered from: item, author, topic, duration.
#[derive(Clone, Copy)]
pub struct FeatTables<'a> {
    pub tables: [&'a Tensor; 4],
    pub dims: FeatDims,
}

/// Inputs of `DeviceOps::gsu_train_dev` (math in `cpu::gsu_train`).
pub struct GsuTrainIn<'a> {
    /// `[B, H]` folded queries.
    pub qbar: &'a Tensor,
    pub feats: FeatTables<'a>,
    /// `[ΣV, h]` (read only when `bias`).
    pub cb: &'a Tensor,
    pub heads: usize,
    pub q_scale: f32,
    pub bias: bool,
}

/// What the training GSU leaves on the device.
pub struct GsuTrainOut {
    /// `[n_long, 1]` f32.
    pub scores: Tensor,
    /// `[n_fin, 1]` u32: the long position of each finalist.
    pub sel: Tensor,
    /// `[map_len, 1]` u32: the row map (`cpu::gsu_train` docs). Written only by the GSU, so its
    /// values stay below the slot's `map_rows()` (or are `NOT_KEPT`).
    pub map: Tensor,
    pub(crate) staging: u64,
}

impl GsuTrainOut {
    pub(crate) fn check(&self, slot: &TwinRowsSlot) -> Result<()> {
        if self.staging != slot.staging {
            return Err(Error::Incompatible {
                what: "gsu output",
                why: format!("made from staged batch #{}, not from this slot's (#{})", self.staging, slot.staging),
            });
        }
        self.sel.expect("gsu sel", slot.n_fin, 1, Elem::U32)?;
        self.map.expect("gsu row map", slot.map_len(), 1, Elem::U32)
    }
}

/// The cross parameters as tensors: `e [ΣV, C]`, `w_c [h, J·C]`, `beta [h, J]`,
/// `w_vc [J·C, D]`, feature row offsets staged (`[J + 1]`).
pub struct CrossParams<'a> {
    pub e: &'a Tensor,
    pub w_c: &'a Tensor,
    pub beta: &'a Tensor,
    pub w_vc: &'a Tensor,
    pub offsets: &'a OffsetsSlot,
    pub dims: CrossDims,
}

impl CrossParams<'_> {
    /// Shapes, and offsets staged in `staged` over `ΣV = e.rows` with `J` features. Returns `D`.
    pub(crate) fn check(&self, staged: &Staged) -> Result<usize> {
        let (h, j, c) = (self.dims.heads, self.dims.n_cross, self.dims.dim);
        staged.owns("cross offsets", self.offsets.staging)?;
        check::len("cross offsets", self.offsets.segments, j, "J")?;
        let v = self.offsets.rows;
        if h == 0 || j == 0 || c == 0 {
            return Err(Error::BadShape { field: "cross dims", value: 0, why: "heads, J and C must be positive" });
        }
        self.e.expect("cross e", v, c, Elem::F32)?;
        self.w_c.expect("cross w_c", h, j * c, Elem::F32)?;
        self.beta.expect("cross beta", h, j, Elem::F32)?;
        let d = self.w_vc.cols;
        self.w_vc.expect("cross w_vc", j * c, d, Elem::F32)?;
        if v.saturating_mul(d.max(c).max(h)) > u32::MAX as usize {
            return Err(Error::TooLarge { field: "cross rows", value: v as u64, limit: u32::MAX as u64 });
        }
        Ok(d)
    }
}

/// Gradients of the cross parameters on the device, shaped like [`CrossParams`]' tensors.
pub struct CrossGradsDev {
    pub de: Tensor,
    pub dw_c: Tensor,
    pub dbeta: Tensor,
    pub dw_vc: Tensor,
}

/// Where the cross parameters' gradients sit in the one packed buffer the GPU backward
/// (`cross_bias_bwd`, CUDA and WGSL, slice and tensor forms) writes: `[dE | dw_c | dβ | dW^{vc}]`,
/// consecutive, for `v` cross rows and model width `d`.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // the GPU backends only
#[derive(Clone, Copy, Debug)]
pub(crate) struct CrossGradLayout {
    /// `V`: rows of the stacked cross tables.
    pub v: usize,
    /// `D`: columns of `W^{vc}` (and of `dcv`).
    pub d: usize,
    pub dims: CrossDims,
}

#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
impl CrossGradLayout {
    /// Of the slice form's inputs (lengths checked by `check::cross_tables_bwd`): `V` from
    /// `e [V, C]`, `D` from `dcv [V, D]`.
    pub(crate) fn of_slices(x: &CrossBwdIn<'_>) -> Self {
        let v = x.e.len().checked_div(x.dims.dim).unwrap_or(0);
        CrossGradLayout { v, d: x.dcv.len().checked_div(v).unwrap_or(0), dims: x.dims }
    }

    /// Of the tensor form's parameters (checked by [`CrossParams::check`]): `V` from the staged
    /// offsets, `D` the columns of `W^{vc}`.
    pub(crate) fn of_params(p: &CrossParams<'_>) -> Self {
        CrossGradLayout { v: p.offsets.rows, d: p.w_vc.cols, dims: p.dims }
    }

    /// Elements of dE `[V, C]`, dw_c `[h, J, C]`, dβ `[h, J]`, dW^{vc} `[J * C, D]`.
    pub(crate) fn sizes(&self) -> [usize; 4] {
        let (h, j, c) = (self.dims.heads, self.dims.n_cross, self.dims.dim);
        [self.v * c, h * j * c, h * j, j * c * self.d]
    }

    /// First element of each section, in the order of [`Self::sizes`].
    pub(crate) fn starts(&self) -> [usize; 4] {
        let [a, b, c, _] = self.sizes();
        [0, a, a + b, a + b + c]
    }

    /// Elements of the packed buffer.
    pub(crate) fn total(&self) -> usize {
        self.sizes().iter().sum()
    }

    /// The downloaded packed buffer cut into the four gradients.
    pub(crate) fn split(&self, mut g: Vec<f32>) -> CrossTableGrads<f32> {
        let [_, s1, s2, s3] = self.starts();
        let dw_vc = g.split_off(s3);
        let dbeta = g.split_off(s2);
        let dw_c = g.split_off(s1);
        CrossTableGrads { de: g, dw_c, dbeta, dw_vc }
    }
}

impl FeatTables<'_> {
    /// Each table f32 with its feature's width and at least the rows the ids were checked against.
    pub(crate) fn check(&self, bounds: &TwinBounds) -> Result<()> {
        const NAMES: [&str; 4] = ["item table", "author table", "topic table", "duration table"];
        for (f, t) in self.tables.iter().enumerate() {
            let w = self.dims.part(f).1;
            t.expect(NAMES[f], t.rows, w, Elem::F32)?;
            if t.rows < bounds.tables[f] {
                return Err(Error::OutOfRange { field: NAMES[f], index: f, value: bounds.tables[f] as u64, limit: t.rows as u64 });
            }
            if t.len() > u32::MAX as usize {
                return Err(Error::TooLarge { field: NAMES[f], value: t.len() as u64, limit: u32::MAX as u64 });
            }
        }
        Ok(())
    }
}

/// `cb [ΣV, h]` as the slot's cross ids index it.
pub(crate) fn check_cb(cb: &Tensor, heads: usize, slot: &TwinRowsSlot) -> Result<()> {
    if heads == 0 {
        return Err(Error::BadShape { field: "heads", value: 0, why: "must be at least 1" });
    }
    cb.expect("cross bias table cb", slot.bounds.cross_rows, heads, Elem::F32)
}

/// The training GSU's operands.
pub(crate) fn check_gsu(x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<()> {
    staged.owns("twin rows", slot.staging)?;
    x.feats.check(&slot.bounds)?;
    x.qbar.expect("gsu qbar", slot.samples, x.feats.dims.width(), Elem::F32)?;
    if x.bias {
        check_cb(x.cb, x.heads, slot)?;
    }
    if !x.q_scale.is_finite() {
        return Err(Error::NonFinite { field: "gsu q_scale", index: 0, value: x.q_scale });
    }
    Ok(())
}

/// The attention rows' operands.
pub(crate) fn check_rows(
    feats: &FeatTables<'_>,
    cb: &Tensor,
    heads: usize,
    gsu: &GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
) -> Result<()> {
    staged.owns("twin rows", slot.staging)?;
    gsu.check(slot)?;
    feats.check(&slot.bounds)?;
    check_cb(cb, heads, slot)
}

/// `v [n_att, D]` and `cv [ΣV, D]`.
pub(crate) fn check_values(v: &Tensor, cv: &Tensor, gsu: &GsuTrainOut, slot: &TwinRowsSlot, staged: &Staged) -> Result<()> {
    staged.owns("twin rows", slot.staging)?;
    gsu.check(slot)?;
    v.expect("attention values v", slot.n_att(), v.cols, Elem::F32)?;
    cv.expect("cross value table cv", slot.bounds.cross_rows, v.cols, Elem::F32)?;
    if v.len() > u32::MAX as usize || cv.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "attention values v", value: v.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// `src [≥ rows the positions map to, W]`, `perm` positions below the map's length, offsets over
/// `perm`.
pub(crate) fn check_mapped(
    src: &Tensor,
    perm: &super::IdSlot,
    segs: &OffsetsSlot,
    gsu: &GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
) -> Result<()> {
    staged.owns("segment_sum_mapped perm", perm.staging)?;
    staged.owns("segment_sum_mapped offsets", segs.staging)?;
    gsu.check(slot)?;
    // Positions below `perm.bound` map below `n_fin + (bound - n_long)` (long positions to
    // finalists, later ones by the fixed offset): `src` must hold those rows.
    let need = slot.n_fin + perm.bound.saturating_sub(slot.n_long);
    src.expect("segment_sum_mapped src", src.rows, src.cols, Elem::F32)?;
    if src.rows < need {
        return Err(Error::LengthMismatch {
            field: "segment_sum_mapped src rows",
            got: src.rows,
            expected: need,
            expected_what: "the rows the staged positions map to",
        });
    }
    if perm.bound > slot.map_len() {
        return Err(Error::OutOfRange {
            field: "segment_sum_mapped perm",
            index: 0,
            value: perm.bound as u64,
            limit: slot.map_len() as u64,
        });
    }
    check::len("segment_sum_mapped offsets end", segs.rows, perm.len(), "perm length")?;
    if src.len() > u32::MAX as usize || segs.segments.saturating_mul(src.cols) > u32::MAX as usize {
        return Err(Error::TooLarge { field: "segment_sum_mapped size", value: src.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}
