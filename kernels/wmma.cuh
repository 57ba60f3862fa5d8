// wmma.cuh — the WMMA m16n16k16 subset the tensor-core kernels use (f16 A/B, f32 accumulate):
// fragment, fill_fragment, load_matrix_sync, mma_sync, store_matrix_sync, as `wm::` with the
// element type `gsu_half`.
// The emulator provides nvcuda::wmma (emu/cuda_emu.h); NVRTC has no usable <mma.h> here (the pip
// wheels lack crt/mma.h), so on the device the same subset is spelled as the PTX wmma
// instructions it compiles to (sm_70+). Generic addresses.
// Included after common.cuh with `#include "wmma.cuh"`, resolved textually as common.cuh is
// (src/backend/cuda/sources.rs, build.rs).

#ifndef TWIN_KERNELS_WMMA_CUH
#define TWIN_KERNELS_WMMA_CUH

#ifdef TWIN_CUDA_EMU
typedef __half gsu_half;
namespace wm = nvcuda::wmma;
#else
struct __align__(2) gsu_half {
    unsigned short x;
};
namespace twin_wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment;
template <typename Layout>
struct fragment<matrix_a, 16, 16, 16, gsu_half, Layout> {
    u32 x[8];  // 16 halves as 8 f16x2 registers
};
template <typename Layout>
struct fragment<matrix_b, 16, 16, 16, gsu_half, Layout> {
    u32 x[8];
};
template <>
struct fragment<accumulator, 16, 16, 16, float, void> {
    float x[8];
};

__device__ __forceinline__ void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
    for (int i = 0; i < 8; ++i) f.x[i] = v;
}

#define TWIN_WMMA_LD(AB, LAY, f, p, ldm)                                                                              \
    asm volatile("wmma.load." AB ".sync.aligned." LAY ".m16n16k16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, [%8], %9;"           \
                 : "=r"(f.x[0]), "=r"(f.x[1]), "=r"(f.x[2]), "=r"(f.x[3]), "=r"(f.x[4]), "=r"(f.x[5]), "=r"(f.x[6]),     \
                   "=r"(f.x[7])                                                                                        \
                 : "l"(p), "r"(ldm)                                                                                    \
                 : "memory")

__device__ __forceinline__ void load_matrix_sync(fragment<matrix_a, 16, 16, 16, gsu_half, row_major>& f, const gsu_half* p, unsigned ldm) {
    TWIN_WMMA_LD("a", "row", f, p, ldm);
}
__device__ __forceinline__ void load_matrix_sync(fragment<matrix_a, 16, 16, 16, gsu_half, col_major>& f, const gsu_half* p, unsigned ldm) {
    TWIN_WMMA_LD("a", "col", f, p, ldm);
}
__device__ __forceinline__ void load_matrix_sync(fragment<matrix_b, 16, 16, 16, gsu_half, row_major>& f, const gsu_half* p, unsigned ldm) {
    TWIN_WMMA_LD("b", "row", f, p, ldm);
}
__device__ __forceinline__ void load_matrix_sync(fragment<matrix_b, 16, 16, 16, gsu_half, col_major>& f, const gsu_half* p, unsigned ldm) {
    TWIN_WMMA_LD("b", "col", f, p, ldm);
}
#undef TWIN_WMMA_LD

__device__ __forceinline__ void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                                                  layout_t layout) {
    if (layout == mem_row_major) {
        asm volatile("wmma.store.d.sync.aligned.row.m16n16k16.f32 [%0], {%1,%2,%3,%4,%5,%6,%7,%8}, %9;"
                     :
                     : "l"(p), "f"(f.x[0]), "f"(f.x[1]), "f"(f.x[2]), "f"(f.x[3]), "f"(f.x[4]), "f"(f.x[5]), "f"(f.x[6]),
                       "f"(f.x[7]), "r"(ldm)
                     : "memory");
    } else {
        asm volatile("wmma.store.d.sync.aligned.col.m16n16k16.f32 [%0], {%1,%2,%3,%4,%5,%6,%7,%8}, %9;"
                     :
                     : "l"(p), "f"(f.x[0]), "f"(f.x[1]), "f"(f.x[2]), "f"(f.x[3]), "f"(f.x[4]), "f"(f.x[5]), "f"(f.x[6]),
                       "f"(f.x[7]), "r"(ldm)
                     : "memory");
    }
}

// d = a * b + c (A row-major, B column-major: the only pairing v3 uses).
__device__ __forceinline__ void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                                         const fragment<matrix_a, 16, 16, 16, gsu_half, row_major>& a,
                                         const fragment<matrix_b, 16, 16, 16, gsu_half, col_major>& b,
                                         const fragment<accumulator, 16, 16, 16, float>& c) {
    asm volatile(
        "wmma.mma.sync.aligned.row.col.m16n16k16.f32.f32 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11,%12,%13,%14,%15}, "
        "{%16,%17,%18,%19,%20,%21,%22,%23}, {%24,%25,%26,%27,%28,%29,%30,%31};"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3]), "=f"(d.x[4]), "=f"(d.x[5]), "=f"(d.x[6]), "=f"(d.x[7])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(a.x[4]), "r"(a.x[5]), "r"(a.x[6]), "r"(a.x[7]), "r"(b.x[0]),
          "r"(b.x[1]), "r"(b.x[2]), "r"(b.x[3]), "r"(b.x[4]), "r"(b.x[5]), "r"(b.x[6]), "r"(b.x[7]), "f"(c.x[0]), "f"(c.x[1]),
          "f"(c.x[2]), "f"(c.x[3]), "f"(c.x[4]), "f"(c.x[5]), "f"(c.x[6]), "f"(c.x[7]));
}
}  // namespace twin_wmma
namespace wm = twin_wmma;
#endif

#endif  // TWIN_KERNELS_WMMA_CUH
