//! `Dataset` (the engine's dataset: logs in, arrays out), the offline clustering over arrays or a
//! dataset, and the model helpers the clustering needs (item embeddings, a fresh model).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use twin_engine::backend;
use twin_engine::cluster::{cluster_users_keyed, ClusterConfig, ClusterSet, ClusterStats};
use twin_engine::data::{self, Behaviours, Dataset, Items, SynthConfig};
use twin_engine::model::{Model, ModelConfig};
use twin_engine::{Error, Result};

use crate::errors::{invalid, py_err};
use crate::{opt_slice, parse_backend, slice};

/// An interaction dataset held by the engine; see `twin_engine.Dataset`.
#[pyclass(module = "twin_engine._native", name = "Dataset", frozen)]
pub struct PyDataset {
    pub(crate) inner: Arc<Dataset>,
}

/// A dataset file (`TWINDATA`) by its magic, else a log (Parquet, MovieLens or Kuai CSV).
fn open_any(path: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    let mut magic = [0u8; 8];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut magic)).map_err(|e| Error::io(path, e))?;
    if n == 8 && &magic == data::format::MAGIC {
        Dataset::load(path)
    } else {
        data::read_log(path, item_features)
    }
}

impl PyDataset {
    fn wrap(d: Dataset) -> Self {
        PyDataset { inner: Arc::new(d) }
    }
}

#[pymethods]
impl PyDataset {
    /// A dataset file, or a log converted on the fly (see `twin_engine.Dataset.open`).
    #[staticmethod]
    #[pyo3(signature = (path, item_features = None))]
    fn open(py: Python<'_>, path: PathBuf, item_features: Option<PathBuf>) -> PyResult<Self> {
        py.detach(|| open_any(&path, item_features.as_deref())).map(Self::wrap).map_err(py_err(py))
    }

    /// A log: Parquet (by its magic), MovieLens ratings or a Kuai CSV log.
    #[staticmethod]
    #[pyo3(signature = (path, item_features = None))]
    fn read_log(py: Python<'_>, path: PathBuf, item_features: Option<PathBuf>) -> PyResult<Self> {
        py.detach(|| data::read_log(&path, item_features.as_deref())).map(Self::wrap).map_err(py_err(py))
    }

    /// Synthetic long-sequence users (the generator behind `twin gen`).
    #[staticmethod]
    #[pyo3(signature = (users = 200, items = 20_000, authors = 2_000, topics = 64, min_len = 10, max_len = 100_000,
                        samples_per_user = 20, seed = 42, fixed_len = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        py: Python<'_>,
        users: usize,
        items: usize,
        authors: usize,
        topics: usize,
        min_len: usize,
        max_len: usize,
        samples_per_user: usize,
        seed: u64,
        fixed_len: Option<usize>,
    ) -> PyResult<Self> {
        let cfg = SynthConfig {
            n_users: users,
            n_items: items,
            n_authors: authors,
            n_topics: topics,
            min_len,
            max_len,
            fixed_len,
            samples_per_user,
            seed,
            ..SynthConfig::default()
        };
        py.detach(|| data::generate(&cfg)).map(Self::wrap).map_err(py_err(py))
    }

    /// Save as a dataset file (atomic).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let d = &self.inner;
        py.detach(|| d.save(&path)).map_err(py_err(py))
    }

    #[getter]
    fn n_users(&self) -> usize {
        self.inner.n_users()
    }
    #[getter]
    fn n_items(&self) -> usize {
        self.inner.items.len()
    }
    #[getter]
    fn n_behaviours(&self) -> usize {
        self.inner.behaviours.len()
    }
    #[getter]
    fn n_samples(&self) -> usize {
        self.inner.samples.len()
    }
    #[getter]
    fn source(&self) -> String {
        self.inner.source.clone()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn __repr__(&self) -> String {
        let d = &self.inner;
        format!(
            "Dataset(source={:?}, users={}, items={}, behaviours={}, samples={})",
            d.source,
            d.n_users(),
            d.items.len(),
            d.behaviours.len(),
            d.samples.len()
        )
    }

    /// Every column as a NumPy array (one copy of each, made here; the dataset is shared).
    fn arrays<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = &self.inner;
        let out = PyDict::new(py);
        out.set_item("user_offsets", PyArray1::from_slice(py, &d.user_offsets))?;
        out.set_item("user_ids", PyArray1::from_slice(py, &d.user_ids))?;
        out.set_item("item", PyArray1::from_slice(py, &d.behaviours.item))?;
        out.set_item("timestamp", PyArray1::from_slice(py, &d.behaviours.timestamp))?;
        out.set_item("play_time", PyArray1::from_slice(py, &d.behaviours.play_time))?;
        out.set_item("duration", PyArray1::from_slice(py, &d.behaviours.duration))?;
        out.set_item("item_external_id", PyArray1::from_slice(py, &d.items.external_id))?;
        out.set_item("item_author", PyArray1::from_slice(py, &d.items.author))?;
        out.set_item("item_topic", PyArray1::from_slice(py, &d.items.topic))?;
        out.set_item("item_duration_bucket", PyArray1::from_slice(py, &d.items.duration_bucket))?;
        out.set_item("sample_user", PyArray1::from_slice(py, &d.samples.user))?;
        out.set_item("sample_item", PyArray1::from_slice(py, &d.samples.item))?;
        out.set_item("sample_request_time", PyArray1::from_slice(py, &d.samples.request_time))?;
        out.set_item("sample_label", PyArray1::from_slice(py, &d.samples.label))?;
        Ok(out)
    }
}

/// The clusters as NumPy arrays; every `Vec` is handed over, not copied.
fn cluster_dict<'py>(py: Python<'py>, s: ClusterSet, stats: &ClusterStats) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("users", PyArray1::from_vec(py, s.users))?;
    out.set_item("user_offsets", PyArray1::from_vec(py, s.user_offsets))?;
    out.set_item("item", PyArray1::from_vec(py, s.item))?;
    out.set_item("timestamp", PyArray1::from_vec(py, s.timestamp))?;
    out.set_item("play_time", PyArray1::from_vec(py, s.play_time))?;
    out.set_item("completion", PyArray1::from_vec(py, s.completion))?;
    out.set_item("size", PyArray1::from_vec(py, s.size))?;
    out.set_item("group", PyArray1::from_vec(py, s.group))?;
    out.set_item("member_offsets", PyArray1::from_vec(py, s.member_offsets))?;
    out.set_item("members", PyArray1::from_vec(py, s.members))?;
    out.set_item("kmeans_problems", stats.kmeans_problems)?;
    out.set_item("backend_calls", stats.backend_calls)?;
    Ok(out)
}

/// `[n_items, dim]` float32 embeddings as a slice, C-contiguous required.
fn embeddings<'a>(py: Python<'_>, e: &'a PyReadonlyArray2<'_, f32>) -> PyResult<(&'a [f32], usize, usize)> {
    let shape = e.shape();
    let (rows, dim) = (shape[0], shape[1]);
    let s = e
        .as_slice()
        .map_err(|_| invalid(py, "embeddings: the array is not C-contiguous (pass numpy.ascontiguousarray(embeddings))".into()))?;
    Ok((s, rows, dim))
}

fn cluster_cfg(gamma: usize, groups: usize, seed: u64, max_iter: u32) -> ClusterConfig {
    ClusterConfig { gamma, groups, seed, max_iter, ..ClusterConfig::default() }
}

/// Runs the batched clustering of `users` of `ds` with seeds keyed by `keys`, on `backend`.
#[allow(clippy::too_many_arguments)]
fn run_cluster(
    ds: &Dataset,
    users: &[u32],
    keys: &[u64],
    cutoff: Option<i64>,
    emb: &[f32],
    dim: usize,
    cfg: &ClusterConfig,
    choice: twin_engine::BackendChoice,
) -> Result<(ClusterSet, ClusterStats)> {
    let (be, _) = backend::open(choice)?;
    twin_engine::backend::check::len("embeddings", emb.len(), ds.items.len() * dim, "n_items * dim")?;
    let pts = be.item_points(emb, dim)?;
    let (set, stats) = cluster_users_keyed(be.as_ref(), ds, users, keys, cutoff, &pts, cfg, &mut |_, _| {})?;
    set.verify(ds)?;
    Ok((set, stats))
}

/// Clusters histories given as arrays (see `twin_engine.cluster`).
#[pyfunction]
#[pyo3(signature = (offsets, item, timestamp, play_time, duration, embeddings, user_keys = None, cutoff = None,
                    gamma = 20, groups = 5, seed = 0, max_iter = 20, backend = "cpu"))]
#[allow(clippy::too_many_arguments)]
pub fn cluster<'py>(
    py: Python<'py>,
    offsets: PyReadonlyArray1<'py, u64>,
    item: PyReadonlyArray1<'py, u32>,
    timestamp: PyReadonlyArray1<'py, i64>,
    play_time: PyReadonlyArray1<'py, f32>,
    duration: PyReadonlyArray1<'py, f32>,
    embeddings: PyReadonlyArray2<'py, f32>,
    user_keys: Option<PyReadonlyArray1<'py, u64>>,
    cutoff: Option<i64>,
    gamma: usize,
    groups: usize,
    seed: u64,
    max_iter: u32,
    backend: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let choice = parse_backend(py, backend)?;
    let (emb, rows, dim) = self::embeddings(py, &embeddings)?;
    let offsets = slice(py, "offsets", &offsets)?;
    let (item, timestamp) = (slice(py, "item", &item)?, slice(py, "timestamp", &timestamp)?);
    let (play_time, duration) = (slice(py, "play_time", &play_time)?, slice(py, "duration", &duration)?);
    let keys = opt_slice(py, "user_keys", &user_keys)?;
    let n_users = offsets.len().saturating_sub(1);
    if let Some(k) = keys {
        if k.len() != n_users {
            return Err(invalid(py, format!("user_keys: length {} does not match the user count len(offsets) - 1 ({n_users})", k.len())));
        }
    }
    let cfg = cluster_cfg(gamma, groups, seed, max_iter);
    let r = py.detach(|| {
        // The engine's columnar dataset over these histories: one bulk copy of each array.
        let ds = Dataset {
            source: "arrays".into(),
            items: Items {
                author: vec![0; rows],
                topic: vec![0; rows],
                duration_bucket: vec![0; rows],
                external_id: (0..rows as u64).collect(),
                n_authors: 1,
                n_topics: 1,
            },
            user_offsets: offsets.to_vec(),
            user_ids: keys.map_or_else(|| (0..n_users as u64).collect(), |k| k.to_vec()),
            behaviours: Behaviours {
                item: item.to_vec(),
                timestamp: timestamp.to_vec(),
                play_time: play_time.to_vec(),
                duration: duration.to_vec(),
            },
            samples: Default::default(),
        };
        ds.validate()?;
        let users: Vec<u32> = (0..n_users).map(|u| u as u32).collect();
        run_cluster(&ds, &users, &ds.user_ids, cutoff, emb, dim, &cfg, choice)
    });
    let (set, stats) = r.map_err(py_err(py))?;
    cluster_dict(py, set, &stats)
}

/// Clusters the users of a dataset (see `twin_engine.cluster_dataset`).
#[pyfunction]
#[pyo3(signature = (dataset, embeddings, users = None, cutoff = None, key = "external", gamma = 20, groups = 5, seed = 0,
                    max_iter = 20, backend = "cpu", out = None))]
#[allow(clippy::too_many_arguments)]
pub fn cluster_dataset<'py>(
    py: Python<'py>,
    dataset: PyRef<'py, PyDataset>,
    embeddings: PyReadonlyArray2<'py, f32>,
    users: Option<PyReadonlyArray1<'py, u32>>,
    cutoff: Option<i64>,
    key: &str,
    gamma: usize,
    groups: usize,
    seed: u64,
    max_iter: u32,
    backend: &str,
    out: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let choice = parse_backend(py, backend)?;
    let external = match key {
        "external" => true,
        "index" => false,
        other => {
            return Err(invalid(py, format!("key = {other:?}: expected \"external\" (seeds keyed by the log's user id) or \"index\"")))
        }
    };
    let (emb, _, dim) = self::embeddings(py, &embeddings)?;
    let users = opt_slice(py, "users", &users)?;
    let ds = dataset.inner.clone();
    let cfg = cluster_cfg(gamma, groups, seed, max_iter);
    let r = py.detach(|| {
        let users: Vec<u32> = users.map_or_else(|| (0..ds.n_users() as u32).collect(), |u| u.to_vec());
        twin_engine::backend::check::ids_below("users", &users, ds.n_users())?;
        let keys: Vec<u64> = users.iter().map(|&u| if external { ds.user_ids[u as usize] } else { u as u64 }).collect();
        let (set, stats) = run_cluster(&ds, &users, &keys, cutoff, emb, dim, &cfg, choice)?;
        if let Some(p) = &out {
            set.save(p)?;
        }
        Ok::<_, Error>((set, stats))
    });
    let (set, stats) = r.map_err(py_err(py))?;
    cluster_dict(py, set, &stats)
}

/// A model file's item-id embeddings, `[n_items, id_dim]` float32.
#[pyfunction]
pub fn item_embeddings<'py>(py: Python<'py>, model: PathBuf) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let m = py.detach(|| Model::load(&model)).map_err(py_err(py))?;
    let (rows, dim) = (m.n_items(), m.config.id_dim);
    PyArray1::from_slice(py, m.item_embeddings()).reshape([rows, dim])
}

/// A fresh model for a dataset's catalogue (deterministic in `seed`), saved to `out`; returns
/// its description.
#[pyfunction]
#[pyo3(signature = (dataset, out, seed = 1))]
pub fn init_model(py: Python<'_>, dataset: PyRef<'_, PyDataset>, out: PathBuf, seed: u64) -> PyResult<String> {
    let ds = dataset.inner.clone();
    let r = py.detach(|| {
        let m = Model::init(ModelConfig::for_items(&ds.items), &ds.items, seed)?;
        m.save(&out)?;
        Ok::<_, Error>(m.describe())
    });
    r.map_err(py_err(py))
}
