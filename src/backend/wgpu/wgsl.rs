//! WGSL source handling: the line preprocessor the shaders' variants use, with its includes of
//! the shared shader files ([`HEADERS`]: shaders/common.wgsl, the workgroup reductions and the
//! builtins they read; shaders/grid.wgsl, the flat index of a per-item dispatch;
//! shaders/problems.wgsl, the problem a point or centroid of a clustering batch belongs to).
//!
//! Entry points are named `<op>_<fwd|bwd>[_v<N>]`, then a stage suffix where an op takes several
//! passes (`attn_fwd_tile`, `kmeans_update_fwd_v2_count`); the same op and version carry the
//! same name in kernels/*.cu.

/// Every shared shader file a shader may include: (file name under shaders/, its text).
pub(crate) const HEADERS: &[(&str, &str)] = &[
    ("common.wgsl", include_str!("../../../shaders/common.wgsl")),
    ("grid.wgsl", include_str!("../../../shaders/grid.wgsl")),
    ("problems.wgsl", include_str!("../../../shaders/problems.wgsl")),
];

/// The shared file a line includes, when it is exactly `//#include "NAME"` (surrounding spaces
/// aside) for a NAME in [`HEADERS`].
fn included(line: &str) -> Option<(&'static str, &'static str)> {
    let name = line.trim().strip_prefix("//#include \"")?.strip_suffix('"')?;
    HEADERS.iter().copied().find(|(h, _)| *h == name)
}

/// Resolves `//#include "NAME"` lines of [`HEADERS`] (the file's text in their place, once per
/// call and name; later includes of it are dropped), then `//#if NAME` / `//#else` / `//#endif`
/// lines (nestable) against `defined`; everything else passes through. An include of any other
/// file is left as a comment line: the shader then fails to compile on the names it lacks.
pub(crate) fn preprocess(src: &str, defined: &[&str]) -> String {
    let mut done: Vec<&str> = Vec::new();
    let mut text = String::with_capacity(src.len() + 8 * 1024);
    for line in src.lines() {
        if let Some((name, body)) = included(line) {
            if !done.contains(&name) {
                done.push(name);
                text.push_str(body);
                if !body.ends_with('\n') {
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

    /// The include line for common.wgsl (every kernel file / every reducing shader has it).
    const COMMON_INCLUDE: &str = "//#include \"common.wgsl\"";

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

    /// Every shader of the backend, by file name.
    const SHADERS: &[(&str, &str)] = &[
        ("attn", include_str!("../../../shaders/attn.wgsl")),
        ("cluster_tree", include_str!("../../../shaders/cluster_tree.wgsl")),
        ("cross_bias", include_str!("../../../shaders/cross_bias.wgsl")),
        ("esu", include_str!("../../../shaders/esu.wgsl")),
        ("gsu_topk", include_str!("../../../shaders/gsu_topk.wgsl")),
        ("kmeans", include_str!("../../../shaders/kmeans.wgsl")),
        ("kmeans_update", include_str!("../../../shaders/kmeans_update.wgsl")),
        ("twin_rows", include_str!("../../../shaders/twin_rows.wgsl")),
    ];

    #[test]
    fn shared_functions_are_defined_once_in_their_header() {
        for (file, func) in
            [("grid.wgsl", "fn flat("), ("problems.wgsl", "fn problem_of_point("), ("problems.wgsl", "fn problem_of_centroid(")]
        {
            for (name, src) in SHADERS {
                assert!(!src.contains(func), "{name}.wgsl defines `{func}`: include {file} instead");
                let t = preprocess(src, &[]);
                let uses = t.matches(&func[3..]).count() > t.matches(func).count();
                if uses {
                    assert_eq!(t.matches(func).count(), 1, "{name}.wgsl uses `{func}` and should include {file} once");
                }
            }
        }
        for (name, _) in HEADERS {
            let line = format!("//#include \"{name}\"");
            assert!(SHADERS.iter().any(|(_, s)| s.lines().any(|l| l.trim() == line)), "{name} is included by no shader");
        }
    }

    #[test]
    fn each_header_expands_once_and_unknown_includes_stay() {
        let src = "//#include \"grid.wgsl\"\n//#include \"grid.wgsl\"\n//#include \"nope.wgsl\"\nfn g() {}\n";
        let t = preprocess(src, &[]);
        assert_eq!(t.matches("fn flat(").count(), 1);
        assert!(t.contains("//#include \"nope.wgsl\"") && t.contains("fn g() {}"));
    }
}
