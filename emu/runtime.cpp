// runtime.cpp — runs emulated kernels: a grid block by block, each block's threads as fibers on
// the calling OS thread. Fibers switch only at synchronisation points (barriers, warp operations)
// and at exit; between two such points the runnable fibers run in an order drawn from the launch
// seed, so a missing barrier or a shared-memory race changes results from one seed to another.
// Blocks also run in a seed-drawn order. Misuse (deadlock, divergent barrier, warp mask naming an
// exited lane, ...) fails the launch with a message; it never hangs.
#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

// After the standard headers: the CUDA keyword macros must not reach them.
#include "cuda_emu.h"
#include "emu_internal.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

namespace emu {
std::string check_owned_allocations();  // memory.cpp
}

// ---------------------------------------------------------------- context switch
#if defined(__x86_64__)
// swapcontext() makes a signal-mask system call on every switch; the kernels switch millions of
// times, so x86-64 uses this minimal switch (callee-saved registers, MXCSR and the x87 control
// word) instead. Other targets fall back to ucontext.
extern "C" void twin_emu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl twin_emu_ctx_switch
    .hidden twin_emu_ctx_switch
    .type twin_emu_ctx_switch,@function
twin_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size twin_emu_ctx_switch, .-twin_emu_ctx_switch
)");
#endif

namespace emu {
namespace {

constexpr size_t kStack = 64u * 1024u;
constexpr size_t kPage = 4096u;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr unsigned char kGarbage = 0xCD;  // uninitialised shared memory reads as this
constexpr uint64_t kShflPoison = 0x7ff8dead7fc0deadull;  // NaN as f32 (low word) and as f64

enum class St : uint8_t { Ready, Barrier, Warp, Exited };
enum class Op : uint8_t { Syncwarp, Shfl, Ballot, Coll };

const char* const kShflName[4] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};

struct Fiber {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
    char* stack = nullptr;  // usable part, kStack bytes above a PROT_NONE guard page
    uint3 tid{};
    unsigned lin = 0;
    St st = St::Ready;
    Op op = Op::Syncwarp;
    int mode = 0, arg = 0, width = 32;
    unsigned mask = 0;
    uint64_t val = 0, res = 0;
    const char* file = "";
    int line = 0;
    const char* coll = "";  // Op::Coll: the collective's name (e.g. "wmma::mma_sync")
    uint64_t ncoll = 0;     // warp-collective (wmma) calls this thread has made (see WarpLog)
};

// The warp-collective (wmma) calls of one warp, in order: the first lane to make its n-th call
// records it, every other lane's n-th call must match it (name and argument digest). Loads and
// stores do not rendezvous (see cuda_emu.h), so this is how their misuse is still caught.
struct CollCall {
    const char* name;
    uint64_t digest;
    unsigned lin;  // the thread that recorded it
};
struct WarpLog {
    std::vector<CollCall> calls;  // calls[i] is call number base + i
    uint64_t base = 0;
};

struct Sched {
    std::vector<std::unique_ptr<Fiber>> fibers;
#if defined(__x86_64__)
    void* main_sp = nullptr;
#else
    ucontext_t main_uc;
#endif
    Fiber* cur = nullptr;
    const KernelEntry* entry = nullptr;
    void** args = nullptr;
    unsigned n = 0, live = 0, at_barrier = 0;
    std::vector<unsigned> ready, phase;
    std::vector<void*> touched;
    std::vector<WarpLog> wlog;  // one per warp of the block
    bool in_block = false, failed = false;
    std::string error;
    uint64_t rng = 0;

    ~Sched() {
        for (auto& f : fibers) munmap(f->stack - kPage, kStack + kPage);
    }
};

thread_local std::unique_ptr<Sched> t_sched;

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <typename V>
void shuffle(V& v, uint64_t& rng) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix(rng) % i]);
}

std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

std::string who(const Fiber& f) { return fmt("thread (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z); }

std::string what(const Fiber& f) {
    switch (f.st) {
        case St::Barrier: return fmt("waits at __syncthreads (%s:%d)", f.file, f.line);
        case St::Exited: return "has exited";
        case St::Ready: return "is runnable";
        case St::Warp: break;
    }
    const char* op = f.op == Op::Syncwarp ? "__syncwarp"
                     : f.op == Op::Ballot ? "__ballot_sync"
                     : f.op == Op::Coll   ? f.coll
                                          : kShflName[f.mode];
    return fmt("waits in %s(mask 0x%08x)", op, f.mask);
}

Sched& sched() {
    if (!t_sched) t_sched.reset(new Sched);
    return *t_sched;
}

void switch_to_main(Sched& s) {
    Fiber* f = s.cur;
#if defined(__x86_64__)
    twin_emu_ctx_switch(&f->sp, s.main_sp);
#else
    swapcontext(&f->uc, &s.main_uc);
#endif
}

// Called in fiber context: record the error and never come back (the block is abandoned).
[[noreturn]] void fail_in_fiber(Sched& s, std::string msg) {
    s.failed = true;
    s.error = std::move(msg);
    for (;;) switch_to_main(s);
}

void fiber_exit(Sched& s);

void fiber_main() {
    Sched& s = *t_sched;
    s.entry->invoke(s.args);
    fiber_exit(s);
}

#if !defined(__x86_64__)
void fiber_main_uc() { fiber_main(); }
#endif

void make_fiber_context(Sched& s, Fiber& f) {
#if defined(__x86_64__)
    (void)s;
    // Initial frame popped by twin_emu_ctx_switch: control words, six callee-saved registers,
    // then `ret` into fiber_main with the stack aligned as after a call.
    uint64_t* sp = (uint64_t*)(f.stack + kStack);
    *--sp = 0;  // fiber_main's return address: it never returns
    *--sp = (uint64_t)(void (*)())fiber_main;
    for (int i = 0; i < 6; ++i) *--sp = 0;
    uint32_t cw[2];
    asm volatile("stmxcsr %0" : "=m"(cw[0]));
    asm volatile("fnstcw %0" : "=m"(cw[1]));
    *--sp = (uint64_t)cw[0] | ((uint64_t)(cw[1] & 0xffffu) << 32);
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = kStack;
    f.uc.uc_link = &s.main_uc;
    makecontext(&f.uc, fiber_main_uc, 0);
#endif
}

void resume(Sched& s, Fiber& f) {
    s.cur = &f;
    threadIdx = f.tid;
#if defined(__x86_64__)
    twin_emu_ctx_switch(&s.main_sp, f.sp);
#else
    swapcontext(&s.main_uc, &f.uc);
#endif
    s.cur = nullptr;
}

void make_ready(Sched& s, Fiber& f) {
    f.st = St::Ready;
    s.ready.push_back(f.lin);
}

// All live threads are at a barrier: release them if they all reached the same one.
void release_barrier(Sched& s) {
    const Fiber* first = nullptr;
    for (unsigned i = 0; i < s.n; ++i) {
        Fiber& f = *s.fibers[i];
        if (f.st != St::Barrier) continue;
        if (!first) {
            first = &f;
        } else if (f.line != first->line || std::strcmp(f.file, first->file) != 0) {
            fail_in_fiber(s, fmt("divergent __syncthreads: %s waits at %s:%d while %s waits at %s:%d",
                                 who(*first).c_str(), first->file, first->line, who(f).c_str(), f.file, f.line));
        }
    }
    for (unsigned i = 0; i < s.n; ++i)
        if (s.fibers[i]->st == St::Barrier) make_ready(s, *s.fibers[i]);
    s.at_barrier = 0;
}

void fiber_exit(Sched& s) {
    Fiber& f = *s.cur;
    f.st = St::Exited;
    --s.live;
    const unsigned base = f.lin & ~31u, lane = f.lin & 31u;
    for (unsigned l = 0; l < 32u && base + l < s.n; ++l) {
        const Fiber& g = *s.fibers[base + l];
        if (g.st == St::Warp && (g.mask >> lane & 1u))
            fail_in_fiber(s, fmt("%s exited while %s %s, whose mask names it", who(f).c_str(), who(g).c_str(),
                                 what(g).c_str()));
    }
    const WarpLog& w = s.wlog[f.lin / 32u];
    if (f.ncoll < w.base + w.calls.size()) {
        const CollCall& c = w.calls[f.ncoll - w.base];
        fail_in_fiber(s, fmt("%s exited while %s called %s (a warp collective of the whole warp, its call number %llu)",
                             who(f).c_str(), who(*s.fibers[c.lin]).c_str(), c.name, (unsigned long long)f.ncoll));
    }
    if (s.at_barrier > 0 && s.at_barrier == s.live) release_barrier(s);
    for (;;) switch_to_main(s);
}

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

std::string deadlock(Sched& s) {
    const Fiber* bar = nullptr;
    for (unsigned i = 0; i < s.n; ++i) {
        const Fiber& f = *s.fibers[i];
        if (f.st == St::Warp) {
            // Name the first lane it waits for that is elsewhere.
            const unsigned base = f.lin & ~31u;
            for (unsigned l = 0; l < 32u; ++l) {
                if (!(f.mask >> l & 1u)) continue;
                const Fiber& g = *s.fibers[base + l];
                if (g.st != St::Warp || g.op != f.op || g.mask != f.mask || g.mode != f.mode ||
                    std::strcmp(g.coll, f.coll) != 0)
                    return fmt("deadlock: %s %s, but %s %s", who(f).c_str(), what(f).c_str(), who(g).c_str(),
                               what(g).c_str());
            }
            return fmt("deadlock: %s %s", who(f).c_str(), what(f).c_str());
        }
        if (f.st == St::Barrier && !bar) bar = &f;
    }
    if (bar) return fmt("deadlock: %s %s, which %u live threads never reach", who(*bar).c_str(), what(*bar).c_str(), s.live);
    return "deadlock: no runnable thread";
}

// Runs the current block to completion; returns false with s.error set on failure.
bool run_block(Sched& s, unsigned char* dyn, size_t dyn_bytes, uint64_t block_seed) {
    const unsigned bx = blockDim.x, by = blockDim.y;
    s.rng = block_seed;
    s.live = s.n;
    s.at_barrier = 0;
    s.failed = false;
    s.touched.clear();
    s.ready.clear();
    s.wlog.assign((s.n + 31u) / 32u, WarpLog{});
    for (unsigned i = 0; i < s.n; ++i) {
        Fiber& f = *s.fibers[i];
        f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
        f.lin = i;
        f.st = St::Ready;
        f.ncoll = 0;
        make_fiber_context(s, f);
        s.ready.push_back(i);
    }
    if (dyn) {
        std::memset(dyn, kGarbage, dyn_bytes);
        for (size_t i = 0; i < kDynSmemGuard; ++i) dyn[dyn_bytes + i] = (unsigned char)(0xA5u ^ i);
    }
    s.in_block = true;
    while (s.live > 0) {
        if (s.ready.empty()) {
            s.error = deadlock(s);
            s.in_block = false;
            return false;
        }
        s.phase.swap(s.ready);
        s.ready.clear();
        shuffle(s.phase, s.rng);
        for (unsigned i : s.phase) {
            resume(s, *s.fibers[i]);
            if (s.failed) {
                s.in_block = false;
                return false;
            }
        }
    }
    s.in_block = false;
    if (dyn) {
        for (size_t i = 0; i < kDynSmemGuard; ++i) {
            if (dyn[dyn_bytes + i] != (unsigned char)(0xA5u ^ i)) {
                s.error = fmt("write past the end of dynamic shared memory (%zu bytes requested): byte +%zu after it changed",
                              dyn_bytes, i);
                return false;
            }
        }
    }
    return true;
}

void ensure_fibers(Sched& s, unsigned n) {
    while (s.fibers.size() < n) {
        void* m = mmap(nullptr, kStack + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            std::fprintf(stderr, "twin cuda emulator: cannot map a fiber stack\n");
            std::abort();
        }
        mprotect(m, kPage, PROT_NONE);  // overflow faults instead of corrupting the next stack
        std::unique_ptr<Fiber> f(new Fiber);
        f->stack = (char*)m + kPage;
        s.fibers.push_back(std::move(f));
    }
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
