//! The CTR network of SPEC §5, written once and shared by training and serving: embeddings, the
//! TWIN module (GSU + ESU over the long sequence), short-term attention, the MLP head and BCE.
//!
//! - [`mlp`]: the head, forward over [`mlp::Dense`] (host slices in training, device tensors in
//!   serving) and backward.
//! - [`ops`]: the host-slice kernels a training step runs through (the CPU reference, or a
//!   backend's kernels).
//! - [`serving`]: the serving forward pass over device tensors: a batch of requests goes up in one
//!   upload and the CTRs come down in one download.
//! - [`request`]: the serving request and response types.
//! - The training forward and backward over host slices is `train::step` (it runs the same
//!   [`mlp`]); moving it onto device tensors is the rest of issue 12.

pub mod mlp;
pub mod ops;
pub mod request;
pub mod serving;

pub use ops::{BackendOps, CpuOps, Ops};
pub use request::{Behaviour, CandidateDebug, ScoreRequest, ScoreResponse};

use crate::error::{Error, Result};

/// Parameter indices in `ModelConfig::param_shapes` order.
pub const ITEM_EMB: usize = 0;
pub const AUTHOR_EMB: usize = 1;
pub const TOPIC_EMB: usize = 2;
pub const DURATION_EMB: usize = 3;
pub const CONTEXT_EMB: usize = 4;
pub const CROSS_EMB: usize = 5;
pub const W_Q: usize = 6;
pub const W_K: usize = 7;
pub const W_V: usize = 8;
pub const W_C: usize = 9;
pub const BETA: usize = 10;
pub const W_VC: usize = 11;
pub const W_O: usize = 12;
pub const MLP0: usize = 13;
/// Tables whose gradient is a set of rows (sparse updates).
pub const ROW_TABLES: [usize; 5] = [ITEM_EMB, AUTHOR_EMB, TOPIC_EMB, DURATION_EMB, CONTEXT_EMB];

/// Which sequence modules a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
