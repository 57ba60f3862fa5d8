//! Model parameters (SPEC §2, §5), their deterministic initialisation, the precomputed
//! online tables (SPEC §3.1-3.2, `tables`) and the model file (`file`).
//!
//! Parameters are named f32 tensors kept in one fixed order, so the file layout, `describe`
//! and the training code all agree on names and shapes; every shape follows from the
//! [`ModelConfig`] alone ([`ModelConfig::param_shapes`]).

mod file;
mod tables;

pub use file::{MAGIC, VERSION};
pub use tables::Projection;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Items;
use crate::error::{Error, Result};
use crate::features;
use crate::rng::{derive_seed, SplitMix64};

/// Deepest MLP accepted (hidden layers); names are static, so the count is bounded.
pub const MAX_MLP_HIDDEN: usize = 8;
/// Largest width of any single dimension (embedding dims, heads, MLP widths): guards a
/// corrupt or hostile config from asking for absurd allocations.
pub const MAX_DIM: usize = 1 << 16;

const MLP_W: [&str; MAX_MLP_HIDDEN + 1] = ["mlp_w0", "mlp_w1", "mlp_w2", "mlp_w3", "mlp_w4", "mlp_w5", "mlp_w6", "mlp_w7", "mlp_w8"];
const MLP_B: [&str; MAX_MLP_HIDDEN + 1] = ["mlp_b0", "mlp_b1", "mlp_b2", "mlp_b3", "mlp_b4", "mlp_b5", "mlp_b6", "mlp_b7", "mlp_b8"];

/// Shapes and hyper-parameters of a TWIN / TWIN-V2 model; defaults as SPEC §6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub n_items: usize,
    pub n_authors: usize,
    pub n_topics: usize,
    pub n_duration_buckets: usize,
    /// Item-id and author-id embedding width.
    pub id_dim: usize,
    /// Topic, duration-bucket and context embedding width.
    pub small_dim: usize,
    pub heads: usize,
    pub d_head: usize,
    /// Vocabulary of each cross feature; must equal `features::CROSS_VOCAB` (the bucketing
    /// this build implements), stored so a model file is self-describing.
    pub cross_vocab: Vec<u32>,
    pub cross_dim: usize,
    /// Hour-of-day context embedding rows (the "user/context embeddings" of SPEC §5).
    pub n_context: usize,
    /// MLP hidden widths; a final layer to 1 follows.
    pub mlp_hidden: Vec<usize>,
    pub short_len: usize,
    pub top_k: usize,
}

impl ModelConfig {
    /// SPEC §6 defaults for a catalogue of the given sizes.
    pub fn new(n_items: usize, n_authors: usize, n_topics: usize) -> ModelConfig {
        ModelConfig {
            n_items,
            n_authors,
            n_topics,
            n_duration_buckets: features::DURATION_BUCKETS,
            id_dim: 64,
            small_dim: 8,
            heads: 4,
            d_head: 32,
            cross_vocab: features::CROSS_VOCAB.iter().map(|&v| v as u32).collect(),
            cross_dim: 8,
            n_context: 24,
            mlp_hidden: vec![256, 128, 64],
            short_len: 50,
            top_k: crate::backend::TOP_K,
        }
    }

    /// Defaults sized to an item catalogue.
    pub fn for_items(items: &Items) -> ModelConfig {
        ModelConfig::new(items.len(), items.n_authors as usize, items.n_topics as usize)
    }

    /// `H`: width of `x_h` = item ⊕ author ⊕ topic ⊕ duration embeddings.
    pub fn inherent_dim(&self) -> usize {
        2 * self.id_dim + 2 * self.small_dim
    }
    /// `D = h * d_k`.
    pub fn d_model(&self) -> usize {
        self.heads * self.d_head
    }
    /// `J`.
    pub fn n_cross(&self) -> usize {
        self.cross_vocab.len()
    }
    /// `ΣV`: rows of the stacked cross tables.
    pub fn cross_rows(&self) -> usize {
        self.cross_vocab.iter().map(|&v| v as usize).sum()
    }
    /// `[J + 1]` row offsets of each cross feature in the stacked cross tables.
    pub fn cross_offsets(&self) -> Vec<u32> {
        let mut o = Vec::with_capacity(self.cross_vocab.len() + 1);
        let mut acc = 0u32;
        o.push(0);
        for &v in &self.cross_vocab {
            acc = acc.saturating_add(v);
            o.push(acc);
        }
        o
    }
    /// MLP input: context ⊕ `x_h(target)` ⊕ TWIN_out ⊕ short_out.
    pub fn mlp_input(&self) -> usize {
        self.small_dim + self.inherent_dim() + 2 * self.d_model()
    }

    /// Every size positive and bounded, the cross vocabulary the one this build buckets into.
    pub fn validate(&self) -> Result<()> {
        let ids = [
            ("n_items", self.n_items),
            ("n_authors", self.n_authors),
            ("n_topics", self.n_topics),
            ("n_duration_buckets", self.n_duration_buckets),
            ("n_context", self.n_context),
        ];
        for (field, v) in ids {
            if v == 0 {
                return Err(Error::BadShape { field, value: 0, why: "vocabulary must hold at least one id" });
            }
            if v > u32::MAX as usize {
                return Err(Error::TooLarge { field, value: v as u64, limit: u32::MAX as u64 });
            }
        }
        let dims = [
            ("id_dim", self.id_dim),
            ("small_dim", self.small_dim),
            ("heads", self.heads),
            ("d_head", self.d_head),
            ("cross_dim", self.cross_dim),
            ("short_len", self.short_len),
        ];
        for (field, v) in dims {
            if v == 0 {
                return Err(Error::BadShape { field, value: 0, why: "must be at least 1" });
            }
            if v > MAX_DIM {
                return Err(Error::TooLarge { field, value: v as u64, limit: MAX_DIM as u64 });
            }
        }
        if self.d_model() > MAX_DIM {
            return Err(Error::TooLarge { field: "heads * d_head", value: self.d_model() as u64, limit: MAX_DIM as u64 });
        }
        let want: Vec<u32> = features::CROSS_VOCAB.iter().map(|&v| v as u32).collect();
        if self.cross_vocab != want {
            let value = self.cross_vocab.len() as u64;
            return Err(Error::BadShape {
                field: "cross_vocab",
                value,
                why: "must equal features::CROSS_VOCAB, the bucketing this build implements",
            });
        }
        if self.mlp_hidden.len() > MAX_MLP_HIDDEN {
            return Err(Error::TooLarge { field: "mlp_hidden", value: self.mlp_hidden.len() as u64, limit: MAX_MLP_HIDDEN as u64 });
        }
        for (i, &w) in self.mlp_hidden.iter().enumerate() {
            if w == 0 || w > MAX_DIM {
                return Err(Error::InvalidValue { field: "mlp_hidden", index: i, value: w as f64, why: "width must be in 1..=65536" });
            }
        }
        if self.top_k == 0 {
            return Err(Error::BadShape { field: "top_k", value: 0, why: "at least one finalist per candidate is needed (1 to 256)" });
        }
        if self.top_k > crate::backend::MAX_TOP_K {
            return Err(Error::TooLarge { field: "top_k", value: self.top_k as u64, limit: crate::backend::MAX_TOP_K as u64 });
        }
        for (name, shape) in self.param_shapes_unchecked() {
            shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= isize::MAX as usize / 4)
                .ok_or(Error::TooLarge { field: name, value: u64::MAX, limit: (isize::MAX / 4) as u64 })?;
        }
        Ok(())
    }

    /// Every parameter tensor, in file order, with the shape this config implies.
    pub fn param_shapes(&self) -> Result<Vec<(&'static str, Vec<usize>)>> {
        self.validate()?;
        Ok(self.param_shapes_unchecked())
    }

    fn param_shapes_unchecked(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (h, d, j, c) = (self.inherent_dim(), self.d_model(), self.n_cross(), self.cross_dim);
        let mut v = vec![
            ("item_emb", vec![self.n_items, self.id_dim]),
            ("author_emb", vec![self.n_authors, self.id_dim]),
            ("topic_emb", vec![self.n_topics, self.small_dim]),
            ("duration_emb", vec![self.n_duration_buckets, self.small_dim]),
            ("context_emb", vec![self.n_context, self.small_dim]),
            ("cross_emb", vec![self.cross_rows(), c]),
            ("w_q", vec![h, d]),
            ("w_k", vec![h, d]),
            ("w_v", vec![h, d]),
            ("w_c", vec![self.heads, j, c]),
            ("beta", vec![self.heads, j]),
            ("w_vc", vec![j * c, d]),
            ("w_o", vec![d, d]),
        ];
        let mut fan_in = self.mlp_input();
        let n = self.mlp_hidden.len().min(MAX_MLP_HIDDEN);
        for (i, &w) in self.mlp_hidden.iter().take(n).chain(std::iter::once(&1)).enumerate() {
            v.push((MLP_W[i], vec![fan_in, w]));
            v.push((MLP_B[i], vec![w]));
            fan_in = w;
        }
        v
    }
}

/// A dense f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// Row `r` of a tensor seen as `[shape[0], rest]`; `None` when out of range.
    pub fn row(&self, r: usize) -> Option<&[f32]> {
        let cols: usize = self.shape.iter().skip(1).product();
        self.data.get(r.checked_mul(cols)?..r.checked_add(1)?.checked_mul(cols)?)
    }
}

/// How a tensor is initialised (why: embeddings small and centred, projections keep variance).
#[derive(Clone, Copy)]
enum Init {
    Normal(f64),
    /// Uniform in `±sqrt(6 / (fan_in + fan_out))`.
    Glorot {
        fan_in: usize,
        fan_out: usize,
    },
    Const(f32),
}

/// Elements per RNG stream: streams are per (tensor, chunk) so init is parallel and the
/// result does not depend on the thread count.
const INIT_CHUNK: usize = 1 << 16;

/// FNV-1a: a stable hash of a tensor name for its RNG stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn fill(data: &mut [f32], init: Init, seed: u64, name: &str) {
    let h = name_hash(name);
    data.par_chunks_mut(INIT_CHUNK).enumerate().for_each(|(ci, chunk)| {
        let mut rng = SplitMix64::new(derive_seed(seed, &[h, ci as u64]));
        match init {
            Init::Normal(std) => chunk.iter_mut().for_each(|x| *x = (rng.normal() * std) as f32),
            Init::Glorot { fan_in, fan_out } => {
                let a = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                chunk.iter_mut().for_each(|x| *x = ((rng.next_f64() * 2.0 - 1.0) * a) as f32);
            }
            Init::Const(c) => chunk.iter_mut().for_each(|x| *x = c),
        }
    });
}

/// Model parameters plus the catalogue's inherent item features, so a model knows its items
/// (the projection tables are built from them) and can reject unknown ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: ModelConfig,
    pub item_author: Vec<u32>,
    pub item_topic: Vec<u32>,
    pub item_duration_bucket: Vec<u32>,
    /// In `ModelConfig::param_shapes` order; entries are never added or removed.
    params: Vec<(&'static str, Tensor)>,
}

impl Model {
    /// Fresh parameters, deterministic in `seed`: each tensor has its own RNG streams derived
    /// from its name, so adding a tensor leaves the others unchanged.
    pub fn init(config: ModelConfig, items: &Items, seed: u64) -> Result<Model> {
        let shapes = config.param_shapes()?;
        crate::backend::check::len("items", items.len(), config.n_items, "config.n_items")?;
        let mut params = Vec::with_capacity(shapes.len());
        for (name, shape) in shapes {
            let init = match name {
                "item_emb" | "author_emb" | "topic_emb" | "duration_emb" | "context_emb" | "cross_emb" => Init::Normal(0.1),
                "beta" => Init::Const(1.0),
                "w_c" => Init::Glorot { fan_in: config.cross_dim, fan_out: 1 },
                n if n.starts_with("mlp_b") => Init::Const(0.0),
                _ => Init::Glorot { fan_in: shape[0], fan_out: shape[1..].iter().product() },
            };
            let mut t = Tensor::zeros(&shape);
            fill(&mut t.data, init, seed, name);
            params.push((name, t));
        }
        let model = Model {
            config,
            item_author: items.author.clone(),
            item_topic: items.topic.clone(),
            item_duration_bucket: items.duration_bucket.clone(),
            params,
        };
        model.check_structure()?;
        Ok(model)
    }

    pub fn n_items(&self) -> usize {
        self.config.n_items
    }

    pub fn param(&self, name: &str) -> Result<&Tensor> {
        self.params.iter().find(|(n, _)| *n == name).map(|(_, t)| t).ok_or_else(|| unknown(name))
    }

    /// Tensor `i` in `param_shapes` order (`train::step` names the indices). Panics only
    /// if `i` is past the end, which the constants there never are.
    pub fn param_at(&self, i: usize) -> &Tensor {
        &self.params[i].1
    }

    /// Mutable access for training; `validate` catches a shape or value broken through it.
    pub fn param_mut(&mut self, name: &str) -> Result<&mut Tensor> {
        self.params.iter_mut().find(|(n, _)| *n == name).map(|(_, t)| t).ok_or_else(|| unknown(name))
    }

    /// `(name, tensor)` in file order.
    pub fn params(&self) -> impl Iterator<Item = (&'static str, &Tensor)> + '_ {
        self.params.iter().map(|(n, t)| (*n, t))
    }

    pub fn params_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut Tensor)> + '_ {
        self.params.iter_mut().map(|(n, t)| (*n, t))
    }

    pub fn n_params(&self) -> usize {
        self.params.iter().map(|(_, t)| t.numel()).sum()
    }

    /// `[n_items, id_dim]` item-id embeddings (offline clustering runs k-means on them).
    pub fn item_embeddings(&self) -> &[f32] {
        self.params.first().map(|(_, t)| t.data.as_slice()).unwrap_or(&[])
    }

    /// Error naming the first id that is not an item of this model.
    pub fn check_item_ids(&self, field: &'static str, ids: &[u32]) -> Result<()> {
        crate::backend::check::ids_below(field, ids, self.config.n_items)
    }

    /// Everything `load` checks: config, tensor shapes, item features in range, all finite.
    pub fn validate(&self) -> Result<()> {
        self.check_structure()?;
        for (name, t) in &self.params {
            crate::backend::check::finite(name, &t.data)?;
        }
        Ok(())
    }

    /// `validate` without the O(params) finiteness scan: enough to index safely.
    fn check_structure(&self) -> Result<()> {
        let shapes = self.config.param_shapes()?;
        if shapes.len() != self.params.len() {
            return Err(Error::BadShape {
                field: "params",
                value: self.params.len() as u64,
                why: "tensor count does not match the config",
            });
        }
        for ((want_name, want), (name, t)) in shapes.iter().zip(&self.params) {
            if want_name != name {
                return Err(Error::BadShape { field: name, value: 0, why: "tensor not expected by the config (was the config edited?)" });
            }
            check_shape(name, &t.shape, want)?;
            crate::backend::check::len(name, t.data.len(), want.iter().product(), "product of its shape")?;
        }
        let c = &self.config;
        for (field, v, limit) in [
            ("item_author", &self.item_author, c.n_authors),
            ("item_topic", &self.item_topic, c.n_topics),
            ("item_duration_bucket", &self.item_duration_bucket, c.n_duration_buckets),
        ] {
            crate::backend::check::len(field, v.len(), c.n_items, "config.n_items")?;
            crate::backend::check::ids_below(field, v, limit)?;
        }
        Ok(())
    }
}

/// A tensor name the model does not have (echoed, with where the names are listed).
fn unknown(name: &str) -> Error {
    Error::Incompatible { what: "param name", why: format!("no tensor named {name:?} (see ModelConfig::param_shapes)") }
}

/// A shape equal to the config's, else an error naming the tensor and the first bad axis.
fn check_shape(name: &'static str, got: &[usize], want: &[usize]) -> Result<()> {
    if got.len() != want.len() {
        return Err(Error::BadShape { field: name, value: got.len() as u64, why: "rank does not match the config" });
    }
    for (axis, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let why = match axis {
                0 => "axis 0 does not match the config",
                1 => "axis 1 does not match the config",
                _ => "axis 2 does not match the config",
            };
            return Err(Error::BadShape { field: name, value: g as u64, why });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
