// grid.wgsl — the flat index of an invocation in a "per item" dispatch: workgroups of 64
// invocations on the 2-D grid the host's `grid()` (src/backend/wgpu/pipelines.rs) builds within
// the 65,535-per-dimension limit, flattened as wid.x + wid.y * nwg.x. The caller returns when
// the index is past its item count.
// Included with the line `//#include "grid.wgsl"` (src/backend/wgpu/wgsl.rs); the including
// entry points must use @workgroup_size(64).

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 64u + lid;
}
