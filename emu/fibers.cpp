// fibers.cpp — the scheduler under emu/runtime.cpp's hooks: each block's threads are fibers on the
// calling OS thread (64 KiB stacks with a guard page; a minimal register switch on x86-64,
// ucontext elsewhere). Fibers switch only at synchronisation points and at exit; between two such
// points the runnable fibers run in an order drawn from the block's seed (run_block). Also here:
// barrier release, thread exit checks, deadlock messages. Misuse fails the block; it never hangs.
#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

// After the standard headers: the CUDA keyword macros must not reach them.
#include "emu_sched.h"

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
namespace detail {
namespace {

constexpr size_t kStack = 64u * 1024u;
constexpr size_t kPage = 4096u;

}  // namespace

thread_local std::unique_ptr<Sched> t_sched;

Sched::~Sched() {
    for (auto& f : fibers) munmap(f->stack - kPage, kStack + kPage);
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

[[noreturn]] void fail_in_fiber(Sched& s, std::string msg) {
    s.failed = true;
    s.error = std::move(msg);
    for (;;) switch_to_main(s);
}

void make_ready(Sched& s, Fiber& f) {
    f.st = St::Ready;
    s.ready.push_back(f.lin);
}

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

namespace {

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

}  // namespace

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

}  // namespace detail
}  // namespace emu
