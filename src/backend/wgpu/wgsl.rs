//! WGSL source handling: the line preprocessor the shaders' variants use, and the workgroup
//! reductions appended to the shaders that need them.

/// `//#if NAME` / `//#else` / `//#endif` lines (nestable); everything else passes through.
pub(crate) fn preprocess(src: &str, defined: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    let mut stack: Vec<(bool, bool)> = Vec::new(); // (parent active, this branch taken)
    let active = |s: &Vec<(bool, bool)>| s.iter().all(|&(p, t)| p && t);
    for line in src.lines() {
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

/// Workgroup reductions shared by the shaders that need them; the shader defines `RWG`
/// (its workgroup size) and sets `g_lid` (and with SUBGROUP `g_sgid`, `g_nsg`, `g_sgl`).
/// The SUBGROUP path reduces inside each subgroup, then across subgroups in subgroup order;
/// the other path is a tree in workgroup memory. Both are deterministic for a given path.
pub(crate) const REDUCE_PRELUDE: &str = r#"
var<workgroup> red_f: array<f32, RWG>;
var<workgroup> red_u: array<u32, RWG>;
var<workgroup> red_out_f: f32;
var<workgroup> red_out_u: u32;
var<private> g_lid: u32;
//#if SUBGROUP
var<private> g_sgid: u32;
var<private> g_nsg: u32;
var<private> g_sgl: u32;
fn wg_max_f32(v: f32) -> f32 {
    let s = subgroupMax(v);
    if (g_sgl == 0u) { red_f[g_sgid] = s; }
    workgroupBarrier();
    if (g_lid == 0u) {
        var r = red_f[0];
        for (var i = 1u; i < g_nsg; i++) { r = max(r, red_f[i]); }
        red_out_f = r;
    }
    return workgroupUniformLoad(&red_out_f);
}
fn wg_sum_f32(v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (g_sgl == 0u) { red_f[g_sgid] = s; }
    workgroupBarrier();
    if (g_lid == 0u) {
        var r = red_f[0];
        for (var i = 1u; i < g_nsg; i++) { r = r + red_f[i]; }
        red_out_f = r;
    }
    return workgroupUniformLoad(&red_out_f);
}
fn wg_max_u32(v: u32) -> u32 {
    let s = subgroupMax(v);
    if (g_sgl == 0u) { red_u[g_sgid] = s; }
    workgroupBarrier();
    if (g_lid == 0u) {
        var r = red_u[0];
        for (var i = 1u; i < g_nsg; i++) { r = max(r, red_u[i]); }
        red_out_u = r;
    }
    return workgroupUniformLoad(&red_out_u);
}
//#else
fn wg_max_f32(v: f32) -> f32 {
    red_f[g_lid] = v;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s = s / 2u) {
        if (g_lid < s) { red_f[g_lid] = max(red_f[g_lid], red_f[g_lid + s]); }
        workgroupBarrier();
    }
    if (g_lid == 0u) { red_out_f = red_f[0]; }
    return workgroupUniformLoad(&red_out_f);
}
fn wg_sum_f32(v: f32) -> f32 {
    red_f[g_lid] = v;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s = s / 2u) {
        if (g_lid < s) { red_f[g_lid] = red_f[g_lid] + red_f[g_lid + s]; }
        workgroupBarrier();
    }
    if (g_lid == 0u) { red_out_f = red_f[0]; }
    return workgroupUniformLoad(&red_out_f);
}
fn wg_max_u32(v: u32) -> u32 {
    red_u[g_lid] = v;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s = s / 2u) {
        if (g_lid < s) { red_u[g_lid] = max(red_u[g_lid], red_u[g_lid + s]); }
        workgroupBarrier();
    }
    if (g_lid == 0u) { red_out_u = red_u[0]; }
    return workgroupUniformLoad(&red_out_u);
}
//#endif
"#;
