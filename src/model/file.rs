//! The model file: `fileio`'s frame (magic `TWINMODL`, version, length, CRC-32, atomic
//! temp + fsync + rename) around this payload, all little-endian:
//!
//! ```text
//! config                str   ModelConfig as JSON
//! item_author           u32s  [n_items]
//! item_topic            u32s  [n_items]
//! item_duration_bucket  u32s  [n_items]
//! n_tensors             u64
//! n_tensors times:      name str, shape u64s, data f32s (row-major)
//! ```
//! (`str` / `u32s` / ... are `u64` length-prefixed.) Tensors are written in
//! `ModelConfig::param_shapes` order; a reader accepts any order but every expected tensor
//! exactly once, with the shape the config implies, finite values.

use std::fmt::Write as _;
use std::path::Path;

use super::{check_shape, Model, ModelConfig, Tensor};
use crate::error::{Error, Result};
use crate::fileio::{self, Reader, Writer};

pub const MAGIC: &[u8; 8] = b"TWINMODL";
/// Newest model-file version this build writes and reads.
pub const VERSION: u32 = 1;

impl Model {
    /// Write the model atomically. A model that would not load back (NaN, broken shape) is
    /// refused before anything is written, and a failed write leaves an existing file intact.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        fileio::save(path, MAGIC, VERSION, &self.encode()?)
    }

    /// Payload bytes, without validation (tests use it to build bad files).
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_string(&self.config).map_err(|source| Error::Serialize { what: "model config", source })?;
        let mut w = Writer::new();
        w.str(&json);
        w.u32s(&self.item_author);
        w.u32s(&self.item_topic);
        w.u32s(&self.item_duration_bucket);
        w.u64(self.params.len() as u64);
        for (name, t) in &self.params {
            w.str(name);
            w.u64s(&t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>());
            w.f32s(&t.data);
        }
        Ok(w.buf)
    }

    /// Read and fully validate a model file; any defect is a typed error, never a panic.
    pub fn load(path: &Path) -> Result<Model> {
        let (_version, payload) = fileio::load(path, MAGIC, VERSION)?;
        Model::decode(&payload, path)
    }

    pub(crate) fn decode(payload: &[u8], path: &Path) -> Result<Model> {
        let mut r = Reader::new(payload, path);
        let json = r.str("config")?;
        let config: ModelConfig = serde_json::from_str(&json).map_err(|e| Error::corrupt(path, format!("config: {e}")))?;
        let shapes = config.param_shapes()?;
        let item_author = r.u32s("item_author")?;
        let item_topic = r.u32s("item_topic")?;
        let item_duration_bucket = r.u32s("item_duration_bucket")?;
        let n_tensors = r.u64("n_tensors")?;
        let mut slots: Vec<Option<Tensor>> = vec![None; shapes.len()];
        for _ in 0..n_tensors {
            let name = r.str("tensor name")?;
            let Some(idx) = shapes.iter().position(|(n, _)| *n == name) else {
                return Err(Error::corrupt(path, format!("unknown tensor `{}`", name.escape_debug())));
            };
            let (sname, want) = &shapes[idx];
            if slots[idx].is_some() {
                return Err(Error::corrupt(path, format!("tensor `{sname}` appears twice")));
            }
            let shape = r.u64s(sname)?;
            let data = r.f32s(sname)?;
            let shape: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
            check_shape(sname, &shape, want)?;
            if want.iter().product::<usize>() != data.len() {
                return Err(Error::corrupt(path, format!("tensor `{sname}`: {} values for shape {want:?}", data.len())));
            }
            slots[idx] = Some(Tensor { shape, data });
        }
        r.finish()?;
        let mut params = Vec::with_capacity(shapes.len());
        for ((name, _), slot) in shapes.iter().zip(slots) {
            match slot {
                Some(t) => params.push((*name, t)),
                None => return Err(Error::corrupt(path, format!("tensor `{name}` is missing"))),
            }
        }
        let model = Model { config, item_author, item_topic, item_duration_bucket, params };
        model.validate()?;
        Ok(model)
    }

    /// Human-readable summary: config, parameter count, every tensor with shape and bytes.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "TWIN model: {} items, {} authors, {} topics; H = {}, D = {} ({} heads x {}), J = {}, MLP {} -> {:?} -> 1",
            c.n_items,
            c.n_authors,
            c.n_topics,
            c.inherent_dim(),
            c.d_model(),
            c.heads,
            c.d_head,
            c.n_cross(),
            c.mlp_input(),
            c.mlp_hidden
        );
        let _ = writeln!(s, "config: {}", serde_json::to_string(c).unwrap_or_default());
        let n = self.n_params();
        let _ = writeln!(s, "parameters: {n} ({:.1} MiB f32)", (n * 4) as f64 / (1 << 20) as f64);
        for (name, t) in self.params() {
            let _ = writeln!(s, "  {name:<14} {:<16} {:>12} values {:>14} bytes", format!("{:?}", t.shape), t.numel(), t.numel() * 4);
        }
        s
    }
}
