// runtime.cpp — runs emulated kernels: the launch entry points (C ABI: a grid's blocks one after
// another, in a seed-drawn order, on the calling OS thread), the hooks kernels call through
// cuda_emu.h (__syncthreads, warp shuffles, ballots, __syncwarp, wmma collectives, __trap, shared
// memory's first touch) and the warp rendezvous behind them. The fibers that run a block's threads,
// and the seed-drawn order between synchronisation points, are emu/fibers.cpp's. Misuse (warp mask
// naming an exited lane, mismatched collectives, ...) fails the launch with a message.
#include <cstdio>
#include <string>
#include <vector>

// After the standard headers: the CUDA keyword macros must not reach them.
#include "emu_sched.h"

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

namespace emu {
std::string check_owned_allocations();  // memory.cpp

using namespace detail;

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr uint64_t kShflPoison = 0x7ff8dead7fc0deadull;  // NaN as f32 (low word) and as f64

// ---------------------------------------------------------------- warp operations
// Source lane of a shuffle, as PTX shfl.sync defines it (c = ((32 - width) << 8) | 0x1f, or
// without the 0x1f for .up): out-of-segment sources fall back to the lane's own value.
unsigned shfl_source(const Fiber& f, unsigned lane) {
    const unsigned segmask = (32u - (unsigned)f.width) & 31u;
    const unsigned cval = f.mode == 1 ? 0u : 31u;
    const unsigned b = (unsigned)f.arg & 31u;
    const int max_lane = (int)((lane & segmask) | (cval & ~segmask));
    const int min_lane = (int)(lane & segmask);
    int j = 0;
    bool ok = false;
    switch (f.mode) {
        case 0:
            j = min_lane | (int)(b & ~segmask);
            ok = j <= max_lane;
            break;
        case 1:
            j = (int)lane - (int)b;
            ok = j >= max_lane;
            break;
        case 2:
            j = (int)lane + (int)b;
            ok = j <= max_lane;
            break;
        default:
            j = (int)(lane ^ b);
            ok = j <= max_lane;
            break;
    }
    return ok ? (unsigned)j : lane;
}

// If every lane named by `mask` waits in the same warp operation with the same mask, give each
// its result and make them runnable.
void try_complete(Sched& s, unsigned base, const Fiber& me) {
    for (unsigned l = 0; l < 32u; ++l) {
        if (!(me.mask >> l & 1u)) continue;
        const Fiber& g = *s.fibers[base + l];
        if (g.st == St::Exited)
            fail_in_fiber(s, fmt("%s %s, whose mask names %s, which has exited", who(me).c_str(), what(me).c_str(),
                                 who(g).c_str()));
        if (g.st != St::Warp || g.op != me.op || g.mask != me.mask || (g.op == Op::Shfl && g.mode != me.mode) ||
            (g.op == Op::Coll && std::strcmp(g.coll, me.coll) != 0))
            return;
    }
    if (me.op == Op::Coll) {
        // A warp-collective (wmma) op: every lane must pass the same arguments (their digest).
        for (unsigned l = 0; l < 32u; ++l) {
            if (!(me.mask >> l & 1u)) continue;
            const Fiber& g = *s.fibers[base + l];
            if (g.val != me.val)
                fail_in_fiber(s, fmt("%s and %s call %s with different arguments (the same call must get the same "
                                     "pointer, stride and layout in every lane)",
                                     who(me).c_str(), who(g).c_str(), me.coll));
        }
    }
    unsigned votes = 0;
    for (unsigned l = 0; l < 32u; ++l)
        if ((me.mask >> l & 1u) && s.fibers[base + l]->val != 0u) votes |= 1u << l;
    for (unsigned l = 0; l < 32u; ++l) {
        if (!(me.mask >> l & 1u)) continue;
        Fiber& g = *s.fibers[base + l];
        if (g.op == Op::Ballot) {
            g.res = votes;
        } else if (g.op == Op::Shfl) {
            // A source lane outside the mask gives an undefined value (PTX), not an error: code
            // like `if (lane + o < n) v += other` discards it. Make it a NaN-looking poison.
            const unsigned j = shfl_source(g, l);
            g.res = (me.mask >> j & 1u) ? s.fibers[base + j]->val : kShflPoison;
        }
        make_ready(s, g);
    }
}

uint64_t warp_op(Op op, unsigned mask, uint64_t val, int mode, int arg, int width, const char* coll = "") {
    Sched& s = *t_sched;
    Fiber& f = *s.cur;
    const unsigned base = f.lin & ~31u, lane = f.lin & 31u;
    f.st = St::Warp;
    f.op = op;
    f.coll = coll;
    f.mask = mask;
    f.val = val;
    f.mode = mode;
    f.arg = arg;
    f.width = width;
    if (!(mask >> lane & 1u)) fail_in_fiber(s, fmt("%s %s, a mask without its own lane", who(f).c_str(), what(f).c_str()));
    if (op == Op::Shfl && (width < 1 || width > 32 || (width & (width - 1)) != 0))
        fail_in_fiber(s, fmt("%s calls %s with width %d (not a power of two in 1..32)", who(f).c_str(), kShflName[mode], width));
    const unsigned have = s.n - base >= 32u ? kFullMask : (1u << (s.n - base)) - 1u;
    if (mask & ~have)
        fail_in_fiber(s, fmt("%s %s, naming lanes past the end of the block (%u threads)", who(f).c_str(), what(f).c_str(), s.n));
    try_complete(s, base, f);
    switch_to_main(s);
    return f.res;
}

const KernelEntry* find_kernel(const char* name) {
    size_t nt = 0;
    const KernelTable* t = kernel_tables(&nt);
    for (size_t i = 0; i < nt; ++i)
        for (size_t k = 0; k < t[i].count; ++k)
            if (std::strcmp(t[i].entries[k].name, name) == 0) return &t[i].entries[k];
    return nullptr;
}

int set_err(char* err, size_t len, const std::string& msg) {
    if (err && len > 0) {
        std::strncpy(err, msg.c_str(), len - 1);
        err[len - 1] = '\0';
    }
    return 1;
}

}  // namespace

// ---------------------------------------------------------------- hooks called by kernels
void syncthreads(const char* file, int line) {
    Sched& s = *t_sched;
    Fiber& f = *s.cur;
    f.st = St::Barrier;
    f.file = file;
    f.line = line;
    if (++s.at_barrier == s.live) release_barrier(s);
    switch_to_main(s);
}

void syncwarp(unsigned mask) { warp_op(Op::Syncwarp, mask, 0, 0, 0, 32); }

uint64_t shfl(unsigned mask, uint64_t v, int mode, int arg, int width) { return warp_op(Op::Shfl, mask, v, mode, arg, width); }

unsigned ballot(unsigned mask, int pred) { return (unsigned)warp_op(Op::Ballot, mask, pred != 0, 0, 0, 32); }

void collective(unsigned mask, uint64_t digest, const char* name) { warp_op(Op::Coll, mask, digest, 0, 0, 32, name); }

void collective_seq(uint64_t digest, const char* name) {
    Sched& s = *t_sched;
    Fiber& f = *s.cur;
    const unsigned base = f.lin & ~31u;
    if (s.n - base < 32u)
        fail_in_fiber(s, fmt("%s calls %s, a whole-warp collective, in a warp of %u threads (the block has %u)", who(f).c_str(), name,
                             s.n - base, s.n));
    WarpLog& w = s.wlog[f.lin / 32u];
    const uint64_t idx = f.ncoll++;
    for (unsigned l = 0; l < 32u; ++l) {
        const Fiber& g = *s.fibers[base + l];
        if (g.st == St::Exited && g.ncoll <= idx)
            fail_in_fiber(s, fmt("%s calls %s, but %s has exited without it (a warp collective needs every lane)", who(f).c_str(),
                                 name, who(g).c_str()));
    }
    if (idx < w.base + w.calls.size()) {
        const CollCall& c = w.calls[idx - w.base];
        if (std::strcmp(c.name, name) != 0)
            fail_in_fiber(s, fmt("%s calls %s where %s called %s (every lane must make the same warp-collective calls in the "
                                 "same order; call number %llu)",
                                 who(f).c_str(), name, who(*s.fibers[c.lin]).c_str(), c.name, (unsigned long long)idx));
        if (c.digest != digest)
            fail_in_fiber(s, fmt("%s and %s call %s with different arguments (the same call must get the same pointer, stride "
                                 "and layout in every lane)",
                                 who(f).c_str(), who(*s.fibers[c.lin]).c_str(), name));
    } else {
        w.calls.push_back(CollCall{name, digest, f.lin});
    }
    // Forget the calls every live lane of the warp has made (exited lanes made all of them).
    if (w.calls.size() >= 1024u) {
        uint64_t lo = w.base + w.calls.size();
        for (unsigned l = 0; l < 32u; ++l) {
            const Fiber& g = *s.fibers[base + l];
            if (g.st != St::Exited && g.ncoll < lo) lo = g.ncoll;
        }
        w.calls.erase(w.calls.begin(), w.calls.begin() + (std::ptrdiff_t)(lo - w.base));
        w.base = lo;
    }
}

void trap(const char* what_) {
    Sched& s = *t_sched;
    fail_in_fiber(s, fmt("%s: %s", who(*s.cur).c_str(), what_));
}

void shared_touch(void* p, size_t bytes) {
    Sched* s = t_sched.get();
    if (!s || !s->in_block) return;
    for (void* q : s->touched)
        if (q == p) return;
    std::memset(p, kGarbage, bytes);
    s->touched.push_back(p);
}

}  // namespace emu

// ---------------------------------------------------------------- C ABI
extern "C" int emu_launch(const char* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, size_t dyn_smem, void** args, uint64_t seed, char* err, size_t err_len) {
    using namespace emu;
    const KernelEntry* e = find_kernel(kernel);
    if (!e) return set_err(err, err_len, fmt("unknown kernel '%s' (not in the emulator's registry)", kernel));
    const uint64_t threads = (uint64_t)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || gx > 0x7fffffffu || gy > 65535u || gz > 65535u)
        return set_err(err, err_len, fmt("kernel %s: invalid grid (%u,%u,%u)", kernel, gx, gy, gz));
    if (threads == 0 || threads > 1024u || bx > 1024u || by > 1024u || bz > 64u)
        return set_err(err, err_len, fmt("kernel %s: invalid block (%u,%u,%u)", kernel, bx, by, bz));
    if (dyn_smem > kMaxDynSmem)
        return set_err(err, err_len, fmt("kernel %s: %zu bytes of dynamic shared memory exceed %zu", kernel, dyn_smem, kMaxDynSmem));
    if (e->arity > 0 && !args) return set_err(err, err_len, fmt("kernel %s: null argument array", kernel));

    Sched& s = sched();
    if (s.in_block) return set_err(err, err_len, fmt("kernel %s: launched from inside a kernel", kernel));
    ensure_fibers(s, (unsigned)threads);
    s.n = (unsigned)threads;
    s.entry = e;
    s.args = args;
    gridDim = dim3(gx, gy, gz);
    blockDim = dim3(bx, by, bz);
    unsigned char* dyn = (e->dyn_smem && dyn_smem > 0) ? e->dyn_smem() : nullptr;

    // Blocks run one after another, in a seed-drawn order (inter-block order is not guaranteed).
    const uint64_t nblocks = (uint64_t)gx * gy * gz;
    std::vector<uint64_t> order;
    if (nblocks <= (1u << 22)) {
        order.resize(nblocks);
        for (uint64_t i = 0; i < nblocks; ++i) order[i] = i;
        uint64_t r = seed ^ 0x5eedb10c5eedb10cull;
        shuffle(order, r);
    }
    for (uint64_t k = 0; k < nblocks; ++k) {
        const uint64_t b = order.empty() ? k : order[k];
        blockIdx = uint3{(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / ((uint64_t)gx * gy))};
        uint64_t bs = seed + 0x9e3779b97f4a7c15ull * (b + 1);
        if (!run_block(s, dyn, dyn_smem, splitmix(bs)))
            return set_err(err, err_len, fmt("kernel %s, block (%u,%u,%u): ", kernel, blockIdx.x, blockIdx.y, blockIdx.z) + s.error);
    }
    const std::string oob = check_owned_allocations();
    if (!oob.empty()) return set_err(err, err_len, fmt("kernel %s: ", kernel) + oob);
    return 0;
}

extern "C" size_t emu_kernel_count() {
    size_t nt = 0, n = 0;
    const emu::KernelTable* t = emu::kernel_tables(&nt);
    for (size_t i = 0; i < nt; ++i) n += t[i].count;
    return n;
}

extern "C" const char* emu_kernel_name(size_t i) {
    size_t nt = 0;
    const emu::KernelTable* t = emu::kernel_tables(&nt);
    for (size_t k = 0; k < nt; ++k) {
        if (i < t[k].count) return t[k].entries[i].name;
        i -= t[k].count;
    }
    return nullptr;
}

// Number of parameters of `kernel`, or -1 when it is not registered.
extern "C" int emu_kernel_arity(const char* kernel) {
    const emu::KernelEntry* e = emu::find_kernel(kernel);
    return e ? (int)e->arity : -1;
}
