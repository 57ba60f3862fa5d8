// emu_sched.h — internal to emu/fibers.cpp and emu/runtime.cpp (never included by kernel files):
// the per-OS-thread scheduler state (Sched), a block's threads (Fiber), the warp-collective call
// log, and the scheduler functions the warp operations and hooks in runtime.cpp call. (Not named
// sched.h: build.rs puts emu/ on the include path, where that would shadow the system <sched.h>.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// After the standard headers: the CUDA keyword macros must not reach them.
#include "cuda_emu.h"
#include "emu_internal.h"

namespace emu {
namespace detail {

constexpr unsigned char kGarbage = 0xCD;  // uninitialised shared memory reads as this

enum class St : uint8_t { Ready, Barrier, Warp, Exited };
enum class Op : uint8_t { Syncwarp, Shfl, Ballot, Coll };

inline constexpr const char* kShflName[4] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};

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

    ~Sched();  // fibers.cpp: unmaps the fiber stacks
};

// This OS thread's scheduler, defined in fibers.cpp. build.rs compiles with -fno-extern-tls-init,
// so runtime.cpp reads it without an init wrapper: correct because the pointer is constant-
// initialised and its first use on each OS thread is sched() (fibers.cpp, from emu_launch), which
// registers its destructor; the hooks only run inside a launch.
extern thread_local std::unique_ptr<Sched> t_sched;

inline uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <typename V>
void shuffle(V& v, uint64_t& rng) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix(rng) % i]);
}

// fibers.cpp: messages.
std::string fmt(const char* f, ...);
std::string who(const Fiber& f);
std::string what(const Fiber& f);

// fibers.cpp: scheduling.
Sched& sched();
void switch_to_main(Sched& s);
// Called in fiber context: record the error and never come back (the block is abandoned).
[[noreturn]] void fail_in_fiber(Sched& s, std::string msg);
void make_ready(Sched& s, Fiber& f);
// All live threads are at a barrier: release them if they all reached the same one.
void release_barrier(Sched& s);
void ensure_fibers(Sched& s, unsigned n);
// Runs the current block to completion; returns false with s.error set on failure.
bool run_block(Sched& s, unsigned char* dyn, size_t dyn_bytes, uint64_t block_seed);

}  // namespace detail
}  // namespace emu
