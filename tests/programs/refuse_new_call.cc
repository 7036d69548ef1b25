// Preloaded by test_no_memory_at_the_call_raises_and_loses_nothing: the n-th operator new
// from refuse_new_call(n) on fails. Only the engine's C++ allocates through it; Python and
// the C library do not.
#include <atomic>
#include <cstdlib>
#include <new>

static std::atomic<int> countdown{0};

extern "C" void refuse_new_call(int n) { countdown = n; }
extern "C" int new_calls_to_refusal() { return countdown; }

static void* allocate(std::size_t n) {
    if (countdown > 0 && --countdown == 0) return nullptr;
    return std::malloc(n ? n : 1);
}

void* operator new(std::size_t n) {
    if (void* p = allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
