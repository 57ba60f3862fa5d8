// cuda_emu.h — the subset of CUDA C++ that kernels/*.cu use, for compiling them as host C++17
// (g++ -x c++ -include emu/cuda_emu.h -DTWIN_CUDA_EMU -ffp-contract=off). The kernels then run
// on the CPU under emu/runtime.cpp: each block's threads are fibers on one OS thread, switched
// only at synchronisation points, in an order drawn from the launch seed. See emu/README.md for
// what this can and cannot tell about the hardware.
#pragma once

#ifndef TWIN_CUDA_EMU
#define TWIN_CUDA_EMU 1
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>
#include <type_traits>

// ---------------------------------------------------------------- qualifiers
// Kernels are compiled one file per translation unit, each wrapped in its own namespace by the
// generated wrapper (build.rs), so same-named helpers in several files never collide; a plain
// `inline` is therefore enough (a `static` here would break `__device__` member functions).
#define __host__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
// Entry points keep the C name the registry looks up, but stay out of any exported symbol set.
#define __global__ __attribute__((visibility("hidden")))
#define __launch_bounds__(...)
// __restrict__ is a GNU C++ keyword already.
#define __align__(n) __attribute__((aligned(n)))
// Shared memory: one block runs at a time on one OS thread, so storage that is static per OS
// thread is exactly "one copy per block, seen by all its threads". `thread_local` is the one
// storage class that is implicitly static at block scope and also combines with `extern` (the
// dynamic `extern __shared__ T name[]`, defined per file by the generated wrapper).
#define __shared__ thread_local
#define __constant__ const

// ---------------------------------------------------------------- built-in types
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) uint2 {
    unsigned int x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned int x, y, z, w;
};
struct __attribute__((aligned(8))) int2 {
    int x, y;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return uint4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// Per-fiber built-in variables: the scheduler rewrites them before it resumes a fiber. Every
// read in a kernel follows an opaque call into the runtime at each switch point, so the compiler
// cannot keep a stale copy across one. `__thread` (not thread_local): no TLS init wrappers.
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;
static constexpr int warpSize = 32;

// ---------------------------------------------------------------- runtime hooks (emu/runtime.cpp)
namespace emu {
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask);
// mode: 0 idx, 1 up, 2 down, 3 xor (bfly); returns the source lane's 8-byte slot.
uint64_t shfl(unsigned mask, uint64_t v, int mode, int arg, int width);
unsigned ballot(unsigned mask, int pred);
[[noreturn]] void trap(const char* what);
// A warp-collective operation (the wmma functions below): the lanes of `mask` rendezvous like a
// __syncwarp, and all must be in the same collective (`name`) with the same argument digest.
void collective(unsigned mask, uint64_t digest, const char* name);
// A whole-warp collective that does not wait for the other lanes (wmma loads and stores): the
// lane's n-th such call must match the warp's n-th call (name, argument digest); a lane that exits
// before making a call other lanes made, or calls one after a lane exited without it, is an error.
void collective_seq(uint64_t digest, const char* name);
// First touch in a block of a static __shared__ variable: fills it with the garbage pattern.
void shared_touch(void* p, size_t bytes);

template <typename T>
inline uint64_t to_slot(T v) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "warp shuffles move 4- or 8-byte values");
    uint64_t s = 0;
    std::memcpy(&s, &v, sizeof(T));
    return s;
}
template <typename T>
inline T from_slot(uint64_t s) {
    T v;
    std::memcpy(&v, &s, sizeof(T));
    return v;
}

// Exact IEEE binary16 -> binary32 (every f16 is representable in f32): subnormals normalised,
// inf kept, NaN payload kept with the quiet bit set (as x86 F16C and the `half` crate do).
inline float half_bits_to_float(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0u);
    } else if (exp != 0u) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0u) {
        bits = sign;
    } else {  // subnormal: value man * 2^-24; normalise the mantissa
        int e = 113;  // biased f32 exponent of 2^-14, the subnormal scale
        while ((man & 0x400u) == 0u) {
            man <<= 1;
            --e;
        }
        bits = sign | ((uint32_t)e << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// IEEE binary32 -> binary16, round to nearest even (as PTX cvt.rn.f16.f32): overflow (|x| >= 65520)
// gives inf, subnormal halves are rounded exactly, NaN keeps its top payload bits with the quiet
// bit set (as F16C and the `half` crate do). Checked against the `half` crate (tests/emu.rs).
inline unsigned short float_to_half_bits(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 (and inf): inf
    if (ax >= 0x38800000u) {  // >= 2^-14: a normal half; round the 13 dropped bits to nearest even
        const uint32_t r = ax + 0x0fffu + ((ax >> 13) & 1u);
        return (unsigned short)(sign | ((r - 0x38000000u) >> 13));
    }
    // Subnormal (or zero) half: the value in units of 2^-24, rounded to nearest even (exact: the
    // scaling is by a power of two and the fibers run in the default rounding mode).
    float a;
    std::memcpy(&a, &ax, 4);
    return (unsigned short)(sign | (uint32_t)std::nearbyint(a * 16777216.0f));
}
}  // namespace emu

// Static shared declarations, as rewritten by build.rs, register themselves through this.
#define EMU_SHARED_TOUCH(x) ::emu::shared_touch((void*)&(x), sizeof(x))

// ---------------------------------------------------------------- synchronisation and warps
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::syncwarp(mask); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {
    return emu::from_slot<T>(emu::shfl(mask, emu::to_slot(v), 0, src, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    return emu::from_slot<T>(emu::shfl(mask, emu::to_slot(v), 1, (int)delta, width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    return emu::from_slot<T>(emu::shfl(mask, emu::to_slot(v), 2, (int)delta, width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    return emu::from_slot<T>(emu::shfl(mask, emu::to_slot(v), 3, lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return emu::ballot(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return emu::ballot(mask, pred) != 0u; }
inline int __all_sync(unsigned mask, int pred) { return emu::ballot(mask, pred) == mask; }
inline void __trap() { emu::trap("__trap() called"); }

// ---------------------------------------------------------------- integer intrinsics
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}

// ---------------------------------------------------------------- atomics
// Fibers of a block never run at the same time and blocks run one after another, so a plain
// read-modify-write is atomic here; the order of atomics between two barriers still varies with
// the seed (it is the fibers' order).
namespace emu {
template <typename T>
struct same_type {
    using type = T;
};
}  // namespace emu
// The value parameter does not take part in deduction: atomicAdd(&u32_var, 1) picks T = u32.
#define EMU_ARG(T) typename ::emu::same_type<T>::type
template <typename T>
inline T atomicAdd(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline T atomicSub(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = old - v;
    return old;
}
template <typename T>
inline T atomicExch(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = v;
    return old;
}
template <typename T>
inline T atomicMax(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = old < v ? v : old;
    return old;
}
template <typename T>
inline T atomicMin(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = v < old ? v : old;
    return old;
}
template <typename T>
inline T atomicCAS(T* p, EMU_ARG(T) cmp, EMU_ARG(T) v) {
    const T old = *p;
    if (old == cmp) *p = v;
    return old;
}
template <typename T>
inline T atomicOr(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = old | v;
    return old;
}
template <typename T>
inline T atomicAnd(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = old & v;
    return old;
}
template <typename T>
inline T atomicXor(T* p, EMU_ARG(T) v) {
    const T old = *p;
    *p = old ^ v;
    return old;
}
inline unsigned atomicInc(unsigned* p, unsigned lim) {
    const unsigned old = *p;
    *p = (old >= lim) ? 0u : old + 1u;
    return old;
}

// ---------------------------------------------------------------- float intrinsics
// The _rn forms are single IEEE operations; the build uses -ffp-contract=off so nothing fuses.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
// Fast-math intrinsics: the host's accurate functions (the GPU's approximations differ).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long i;
    std::memcpy(&i, &d, 8);
    return i;
}

// ---------------------------------------------------------------- half storage
// Kernels keep f16 values as their 16-bit patterns (converted with emu::half_bits_to_float and
// emu::float_to_half_bits); `__half` is only the storage type the wmma loads take. No arithmetic.
struct __half {
    unsigned short x;
};

// ---------------------------------------------------------------- tensor-core fragments (WMMA)
// The subset of nvcuda::wmma the kernels use: m16n16k16, matrix_a / matrix_b of __half in either
// layout, float accumulators; fill_fragment, load_matrix_sync, store_matrix_sync, mma_sync.
// Warp-collective like the hardware's: every lane of the warp must make the same calls in the same
// order (with the same pointer, stride and layout), or the launch fails ("exited", "different
// arguments", a deadlock in mma_sync).
//
// Storage: each lane holds 8 of the 256 elements of a tile (lane l: elements 8l..8l+7 in row-major
// order of the logical tile). The hardware's per-lane layout is unspecified, so kernels must not
// index fragments; `x[]` and `num_elements` are not provided.
//
// Ordering: a load reads and a store writes the lane's own elements at the lane's own point in the
// schedule, and neither waits for the other lanes (only their call sequence is checked, by
// emu::collective_seq). PTX's `.sync` makes wmma.load/store wait for the warp, but the memory
// model orders shared-memory accesses between lanes only through __syncwarp/__syncthreads (or
// fences), so data other lanes staged must be published with one of those before the load, and
// the emulator shows the race when it is missing: the first lane to run past the staging loads
// elements the others have not written yet. mma_sync does wait for every lane (it needs their
// fragments), twice.
//
// Numbers: half -> float is exact, every product of two halves is exact in f32 (11 x 11 significand
// bits), and mma_sync adds the 16 products of each output element to the accumulator one at a time
// in k order, in f32, round to nearest. Real tensor cores may sum in another order and with other
// intermediate rounding (truncated alignment of the products within one mma), so results can differ
// from the GPU's in the last bits; kernels using them compare with a tolerance.
// Pointers must be 32-byte (256-bit) aligned and strides a multiple of 16 bytes, as CUDA requires.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator provides m16n16k16 fragments only");
    static_assert((std::is_same<Use, accumulator>::value && std::is_same<T, float>::value && std::is_same<Layout, void>::value) ||
                      (!std::is_same<Use, accumulator>::value && std::is_same<T, __half>::value &&
                       (std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value)),
                  "the emulator provides __half matrix_a/matrix_b fragments with a layout and float accumulators");

  public:
    float v_[8];  // this lane's elements (emulator detail: values as f32, exact for halves)
};
}  // namespace wmma
}  // namespace nvcuda

namespace emu {
namespace wmma_detail {
// Fragment addresses each lane publishes for mma_sync (indexed by linear thread id in the block).
inline thread_local const float* a_frag[1024];
inline thread_local const float* b_frag[1024];

inline unsigned lin_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline uint64_t digest(const void* p, unsigned ldm, int layout) {
    uint64_t z = (uint64_t)(uintptr_t)p ^ ((uint64_t)ldm << 48) ^ ((uint64_t)(unsigned)layout << 40);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

inline thread_local char msg[192];

inline void check_ptr(const void* p, unsigned ldm, unsigned elem_bytes, const char* what) {
    if (((uintptr_t)p & 31u) != 0u) {
        std::snprintf(msg, sizeof msg, "%s: pointer %p is not 32-byte (256-bit) aligned", what, p);
        trap(msg);
    }
    if (((uint64_t)ldm * elem_bytes) % 16u != 0u) {
        std::snprintf(msg, sizeof msg, "%s: leading dimension %u is not a multiple of 16 bytes", what, ldm);
        trap(msg);
    }
}

// Offset of logical element (r, c) of a 16x16 tile stored with leading dimension ldm.
inline uint64_t at(unsigned r, unsigned c, unsigned ldm, bool row) { return row ? (uint64_t)r * ldm + c : (uint64_t)c * ldm + r; }
}  // namespace wmma_detail
}  // namespace emu

namespace nvcuda {
namespace wmma {
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
    for (float& e : f.v_) e = v;
}

template <typename Use, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, __half, Layout>& f, const __half* p, unsigned ldm) {
    namespace d = ::emu::wmma_detail;
    constexpr bool row = std::is_same<Layout, row_major>::value;
    d::check_ptr(p, ldm, 2, "wmma::load_matrix_sync");
    const unsigned lane = d::lin_tid() & 31u;
    for (unsigned e = 0; e < 8u; ++e) {
        const unsigned i = 8u * lane + e;
        f.v_[e] = ::emu::half_bits_to_float(p[d::at(i / 16u, i % 16u, ldm, row)].x);
    }
    ::emu::collective_seq(d::digest(p, ldm, row ? 0 : 1), std::is_same<Use, matrix_a>::value ? "wmma::load_matrix_sync(matrix_a)" : "wmma::load_matrix_sync(matrix_b)");
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t layout) {
    namespace d = ::emu::wmma_detail;
    d::check_ptr(p, ldm, 4, "wmma::load_matrix_sync");
    const unsigned lane = d::lin_tid() & 31u;
    for (unsigned e = 0; e < 8u; ++e) {
        const unsigned i = 8u * lane + e;
        f.v_[e] = p[d::at(i / 16u, i % 16u, ldm, layout == mem_row_major)];
    }
    ::emu::collective_seq(d::digest(p, ldm, (int)layout), "wmma::load_matrix_sync(accumulator)");
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t layout) {
    namespace d = ::emu::wmma_detail;
    d::check_ptr(p, ldm, 4, "wmma::store_matrix_sync");
    const unsigned lane = d::lin_tid() & 31u;
    for (unsigned e = 0; e < 8u; ++e) {
        const unsigned i = 8u * lane + e;
        p[d::at(i / 16u, i % 16u, ldm, layout == mem_row_major)] = f.v_[e];
    }
    ::emu::collective_seq(d::digest(p, ldm, (int)layout), "wmma::store_matrix_sync");
}

// d = a * b + c. Lanes publish their a/b fragments, meet, each computes its own 8 elements of d from
// every lane's fragments, and meet again before anyone may change a fragment another lane reads.
template <typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& dst, const fragment<matrix_a, 16, 16, 16, __half, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __half, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
    namespace d = ::emu::wmma_detail;
    const unsigned t = d::lin_tid(), lane = t & 31u, base = t - lane;
    d::a_frag[t] = a.v_;
    d::b_frag[t] = b.v_;
    ::emu::collective_seq(0, "wmma::mma_sync");
    ::emu::collective(0xffffffffu, 0, "wmma::mma_sync");
    float out[8];
    for (unsigned e = 0; e < 8u; ++e) {
        const unsigned idx = 8u * lane + e, i = idx / 16u, j = idx % 16u;
        float acc = c.v_[e];
        for (unsigned k = 0; k < 16u; ++k) {
            const unsigned ia = i * 16u + k, ib = k * 16u + j;  // row-major positions in A (i,k), B (k,j)
            const float x = d::a_frag[base + ia / 8u][ia % 8u];
            const float y = d::b_frag[base + ib / 8u][ib % 8u];
            acc = acc + x * y;  // the product is exact in f32; one f32 rounding per addition
        }
        out[e] = acc;
    }
    ::emu::collective(0xffffffffu, 0, "wmma::mma_sync (end)");
    for (unsigned e = 0; e < 8u; ++e) dst.v_[e] = out[e];
}
}  // namespace wmma
}  // namespace nvcuda
