//! Device tensors: typed handles to memory owned by one backend instance, and the staging area
//! through which a whole batch goes up in one host→device copy.
//!
//! - [`Tensor`] generalises [`super::DeviceTable`]: a `[rows, cols]` matrix of 32-bit elements
//!   (f32 or u32) that lives where its backend keeps memory (device memory on CUDA; host memory on
//!   the CPU backend, and on backends whose device-resident ops are not written yet). Ops take and
//!   return handles; `Backend::tensor_read` is the explicit download.
//! - [`Staging`] collects a batch's inputs as words on the host; `Backend::upload_staging` copies
//!   them up at once and returns [`Staged`], whose slots ([`IdSlot`], [`OnlineSlot`]) the ops
//!   read. A slot records what its ids were checked against when it was staged (its bound), so an
//!   op can refuse a slot whose ids could reach past its table without reading device memory.

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::BackendKind;
use crate::error::{Error, Result};

/// Element type of a [`Tensor`] (both 32-bit, so every tensor is a run of words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    U32,
}

impl Elem {
    /// The type's name in messages (`f32`, `u32`).
    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::U32 => "u32",
        }
    }
}

/// A `[rows, cols]` row-major matrix owned by one backend instance. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tensor {
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
    pub elem: Elem,
    pub backend: BackendKind,
    pub device_id: u64,
    pub(crate) inner: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} [{}x{}] {:?} on {})", self.name, self.rows, self.cols, self.elem, self.backend)
    }
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend's own storage, or a typed error saying whose tensor this is.
    pub(crate) fn storage<T: 'static>(&self, caller: BackendKind, caller_id: u64) -> Result<&T> {
        let foreign = || Error::ForeignTable {
            table: self.name,
            owner: format!("{}#{}", self.backend, self.device_id),
            caller: format!("{}#{}", caller, caller_id),
        };
        if self.backend != caller || self.device_id != caller_id {
            return Err(foreign());
        }
        self.inner.downcast_ref::<T>().ok_or_else(foreign)
    }

    /// Require shape and element type.
    pub(crate) fn expect(&self, field: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<()> {
        if self.elem != elem {
            return Err(Error::WrongDtype { field, expected: elem.name(), got: self.elem.name() });
        }
        if self.rows != rows || self.cols != cols {
            return Err(Error::LengthMismatch {
                field,
                got: self.len(),
                expected: rows * cols,
                expected_what: "rows * cols of the op's shape",
            });
        }
        Ok(())
    }
}

/// Host memory standing in for device memory: the CPU backend's tensors, and the tensors of a
/// backend that uses the trait's host implementations.
pub struct HostMem(Mutex<Vec<u32>>);

impl HostMem {
    pub fn new(words: Vec<u32>) -> HostMem {
        HostMem(Mutex::new(words))
    }
    /// The words (a poisoned lock only means a panic elsewhere; the data is intact).
    pub fn lock(&self) -> MutexGuard<'_, Vec<u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Words as f32.
pub fn f32s(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}
/// f32 as words.
pub fn words(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

static NEXT_STAGING: AtomicU64 = AtomicU64::new(1);

/// Word alignment of every staged section: 256 bytes, the largest storage-binding offset
/// alignment a wgpu adapter may ask for, so any section can be bound in place.
pub const STAGE_ALIGN_WORDS: usize = 64;

/// A batch's inputs on the host, collected for one upload.
pub struct Staging {
    pub(crate) id: u64,
    pub(crate) words: Vec<u32>,
}

impl Default for Staging {
    fn default() -> Self {
        Staging::new()
    }
}

impl Staging {
    pub fn new() -> Staging {
        Staging { id: NEXT_STAGING.fetch_add(1, Ordering::Relaxed), words: Vec::new() }
    }

    /// Append `xs` at an aligned offset; returns its word range.
    pub(crate) fn push(&mut self, xs: &[u32]) -> Range<usize> {
        let start = self.words.len().next_multiple_of(STAGE_ALIGN_WORDS);
        self.words.resize(start, 0);
        self.words.extend_from_slice(xs);
        start..self.words.len()
    }

    /// Stage row ids that an op will use to index a table of `bound` rows; refused here, with the
    /// field and the value, if any id is out of range.
    pub fn ids(&mut self, field: &'static str, ids: &[u32], bound: usize) -> Result<IdSlot> {
        super::check::ids_below(field, ids, bound)?;
        let range = self.push(ids);
        Ok(IdSlot { staging: self.id, range, bound, distinct: false })
    }

    /// Stage rows to update in place (row-sparse optimizers): strictly ascending, so distinct,
    /// and below `bound`; refused here otherwise.
    pub fn rows(&mut self, field: &'static str, rows: &[u32], bound: usize) -> Result<IdSlot> {
        super::check::ids_below(field, rows, bound)?;
        if let Some(i) = rows.windows(2).position(|w| w[0] >= w[1]) {
            return Err(Error::InvalidValue { field, index: i + 1, value: rows[i + 1] as f64, why: "rows must be strictly ascending" });
        }
        let range = self.push(rows);
        Ok(IdSlot { staging: self.id, range, bound, distinct: true })
    }

    /// Stage f32 values (labels), refused here if any is not finite.
    pub fn f32s(&mut self, field: &'static str, xs: &[f32]) -> Result<F32Slot> {
        super::check::finite(field, xs)?;
        let range = self.push(&words(xs));
        Ok(F32Slot { staging: self.id, range })
    }

    /// Stage ragged row offsets `[B + 1]` (0 first, non-decreasing): segment `b` owns rows
    /// `offs[b]..offs[b+1]` of a `[N, ·]` tensor, `N = offs[B]`.
    pub fn offsets(&mut self, field: &'static str, offs: &[u32]) -> Result<OffsetsSlot> {
        let n = *offs.last().ok_or(Error::BadOffsets { field, index: 0, why: "needs at least one entry (0)" })? as usize;
        super::check::offsets(field, offs, n)?;
        let range = self.push(offs);
        Ok(OffsetsSlot { staging: self.id, range, segments: offs.len() - 1, rows: n })
    }

    /// Words staged so far (the upload's size).
    pub fn len_words(&self) -> usize {
        self.words.len()
    }
}

/// A staging area copied to a backend: one u32 tensor holding every staged section.
pub struct Staged {
    pub(crate) id: u64,
    pub tensor: Tensor,
}

impl Staged {
    pub(crate) fn owns(&self, field: &'static str, slot_staging: u64) -> Result<()> {
        if slot_staging != self.id {
            return Err(Error::Incompatible {
                what: field,
                why: format!("staged into upload #{slot_staging}, not this one (#{}): pass the upload of the slot's Staging", self.id),
            });
        }
        Ok(())
    }
}

/// Row ids in a [`Staged`] upload, all below `bound`.
#[derive(Clone, Debug)]
pub struct IdSlot {
    pub(crate) staging: u64,
    pub(crate) range: Range<usize>,
    pub(crate) bound: usize,
    /// Strictly ascending (staged by `Staging::rows`).
    pub(crate) distinct: bool,
}

impl IdSlot {
    pub fn len(&self) -> usize {
        self.range.len()
    }
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// Finite f32 values in a [`Staged`] upload.
#[derive(Clone, Debug)]
pub struct F32Slot {
    pub(crate) staging: u64,
    pub(crate) range: Range<usize>,
}

impl F32Slot {
    pub fn len(&self) -> usize {
        self.range.len()
    }
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// What `Backend::bce_dev` leaves on the device.
pub struct BceDev {
    /// The loss, in the form `form` says.
    pub loss: Tensor,
    /// `[B, 1]`.
    pub dlogit: Tensor,
    pub form: LossForm,
}

/// How a device holds the BCE loss until it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossForm {
    /// `[1, 2]`: the mean as an f64 (low word, high word), summed on the device in sample order.
    MeanF64,
    /// `[B, 1]`: the per-sample f32 terms (a backend without f64: WGSL); the mean is summed at
    /// read time in f64 in sample order, as its slice form does.
    TermsF32,
}

impl BceDev {
    /// The mean loss from the words `tensor_read` returned for `loss`.
    pub fn loss_of(&self, words: &[u32]) -> f64 {
        match self.form {
            LossForm::MeanF64 => {
                let lo = words.first().copied().unwrap_or(0) as u64;
                let hi = words.get(1).copied().unwrap_or(0) as u64;
                f64::from_bits(lo | (hi << 32))
            }
            LossForm::TermsF32 => {
                let sum = words.iter().fold(0f64, |s, &w| s + f32::from_bits(w) as f64);
                sum * (1.0 / words.len().max(1) as f64)
            }
        }
    }
}

/// Ragged row offsets in a [`Staged`] upload (checked when staged).
#[derive(Clone, Debug)]
pub struct OffsetsSlot {
    pub(crate) staging: u64,
    pub(crate) range: Range<usize>,
    /// `B`.
    pub segments: usize,
    /// `N = offs[B]`.
    pub rows: usize,
}

/// What `Backend::attn_fwd_dev` leaves on the device.
pub struct AttnDev {
    /// `[N, h]` softmax weights (kept for the backward).
    pub p: Tensor,
    /// `[B, D]`.
    pub pooled: Tensor,
}

/// What `Backend::attn_bwd_dev` leaves on the device (each written, not accumulated).
pub struct AttnGradsDev {
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
    pub dbias: Tensor,
}

/// Which rows a row copy reads or writes: all in order, or listed ids.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    All,
    Ids(&'a IdSlot),
}

/// One online batch (SPEC §3) staged for `Backend::online_dev`. Validated when staged.
pub struct OnlineSlot {
    pub(crate) staging: u64,
    pub(crate) k: usize,
    pub(crate) n_cands: usize,
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // read by the GPU backends only
    pub(crate) n_behaviours: usize,
    /// Shape of the tables the batch was checked against.
    pub(crate) n_items: usize,
    pub(crate) cross_rows: usize,
    /// Word ranges of `seq_offsets, items, cross, sizes, cand_offsets, cands` (the host layout).
    pub(crate) host: [Range<usize>; 6],
    /// A backend's own layout of the same batch (and its plan), when it stages one.
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // read by the GPU backends only
    pub(crate) native: Option<Box<dyn Any + Send + Sync>>,
}

impl OnlineSlot {
    pub fn n_cands(&self) -> usize {
        self.n_cands
    }
    pub fn k(&self) -> usize {
        self.k
    }
}

/// What `Backend::online_dev` leaves on the device.
pub struct OnlineDev {
    /// `[ΣB, D]`: the TWIN module's output per candidate (after `W^o`).
    pub out: Tensor,
    /// `[1, ΣB (2K + 1)]` u32 words: positions `[ΣB K]`, score bits `[ΣB K]`, counts `[ΣB]`.
    pub topk: Tensor,
    /// `[1, 1]` u32 read with the results: `flag_ok` unless a GSU score was NaN.
    pub flag: Tensor,
    pub flag_ok: u32,
}

/// The activation `Backend::bias_act` applies after adding the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    /// Logistic σ, evaluated in f64 and rounded (the CTR).
    Sigmoid,
}

impl Act {
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // read by the GPU backends only
    pub(crate) fn code(self) -> u32 {
        match self {
            Act::None => 0,
            Act::Relu => 1,
            Act::Sigmoid => 2,
        }
    }
}

/// Item embeddings the clustering job draws its points from (`Backend::item_points`): on the
/// host always (virtual items are chosen there), and resident on the device where the backend
/// clusters there (CUDA), so a level uploads point ids, not 256-byte rows.
pub struct ItemPoints<'a> {
    pub host: &'a [f32],
    pub rows: usize,
    pub dim: usize,
    pub(crate) dev: Option<Tensor>,
}

impl ItemPoints<'_> {
    /// Whether the rows are resident on the device.
    pub fn on_device(&self) -> bool {
        self.dev.is_some()
    }
}
