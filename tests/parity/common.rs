//! Shared harness: the backends under test, random inputs with outliers, tolerances.
#![allow(dead_code)]

use std::sync::Arc;

use twin_engine::backend::{self, Backend, BackendKind};

/// GPU backends to check against the CPU reference. wgpu accepts lavapipe here (CI has no GPU).
pub fn backends_under_test() -> Vec<Arc<dyn Backend>> {
    let mut v: Vec<Arc<dyn Backend>> = Vec::new();
    #[cfg(feature = "cuda")]
    match backend::open(backend::BackendChoice::Cuda) {
        Ok((b, _)) => v.push(b),
        Err(e) => eprintln!("parity: cuda skipped: {e}"),
    }
    #[cfg(feature = "wgpu")]
    match backend::open(backend::BackendChoice::Wgpu) {
        Ok((b, _)) => v.push(b),
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("parity: CI is set and the wgpu backend could not start: {e}");
            }
            eprintln!("parity: wgpu skipped: {e}");
        }
    }
    if v.is_empty() {
        eprintln!("parity: no GPU backend compiled in or present; nothing to compare");
    }
    v
}

pub fn cpu() -> Arc<dyn Backend> {
    backend::open(backend::BackendChoice::Cpu).unwrap().0
}

/// Runs `$body(gpu, cpu)` for every backend under test (candle's `test_device!` idea).
#[macro_export]
macro_rules! for_each_backend {
    (|$gpu:ident, $cpu:ident| $body:block) => {{
        let $cpu = $crate::common::cpu();
        for $gpu in $crate::common::backends_under_test() {
            eprintln!("parity on {}", $gpu.describe());
            $body
        }
    }};
}

pub fn kind_name(b: &dyn Backend) -> &'static str {
    match b.kind() {
        BackendKind::Cpu => "cpu",
        BackendKind::Cuda => "cuda",
        BackendKind::Wgpu => "wgpu",
    }
}
