//! Reusable buffers so the hot path does not allocate per call: a per-thread scratch (tiles of
//! one work item) and a backend-wide pool (buffers shared by a request's work items).

use std::cell::RefCell;
use std::sync::Mutex;

use crate::backend::{HostTable, TableData};

/// One work item's tiles. Items never call into rayon while holding it, so a thread holds at
/// most one borrow; [`with_scratch`] still falls back to a fresh one rather than panic.
#[derive(Default)]
pub(crate) struct Scratch {
    pub q: Vec<f32>,
    pub keys: Vec<f32>,
    pub scores: Vec<f32>,
    pub sel: Vec<(u32, f32)>,
    /// Selection buffers (rank keys, `gsu_topk::Sel`).
    pub selk: Vec<u64>,
    pub vals: Vec<f32>,
    pub alpha: Vec<f32>,
    pub pooled: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// `v` resized to `n` (contents unspecified); grows only.
#[inline]
pub(crate) fn sized<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// A pool of vectors, taken and given back around one call.
pub(crate) struct Pool<T> {
    free: Mutex<Vec<Vec<T>>>,
}

impl<T: Copy + Default> Pool<T> {
    pub fn new() -> Self {
        Pool { free: Mutex::new(Vec::new()) }
    }
    /// A vector of length `n` (contents unspecified).
    pub fn take(&self, n: usize) -> Vec<T> {
        let mut v = self.free.lock().ok().and_then(|mut f| f.pop()).unwrap_or_default();
        if v.len() < n {
            v.resize(n, T::default());
        }
        v.truncate(n);
        v
    }
    pub fn give(&self, v: Vec<T>) {
        if let Ok(mut f) = self.free.lock() {
            if f.len() < 64 {
                f.push(v);
            }
        }
    }
}

/// Row `r` of `t` widened to f32 into `dst` (`t.cols` long); f16 with F16C ([`super::widen`]).
#[inline]
pub(crate) fn row_f32(t: &HostTable, r: usize, dst: &mut [f32]) {
    let (a, b) = (r * t.cols, (r + 1) * t.cols);
    match &t.data {
        TableData::F32(v) => dst.copy_from_slice(&v[a..b]),
        TableData::F16(v) => super::widen::widen(&v[a..b], dst),
    }
}

/// `dst += row r of t` (widened), for the cross-value sums.
#[inline]
pub(crate) fn add_row(t: &HostTable, r: usize, dst: &mut [f32], tmp: &mut [f32]) {
    match &t.data {
        TableData::F32(v) => {
            for (d, s) in dst.iter_mut().zip(&v[r * t.cols..(r + 1) * t.cols]) {
                *d += *s;
            }
        }
        TableData::F16(_) => {
            row_f32(t, r, tmp);
            for (d, s) in dst.iter_mut().zip(tmp.iter()) {
                *d += *s;
            }
        }
    }
}
