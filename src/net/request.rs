//! What the network consumes when serving: one user's request (histories, candidates) and what
//! it answers. Serving (`serve`), the C ABI and the HTTP server speak these types.

use crate::features;

/// One behaviour of the user's history, or (TWIN-V2) one cluster as a virtual item.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Behaviour {
    pub item: u32,
    /// Seconds; a cluster's newest member's.
    pub timestamp: i64,
    /// Seconds watched (a cluster: the mean).
    pub play_time: f32,
    /// Completion ratio in [0, 1] (a cluster: the mean).
    pub completion: f32,
    /// Cluster size `n` (1 for a raw behaviour).
    #[serde(default = "one")]
    pub size: u32,
}

fn one() -> u32 {
    1
}

impl Behaviour {
    /// A raw behaviour; completion is `clamp(play_time / duration, 0, 1)`.
    pub fn raw(item: u32, timestamp: i64, play_time: f32, duration: f32) -> Behaviour {
        Behaviour { item, timestamp, play_time, completion: features::completion_ratio(play_time, duration), size: 1 }
    }
}

/// One user × B candidates.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreRequest {
    pub request_time: i64,
    /// The GSU's input, oldest first: the raw lifelong sequence (`twin`, `sim-soft`) or the
    /// user's clusters (`twin-v2`).
    #[serde(default)]
    pub long: Vec<Behaviour>,
    /// Raw recent behaviours, oldest first; the model uses the last `short_len` of them.
    #[serde(default)]
    pub short: Vec<Behaviour>,
    pub candidates: Vec<u32>,
    /// Also return each candidate's GSU top-K and ESU attention weights.
    #[serde(default)]
    pub debug: bool,
}

/// Why a candidate scored as it did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CandidateDebug {
    /// Positions in `long` kept by the GSU, best first, with their relevance `g`.
    pub topk_positions: Vec<u32>,
    pub topk_scores: Vec<f32>,
    /// `[K, h]`: per-head softmax weight of each finalist (order of `topk_positions`).
    pub attention: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScoreResponse {
    pub ctr: Vec<f32>,
    pub model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Vec<CandidateDebug>>,
}
