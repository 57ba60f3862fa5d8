//! Dynamic batching: callers enqueue validated requests on a bounded queue; one worker thread
//! takes the first waiting request, gathers more until `max_wait` passes or the batch is full
//! (`max_batch_requests`, `max_batch_candidates`), scores each model version's share in one
//! backend call and answers every caller on its own channel.
//!
//! - A full queue answers `Error::Overloaded` at once instead of blocking the caller.
//! - Requests carry the model version they started with (`Arc<Loaded>`), so a swap mid-queue
//!   never moves a request to another version; a batch holding two versions makes two calls.
//! - A panic inside a batch is caught: its callers get `Error::Panic`, the worker keeps serving.
//! - A request that arrives while the engine shuts down (or after its worker stopped) gets
//!   `Error::EngineStopped`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::engine::{score_batch, Loaded, ScoreRequest, ScoreResponse, Shared};
use crate::error::{Error, Result};

struct Job {
    loaded: Arc<Loaded>,
    req: ScoreRequest,
    reply: SyncSender<Result<ScoreResponse>>,
}

pub(crate) struct Batcher {
    tx: Mutex<Option<SyncSender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    capacity: usize,
    /// Jobs queued and not yet taken by the worker (a gauge for metrics).
    depth: Arc<AtomicUsize>,
}

impl Batcher {
    pub fn start(shared: Arc<Shared>) -> Result<Batcher> {
        let capacity = shared.cfg.queue_capacity;
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let d = depth.clone();
        let worker = std::thread::Builder::new()
            .name("twin-batcher".into())
            .spawn(move || run(shared, rx, &d))
            .map_err(|source| Error::Spawn { thread: "twin-batcher", source })?;
        Ok(Batcher { tx: Mutex::new(Some(tx)), worker: Mutex::new(Some(worker)), capacity, depth })
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn submit(&self, loaded: Arc<Loaded>, req: ScoreRequest) -> Result<ScoreResponse> {
        let (reply, answer) = mpsc::sync_channel(1);
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else {
            return Err(Error::EngineStopped { why: "is shutting down" });
        };
        // Counted before the send so the worker's decrement never comes first.
        self.depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Job { loaded, req, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::Overloaded { queue: self.capacity });
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::EngineStopped { why: "has no batching worker (it stopped)" });
            }
        }
        answer.recv().unwrap_or(Err(Error::EngineStopped { why: "lost the request (its batching worker stopped)" }))
    }
}

impl Batcher {
    /// Take no more requests: a later `submit` answers `Error::EngineStopped`. The worker ends
    /// once it has answered what is already queued.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.close();
        if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

fn run(shared: Arc<Shared>, rx: Receiver<Job>, depth: &AtomicUsize) {
    let cfg = shared.cfg.clone();
    let take = |j: Job| {
        depth.fetch_sub(1, Ordering::Relaxed);
        j
    };
    while let Ok(first) = rx.recv().map(take) {
        let deadline = Instant::now() + cfg.max_wait;
        let mut cands = first.req.candidates.len();
        let mut jobs = vec![first];
        while jobs.len() < cfg.max_batch_requests && cands < cfg.max_batch_candidates {
            let now = Instant::now();
            if now >= deadline {
                // Take whatever is already waiting without further delay.
                match rx.try_recv().map(take) {
                    Ok(j) => {
                        cands += j.req.candidates.len();
                        jobs.push(j);
                        continue;
                    }
                    Err(_) => break,
                }
            }
            match rx.recv_timeout(deadline - now).map(take) {
                Ok(j) => {
                    cands += j.req.candidates.len();
                    jobs.push(j);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // One backend call per model version present in the batch.
        while !jobs.is_empty() {
            let v = jobs[0].loaded.clone();
            let (mine, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| Arc::ptr_eq(&j.loaded, &v));
            jobs = rest;
            let reqs: Vec<&ScoreRequest> = mine.iter().map(|j| &j.req).collect();
            let t0 = Instant::now();
            let results = catch_unwind(AssertUnwindSafe(|| score_batch(&shared, &v, &reqs)))
                .unwrap_or_else(|p| reqs.iter().map(|_| Err(Error::panic("score batch", p.as_ref()))).collect());
            shared.observe(reqs.len(), t0.elapsed().as_secs_f64());
            drop(reqs);
            for (job, res) in mine.into_iter().zip(results) {
                let _ = job.reply.send(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::test_support::{small_engine, small_request};

    /// A request after the queue closed is told the engine stopped (not a device failure),
    /// and its message says so (src/serve/http/body.rs answers it with a 503).
    #[test]
    fn a_closed_batcher_answers_engine_stopped() {
        let (_dir, e) = small_engine();
        let b = Batcher::start(e.shared.clone()).unwrap();
        let req = small_request();
        // Open: it scores.
        assert_eq!(b.submit(e.current(), req.clone()).unwrap().ctr.len(), 2);
        b.close();
        let err = b.submit(e.current(), req).unwrap_err();
        assert!(matches!(err, Error::EngineStopped { .. }), "{err:?}");
        assert_eq!(err.to_string(), "the serving engine is shutting down");
        assert_eq!(b.depth(), 0);
    }
}
