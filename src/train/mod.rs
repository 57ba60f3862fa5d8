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

pub mod examples;
pub mod metrics;
pub mod optim;
pub mod step;
pub mod trainer;

pub use examples::{Examples, SeqSource, Split};
pub use metrics::Metrics;
pub use trainer::{evaluate, train, EpochReport, TrainConfig, TrainReport};

use crate::error::{Error, Result};

/// Which sequence modules a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// GSU + ESU over the user's clusters (TWIN-V2), `ln n` reweighting; plus short-term.
    TwinV2,
    /// GSU + ESU over the raw lifelong sequence (TWIN); plus short-term.
    Twin,
    /// GSU by item-embedding inner product (SIM soft search), then the same ESU; plus short-term.
    SimSoft,
    /// Short-term attention over the 50 most recent behaviours only.
    DinShort,
    /// No sequence: context and target features only.
    NoSeq,
}

impl Variant {
    pub const ALL: [Variant; 5] = [Variant::NoSeq, Variant::DinShort, Variant::SimSoft, Variant::Twin, Variant::TwinV2];

    pub fn name(self) -> &'static str {
        match self {
            Variant::TwinV2 => "twin-v2",
            Variant::Twin => "twin",
            Variant::SimSoft => "sim-soft",
            Variant::DinShort => "din-short",
            Variant::NoSeq => "no-seq",
        }
    }
    pub fn uses_long(self) -> bool {
        matches!(self, Variant::TwinV2 | Variant::Twin | Variant::SimSoft)
    }
    pub fn uses_short(self) -> bool {
        !matches!(self, Variant::NoSeq)
    }
    pub fn uses_clusters(self) -> bool {
        matches!(self, Variant::TwinV2)
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s).ok_or(Error::InvalidValue {
            field: "variant (twin-v2, twin, sim-soft, din-short, no-seq)",
            index: 0,
            value: s.len() as f64,
            why: "unknown variant name",
        })
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
