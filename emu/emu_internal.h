// emu_internal.h — what the generated per-file wrappers (build.rs) and the runtime (emu/runtime.cpp,
// emu/fibers.cpp) share: the kernel registry entry and the launcher that unpacks
// cuLaunchKernel-style argument arrays.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace emu {

struct KernelEntry {
    const char* name;
    // Calls the kernel once, for the current fiber, with args[i] -> the i-th parameter's value.
    void (*invoke)(void** args);
    // This file's dynamic shared memory (the thread's copy), or nullptr if the file has none.
    unsigned char* (*dyn_smem)();
    unsigned arity;
};

struct KernelTable {
    const KernelEntry* entries;
    size_t count;
};

// The generated registry (OUT_DIR/emu_registry.cpp) lists every wrapper's table.
const KernelTable* kernel_tables(size_t* n);

// Capacity of each file's dynamic shared array: sm_90's opt-in maximum per block, plus a guard
// tail the runtime fills and checks after every block (writes past the requested size).
constexpr size_t kMaxDynSmem = 227u * 1024u;
constexpr size_t kDynSmemGuard = 256u;

template <typename... A, size_t... I>
inline void invoke_unpacked(void (*f)(A...), void** args, std::index_sequence<I...>) {
    // Each parameter's value is read from where args[i] points, exactly like cuLaunchKernel:
    // pointers are pointer-sized values (here host addresses), structs are copied by value.
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A>
inline void invoke(void (*f)(A...), void** args) {
    invoke_unpacked(f, args, std::index_sequence_for<A...>{});
}

template <typename... A>
constexpr unsigned arity_of(void (*)(A...)) {
    return (unsigned)sizeof...(A);
}

}  // namespace emu

// One registry row; used by the generated wrappers as EMU_KERNEL(namespace, kernel, smem_fn).
#define EMU_KERNEL(NS, K, SMEM) \
    ::emu::KernelEntry { #K, [](void** a) { ::emu::invoke(&NS::K, a); }, SMEM, ::emu::arity_of(&NS::K) }
