// twin_rows — the attention rows of a training step (SPEC §5, step 3).
// Reference: src/backend/cpu/twin_rows.rs; launcher src/backend/wgpu/train_rows.rs.
// Rows: N = n_att = n_fin + n_short attention rows; row n < n_fin reads long position sel[n],
//   row n ≥ n_fin reads position n_long + (n - n_fin) (the short rows). The staged batch `st` is
//   bound whole; feat [P, 4], cross [P, J], log_n [P] (f32 bits) start at word offsets in P.
//   Ids were checked against the tables when staged; sel holds long positions (the GSU's).
// Geometry: 64 invocations per workgroup, one per output element, 2-D grid flattened as
//   wid.x + wid.y * nwg.x. At most J loop trips per invocation.
// twin_rows_fwd: out_x [N, H] = x_h of the row's position (item [·, id] | author [·, id] |
//   topic [·, small] | duration [·, small], copies: exact), then out_b [N, h]:
//   bias[n, a] = ((ln n + tab[cross_0, a]) + tab[cross_1, a]) + ... (j ascending, f32), tab = cb
//   [ΣV, h]. Elements e < N·H are x_h, the rest bias; each written once with `=`.
// twin_rows_value_fwd: in place on out_x = v [N, D] with tab = cv [ΣV, D]:
//   v[n, col] = ((v[n, col] + cv[cross_0, col]) + cv[cross_1, col]) + ... (j ascending), i.e.
//   `+=` into the caller's V, each element by its own invocation; the tables and out_b unused.
// v1, one version of each.
struct Params {
    n_att: u32, n_fin: u32, n_long: u32, width: u32,
    id: u32, small: u32, heads: u32, n_cross: u32,
    cols: u32, feat_off: u32, cross_off: u32, logn_off: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> sel: array<u32>;
@group(0) @binding(2) var<storage, read> st: array<u32>;
@group(0) @binding(3) var<storage, read> t_item: array<f32>;
@group(0) @binding(4) var<storage, read> t_author: array<f32>;
@group(0) @binding(5) var<storage, read> t_topic: array<f32>;
@group(0) @binding(6) var<storage, read> t_dur: array<f32>;
@group(0) @binding(7) var<storage, read> tab: array<f32>;
@group(0) @binding(8) var<storage, read_write> out_x: array<f32>;
@group(0) @binding(9) var<storage, read_write> out_b: array<f32>;

fn position(n: u32) -> u32 {
    if (n < P.n_fin) { return sel[n]; }
    return P.n_long + (n - P.n_fin);
}

//#include "grid.wgsl"

@compute @workgroup_size(64)
fn twin_rows_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    let n_x = P.n_att * P.width;
    if (e >= n_x + P.n_att * P.heads) { return; }
    if (e < n_x) {
        let n = e / P.width;
        let col = e - n * P.width;
        let fb = P.feat_off + 4u * position(n);
        let id = P.id;
        let sm = P.small;
        if (col < id) {
            out_x[e] = t_item[st[fb] * id + col];
        } else if (col < 2u * id) {
            out_x[e] = t_author[st[fb + 1u] * id + (col - id)];
        } else if (col < 2u * id + sm) {
            out_x[e] = t_topic[st[fb + 2u] * sm + (col - 2u * id)];
        } else {
            out_x[e] = t_dur[st[fb + 3u] * sm + (col - 2u * id - sm)];
        }
        return;
    }
    let x = e - n_x;
    let n = x / P.heads;
    let a = x - n * P.heads;
    let p = position(n);
    var acc = bitcast<f32>(st[P.logn_off + p]);
    for (var j = 0u; j < P.n_cross; j++) {
        acc = acc + tab[st[P.cross_off + p * P.n_cross + j] * P.heads + a];
    }
    out_b[x] = acc;
}

@compute @workgroup_size(64)
fn twin_rows_value_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    if (e >= P.n_att * P.cols) { return; }
    let n = e / P.cols;
    let col = e - n * P.cols;
    let p = position(n);
    var acc = out_x[e];
    for (var j = 0u; j < P.n_cross; j++) {
        acc = acc + tab[st[P.cross_off + p * P.n_cross + j] * P.cols + col];
    }
    out_x[e] = acc;
}
