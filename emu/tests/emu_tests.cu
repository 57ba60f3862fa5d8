// emu_tests.cu — kernels that test the CPU emulator itself (tests/emu.rs). Written as ordinary
// CUDA; build.rs compiles them into the emulator library next to kernels/*.cu. Not a production
// kernel file: never loaded by the CUDA backend.

typedef unsigned int u32;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ u32 linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

// Lanes named by `mask` run one shuffle of `mode` (0 idx, 1 up, 2 down, 3 xor) with their own
// lane_arg; the value moves as u64, u32 and float in three separate shuffles.
extern "C" __global__ void emu_t_shfl(const u64* in, const int* lane_arg, u32 mode, u32 mask, int width, u64* out64,
                                      u32* out32, float* outf) {
    const u32 t = threadIdx.x, lane = t & 31u;
    if (!((mask >> lane) & 1u)) return;
    const u64 v = in[t];
    const u32 v32 = (u32)v;
    const float vf = (float)v32;
    const int a = lane_arg[t];
    if (mode == 0u) {
        out64[t] = __shfl_sync(mask, v, a, width);
        out32[t] = __shfl_sync(mask, v32, a, width);
        outf[t] = __shfl_sync(mask, vf, a, width);
    } else if (mode == 1u) {
        out64[t] = __shfl_up_sync(mask, v, (u32)a, width);
        out32[t] = __shfl_up_sync(mask, v32, (u32)a, width);
        outf[t] = __shfl_up_sync(mask, vf, (u32)a, width);
    } else if (mode == 2u) {
        out64[t] = __shfl_down_sync(mask, v, (u32)a, width);
        out32[t] = __shfl_down_sync(mask, v32, (u32)a, width);
        outf[t] = __shfl_down_sync(mask, vf, (u32)a, width);
    } else {
        out64[t] = __shfl_xor_sync(mask, v, a, width);
        out32[t] = __shfl_xor_sync(mask, v32, a, width);
        outf[t] = __shfl_xor_sync(mask, vf, a, width);
    }
}

// out[block] = Σ in[block * n + i], i < n: per-thread strided sums, a shuffle-down tree per warp
// (partial last warp: its own mask), warp partials through shared memory, thread 0 adds them.
// Any 3-D block of 1..1024 threads.
extern "C" __global__ void emu_t_block_sum(const u32* in, u32 n, u64* out) {
    __shared__ u64 part[32];
    const u32 nthr = blockDim.x * blockDim.y * blockDim.z;
    const u32 t = linear_tid(), lane = t & 31u, warp = t >> 5;
    const u32 b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    u64 v = 0;
    for (u32 i = t; i < n; i += nthr) v += in[(u64)b * n + i];
    const u32 present = (nthr - warp * 32u) < 32u ? (nthr - warp * 32u) : 32u;
    const u32 mask = present == 32u ? FULL_MASK : ((1u << present) - 1u);
    for (u32 o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_down_sync(mask, v, o);
        if (lane + o < present) v += other;
    }
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (t == 0) {
        u64 s = 0;
        for (u32 w = 0; w < (nthr + 31u) / 32u; ++w) s += part[w];
        out[b] = s;
    }
}

// Each round every thread adds 1 to a shared counter, then checks after the barrier that all
// nthr increments of the round are there; with `second_sync` off a fast thread's next increment
// can land before a slow thread's check (a race). bad[t] = rounds that saw a wrong count.
extern "C" __global__ void emu_t_barrier_count(u32 rounds, u32 second_sync, u32* bad) {
    __shared__ u32 cnt;
    const u32 nthr = blockDim.x * blockDim.y * blockDim.z;
    const u32 t = linear_tid();
    if (t == 0) cnt = 0;
    __syncthreads();
    u32 wrong = 0;
    for (u32 r = 0; r < rounds; ++r) {
        atomicAdd(&cnt, 1u);
        __syncthreads();
        if (cnt != (r + 1u) * nthr) ++wrong;
        if (second_sync) __syncthreads();
    }
    bad[blockIdx.x * nthr + t] = wrong;
}

extern "C" __global__ void emu_t_ballot(const u32* pred, u32 mask, u32* out_ballot, u32* out_popc, u32* out_ffs) {
    const u32 t = threadIdx.x;
    if (!((mask >> (t & 31u)) & 1u)) return;
    const u32 b = __ballot_sync(mask, pred[t] != 0u);
    out_ballot[t] = b;
    out_popc[t] = (u32)__popc(b);
    out_ffs[t] = (u32)__ffs(b);
}

// Block sum: warp butterflies, lane 0 of each warp stores its warp's sum, then lane 0 of the
// LAST warp adds the partials. With `sync` = 0 the barrier between the stores and the reads is
// missing: the result then depends on which threads ran first (blockDim a multiple of 32).
extern "C" __global__ void emu_t_racy_sum(const u32* in, u32 sync, u32* out) {
    __shared__ u32 part[32];
    const u32 t = threadIdx.x, lane = t & 31u, warp = t >> 5;
    u32 v = in[blockIdx.x * blockDim.x + t];
    for (u32 o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    if (lane == 0) part[warp] = v;
    if (sync) __syncthreads();
    if (t == blockDim.x - 32u) {
        u32 s = 0;
        for (u32 w = 0; w < blockDim.x / 32u; ++w) s += part[w];
        out[blockIdx.x] = s;
    }
}

// Off by one: thread i < n + 1 writes out[i], one element past an n-element buffer.
extern "C" __global__ void emu_t_write_past(u32* out, u32 n) {
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 0xdeadbeefu;
}

// Writes byte `at` of the dynamic shared memory (past its end when at >= the launch's size).
extern "C" __global__ void emu_t_smem_write(u32 at, u32* out) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    if (threadIdx.x == 0) smem_raw[at] = 1;
    __syncthreads();
    out[threadIdx.x] = smem_raw[0];
}

// Reads uninitialised shared memory: the emulator fills it with 0xCD at each block's first use.
extern "C" __global__ void emu_t_uninit_shared(u32* out) {
    __shared__ u32 s[64];
    extern __shared__ __align__(16) unsigned char smem_raw[];
    if (blockIdx.x == 0 && threadIdx.x < 64) s[threadIdx.x] = threadIdx.x;  // only block 0 writes
    __syncthreads();
    if (threadIdx.x < 64) out[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
    if (threadIdx.x == 0) out[gridDim.x * 64 + blockIdx.x] = ((const u32*)smem_raw)[0];
}

// mode 0: a barrier only threads < 16 take, then one all take (divergent barriers).
// mode 1: lanes 0..15 wait at a barrier, lanes 16..31 in a full-warp __syncwarp (deadlock).
// mode 2: lanes 0..15 exit, lanes 16..31 shuffle with a full mask (names exited lanes).
// mode 3: threads >= 16 exit, the rest meet at a barrier (allowed: live threads all arrive).
extern "C" __global__ void emu_t_bad_sync(u32 mode, u32* out) {
    const u32 t = threadIdx.x;
    u32 v = t;
    if (mode == 0u) {
        if (t < 16u) __syncthreads();
        __syncthreads();
    } else if (mode == 1u) {
        if (t < 16u) {
            __syncthreads();
        } else {
            __syncwarp();
        }
    } else if (mode == 2u) {
        if (t < 16u) return;
        v = __shfl_xor_sync(FULL_MASK, v, 1);
    } else {
        if (t >= 16u) return;
        __syncthreads();
    }
    out[t] = v;
}

// f32 -> f16 bits, round to nearest even (emu::float_to_half_bits; PTX cvt.rn.f16.f32 on a GPU).
extern "C" __global__ void emu_t_f2h(const float* in, u32 n, unsigned short* out) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = emu::float_to_half_bits(in[i]);
}

// One warp: D = C + Σ_s A_s B_s over `steps` (1..4) k-steps of 16 with WMMA m16n16k16 fragments,
// A [16 x 16·steps] and B [16·steps x 16] f16 bit patterns staged through shared memory, A
// row-major (column-major when a_col), B row-major (column-major when b_col); C, D row-major f32
// with leading dimension 16 (D: 20). mode 0: as described; 1: A loaded from a pointer 2 bytes off
// (misaligned); 2: only lanes 0..15 load (the rest exit); 3: odd lanes pass another (aligned)
// pointer; 4: no __syncwarp between staging and the loads (a race: the accumulator and A/B loads do
// not wait for the warp, so nothing orders them after the other lanes' staging stores).
namespace nvwmma = nvcuda::wmma;

template <typename LA, typename LB>
__device__ void emu_t_wmma_case(const unsigned short* sa, const unsigned short* sb, const float* c, u32 steps, u32 mode, float* d) {
    const u32 lane = threadIdx.x & 31u;
    constexpr bool acol = std::is_same<LA, nvwmma::col_major>::value, bcol = std::is_same<LB, nvwmma::col_major>::value;
    const u32 lda = acol ? 16u : 16u * steps, ldb = bcol ? 16u * steps : 16u;
    nvwmma::fragment<nvwmma::accumulator, 16, 16, 16, float> acc;
    nvwmma::load_matrix_sync(acc, c, 16, nvwmma::mem_row_major);
    for (u32 s = 0; s < steps; ++s) {
        nvwmma::fragment<nvwmma::matrix_a, 16, 16, 16, __half, LA> fa;
        nvwmma::fragment<nvwmma::matrix_b, 16, 16, 16, __half, LB> fb;
        const unsigned short* pa = sa + (acol ? 256u * s : 16u * s);
        const unsigned short* pb = sb + (bcol ? 16u * s : 256u * s);
        if (mode == 1u) pa += 1;
        if (mode == 2u && lane >= 16u) return;
        if (mode == 3u && (lane & 1u)) pa += 16;
        nvwmma::load_matrix_sync(fa, (const __half*)pa, lda);
        nvwmma::load_matrix_sync(fb, (const __half*)pb, ldb);
        nvwmma::mma_sync(acc, fa, fb, acc);
    }
    nvwmma::store_matrix_sync(d, acc, 20, nvwmma::mem_row_major);
}

extern "C" __global__ void emu_t_wmma(const unsigned short* a, const unsigned short* b, const float* c, u32 steps, u32 a_col,
                                      u32 b_col, u32 mode, float* d) {
    __shared__ __align__(32) unsigned short sa[16 * 64 + 32];
    __shared__ __align__(32) unsigned short sb[16 * 64];
    for (u32 i = threadIdx.x; i < 256u * steps; i += blockDim.x) {
        sa[i] = a[i];
        sb[i] = b[i];
    }
    if (mode != 4u) __syncwarp();
    if (a_col) {
        if (b_col) emu_t_wmma_case<nvwmma::col_major, nvwmma::col_major>(sa, sb, c, steps, mode, d);
        else emu_t_wmma_case<nvwmma::col_major, nvwmma::row_major>(sa, sb, c, steps, mode, d);
    } else {
        if (b_col) emu_t_wmma_case<nvwmma::row_major, nvwmma::col_major>(sa, sb, c, steps, mode, d);
        else emu_t_wmma_case<nvwmma::row_major, nvwmma::row_major>(sa, sb, c, steps, mode, d);
    }
}
