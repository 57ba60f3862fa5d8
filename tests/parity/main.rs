//! Parity tests: every engine op on every GPU backend compiled in (and present) against the
//! CPU reference, one module per op stem. Built as one binary so one file travels to the GPU
//! machine. With no GPU feature compiled in there is nothing to compare and the tests say so;
//! with `--features wgpu` and `CI` set, a missing Vulkan adapter is a failure, not a skip.

mod common;

mod cluster;
mod cross_bias;
mod cuda_compile;
mod esu;
mod gather;
mod gsu_topk;
mod kmeans;
mod log_size_bias;
