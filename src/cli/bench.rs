//! `twin bench`: BENCHMARKS.md's W1 (online), W2 (cluster) and W3 (train) on one backend, as
//! `twin_engine::bench` runs them: resident inputs, device-event timing on CUDA, one row per
//! shape and kernel version with the floor on the card and the transfers per run.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use twin_engine::backend::{BackendChoice, DType};
use twin_engine::bench::{self, targets::Versions, Options, Report};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Work {
    /// W1: the online path (GSU + ESU), every GSU version.
    Online,
    /// W2: Lloyd k-means, one user's clustering, a batch of users.
    Cluster,
    /// W3: one training step (forward, backward, optimizer).
    Train,
    /// All three, in that order.
    All,
}

#[derive(Args, Debug)]
pub struct BenchOpts {
    /// Which workload.
    #[arg(value_enum)]
    work: Work,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Table dtypes of the online path, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32,f16")]
    dtype: Vec<DType>,
    /// Shapes, comma separated: online `LxB` or `RxLxB`; cluster `lloyd:N`, `user:N`,
    /// `users:UxN`; train `BxL`. Default: BENCHMARKS.md's, smaller on CPU-bound backends.
    #[arg(long, value_delimiter = ',')]
    shapes: Option<Vec<String>>,
    /// Timed runs per row (reported figures use at least 20).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Seconds a row may spend timing (fewer runs, never below 3; the row says how many).
    #[arg(long)]
    budget_s: Option<f64>,
    /// The small default shapes (those of CPU-bound backends) on any backend: one quick pass
    /// over every kernel, e.g. under a profiler.
    #[arg(long)]
    small: bool,
    /// Item-table rows (W1) and catalogue size (W3); default 10^6 on a GPU, 10^5 on the CPU.
    #[arg(long)]
    items: Option<usize>,
    /// Print the rows as JSON (the card, the clock and every row) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON to this file, rewritten after every workload so a run cut short
    /// keeps what it measured.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(o: &BenchOpts) -> Result<()> {
    let choice = o.backend;
    let dtypes: Vec<String> = o.dtype.iter().map(|d| format!("{d:?}").to_lowercase()).collect();
    if o.reps == 0 {
        bail!("--reps 0: at least one timed run");
    }
    let opts = Options { reps: o.reps, warmup: o.warmup, budget_s: o.budget_s, shapes: o.shapes.clone(), dtypes, items: o.items };
    let works = match o.work {
        Work::All => vec![Work::Online, Work::Cluster, Work::Train],
        w => vec![w],
    };
    if works.len() > 1 && o.shapes.is_some() {
        bail!("--shapes applies to one workload at a time (online, cluster or train), not `all`");
    }
    let mut rows = Vec::new();
    let mut card = None;
    let mut clock = "";
    for w in works {
        let versions = match w {
            Work::Online => Versions::Gsu,
            Work::Cluster => Versions::Kmeans,
            _ => Versions::Default,
        };
        let (c, targets) = bench::open_targets(choice, versions).with_context(|| format!("opening --backend {:?}", o.backend))?;
        let cpu_bound = o.small || targets.iter().all(|t| bench::targets::cpu_bound(t.be.as_ref()));
        clock = targets[0].be.clock();
        let r = match w {
            Work::Online => bench::online::run(&targets, &c, &opts, cpu_bound, &mut rows),
            Work::Cluster => bench::cluster::run(&targets, &c, &opts, cpu_bound, &mut rows),
            Work::Train => bench::train::run(&targets, &c, &opts, cpu_bound, &mut rows),
            Work::All => unreachable!("expanded above"),
        };
        r.with_context(|| format!("twin bench {w:?}"))?;
        let card = card.get_or_insert(c);
        if let Some(p) = &o.out {
            let json = serde_json::to_string_pretty(&Report { card, clock, rows: &rows })?;
            std::fs::write(p, json).with_context(|| format!("--out {}", p.display()))?;
        }
    }
    let card = card.context("no workload ran")?;
    let json = serde_json::to_string_pretty(&Report { card: &card, clock, rows: &rows })?;
    if o.json {
        println!("{json}");
    } else {
        print!("{}", bench::format_table(&card, clock, &rows));
    }
    if rows.iter().all(|r| r.error.is_some()) {
        bail!("every row failed (first: {})", rows.first().and_then(|r| r.error.clone()).unwrap_or_default());
    }
    Ok(())
}
