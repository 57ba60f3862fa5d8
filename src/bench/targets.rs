//! The backends a benchmark runs on, one [`Target`] per kernel version, and the card under them.

use std::sync::Arc;

use super::card::{self, Card};
use crate::backend::{self, Backend, BackendChoice};
use crate::error::Result;

/// One backend instance to time, labelled with the kernel version it runs.
#[derive(Clone)]
pub struct Target {
    pub be: Arc<dyn Backend>,
    pub version: String,
}

/// A backend that runs on this machine's CPU (the CPU backend, or a CPU Vulkan driver such as
/// lavapipe): benchmarks pick smaller default shapes for it.
pub fn cpu_bound(be: &dyn Backend) -> bool {
    be.kind() == backend::BackendKind::Cpu || be.describe().contains("(Cpu,")
}

/// Which ops have numbered versions worth a row each: the GSU of the online path, k-means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// Every GSU version the backend has (W1), and on CUDA ESU v1 beside the default v2.
    Gsu,
    /// Every k-means version the backend has (W2; CUDA's v1 and v2).
    Kmeans,
    /// The backend as opened (W2, W3).
    Default,
}

/// Open `choice` (`auto` as `backend::open` resolves it) and measure its card. With
/// `Versions::Gsu`, a GPU backend comes once per GSU version, oldest first (CUDA v1, v2, v3 with
/// ESU v2, then GSU v2 with ESU v1; wgpu v1, v2).
pub fn open_targets(choice: BackendChoice, versions: Versions) -> Result<(Card, Vec<Target>)> {
    let choice = match choice {
        BackendChoice::Auto => match backend::open(BackendChoice::Auto)?.0.kind() {
            backend::BackendKind::Cpu => BackendChoice::Cpu,
            backend::BackendKind::Cuda => BackendChoice::Cuda,
            backend::BackendKind::Wgpu => BackendChoice::Wgpu,
        },
        c => c,
    };
    match choice {
        BackendChoice::Cuda => cuda_targets(versions),
        BackendChoice::Wgpu => wgpu_targets(versions),
        BackendChoice::CpuRef => {
            let be = backend::open(BackendChoice::CpuRef)?.0;
            Ok((card::cpu_card(), vec![Target { be, version: "ref".into() }]))
        }
        _ => {
            let be = backend::open(BackendChoice::Cpu)?.0;
            Ok((card::cpu_card(), vec![Target { be, version: "fast".into() }]))
        }
    }
}

#[allow(unreachable_code, unused_variables)]
fn cuda_targets(versions: Versions) -> Result<(Card, Vec<Target>)> {
    #[cfg(feature = "cuda")]
    {
        use crate::backend::cuda::{CudaBackend, EsuVersion, GsuVersion};
        let first = CudaBackend::new(0)?;
        let card = card::cuda_card(&first)?;
        let mut out = Vec::new();
        if versions == Versions::Gsu {
            // GSU v1, v2, v3 with ESU v2; then GSU v2 with ESU v1 (the ESU's own pair of rows).
            let open = |gsu: GsuVersion, esu: EsuVersion| -> Result<CudaBackend> {
                let b = CudaBackend::new(0)?;
                b.set_gsu_version(gsu);
                b.set_esu_version(esu);
                Ok(b)
            };
            out.push(Target { be: Arc::new(open(GsuVersion::V1, EsuVersion::V2)?), version: "gsu v1".into() });
            let v3 = open(GsuVersion::V3, EsuVersion::V2)?;
            first.set_gsu_version(GsuVersion::V2);
            first.set_esu_version(EsuVersion::V2);
            out.push(Target { be: Arc::new(first), version: "gsu v2".into() });
            out.push(Target { be: Arc::new(v3), version: "gsu v3".into() });
            out.push(Target { be: Arc::new(open(GsuVersion::V2, EsuVersion::V1)?), version: "gsu v2, esu v1".into() });
        } else if versions == Versions::Kmeans {
            use crate::backend::cuda::KmeansVersion;
            let v1 = CudaBackend::new(0)?;
            v1.set_kmeans_version(KmeansVersion::V1);
            out.push(Target { be: Arc::new(v1), version: "kmeans v1".into() });
            first.set_kmeans_version(KmeansVersion::V2);
            out.push(Target { be: Arc::new(first), version: "kmeans v2".into() });
        } else {
            out.push(Target { be: Arc::new(first), version: "v1".into() });
        }
        return Ok((card, out));
    }
    backend::open(BackendChoice::Cuda).map(|_| unreachable!())
}

#[allow(unreachable_code, unused_variables)]
fn wgpu_targets(versions: Versions) -> Result<(Card, Vec<Target>)> {
    #[cfg(feature = "wgpu")]
    {
        use crate::backend::wgpu::{EsuVersion, GsuVersion, KernelVersions, KmeansVersion, WgpuBackend, WgpuOptions};
        let open = |v: KernelVersions| {
            let mut o = WgpuOptions::from_env(true)?;
            o.versions = v;
            o.poison_outputs = false;
            WgpuBackend::with_options(o)
        };
        let base = KernelVersions::default();
        let first = open(base)?;
        let card = card::wgpu_card(&first)?;
        let mut out = Vec::new();
        if versions == Versions::Gsu {
            out.push(Target { be: Arc::new(open(KernelVersions { gsu: GsuVersion::V1, ..base })?), version: "gsu v1".into() });
            out.push(Target { be: Arc::new(first), version: "gsu v2".into() });
            out.push(Target { be: Arc::new(open(KernelVersions { esu: EsuVersion::V1, ..base })?), version: "gsu v2, esu v1".into() });
        } else if versions == Versions::Kmeans {
            out.push(Target { be: Arc::new(open(KernelVersions { kmeans: KmeansVersion::V1, ..base })?), version: "kmeans v1".into() });
            out.push(Target { be: Arc::new(first), version: "kmeans v2".into() });
        } else {
            out.push(Target { be: Arc::new(first), version: "v1".into() });
        }
        return Ok((card, out));
    }
    backend::open(BackendChoice::Wgpu).map(|_| unreachable!())
}
