//! `twin_engine._native`: the engine for Python (PyO3). The Pythonic layer over it is
//! `twin_engine/__init__.py`; stubs are in `twin_engine/_native.pyi`.
//!
//! Conventions, kept by every function here:
//! - Arrays come in as NumPy arrays of the exact dtype and are read in place as slices (the
//!   Python layer converts lists once, and leaves arrays that already have the dtype alone);
//!   results go out by handing a `Vec` to NumPy, without a copy.
//! - The GIL is released (`Python::detach`) around every piece of engine work, so other Python
//!   threads run meanwhile and concurrent `Engine.score` calls batch together.
//! - Engine errors become exceptions of `twin_engine._errors` (see `errors.rs`), whose messages
//!   name the field and the value.

use std::path::Path;

use numpy::{Element, PyReadonlyArray1};
use pyo3::prelude::*;

mod data;
mod engine;
mod errors;
mod train;

use errors::invalid;

/// A 1-D array argument as a slice; the Python layer makes arrays contiguous, so a strided one
/// here is a caller bypassing it, refused by name.
pub(crate) fn slice<'a, T: Element>(py: Python<'_>, name: &str, a: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| invalid(py, format!("{name}: the array is not contiguous (pass numpy.ascontiguousarray({name}))")))
}

/// An optional 1-D array argument as a slice.
pub(crate) fn opt_slice<'a, T: Element>(py: Python<'_>, name: &str, a: &'a Option<PyReadonlyArray1<'_, T>>) -> PyResult<Option<&'a [T]>> {
    a.as_ref().map(|a| slice(py, name, a)).transpose()
}

pub(crate) fn parse_backend(py: Python<'_>, s: &str) -> PyResult<twin_engine::BackendChoice> {
    s.parse().map_err(|_| invalid(py, format!("backend = {s:?}: expected cpu, cuda, wgpu or auto")))
}

pub(crate) fn parse_variant(py: Python<'_>, s: &str) -> PyResult<twin_engine::train::Variant> {
    s.parse().map_err(|_| invalid(py, format!("variant = {s:?}: expected twin-v2, twin, sim-soft, din-short or no-seq")))
}

pub(crate) fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Every backend this build knows, whether it opens here, and what it is (or why not):
/// `[(name, available, detail)]`.
#[pyfunction]
fn backends(py: Python<'_>) -> Vec<(String, bool, String)> {
    use twin_engine::backend::{self, BackendChoice};
    py.detach(|| {
        [("cpu", BackendChoice::Cpu), ("cuda", BackendChoice::Cuda), ("wgpu", BackendChoice::Wgpu)]
            .into_iter()
            .map(|(name, choice)| match backend::open(choice) {
                Ok((be, _)) => (name.to_string(), true, be.describe()),
                Err(e) => (name.to_string(), false, e.to_string()),
            })
            .collect()
    })
}

/// The backend `auto` chooses here and why: `(description, note)`.
#[pyfunction]
fn auto_backend(py: Python<'_>) -> PyResult<(String, String)> {
    let r = py.detach(|| twin_engine::backend::open(twin_engine::BackendChoice::Auto));
    let (be, note) = r.map_err(errors::py_err(py))?;
    Ok((be.describe(), note))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(backends, m)?)?;
    m.add_function(wrap_pyfunction!(auto_backend, m)?)?;
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<data::PyDataset>()?;
    m.add_function(wrap_pyfunction!(data::cluster, m)?)?;
    m.add_function(wrap_pyfunction!(data::cluster_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(data::item_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(data::init_model, m)?)?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_function(wrap_pyfunction!(train::evaluate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
