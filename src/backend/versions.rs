//! Kernel versions: one switch per op for every backend.
//!
//! `TWIN_GSU=v1|v2|v3`, `TWIN_ESU=v1|v2` and `TWIN_KMEANS=v1|v2` choose the version each
//! backend runs (v2 when unset); `CudaBackend::set_*_version` and [`crate::backend::wgpu::WgpuOptions`]
//! choose it in code. A backend without the version asked for runs the highest one it has below
//! it (WGSL has no tensor cores, so `TWIN_GSU=v3` runs WGSL's v2) and says so in `describe()`.
//! An unknown value is an error when the backend is opened, not a silent default.

use crate::error::{Error, Result};

/// The GSU top-K (kernels/gsu_topk.cu, shaders/gsu_topk.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GsuVersion {
    /// Score matrix in global memory + per-row select (CUDA: radix select; WGSL: one invocation
    /// per candidate with a private sorted list).
    V1 = 1,
    /// Fused tiles with a running top-K in shared memory + merge; no B x L matrix.
    V2 = 2,
    /// CUDA only: the dots on tensor cores (WMMA, f16 operands, f32 accumulation; f32 tables are
    /// rounded to f16 when staged), a threshold filter and warp bitonic merges + v2's merge.
    /// Scores differ from v1/v2 by the f16 rounding and the accumulation order.
    V3 = 3,
}

/// The ESU (kernels/esu.cu, shaders/esu.wgsl); every version is bit-identical to v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EsuVersion {
    /// One block per candidate; W^o read by every block.
    V1 = 1,
    /// One block per group of up to 8 candidates of a request: ids before rows, rows staged in
    /// tiles, W^o staged once per group.
    V2 = 2,
}

/// The k-means assignment and update (kernels/kmeans*.cu, shaders/kmeans*.wgsl); every version
/// is bit-identical to the CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KmeansVersion {
    /// A thread per point reading the centroids from global memory; the update scans the
    /// problem's assignments once per centroid.
    V1 = 1,
    /// Centroids staged in shared memory (CUDA); the update from a stable counting sort by
    /// assignment, then sequential f64 sums per centroid.
    V2 = 2,
}

/// The versions one backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelVersions {
    pub gsu: GsuVersion,
    pub esu: EsuVersion,
    pub kmeans: KmeansVersion,
}

impl Default for KernelVersions {
    fn default() -> Self {
        KernelVersions { gsu: GsuVersion::V2, esu: EsuVersion::V2, kmeans: KmeansVersion::V2 }
    }
}

/// `v<N>` (or `<N>`) among `allowed`, as the version number.
fn parse(name: &'static str, value: &str, allowed: &[u8]) -> Result<u8> {
    let digits = value.strip_prefix('v').unwrap_or(value);
    match digits.parse::<u8>() {
        Ok(n) if allowed.contains(&n) => Ok(n),
        _ => Err(Error::BadSetting {
            name,
            value: value.to_string(),
            why: format!("expected one of {}", allowed.iter().map(|n| format!("v{n}")).collect::<Vec<_>>().join(", ")),
        }),
    }
}

fn env(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl GsuVersion {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match parse("TWIN_GSU", value, &[1, 2, 3])? {
            1 => GsuVersion::V1,
            2 => GsuVersion::V2,
            _ => GsuVersion::V3,
        })
    }
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => GsuVersion::V1,
            3 => GsuVersion::V3,
            _ => GsuVersion::V2,
        }
    }
    pub fn name(self) -> &'static str {
        ["v1", "v2", "v3"][self as usize - 1]
    }
}

impl EsuVersion {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(if parse("TWIN_ESU", value, &[1, 2])? == 1 { EsuVersion::V1 } else { EsuVersion::V2 })
    }
    pub fn from_u8(v: u8) -> Self {
        if v == 1 {
            EsuVersion::V1
        } else {
            EsuVersion::V2
        }
    }
    pub fn name(self) -> &'static str {
        ["v1", "v2"][self as usize - 1]
    }
}

impl KmeansVersion {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(if parse("TWIN_KMEANS", value, &[1, 2])? == 1 { KmeansVersion::V1 } else { KmeansVersion::V2 })
    }
    pub fn from_u8(v: u8) -> Self {
        if v == 1 {
            KmeansVersion::V1
        } else {
            KmeansVersion::V2
        }
    }
    pub fn name(self) -> &'static str {
        ["v1", "v2"][self as usize - 1]
    }
}

impl KernelVersions {
    /// The defaults with `TWIN_GSU`, `TWIN_ESU` and `TWIN_KMEANS` applied; an unknown value is a
    /// [`Error::BadSetting`] naming the variable.
    pub fn from_env() -> Result<Self> {
        let mut v = KernelVersions::default();
        if let Some(s) = env("TWIN_GSU") {
            v.gsu = GsuVersion::parse(&s)?;
        }
        if let Some(s) = env("TWIN_ESU") {
            v.esu = EsuVersion::parse(&s)?;
        }
        if let Some(s) = env("TWIN_KMEANS") {
            v.kmeans = KmeansVersion::parse(&s)?;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_and_refuses_the_rest() {
        assert_eq!(GsuVersion::parse("v3").unwrap(), GsuVersion::V3);
        assert_eq!(GsuVersion::parse("1").unwrap(), GsuVersion::V1);
        assert_eq!(EsuVersion::parse("v1").unwrap(), EsuVersion::V1);
        assert_eq!(KmeansVersion::parse("v2").unwrap(), KmeansVersion::V2);
        let e = EsuVersion::parse("v3").unwrap_err().to_string();
        assert!(e.contains("TWIN_ESU") && e.contains("\"v3\"") && e.contains("v1, v2"), "{e}");
        assert!(GsuVersion::parse("fast").is_err());
        for v in [GsuVersion::V1, GsuVersion::V2, GsuVersion::V3] {
            assert_eq!(GsuVersion::parse(v.name()).unwrap(), v);
            assert_eq!(GsuVersion::from_u8(v as u8), v);
        }
    }
}
