//! The precomputed online tables (SPEC §3.1-3.2): built once per model version, so a request
//! only gathers rows. Projections are row-blocked f32 GEMMs (ndarray) run in parallel with
//! rayon; `X_h` is built block by block, never materialised for the whole catalogue.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::Model;
use crate::backend::{Backend, DType, HostTable, OnlineTables};
use crate::error::{Error, Result};

/// Rows per GEMM block: `X_h` block (1024 × 144 f32) stays in L2.
const BLOCK_ROWS: usize = 1024;

/// Borrowed pieces of `x_h(i)` = item ⊕ author ⊕ topic ⊕ duration embeddings.
struct Inherent<'a> {
    item: &'a [f32],
    author: &'a [f32],
    topic: &'a [f32],
    duration: &'a [f32],
    item_author: &'a [u32],
    item_topic: &'a [u32],
    item_duration: &'a [u32],
    id_dim: usize,
    small_dim: usize,
}

impl Inherent<'_> {
    /// Ids already checked by `check_structure` / `check_item_ids`.
    fn row(&self, i: usize, out: &mut [f32]) {
        let (id, sm) = (self.id_dim, self.small_dim);
        let (a, t, d) = (self.item_author[i] as usize, self.item_topic[i] as usize, self.item_duration[i] as usize);
        out[..id].copy_from_slice(&self.item[i * id..(i + 1) * id]);
        out[id..2 * id].copy_from_slice(&self.author[a * id..(a + 1) * id]);
        out[2 * id..2 * id + sm].copy_from_slice(&self.topic[t * sm..(t + 1) * sm]);
        out[2 * id + sm..2 * id + 2 * sm].copy_from_slice(&self.duration[d * sm..(d + 1) * sm]);
    }
}

fn shape_err(field: &'static str, value: usize) -> Error {
    Error::BadShape { field, value: value as u64, why: "does not match the config" }
}

/// Which precomputed projection table (`P_Q`, `P_K`, `P_V`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    Q,
    K,
    V,
}

impl Projection {
    fn weight(self) -> &'static str {
        match self {
            Projection::Q => "w_q",
            Projection::K => "w_k",
            Projection::V => "w_v",
        }
    }
    fn table(self) -> &'static str {
        match self {
            Projection::Q => "p_q",
            Projection::K => "p_k",
            Projection::V => "p_v",
        }
    }
}

impl Model {
    fn inherent(&self) -> Result<Inherent<'_>> {
        self.check_structure()?;
        Ok(Inherent {
            item: &self.param("item_emb")?.data,
            author: &self.param("author_emb")?.data,
            topic: &self.param("topic_emb")?.data,
            duration: &self.param("duration_emb")?.data,
            item_author: &self.item_author,
            item_topic: &self.item_topic,
            item_duration: &self.item_duration_bucket,
            id_dim: self.config.id_dim,
            small_dim: self.config.small_dim,
        })
    }

    /// `X_h`: `[n_items, H]`, every item's inherent features.
    pub fn inherent_features(&self) -> Result<Array2<f32>> {
        let inh = self.inherent()?;
        let (n, h) = (self.config.n_items, self.config.inherent_dim());
        let mut out = vec![0f32; n * h];
        out.par_chunks_mut(h).enumerate().for_each(|(i, row)| inh.row(i, row));
        Array2::from_shape_vec((n, h), out).map_err(|_| shape_err("inherent_features", n))
    }

    /// `x_h(ids[n])` stacked: `[N, H]` (training gathers targets' features with it).
    pub fn inherent_features_of(&self, ids: &[u32]) -> Result<Array2<f32>> {
        self.check_item_ids("ids", ids)?;
        let inh = self.inherent()?;
        let h = self.config.inherent_dim();
        let mut out = vec![0f32; ids.len() * h];
        out.par_chunks_mut(h.max(1)).zip(ids.par_iter()).for_each(|(row, &i)| inh.row(i as usize, row));
        Array2::from_shape_vec((ids.len(), h), out).map_err(|_| shape_err("inherent_features_of", ids.len()))
    }

    /// `X_h W` for each listed projection, sharing each `X_h` block across them.
    fn projections(&self, which: &[Projection]) -> Result<Vec<Vec<f32>>> {
        let inh = self.inherent()?;
        let (n, h, d) = (self.config.n_items, self.config.inherent_dim(), self.config.d_model());
        let mut ws = Vec::with_capacity(which.len());
        for p in which {
            let name = p.weight();
            ws.push(ArrayView2::from_shape((h, d), &self.param(name)?.data).map_err(|_| shape_err(name, h))?);
        }
        let mut outs: Vec<Vec<f32>> = which.iter().map(|_| vec![0f32; n * d]).collect();
        let n_blocks = n.div_ceil(BLOCK_ROWS);
        let mut blocks: Vec<Vec<&mut [f32]>> = (0..n_blocks).map(|_| Vec::with_capacity(which.len())).collect();
        for o in outs.iter_mut() {
            for (b, ch) in o.chunks_mut(BLOCK_ROWS * d).enumerate() {
                blocks[b].push(ch);
            }
        }
        blocks.into_par_iter().enumerate().try_for_each(|(b, mut dsts)| -> Result<()> {
            let r0 = b * BLOCK_ROWS;
            let rows = (n - r0).min(BLOCK_ROWS);
            let mut x = vec![0f32; rows * h];
            for (r, row) in x.chunks_mut(h).enumerate() {
                inh.row(r0 + r, row);
            }
            let xv = ArrayView2::from_shape((rows, h), &x).map_err(|_| shape_err("inherent_features", rows))?;
            for ((w, dst), p) in ws.iter().zip(dsts.iter_mut()).zip(which) {
                let mut dv = ArrayViewMut2::from_shape((rows, d), dst).map_err(|_| shape_err(p.table(), rows))?;
                general_mat_mul(1.0, &xv, w, 0.0, &mut dv);
            }
            Ok(())
        })?;
        Ok(outs)
    }

    /// One of `P_Q, P_K, P_V` (`[n_items, D]` f32).
    pub fn projection_table(&self, which: Projection) -> Result<HostTable> {
        let mut v = self.projections(&[which])?;
        HostTable::f32(self.config.n_items, self.config.d_model(), v.pop().unwrap_or_default())
    }

    /// `(P_Q, P_K, P_V) = X_h (W^q, W^k, W^v)`, each `[n_items, D]` f32 (SPEC §3.1).
    pub fn projection_tables(&self) -> Result<(HostTable, HostTable, HostTable)> {
        let mut v = self.projections(&[Projection::Q, Projection::K, Projection::V])?.into_iter();
        let (n, d) = (self.config.n_items, self.config.d_model());
        let mut next = || HostTable::f32(n, d, v.next().unwrap_or_default());
        Ok((next()?, next()?, next()?))
    }

    /// `(cross_bias [ΣV, h], cross_value [ΣV, D])`, row `cross_offsets[j] + v`:
    /// `t_{a,j}[v] = β_{a,j} (E_j[v] · w^c_{a,j})` and `E_j[v] W^{vc}[C·j..C·(j+1), :]`.
    /// Accumulated in f64 (they are tiny).
    pub fn cross_tables(&self) -> Result<(HostTable, HostTable)> {
        self.check_structure()?;
        let c = &self.config;
        let (heads, j_n, cd, d, v_n) = (c.heads, c.n_cross(), c.cross_dim, c.d_model(), c.cross_rows());
        let e = &self.param("cross_emb")?.data;
        let w_c = &self.param("w_c")?.data;
        let beta = &self.param("beta")?.data;
        let w_vc = &self.param("w_vc")?.data;
        let offs = c.cross_offsets();
        let mut bias = vec![0f32; v_n * heads];
        let mut value = vec![0f32; v_n * d];
        for j in 0..j_n {
            for r in offs[j] as usize..offs[j + 1] as usize {
                let ev = &e[r * cd..(r + 1) * cd];
                for a in 0..heads {
                    let wv = &w_c[(a * j_n + j) * cd..(a * j_n + j + 1) * cd];
                    let dot: f64 = ev.iter().zip(wv).map(|(&x, &y)| x as f64 * y as f64).sum();
                    bias[r * heads + a] = (beta[a * j_n + j] as f64 * dot) as f32;
                }
                for (col, out) in value[r * d..(r + 1) * d].iter_mut().enumerate() {
                    let acc: f64 = (0..cd).map(|t| ev[t] as f64 * w_vc[(j * cd + t) * d + col] as f64).sum();
                    *out = acc as f32;
                }
            }
        }
        Ok((HostTable::f32(v_n, heads, bias)?, HostTable::f32(v_n, d, value)?))
    }

    /// Build and upload everything the online path reads. Projections go up in `dtype`
    /// (f16 halves memory and bandwidth); cross tables and `W^o` stay f32. Projections are
    /// built one at a time so the host holds at most one f32 table.
    pub fn online_tables(&self, backend: &dyn Backend, dtype: DType) -> Result<OnlineTables> {
        let up = |p: Projection| -> Result<_> {
            let t = self.projection_table(p)?;
            let t = match dtype {
                DType::F32 => t,
                DType::F16 => t.to_f16(),
            };
            backend.upload_table(p.table(), &t)
        };
        let (p_q, p_k, p_v) = (up(Projection::Q)?, up(Projection::K)?, up(Projection::V)?);
        let (cb, cv) = self.cross_tables()?;
        let d = self.config.d_model();
        let w_o = HostTable::f32(d, d, self.param("w_o")?.data.clone())?;
        let tables = OnlineTables {
            p_q,
            p_k,
            p_v,
            cross_bias: backend.upload_table("cross_bias", &cb)?,
            cross_value: backend.upload_table("cross_value", &cv)?,
            w_o: backend.upload_table("w_o", &w_o)?,
            cross_offsets: self.config.cross_offsets(),
            heads: self.config.heads,
        };
        crate::backend::check::tables(&tables)?;
        Ok(tables)
    }
}
