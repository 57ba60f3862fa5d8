//! The CUDA kernel files the backend compiles and loads: one stem per op, its entry points.
//!
//! Entry points are named `<op>_<fwd|bwd>[_v<N>]`, then a stage or element-type suffix where an
//! op takes several kernels (`gsu_topk_fwd_v2_merge`, `gather_fwd_f16`); the same op and
//! version carry the same name in shaders/*.wgsl.
//!
//! Shared code: kernel files include headers from kernels/ with lines like
//! `#include "common.cuh"` (every file includes common.cuh; gsu_topk.cu also topk_select.cuh and
//! wmma.cuh). NVRTC is given no headers (cudarc's `compile_ptx_with_opts` takes one source
//! string), so [`KernelSource::text`] replaces each such line with the header's text
//! (include_str!'d here, [`HEADERS`]) between `#line` directives that keep NVRTC's messages
//! pointing at the right file and line. build.rs does the same replacement for the CPU emulator.
//! Headers do not include each other; a kernel file includes what it needs, common.cuh first.

/// Every header a kernel file may include: (file name under kernels/, its text).
pub const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("topk_select.cuh", include_str!("../../../kernels/topk_select.cuh")),
    ("wmma.cuh", include_str!("../../../kernels/wmma.cuh")),
];

/// One kernel source file: an op stem, its `extern "C"` entry points, and whether NVRTC may
/// contract multiply-adds (`fmad`; off where results must round exactly like the CPU).
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub stem: &'static str,
    /// The file as written (with its `#include "….cuh"` lines); compile [`Self::text`].
    pub source: &'static str,
    pub fmad: bool,
    pub functions: &'static [&'static str],
}

impl KernelSource {
    /// The source NVRTC compiles: [`Self::source`] with its header includes replaced by the
    /// headers' text, framed by `#line` directives.
    pub fn text(&self) -> String {
        expand_includes(self.source, &format!("{}.cu", self.stem))
    }
}

/// The header a line includes, when it is exactly `#include "NAME"` (surrounding spaces aside)
/// for a NAME in [`HEADERS`].
fn included_header(line: &str) -> Option<(&'static str, &'static str)> {
    let name = line.trim().strip_prefix("#include \"")?.strip_suffix('"')?;
    HEADERS.iter().copied().find(|(h, _)| *h == name)
}

/// `src` (the file `name`) with each line that includes one of [`HEADERS`] replaced by that
/// header's text; lines after it keep their numbers through `#line`. Any other `#include` line
/// is left as written (NVRTC then names the missing file).
pub fn expand_includes(src: &str, name: &str) -> String {
    let mut out = String::with_capacity(src.len() + HEADERS.iter().map(|(_, t)| t.len()).sum::<usize>() + 256);
    for (i, line) in src.lines().enumerate() {
        if let Some((header, text)) = included_header(line) {
            out.push_str(&format!("#line 1 \"{header}\"\n"));
            out.push_str(text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("#line {} \"{name}\"\n", i + 2));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every kernel file of the backend.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        stem: "gather",
        source: include_str!("../../../kernels/gather.cu"),
        fmad: true,
        functions: &["gather_fwd_f32", "gather_fwd_f16"],
    },
    KernelSource {
        stem: "cross_bias",
        source: include_str!("../../../kernels/cross_bias.cu"),
        fmad: false,
        functions: &["cross_bias_fwd", "cross_bias_dense_fwd", "cross_bias_bwd", "cross_tables_fwd"],
    },
    KernelSource {
        stem: "log_size_bias",
        source: include_str!("../../../kernels/log_size_bias.cu"),
        fmad: false,
        functions: &["log_size_bias_fwd"],
    },
    KernelSource {
        stem: "gsu_topk",
        source: include_str!("../../../kernels/gsu_topk.cu"),
        fmad: true,
        functions: &[
            "gsu_topk_fwd_v1_score",
            "gsu_topk_fwd_v1_select",
            "gsu_topk_fwd_v2_f16",
            "gsu_topk_fwd_v2_f32",
            "gsu_topk_fwd_v2_merge",
            "gsu_topk_fwd_v3_f16",
            "gsu_topk_fwd_v3_f32",
        ],
    },
    KernelSource { stem: "esu", source: include_str!("../../../kernels/esu.cu"), fmad: true, functions: &["esu_fwd_v1", "esu_fwd_v2"] },
    KernelSource {
        stem: "kmeans",
        source: include_str!("../../../kernels/kmeans.cu"),
        fmad: false,
        functions: &[
            "kmeans_assign_fwd_v1",
            "kmeans_assign_fwd_v2",
            "kmeans_update_fwd_v1",
            "kmeans_changed_fwd",
            "kmeans_converge_fwd",
            "kmeans_seed_fwd",
        ],
    },
    KernelSource {
        stem: "kmeans_update",
        source: include_str!("../../../kernels/kmeans_update.cu"),
        fmad: false,
        functions: &[
            "kmeans_update_fwd_v2_plan",
            "kmeans_update_fwd_v2_count",
            "kmeans_update_fwd_v2_scan",
            "kmeans_update_fwd_v2_scatter",
            "kmeans_update_fwd_v2",
            "kmeans_update_fwd_v2_big",
        ],
    },
    KernelSource {
        stem: "cluster_tree",
        source: include_str!("../../../kernels/cluster_tree.cu"),
        fmad: false,
        functions: &[
            "cluster_tree_prepare_fwd",
            "cluster_tree_gather_fwd",
            "cluster_tree_count_fwd",
            "cluster_tree_scan_fwd",
            "cluster_tree_scatter_fwd",
        ],
    },
    KernelSource { stem: "attn", source: include_str!("../../../kernels/attn.cu"), fmad: true, functions: &["attn_fwd", "attn_bwd"] },
    KernelSource {
        stem: "segment_sum",
        source: include_str!("../../../kernels/segment_sum.cu"),
        fmad: false,
        functions: &["segment_sum_fwd", "segment_sum_mapped_fwd"],
    },
    KernelSource {
        stem: "gemm",
        source: include_str!("../../../kernels/gemm.cu"),
        fmad: true,
        functions: &["gemm_fwd_nn", "gemm_fwd_nt", "gemm_fwd_tn", "gemm_combine_fwd"],
    },
    KernelSource { stem: "bce", source: include_str!("../../../kernels/bce.cu"), fmad: false, functions: &["bce_fwd", "bce_mean_fwd"] },
    KernelSource { stem: "copy_rows", source: include_str!("../../../kernels/copy_rows.cu"), fmad: false, functions: &["copy_rows_fwd"] },
    KernelSource {
        stem: "bias_act",
        source: include_str!("../../../kernels/bias_act.cu"),
        fmad: false,
        functions: &["bias_act_fwd", "bias_act_bwd"],
    },
    KernelSource {
        stem: "gsu_train",
        source: include_str!("../../../kernels/gsu_train.cu"),
        fmad: false,
        functions: &["gsu_train_fwd", "gsu_train_map_tail_fwd"],
    },
    KernelSource {
        stem: "twin_rows",
        source: include_str!("../../../kernels/twin_rows.cu"),
        fmad: false,
        functions: &["twin_rows_fwd", "twin_rows_value_fwd"],
    },
    KernelSource {
        stem: "optim",
        source: include_str!("../../../kernels/optim.cu"),
        fmad: false,
        functions: &["optim_adam_fwd", "optim_adagrad_fwd"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The include line for common.cuh (every kernel file / every reducing shader has it).
    const COMMON_INCLUDE: &str = "#include \"common.cuh\"";

    #[test]
    fn every_kernel_includes_common_once_and_expands() {
        for k in KERNEL_SOURCES {
            let n = k.source.lines().filter(|l| l.trim() == COMMON_INCLUDE).count();
            assert_eq!(n, 1, "kernels/{}.cu should include common.cuh once", k.stem);
            let t = k.text();
            assert!(!t.lines().any(|l| l.trim() == COMMON_INCLUDE), "{}: include left in", k.stem);
            assert!(t.contains("#define FULL_MASK"), "{}: common.cuh not inlined", k.stem);
            assert!(!t.lines().any(|l| included_header(l).is_some()), "{}: a header include left in", k.stem);
            // The first line after the header is numbered like the file's line after the include.
            let at = k.source.lines().position(|l| l.trim() == COMMON_INCLUDE).unwrap();
            let mark = format!("\n#line {} \"{}.cu\"\n", at + 2, k.stem);
            assert!(t.contains(&mark), "{}: #line after the header", k.stem);
        }
    }

    #[test]
    fn gsu_topk_expands_its_three_headers_in_order() {
        let k = KERNEL_SOURCES.iter().find(|k| k.stem == "gsu_topk").unwrap();
        let t = k.text();
        let at = |pat: &str| t.find(pat).unwrap_or_else(|| panic!("gsu_topk: {pat} not inlined"));
        assert!(at("#line 1 \"common.cuh\"") < at("#line 1 \"topk_select.cuh\""));
        assert!(at("#line 1 \"topk_select.cuh\"") < at("#line 1 \"wmma.cuh\""));
        assert!(at("void block_topk(") < at("gsu_topk_fwd_v1_select("), "block_topk before its use");
        assert!(at("void warp_merge(") < at("gsu_topk_fwd_v3_f16("));
        // An unknown header is left for NVRTC to report.
        let odd = expand_includes("#include \"nope.cuh\"\nint x;\n", "x.cu");
        assert_eq!(odd, "#include \"nope.cuh\"\nint x;\n");
    }

    #[test]
    fn every_header_is_used_and_guarded() {
        for (name, text) in HEADERS {
            let line = format!("#include \"{name}\"");
            assert!(KERNEL_SOURCES.iter().any(|k| k.source.lines().any(|l| l.trim() == line)), "{name} is included by no kernel");
            assert!(text.contains("#ifndef TWIN_KERNELS_"), "{name} has no include guard");
            assert!(!text.contains("extern \"C\" __global__"), "{name}: headers hold no entry points");
        }
    }
}
