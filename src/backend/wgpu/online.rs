//! The online path on a staged batch (`DeviceOps::online_dev`): the candidate info and NaN flag
//! staged with the batch when it runs as one request group on whole tables, then cross bias →
//! ln n → fused GSU top-K → ESU in one command buffer on sections of the staged batch, copied
//! device-side into the fused path's bindings. Anything else takes the trait's host form.

use std::any::Any;
use std::ops::Range;

use super::esu::{self, Seq};
use super::pool::PoolBuf;
use super::tensor::bytes;
use super::{cross_bias, gsu_topk, log_size_bias, split, WgpuBackend};
use crate::backend::{host_tensor, Elem, OnlineBatch, OnlineDev, OnlineSlot, OnlineTables, Staged, Staging};
use crate::error::Result;

/// wgpu's own sections of a staged online batch: the per-candidate info and the NaN flag's
/// initial value.
pub(crate) struct NativeOnline {
    info: Range<usize>,
    nan: Range<usize>,
}

impl WgpuBackend {
    /// Stage the candidate info and the NaN flag when the batch runs as one request group on
    /// whole tables; otherwise nothing (the op then takes the host path).
    pub(crate) fn stage_native(
        &self,
        st: &mut Staging,
        t: &OnlineTables,
        batch: &OnlineBatch,
        k: usize,
    ) -> Result<Option<Box<dyn Any + Send + Sync>>> {
        if split::needed(self, t, true)? || gsu_topk::request_groups(self, t, batch, k).len() != 1 {
            return Ok(None);
        }
        let info = st.push(&gsu_topk::cand_info(batch, 0..batch.n_requests()));
        let nan = st.push(&[u32::MAX; 4]);
        Ok(Some(Box::new(NativeOnline { info, nan })))
    }

    pub(crate) fn online_staged(&self, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
        let Some(nat) = slot.native.as_ref().and_then(|b| b.downcast_ref::<NativeOnline>()) else {
            return host_tensor::online_dev(self, t, staged, slot);
        };
        let sb = self.mem(&staged.tensor)?;
        let (nc, nl, k) = (slot.n_cands, slot.n_behaviours, slot.k);
        let (d, h, j) = (t.d_model(), t.heads, t.n_cross());
        let nk = nc * k;
        self.scoped("online_dev", || {
            let mut enc = self.encoder();
            // The fused path's bindings are whole buffers: copy the staged sections into them on
            // the device (no host transfer).
            // Cleared first (a pooled buffer is not zero): the words past the section stay zero.
            let mut section = |r: &Range<usize>, label: &str| -> PoolBuf {
                let b = self.pooled_zeroed_in(&mut enc, label, r.len());
                let (off, len) = bytes(r);
                if len > 0 {
                    enc.copy_buffer_to_buffer(sb, off, &b, 0, len);
                }
                b
            };
            let [_, items_r, cross_r, sizes_r, _, _] = &slot.host;
            let items = section(items_r, "items");
            let cross = section(cross_r, "cross");
            let sizes = section(sizes_r, "sizes");
            let info = section(&nat.info, "cand info");
            let nan = section(&nat.nan, "nan flag");
            let cb = self.pooled_output("cross bias", nl * h);
            cross_bias::encode_gather_sum(self, &mut enc, &t.cross_bias, &cross, nl, j, &cb)?;
            let bias = self.pooled_output("bias", nl * h);
            log_size_bias::encode(self, &mut enc, &cb, &sizes, nl, h, &bias)?;
            // `o.nan` is a second handle of `nan`, dropped with `o` (the tensor keeps `nan`).
            let o = gsu_topk::encode(self, &mut enc, t, &info, &items, &bias, nc, k, Some((*nan).clone()))?;
            let s = Seq { info: &info, items: &items, cross: &cross, bias: &bias };
            let out = esu::encode(self, &mut enc, t, &s, &o.idx, &o.count, nc, k)?;
            let topk = self.pooled_zeroed_in(&mut enc, "online topk", 2 * nk + nc);
            for (src, at, words) in [(&o.idx, 0, nk), (&o.score, nk, nk), (&o.count, 2 * nk, nc)] {
                if words > 0 {
                    enc.copy_buffer_to_buffer(src, 0, &topk, (at * 4) as u64, (words * 4) as u64);
                }
            }
            self.queue.submit([enc.finish()]);
            Ok(OnlineDev {
                out: self.wrap("online out", nc, d, Elem::F32, PoolBuf::unpooled(out)),
                topk: self.wrap("online topk", 1, 2 * nk + nc, Elem::U32, topk),
                flag: self.wrap("online flag", 1, 1, Elem::U32, nan),
                flag_ok: u32::MAX,
            })
        })
    }
}
