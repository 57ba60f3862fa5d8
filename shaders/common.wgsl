// common.wgsl — what the reducing shaders share (attn, esu, gsu_topk): workgroup reductions
// over the invocations of a workgroup, and the builtins they need.
//
// Included by a shader with the line `//#include "common.wgsl"` (src/backend/wgpu/wgsl.rs
// expands it once per shader, before the `//#if` lines are resolved). The including shader
// defines `const RWG: u32` (its workgroup size, a power of two) and starts every entry point
// that reduces with `let lid = lanes_setup(lanes);`, `lanes: Lanes` being one of its parameters.
// SUBGROUP (the adapter has subgroup ops): each reduction reduces inside each subgroup, then
// across subgroups in subgroup order. Otherwise a tree in workgroup memory. Both paths are
// deterministic for a given path (and subgroup size); every invocation of the workgroup must
// call each reduction (they contain barriers) and gets the same result.

// The invocation's builtins a reduction reads: an entry point takes a `lanes: Lanes` parameter
// (WGSL allows builtins as struct members), so the SUBGROUP switch lives here, not in each
// entry point's signature.
struct Lanes {
    @builtin(local_invocation_index) lid: u32,
//#if SUBGROUP
    @builtin(subgroup_id) sgid: u32,
    @builtin(num_subgroups) nsg: u32,
    @builtin(subgroup_invocation_id) sgl: u32,
//#endif
}

// Scratch of the reductions and the builtins lanes_setup stored.
var<workgroup> red_f: array<f32, RWG>;
var<workgroup> red_u: array<u32, RWG>;
var<workgroup> red_out_f: f32;
var<workgroup> red_out_u: u32;
var<private> g_lid: u32;
//#if SUBGROUP
var<private> g_sgid: u32;
var<private> g_nsg: u32;
var<private> g_sgl: u32;
//#endif

// Stores the builtins the reductions read; returns local_invocation_index.
fn lanes_setup(l: Lanes) -> u32 {
    g_lid = l.lid;
//#if SUBGROUP
    g_sgid = l.sgid;
    g_nsg = l.nsg;
    g_sgl = l.sgl;
//#endif
    return l.lid;
}

// wg_max_f32, wg_sum_f32, wg_max_u32: the workgroup's max / sum of v, on every invocation.
//#if SUBGROUP
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
