// memory.cpp — emulated global memory: host allocations with guard zones on both sides, checked
// after every launch (allocations made by the launching OS thread), on free, and on demand.
// Catches out-of-bounds *writes* within 256 bytes of an allocation; reads are not checked.
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace emu {
namespace {

constexpr size_t kGuard = 256;  // bytes each side; also the returned pointer's alignment (as cuMemAlloc)

struct Rec {
    unsigned char* base;  // start of the front guard
    size_t bytes;
    uint64_t id;
    std::thread::id owner;
};

std::mutex g_mu;
std::map<uintptr_t, Rec> g_allocs;  // keyed by the user pointer
uint64_t g_next_id = 1;

unsigned char guard_byte(size_t i) { return (unsigned char)(0x5Au ^ (i * 0x3Bu)); }

std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

// Empty when both guards are intact, else what was overwritten.
std::string check(uintptr_t user, const Rec& r) {
    const unsigned char* front = r.base;
    const unsigned char* back = (const unsigned char*)user + r.bytes;
    long first = -1, last = -1;
    for (size_t i = 0; i < kGuard; ++i)
        if (front[i] != guard_byte(i)) {
            if (first < 0) first = (long)i;
            last = (long)i;
        }
    std::string out;
    if (first >= 0)
        out = fmt("out-of-bounds write before allocation #%llu (%zu bytes at %p): bytes -%ld..-%ld changed",
                  (unsigned long long)r.id, r.bytes, (void*)user, (long)kGuard - first, (long)kGuard - last);
    first = last = -1;
    for (size_t i = 0; i < kGuard; ++i)
        if (back[i] != guard_byte(i + kGuard)) {
            if (first < 0) first = (long)i;
            last = (long)i;
        }
    if (first >= 0) {
        if (!out.empty()) out += "; ";
        out += fmt("out-of-bounds write past the end of allocation #%llu (%zu bytes at %p): bytes +%ld..+%ld after it changed",
                   (unsigned long long)r.id, r.bytes, (void*)user, first, last);
    }
    return out;
}

// The allocation holding address p (an interior pointer is fine), or end().
std::map<uintptr_t, Rec>::iterator find(const void* p) {
    const uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return g_allocs.end();
    --it;
    if (a < it->first + (it->second.bytes ? it->second.bytes : 1)) return it;
    return g_allocs.end();
}

int set_err(char* err, size_t len, const std::string& msg) {
    if (err && len > 0) {
        std::strncpy(err, msg.c_str(), len - 1);
        err[len - 1] = '\0';
    }
    return 1;
}

}  // namespace

std::string check_owned_allocations() {
    std::lock_guard<std::mutex> lock(g_mu);
    const auto me = std::this_thread::get_id();
    std::string out;
    for (const auto& kv : g_allocs) {
        if (kv.second.owner != me) continue;
        const std::string e = check(kv.first, kv.second);
        if (!e.empty()) out += (out.empty() ? "" : "; ") + e;
    }
    return out;
}

}  // namespace emu

using namespace emu;

// `bytes` of emulated device memory, 256-byte aligned, filled with 0xCD (device memory starts
// undefined), between two guard zones. Never null (null only if the host is out of memory).
extern "C" void* emu_alloc(size_t bytes) {
    const size_t total = (2 * kGuard + bytes + kGuard - 1) / kGuard * kGuard;
    unsigned char* base = (unsigned char*)std::aligned_alloc(kGuard, total);
    if (!base) return nullptr;
    unsigned char* user = base + kGuard;
    for (size_t i = 0; i < kGuard; ++i) base[i] = guard_byte(i);
    std::memset(user, 0xCD, bytes);
    for (size_t i = 0; i < kGuard; ++i) user[bytes + i] = guard_byte(i + kGuard);
    std::lock_guard<std::mutex> lock(g_mu);
    g_allocs[(uintptr_t)user] = Rec{base, bytes, g_next_id++, std::this_thread::get_id()};
    return user;
}

// Frees an allocation from emu_alloc; non-zero (memory still freed) when a guard was overwritten.
extern "C" int emu_free(void* p, char* err, size_t err_len) {
    if (!p) return 0;
    std::string msg;
    unsigned char* base = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        auto it = g_allocs.find((uintptr_t)p);
        if (it == g_allocs.end()) return set_err(err, err_len, fmt("emu_free(%p): not an emulator allocation", p));
        msg = check(it->first, it->second);
        base = it->second.base;
        g_allocs.erase(it);
    }
    std::free(base);
    return msg.empty() ? 0 : set_err(err, err_len, msg);
}

// Checks the guards of the allocation holding `p`.
extern "C" int emu_check(const void* p, char* err, size_t err_len) {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = find(p);
    if (it == g_allocs.end()) return set_err(err, err_len, fmt("emu_check(%p): not inside an emulator allocation", p));
    const std::string msg = check(it->first, it->second);
    return msg.empty() ? 0 : set_err(err, err_len, msg);
}

// Checks every live allocation, whichever thread made it.
extern "C" int emu_check_all(char* err, size_t err_len) {
    std::lock_guard<std::mutex> lock(g_mu);
    std::string out;
    for (const auto& kv : g_allocs) {
        const std::string e = check(kv.first, kv.second);
        if (!e.empty()) out += (out.empty() ? "" : "; ") + e;
    }
    return out.empty() ? 0 : set_err(err, err_len, out);
}

// memset inside one allocation; refuses a range that leaves it (that would hit a guard).
extern "C" int emu_memset(void* p, int byte, size_t n, char* err, size_t err_len) {
    if (n == 0) return 0;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        auto it = find(p);
        if (it == g_allocs.end() || (uintptr_t)p + n > it->first + it->second.bytes)
            return set_err(err, err_len, fmt("emu_memset(%p, %zu bytes): outside every emulator allocation", p, n));
    }
    std::memset(p, byte, n);
    return 0;
}
