//! NVTX ranges around the engine's stages, so Nsight Systems and Nsight Compute (`ncu --nvtx`)
//! show which stage launched which kernel. With the `nvtx` feature and `libnvToolsExt` loadable,
//! [`range`] opens a range that closes when the guard drops; otherwise it does nothing (one
//! cached check), so the calls stay in the code of every build.

/// Closes its NVTX range when dropped.
pub struct Range {
    #[cfg(feature = "nvtx")]
    _inner: Option<cudarc::nvtx::Range>,
}

/// Whether NVTX ranges are emitted in this process.
pub fn enabled() -> bool {
    #[cfg(feature = "nvtx")]
    {
        static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: a dlopen probe of the library names cudarc would load; no symbol is called.
        *PRESENT.get_or_init(|| unsafe { cudarc::nvtx::sys::is_culib_present() })
    }
    #[cfg(not(feature = "nvtx"))]
    false
}

/// Open a range named `name` (e.g. "online", "train step: backward").
pub fn range(name: &str) -> Range {
    #[cfg(feature = "nvtx")]
    {
        Range { _inner: enabled().then(|| cudarc::nvtx::scoped_range(name)) }
    }
    #[cfg(not(feature = "nvtx"))]
    {
        let _ = name;
        Range {}
    }
}
