//! Counting host↔device copies, so benchmarks can report what each run pays in transfers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Host↔device traffic of one backend instance: copies and bytes in each direction, counted
/// since the backend was opened. Benchmarks read it before and after a run (`since`) to report
/// the transfers each run pays; a backend without device memory (the CPU) reports zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transfers {
    pub h2d_calls: u64,
    pub h2d_bytes: u64,
    pub d2h_calls: u64,
    pub d2h_bytes: u64,
    /// Host writes that carry no op data: wgpu's per-dispatch parameter blocks (what CUDA passes
    /// as kernel arguments, which no counter sees) and debug poison fills. Counted apart so the
    /// data counts above compare across backends.
    pub h2d_aux_calls: u64,
    pub h2d_aux_bytes: u64,
}

impl Transfers {
    /// The traffic between `before` and `self`.
    pub fn since(self, before: Transfers) -> Transfers {
        Transfers {
            h2d_calls: self.h2d_calls.saturating_sub(before.h2d_calls),
            h2d_bytes: self.h2d_bytes.saturating_sub(before.h2d_bytes),
            d2h_calls: self.d2h_calls.saturating_sub(before.d2h_calls),
            d2h_bytes: self.d2h_bytes.saturating_sub(before.d2h_bytes),
            h2d_aux_calls: self.h2d_aux_calls.saturating_sub(before.h2d_aux_calls),
            h2d_aux_bytes: self.h2d_aux_bytes.saturating_sub(before.h2d_aux_bytes),
        }
    }
}

/// The counters behind [`Backend::transfers`]: GPU backends bump them in their copy helpers.
#[derive(Debug, Default)]
pub struct TransferCounter {
    h2d_calls: AtomicU64,
    h2d_bytes: AtomicU64,
    d2h_calls: AtomicU64,
    d2h_bytes: AtomicU64,
    aux_calls: AtomicU64,
    aux_bytes: AtomicU64,
}

impl TransferCounter {
    /// One host → device copy of `bytes`.
    pub fn up(&self, bytes: usize) {
        self.h2d_calls.fetch_add(1, Ordering::Relaxed);
        self.h2d_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// One device → host copy of `bytes`.
    pub fn down(&self, bytes: usize) {
        self.d2h_calls.fetch_add(1, Ordering::Relaxed);
        self.d2h_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// One host write of `bytes` that is not op data (parameters, poison).
    pub fn aux(&self, bytes: usize) {
        self.aux_calls.fetch_add(1, Ordering::Relaxed);
        self.aux_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn get(&self) -> Transfers {
        Transfers {
            h2d_calls: self.h2d_calls.load(Ordering::Relaxed),
            h2d_bytes: self.h2d_bytes.load(Ordering::Relaxed),
            d2h_calls: self.d2h_calls.load(Ordering::Relaxed),
            d2h_bytes: self.d2h_bytes.load(Ordering::Relaxed),
            h2d_aux_calls: self.aux_calls.load(Ordering::Relaxed),
            h2d_aux_bytes: self.aux_bytes.load(Ordering::Relaxed),
        }
    }
}
