//! Parity tests: every engine op on every GPU backend compiled in (and present) against the
//! CPU reference, one module per op stem. Built as one binary so one file travels to the GPU
//! machine. With no GPU feature compiled in there is nothing to compare and the tests say so;
//! with `--features wgpu` and `CI` set, a missing Vulkan adapter is a failure, not a skip.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod attn;
mod bce;
mod bias_act;
mod cluster;
mod cluster_tree;
mod copy_rows;
mod cross_bias;
mod cuda_compile;
mod esu;
mod gather;
mod gemm;
mod gsu_topk;
mod gsu_train;
mod kmeans;
mod kmeans_update;
mod log_size_bias;
mod mlp;
mod optim;
mod pool;
mod segment_sum;
mod serve;
mod train;
mod twin_rows;

/// `TWIN_REQUIRE_CUDA=1` turns a missing CUDA into a failure that names CUDA. Shown by running
/// one parity test of this binary again in a child process, with and without the variable, on
/// the CUDA variants alone. Where CUDA works there is nothing to show, and the test says so.
#[test]
fn require_cuda_fails_where_cuda_is_missing() {
    #[cfg(feature = "cuda")]
    if twin_engine::backend::cuda::CudaBackend::new(0).is_ok() {
        eprintln!("skipped: CUDA is present here, so TWIN_REQUIRE_CUDA has nothing to refuse");
        return;
    }
    let run = |require: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "gather::gather_matches_cpu_f32_f16::cuda_v2", "--nocapture", "--test-threads=1"])
            .env("TWIN_PARITY_ONLY", "cuda")
            .env("TWIN_REQUIRE_CUDA", require)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, text) = run("1");
    assert!(!ok, "with TWIN_REQUIRE_CUDA=1 and no CUDA the test passed:\n{text}");
    assert!(text.contains("TWIN_REQUIRE_CUDA is set but CUDA is unavailable"), "the failure does not name CUDA:\n{text}");
    assert!(text.contains("1 failed"), "expected exactly the one test to fail:\n{text}");
    let (ok, text) = run("0");
    assert!(ok, "without TWIN_REQUIRE_CUDA the same test must skip CUDA and pass:\n{text}");
    assert!(text.contains("parity: cuda skipped"), "no skip note:\n{text}");
}

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
