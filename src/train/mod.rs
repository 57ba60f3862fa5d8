//! Training and evaluation of the CTR model (SPEC §5).
//!
//! - [`Variant`]: which sequence modules the model uses (`twin-v2`, `twin`, `sim-soft`,
//!   `din-short`, `no-seq`); every variant has the same parameters, unused parts feed zeros.
//! - [`examples`]: the time split and per-sample inputs without leakage (a sample sees only
//!   behaviours strictly before its request time; TWIN-V2 clusters come from history before
//!   the split).
//! - [`step`]: the forward and backward pass (the CPU reference, generic over f32/f64).
//! - [`optim`]: Adam for dense parameters, row-sparse Adagrad for embedding tables.
//! - [`metrics`]: AUC, GAUC, logloss.
//! - [`trainer`]: epochs, per-epoch evaluation, atomic checkpoints and exact resume.

mod device_seq;
pub mod device_step;
pub mod examples;
pub mod metrics;
pub mod optim;
pub mod step;
pub mod trainer;

pub use examples::{Examples, SeqSource, Split};
pub use metrics::Metrics;
pub use trainer::{evaluate, train, EpochReport, TrainConfig, TrainReport};

pub use crate::net::Variant;

/// One training or evaluation batch, flat and ragged. Long rows are the GSU's input (raw
/// behaviours or cluster virtual items); short rows the most recent behaviours.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub target: Vec<u32>,
    /// Hour of day of the request (context embedding row).
    pub context: Vec<u32>,
    pub label: Vec<f32>,
    /// Dataset user of each sample (GAUC groups by it).
    pub user: Vec<u32>,
    /// `[B + 1]`.
    pub long_offsets: Vec<u32>,
    pub long_item: Vec<u32>,
    /// `[N_long, J]` stacked cross rows.
    pub long_cross: Vec<u32>,
    /// `ln n` per long row (0 for raw behaviours).
    pub long_log_n: Vec<f32>,
    pub short_offsets: Vec<u32>,
    pub short_item: Vec<u32>,
    pub short_cross: Vec<u32>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.target.len()
    }
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }
}
