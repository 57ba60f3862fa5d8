//! WGSL source handling: the line preprocessor the shaders' variants use, with its include of
//! shaders/common.wgsl (the workgroup reductions and the builtins they read).
//!
//! Entry points are named `<op>_<fwd|bwd>[_v<N>]`, then a stage suffix where an op takes several
//! passes (`attn_fwd_tile`, `kmeans_update_fwd_v2_count`); the same op and version carry the
//! same name in kernels/*.cu.

/// shaders/common.wgsl: what the reducing shaders share (see its header).
pub(crate) const COMMON_WGSL: &str = include_str!("../../../shaders/common.wgsl");

/// The include line for shaders/common.wgsl.
pub(crate) const COMMON_INCLUDE: &str = "//#include \"common.wgsl\"";

/// Resolves `//#include "common.wgsl"` lines (the file's text in their place, once per call;
/// later includes of it are dropped), then `//#if NAME` / `//#else` / `//#endif` lines
/// (nestable) against `defined`; everything else passes through. An include of any other file
/// is left as a comment line: the shader then fails to compile on the names it lacks.
pub(crate) fn preprocess(src: &str, defined: &[&str]) -> String {
    let mut included = false;
    let mut text = String::with_capacity(src.len() + COMMON_WGSL.len());
    for line in src.lines() {
        if line.trim() == COMMON_INCLUDE {
            if !included {
                included = true;
                text.push_str(COMMON_WGSL);
                if !COMMON_WGSL.ends_with('\n') {
                    text.push('\n');
                }
            }
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<(bool, bool)> = Vec::new(); // (parent active, this branch taken)
    let active = |s: &Vec<(bool, bool)>| s.iter().all(|&(p, t)| p && t);
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("//#if ") {
            let parent = active(&stack);
            stack.push((parent, defined.contains(&name.trim())));
        } else if t.starts_with("//#else") {
            if let Some(top) = stack.last_mut() {
                top.1 = !top.1;
            }
        } else if t.starts_with("//#endif") {
            stack.pop();
        } else if active(&stack) {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_is_expanded_once_and_resolved_with_the_flags() {
        let src = format!("const RWG: u32 = 64u;\n{COMMON_INCLUDE}\nfn f() {{}}\n{COMMON_INCLUDE}\n");
        let plain = preprocess(&src, &[]);
        assert_eq!(plain.matches("fn wg_sum_f32").count(), 1);
        assert!(plain.contains("fn f() {}") && !plain.lines().any(|l| l.trim() == COMMON_INCLUDE));
        assert!(!plain.contains("subgroupAdd") && !plain.contains("subgroup_id"));
        let sg = preprocess(&src, &["SUBGROUP"]);
        assert_eq!(sg.matches("fn wg_sum_f32").count(), 1);
        assert!(sg.contains("subgroupAdd") && sg.contains("@builtin(subgroup_id)"));
    }

    #[test]
    fn shaders_defining_rwg_include_common() {
        for (name, src) in [
            ("attn", include_str!("../../../shaders/attn.wgsl")),
            ("esu", include_str!("../../../shaders/esu.wgsl")),
            ("gsu_topk", include_str!("../../../shaders/gsu_topk.wgsl")),
        ] {
            assert!(src.contains("const RWG"), "{name}.wgsl");
            assert_eq!(src.lines().filter(|l| l.trim() == COMMON_INCLUDE).count(), 1, "{name}.wgsl includes common.wgsl once");
            assert!(!src.contains("@builtin(subgroup_id)"), "{name}.wgsl: subgroup builtins come through Lanes");
        }
    }
}
