//! W2, offline clustering (SPEC §4), 64-dim embeddings, γ = 20, M = 5. Shapes:
//! - `lloyd:N`: one k-means problem of N Gaussian points, k = ⌊N^0.3⌋, 20 Lloyd iterations from
//!   k-means++ centroids seeded once before timing (the peer seeds by sampling, also untimed
//!   work). Per iteration the assignment reads every point and writes its index (`3·N·k·dim`
//!   flops) and the update reads them again (`N·dim` flops): `N·(dim·4 + 4)` bytes each.
//! - `user:N`: one user's hierarchical clustering (Algorithm 1) of N behaviours.
//! - `users:UxN`: U users of N behaviours each in one call (users/s).
//!   The clustering rows count the k-means work the run did (`ClusterStats::assign_points`,
//!   `update_points`, `assign_distances`), so their bytes and flops are the work actually done,
//!   at the same per-point costs; host-side seeding and bookkeeping are not counted.

use super::{measure, parse_dims, Card, Options, Row, Target};
use crate::backend::{Backend, KmeansBatch};
use crate::cluster::{cluster_users_on, ClusterConfig, ClusterStats};
use crate::data::{self, SynthConfig};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

pub const DIM: usize = 64;
pub const LLOYD_ITERS: u32 = 20;

pub fn default_shapes(cpu_bound: bool) -> Vec<String> {
    let s: &[&str] = if cpu_bound {
        &["lloyd:100000", "user:10000", "users:10x2000"]
    } else {
        &["lloyd:1000000", "lloyd:100000", "user:10000", "user:100000", "user:1000000", "users:1000x10000"]
    };
    s.iter().map(|x| x.to_string()).collect()
}

enum Shape {
    Lloyd(usize),
    Users(usize, usize),
}

fn shape_of(s: &str) -> Result<Shape> {
    let bad =
        || Error::InvalidValue { field: "--shapes (cluster)", index: 0, value: f64::NAN, why: "expected lloyd:N, user:N or users:UxN" };
    let (kind, dims) = s.split_once(':').ok_or_else(bad)?;
    let d = parse_dims("--shapes (cluster)", dims)?;
    match (kind, d.as_slice()) {
        ("lloyd", [n]) => Ok(Shape::Lloyd(*n)),
        ("user", [n]) => Ok(Shape::Users(1, *n)),
        ("users", [u, n]) => Ok(Shape::Users(*u, *n)),
        _ => Err(bad()),
    }
}

/// Bytes and flops of k-means work: each assigned or summed point reads its row and an index
/// (`dim·4 + 4` bytes); a distance costs `3·dim` flops, a summed point `dim`.
pub fn kmeans_work(assign_points: f64, update_points: f64, distances: f64) -> (f64, f64) {
    let d = DIM as f64;
    ((assign_points + update_points) * (d * 4.0 + 4.0), 3.0 * d * distances + d * update_points)
}

pub fn k_of(n: usize) -> usize {
    ((n as f64).powf(0.3).floor() as usize).clamp(1, n)
}

pub fn run(targets: &[Target], card: &Card, o: &Options, cpu_bound: bool, rows: &mut Vec<Row>) -> Result<()> {
    let shapes = o.shapes.clone().unwrap_or_else(|| default_shapes(cpu_bound));
    let parsed: Vec<(String, Shape)> = shapes.iter().map(|s| shape_of(s).map(|p| (s.clone(), p))).collect::<Result<_>>()?;
    for t in targets {
        for (_, shape) in &parsed {
            match *shape {
                Shape::Lloyd(n) => rows.push(lloyd(t, card, o, n)),
                Shape::Users(u, n) => rows.push(users(t, card, o, u, n)),
            }
        }
    }
    Ok(())
}

fn lloyd(t: &Target, card: &Card, o: &Options, n: usize) -> Row {
    let k = k_of(n);
    let row = Row::new("lloyd", t, "f32", format!("N={n},k={k},dim={DIM},iters={LLOYD_ITERS}"));
    let mut rng = SplitMix64::new(3);
    let points: Vec<f32> = (0..n * DIM).map(|_| rng.normal() as f32).collect();
    let offsets = [0u32, n as u32];
    let ks = [k as u32];
    let batch = KmeansBatch { dim: DIM, points: &points, offsets: &offsets, k: &ks };
    let be: &dyn Backend = t.be.as_ref();
    let run = || -> Result<Row> {
        let init = be.kmeans_seed(&batch, &[7])?;
        let mut iters = 0u32;
        let m = measure(be, o, &mut || {
            iters = be.lloyd(&batch, init.clone(), LLOYD_ITERS)?.iterations[0];
            Ok(())
        })?;
        // The initial assignment plus one update and one assignment per iteration.
        let (assigned, updated) = (n as f64 * (iters + 1) as f64, n as f64 * iters as f64);
        let (bytes, flops) = kmeans_work(assigned, updated, assigned * k as f64);
        let mut r = row.clone().measured(&m, bytes, flops, card);
        if iters < LLOYD_ITERS {
            r.note = Some(format!("converged after {iters} iterations"));
        }
        Ok(r)
    };
    run().unwrap_or_else(|e| row.failed(&e))
}

fn users(t: &Target, card: &Card, o: &Options, u: usize, n: usize) -> Row {
    let (work, shape) = if u == 1 { ("cluster_one_user", format!("N={n}")) } else { ("cluster_users", format!("users={u},N={n}")) };
    let row = Row::new(work, t, "f32", shape);
    let run = || -> Result<Row> {
        let ds = data::generate(&SynthConfig {
            n_users: u,
            n_items: 200_000,
            n_authors: 20_000,
            fixed_len: Some(n),
            samples_per_user: 0,
            seed: 5,
            ..Default::default()
        })?;
        let emb = super::online::fill(ds.items.len() * DIM, 10);
        let list: Vec<u32> = (0..u as u32).collect();
        let cfg = ClusterConfig::default();
        let mut stats = ClusterStats::default();
        // The embeddings are resident before timing, as in a job clustering many batches.
        let pts = t.be.item_points(&emb, DIM)?;
        let m = measure(t.be.as_ref(), o, &mut || {
            stats = cluster_users_on(t.be.as_ref(), &ds, &list, None, &pts, &cfg, &mut |_, _| {})?.1;
            Ok(())
        })?;
        let (bytes, flops) = kmeans_work(stats.assign_points as f64, stats.update_points as f64, stats.assign_distances as f64);
        let mut r = row.clone().measured(&m, bytes, flops, card);
        r.users_per_s = Some(u as f64 / (r.median_ms / 1e3));
        r.note = Some(format!("{} clusters, {} levels, {} backend calls", stats.clusters, stats.levels, stats.backend_calls));
        Ok(r)
    };
    run().unwrap_or_else(|e| row.failed(&e))
}
