//! Parity tests: every engine op on every GPU backend compiled in (and present) against the
//! CPU reference, one module per op stem. Built as one binary so one file travels to the GPU
//! machine. With no GPU feature compiled in there is nothing to compare and the tests say so;
//! with `--features wgpu` and `CI` set, a missing Vulkan adapter is a failure, not a skip.

mod common;

mod attn;
mod bce;
mod cluster;
mod cross_bias;
mod cuda_compile;
mod esu;
mod gather;
mod gemm;
mod gsu_topk;
mod kmeans;
mod log_size_bias;
mod segment_sum;
mod serve;
mod train;

/// `auto` never picks a CPU Vulkan adapter (lavapipe): it is used only when wgpu is asked for.
#[cfg(feature = "wgpu")]
#[test]
fn auto_never_picks_a_cpu_adapter() {
    use twin_engine::backend::{self, BackendChoice, BackendKind};
    let Ok((wgpu, _)) = backend::open(BackendChoice::Wgpu) else {
        eprintln!("skipped: no Vulkan adapter");
        return;
    };
    if !wgpu.describe().contains("(Cpu,") {
        eprintln!("skipped: the adapter is a real GPU ({})", wgpu.describe());
        return;
    }
    let refused = twin_engine::backend::wgpu::WgpuBackend::new(false);
    assert!(matches!(refused, Err(twin_engine::Error::BackendUnavailable { backend: "wgpu", .. })));
    let (auto, note) = backend::open(BackendChoice::Auto).unwrap();
    assert_ne!(auto.kind(), BackendKind::Wgpu, "auto chose lavapipe: {note}");
}
