//! What the serving unit tests share: a small model on the CPU backend and a request for it.

use tempfile::TempDir;

use crate::backend::BackendChoice;
use crate::data::{generate, SynthConfig};
use crate::model::{Model, ModelConfig};
use crate::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};

/// A freshly initialised model over 200 synthetic items, saved to a temporary file and opened
/// on the CPU without batching. The directory is returned so the file outlives the engine.
pub(crate) fn small_engine() -> (TempDir, Engine) {
    let ds = generate(&SynthConfig {
        n_users: 4,
        n_items: 200,
        n_authors: 20,
        n_topics: 8,
        min_len: 20,
        max_len: 60,
        samples_per_user: 2,
        seed: 3,
        ..SynthConfig::default()
    })
    .unwrap();
    let m = Model::init(ModelConfig::for_items(&ds.items), &ds.items, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let e = Engine::open(&path, EngineConfig { backend: BackendChoice::Cpu, batching: false, ..EngineConfig::default() }).unwrap();
    (dir, e)
}

/// One long-term behaviour, no short-term ones, two candidates (items 1 and 2).
pub(crate) fn small_request() -> ScoreRequest {
    ScoreRequest { request_time: 100, long: vec![Behaviour::raw(3, 10, 5.0, 10.0)], short: vec![], candidates: vec![1, 2], debug: false }
}
