//! twin-engine: a compute engine for lifelong user-behaviour CTR models (Kuaishou's TWIN and
//! TWIN-V2). See SPEC.md (in `shared/`) for the math; `backend` for the kernels and their
//! CPU reference; `cluster` for the offline job; `model` for parameters and the model file.

pub mod backend;
pub mod bench;
pub mod capi;
pub mod cluster;
pub mod data;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub mod error;
pub mod features;
pub mod fileio;
pub mod model;
pub mod net;
pub mod nvtx;
pub mod online;
pub mod rng;
pub mod serve;
pub mod train;

pub use backend::{Backend, BackendChoice, BackendKind};
pub use error::{Error, Result};
