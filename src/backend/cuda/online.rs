//! The whole online path on the device (SPEC §3): one packed upload of the batch (and the GSU
//! plan), cross bias → ln n (in place) → GSU top-K → ESU → W^o, one download of
//! idx | score | count | out | NaN flag.

use super::gsu_topk::{self, cand_req, pack_batch, pack_plan, view, GsuOut};
use super::{cross_bias, esu, log_size_bias, CudaBackend, Packer};
use crate::backend::{OnlineBatch, OnlineOutput, OnlineTables, TopK};
use crate::error::Result;

/// `batch` already passed check::online(t, batch, k).
pub(crate) fn online(be: &CudaBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
    let _range = crate::nvtx::range("online");
    let n_cand = batch.cands.len();
    let n_beh = batch.items.len();
    let (d, h, j) = (t.d_model(), t.heads, t.n_cross());
    if n_cand == 0 {
        return Ok(OnlineOutput { topk: TopK { k, idx: Vec::new(), score: Vec::new(), count: Vec::new() }, out: Vec::new() });
    }
    let creq = cand_req(batch);
    let plan = gsu_topk::plan(be, batch, d, k)?;
    let mut pk = Packer::default();
    let br = pack_batch(&mut pk, batch, &creq);
    let pr = pack_plan(&mut pk, &plan);
    let eplan = esu::plan(be, t, batch, k)?;
    let er = esu::pack_plan(&mut pk, &eplan);
    let buf = be.htod("online: upload", &pk.words)?;

    // Per-behaviour bias [ΣL, h]: cross bias, then + ln n in place.
    let bias = be.output::<u32>("online: alloc bias", n_beh * h)?;
    let bias_v = bias.slice(..);
    cross_bias::launch_cross_bias(be, be.table_ptr(&t.cross_bias)?, h, n_beh, j, &view(&buf, &br.cross), &bias_v)?;
    log_size_bias::launch_log_size_bias(be, n_beh, h, &bias_v, &view(&buf, &br.sizes), &bias_v)?;

    // Outputs: idx [ΣB*K] | score [ΣB*K] | count [ΣB] | out [ΣB*D] | flag.
    let nk = n_cand * k;
    let (o_score, o_count, o_out, o_flag) = (nk, 2 * nk, 2 * nk + n_cand, 2 * nk + n_cand + n_cand * d);
    let total = o_flag + 1;
    let outbuf = be.output_with_flags("online: alloc out", o_flag, 1)?;
    let g = GsuOut {
        idx: outbuf.slice(0..o_score),
        score: outbuf.slice(o_score..o_count),
        count: outbuf.slice(o_count..o_out),
        flag: outbuf.slice(o_flag..total),
    };
    gsu_topk::launch(be, t, &plan, &buf, &br, &pr, &bias_v, &g)?;
    esu::launch(be, t, &eplan, &buf, &br, &er, &bias_v, &g.idx, &g.count, &outbuf.slice(o_out..o_flag))?;

    let words = be.dtoh("online: download", &outbuf, total)?;
    let topk =
        gsu_topk::finish_topk(k, words[0..o_score].to_vec(), &words[o_score..o_count], words[o_count..o_out].to_vec(), words[o_flag])?;
    let out = words[o_out..o_flag].iter().map(|&b| f32::from_bits(b)).collect();
    Ok(OnlineOutput { topk, out })
}
