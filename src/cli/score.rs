//! `twin score`: GSU top-K and ESU output per candidate, as JSON, for users and candidates named
//! by the input file's own ids.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use twin_engine::backend::{self, BackendChoice, DType, OnlineRequests};
use twin_engine::cluster::ClusterSet;
use twin_engine::data::Dataset;
use twin_engine::model::Model;
use twin_engine::online;

/// `twin score`: score candidates for users, TWIN on the raw history or TWIN-V2 on clusters.
#[derive(clap::Args)]
pub struct ScoreArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// TWIN-V2: score against these clusters instead of the raw history.
    #[arg(long)]
    pub clusters: Option<PathBuf>,
    /// User ids as the input file has them (`twin info` lists the range), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub users: Vec<u64>,
    /// Candidate item ids as the input file has them, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub candidates: Vec<u64>,
    /// Request time in seconds (default: just after the user's newest behaviour).
    #[arg(long)]
    pub request_time: Option<i64>,
    /// TWIN: use at most this many most recent behaviours (clusters are never cut).
    #[arg(long, conflicts_with = "clusters")]
    pub max_len: Option<usize>,
    /// Finalists per candidate (1 to 256).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub top_k: u16,
    #[arg(long, value_enum, default_value_t = DType::F32)]
    pub dtype: DType,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Leave the ESU output vectors out of the JSON.
    #[arg(long)]
    pub no_vectors: bool,
}

/// The dataset's dense index of each external id given on the command line.
fn dense_ids(flag: &str, ids: &[u64], all: &[u64]) -> Result<Vec<u32>> {
    let index: HashMap<u64, u32> = all.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
    ids.iter()
        .enumerate()
        .map(|(i, id)| match index.get(id) {
            Some(&d) => Ok(d),
            None => bail!("{flag}[{i}] = {id}: no such id in the dataset ({} ids)", all.len()),
        })
        .collect()
}

impl ScoreArgs {
    pub fn run(self) -> Result<()> {
        let ds = super::load_data(&self.data)?;
        let model = Model::load(&self.model)?;
        if model.n_items() != ds.items.len() {
            bail!("model n_items = {} does not match the dataset's {} items", model.n_items(), ds.items.len());
        }
        let users = dense_ids("--users", &self.users, &ds.user_ids)?;
        let cands = dense_ids("--candidates", &self.candidates, &ds.items.external_id)?;
        model.check_item_ids("candidates", &cands)?;
        let set = match &self.clusters {
            Some(p) => {
                let s = ClusterSet::load(p)?;
                s.check_source(&ds, &model).with_context(|| format!("--clusters {}", p.display()))?;
                Some(s)
            }
            None => None,
        };
        let (be, note) = backend::open(self.backend)?;
        let t0 = Instant::now();
        let tables = model.online_tables(be.as_ref(), self.dtype)?;
        let build_s = t0.elapsed().as_secs_f64();
        let req = self.requests(&ds, set.as_ref(), &users, &cands)?;
        let t1 = Instant::now();
        let out = be.online(&tables, &req.0.as_batch(), self.top_k as usize)?;
        let score_s = t1.elapsed().as_secs_f64();
        let d = tables.d_model();
        let (req, times) = req;
        let batch = req.as_batch();
        let item_id = |dense: u32| ds.items.external_id[dense as usize];
        let mut reqs = Vec::new();
        for (r, &u) in self.users.iter().enumerate() {
            let seq = batch.seq_range(r);
            let mut cand_json = Vec::new();
            for c in batch.cand_range(r) {
                let (idx, sc) = out.topk.row(c);
                let top: Vec<_> = idx
                    .iter()
                    .zip(sc)
                    .map(|(&p, &s)| json!({"position": p, "item": item_id(req.items[seq.start + p as usize]), "score": s}))
                    .collect();
                let mut cj = json!({"item": item_id(req.cands[c]), "top_k": top});
                if !self.no_vectors {
                    cj["esu_out"] = json!(out.out[c * d..(c + 1) * d]);
                }
                cand_json.push(cj);
            }
            reqs.push(json!({"user": u, "request_time": times[r], "sequence_length": seq.len(), "candidates": cand_json}));
        }
        let doc = json!({
            "backend": be.describe(),
            "backend_note": note,
            "mode": if set.is_some() { "twin-v2 (clusters)" } else { "twin (raw history)" },
            "dtype": format!("{:?}", self.dtype).to_lowercase(),
            "table_build_seconds": build_s,
            "score_seconds": score_s,
            "requests": reqs,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        Ok(())
    }

    /// One request per user: its history (or clusters) before the request time, and every
    /// candidate; with the request times.
    fn requests(&self, ds: &Dataset, set: Option<&ClusterSet>, users: &[u32], cands: &[u32]) -> Result<(OnlineRequests, Vec<i64>)> {
        let mut req = OnlineRequests::new();
        let mut times = Vec::new();
        for (i, &u) in users.iter().enumerate() {
            let r = ds.user_range(u as usize);
            let newest = if r.is_empty() { 0 } else { ds.behaviours.timestamp[r.end - 1] };
            let t = self.request_time.unwrap_or(newest.saturating_add(1));
            times.push(t);
            match set {
                Some(s) => {
                    let slot =
                        s.slot_of(u).with_context(|| format!("--users[{i}] = {} has no clusters in the clusters file", self.users[i]))?;
                    online::push_clusters(&mut req, s, slot, t, cands)?;
                }
                None => online::push_history(&mut req, ds, u as usize, t, self.max_len.unwrap_or(100_000), cands)?,
            }
        }
        Ok((req, times))
    }
}
