// The CUDA emulator's runtime (see cuda_emu.h): the fiber scheduler that runs a kernel's blocks, and the subset of
// the CUDA runtime API xc2 calls, over host memory.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define XC2EMU_ASAN 1
#else
#define XC2EMU_ASAN 0
#endif

// ---- fibers ---------------------------------------------------------------------------------------------------
// xc2emu_switch(save, load): saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *save and continues on the stack `load` (x86-64 System V).
extern "C" void xc2emu_switch(void** save, void* load);
extern "C" void xc2emu_trampoline();
asm(R"(
    .text
    .globl xc2emu_switch
    .type xc2emu_switch, @function
xc2emu_switch:
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
    .size xc2emu_switch, .-xc2emu_switch

    .globl xc2emu_trampoline
    .type xc2emu_trampoline, @function
xc2emu_trampoline:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size xc2emu_trampoline, .-xc2emu_trampoline
    .section .note.GNU-stack,"",@progbits
    .text
)");

namespace xc2emu {
namespace {

constexpr size_t kStackBytes = 64 << 10;
constexpr int kMaxThreads = 1024;
constexpr size_t kDefaultSmem = 48 << 10, kMaxSmem = 227 << 10;

enum class State : uint8_t { Ready, Running, WaitBlock, WaitWarp, Done };

struct Thread {
  void* sp = nullptr;
  char* stack_lo = nullptr;  // its fiber stack [stack_lo, stack_lo + kStackBytes)
  uint3 idx{};
  int linear = 0;
  State state = State::Ready;
  unsigned mask = 0;
  int parity = 0;
};

// One block's threads. Runnable threads wait in `ready`; a thread that blocks or exits switches straight to the
// next one (back to the scheduler only when none is left: the block is done, or stuck). A barrier completes when
// the last of its live threads arrives (or a thread exits and leaves only waiters), and its threads join `ready` in
// a shuffled order.
struct Block {
  dim3 grid, block;
  uint3 bidx{};
  int n = 0;
  const std::function<void()>* body = nullptr;
  std::vector<Thread> threads;
  std::vector<int> ready;
  size_t ready_head = 0;
  std::vector<int> warp_live, warp_waiting;
  std::vector<uint32_t> warp_alive;  // per warp: the lanes that exist and have not exited
  int live = 0, block_waiting = 0;
  std::string error;
  std::vector<unsigned char> smem;
  uint64_t slots[2][kMaxThreads];
  Thread* cur = nullptr;
  void* sched_sp = nullptr;
  void* sched_lo = nullptr;  // the scheduler's (the calling thread's) stack, for AddressSanitizer
  size_t sched_size = 0;
  uint64_t rng = 0;  // xorshift state for the shuffled orders
  std::vector<int> group;  // scratch: the threads a barrier releases
};

// Fiber stacks, kept for the process (one per thread of the largest block so far).
struct Stacks {
  std::vector<char*> base;
  char* top(int i) {
    while (static_cast<int>(base.size()) <= i) {
      const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        std::fprintf(stderr, "xc2 CUDA emulator: cannot map a fiber stack\n");
        std::abort();
      }
      mprotect(p, page, PROT_NONE);  // guard page: an overflow faults instead of corrupting
      base.push_back(static_cast<char*>(p) + page);
    }
    return base[static_cast<size_t>(i)] + kStackBytes;
  }
};

thread_local Block* g_block = nullptr;
thread_local Stacks g_stacks;

// xc2emu_switch, told to AddressSanitizer where the stack goes (its fiber API) in a sanitizer build.
void switch_stack(void** save, void* load, const void* to_lo, size_t to_size, bool dying) {
#if XC2EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(dying ? nullptr : &fake, to_lo, to_size);
  xc2emu_switch(save, load);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)to_lo, (void)to_size, (void)dying;
  xc2emu_switch(save, load);
#endif
}

void make_ready(Block& b, std::vector<int>& group) {
  for (size_t i = group.size(); i > 1; --i) {  // Fisher-Yates with xorshift64
    b.rng ^= b.rng << 13, b.rng ^= b.rng >> 7, b.rng ^= b.rng << 17;
    std::swap(group[i - 1], group[static_cast<size_t>(b.rng % i)]);
  }
  if (b.ready_head == b.ready.size()) b.ready.clear(), b.ready_head = 0;
  for (int i : group) {
    b.threads[static_cast<size_t>(i)].state = State::Ready;
    b.ready.push_back(i);
  }
}

// After a thread waited or exited: completes the barriers that can complete now.
void settle(Block& b, int warp) {
  if (warp >= 0 && b.warp_waiting[static_cast<size_t>(warp)] > 0 &&
      b.warp_waiting[static_cast<size_t>(warp)] == b.warp_live[static_cast<size_t>(warp)]) {
    const int l0 = 32 * warp, l1 = std::min(b.n, l0 + 32);
    const uint32_t alive = b.warp_alive[static_cast<size_t>(warp)];
    std::vector<int>& group = b.group;
    group.clear();
    for (int l = l0; l < l1; ++l) {
      const Thread& t = b.threads[static_cast<size_t>(l)];
      if (t.state != State::WaitWarp) continue;
      if (const uint32_t gone = t.mask & ~alive) {
        if (b.error.empty())
          b.error = "warp " + std::to_string(warp) + ": lane " + std::to_string(l - l0) +
                    " synchronises (shuffle / __syncwarp / wmma) with lane " + std::to_string(__builtin_ctz(gone)) +
                    ", which has exited or does not exist";
        return;
      }
      group.push_back(l);
    }
    b.warp_waiting[static_cast<size_t>(warp)] = 0;
    make_ready(b, group);
  }
  if (b.block_waiting > 0 && b.block_waiting == b.live) {
    std::vector<int>& group = b.group;
    group.clear();
    for (int i = 0; i < b.n; ++i)
      if (b.threads[static_cast<size_t>(i)].state == State::WaitBlock) group.push_back(i);
    b.block_waiting = 0;
    make_ready(b, group);
  }
}

// Leaves the current thread (already marked waiting or done) for the next runnable one, or the scheduler.
void switch_away(Thread* t, bool dying) {
  Block& b = *g_block;
  if (b.error.empty() && b.ready_head < b.ready.size()) {
    Thread* next = &b.threads[static_cast<size_t>(b.ready[b.ready_head++])];
    next->state = State::Running;
    b.cur = next;
    if (next == t) return;  // released by its own arrival
    switch_stack(&t->sp, next->sp, next->stack_lo, kStackBytes, dying);
    return;
  }
  switch_stack(&t->sp, b.sched_sp, b.sched_lo, b.sched_size, dying);
}

extern "C" void xc2emu_fiber_main(Thread* t) {
#if XC2EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  (*g_block->body)();
  Block& b = *g_block;
  t->state = State::Done;
  --b.live;
  --b.warp_live[static_cast<size_t>(t->linear >> 5)];
  b.warp_alive[static_cast<size_t>(t->linear >> 5)] &= ~(1u << (t->linear & 31));
  settle(b, t->linear >> 5);
  switch_away(t, true);
  std::abort();  // a finished fiber is never resumed
}

void init_fiber(Thread& t, char* top) {
  // From the saved stack pointer up: MXCSR + x87 control word, r15, r14, r13 (entry), r12 (argument), rbx, rbp,
  // the return address (the trampoline); the trampoline's call then finds the stack 16-byte aligned.
  uint64_t* sp = reinterpret_cast<uint64_t*>(top - 80);
  const uint32_t mxcsr = 0x1F80u;
  const uint16_t fpcw = 0x037Fu;
  std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpcw, 2);
  sp[1] = 0;                                               // r15
  sp[2] = 0;                                               // r14
  sp[3] = reinterpret_cast<uint64_t>(&xc2emu_fiber_main);  // r13
  sp[4] = reinterpret_cast<uint64_t>(&t);                  // r12
  sp[5] = 0;                                               // rbx
  sp[6] = 0;                                               // rbp
  sp[7] = reinterpret_cast<uint64_t>(&xc2emu_trampoline);  // return address
  t.sp = sp;
}

void yield(State s, unsigned mask) {
  Block& b = *g_block;
  Thread* t = b.cur;
  t->state = s;
  t->mask = mask;
  if (s == State::WaitWarp) {
    ++b.warp_waiting[static_cast<size_t>(t->linear >> 5)];
    settle(b, t->linear >> 5);
  } else {
    ++b.block_waiting;
    settle(b, -1);
  }
  switch_away(t, false);
}

// Runs one block to completion; returns an empty string or what went wrong.
std::string run_block(Block& b) {
  const int n_warps = (b.n + 31) / 32;
  b.warp_live.assign(static_cast<size_t>(n_warps), 0);
  b.warp_waiting.assign(static_cast<size_t>(n_warps), 0);
  b.warp_alive.assign(static_cast<size_t>(n_warps), 0);
  b.live = b.n;
  b.block_waiting = 0;
  b.error.clear();
  b.ready.clear();
  b.ready_head = 0;
  b.group.clear();
  for (int i = 0; i < b.n; ++i) {
    Thread& t = b.threads[static_cast<size_t>(i)];
    t.linear = i;
    t.idx = make_uint3(static_cast<unsigned>(i) % b.block.x, static_cast<unsigned>(i) / b.block.x % b.block.y,
                       static_cast<unsigned>(i) / (b.block.x * b.block.y));
    t.parity = 0;
    t.stack_lo = g_stacks.top(i) - kStackBytes;
    init_fiber(t, g_stacks.top(i));
    ++b.warp_live[static_cast<size_t>(i >> 5)];
    b.warp_alive[static_cast<size_t>(i >> 5)] |= 1u << (i & 31);
    b.group.push_back(i);
  }
  make_ready(b, b.group);
  Thread* first = &b.threads[static_cast<size_t>(b.ready[b.ready_head++])];
  first->state = State::Running;
  b.cur = first;
#if XC2EMU_ASAN
  thread_local void* lo = nullptr;
  thread_local size_t size = 0;
  if (!lo) {
    pthread_attr_t attr;
    pthread_getattr_np(pthread_self(), &attr);
    pthread_attr_getstack(&attr, &lo, &size);
    pthread_attr_destroy(&attr);
  }
  b.sched_lo = lo;
  b.sched_size = size;
#endif
  switch_stack(&b.sched_sp, first->sp, first->stack_lo, kStackBytes, false);  // back here when no thread can run
  b.cur = nullptr;
  if (!b.error.empty()) return b.error;
  if (b.live == 0) return {};
  return "deadlock: " + std::to_string(b.block_waiting) + " threads wait in __syncthreads() while " +
         std::to_string(b.live - b.block_waiting) + " wait at a warp barrier whose warp never completes it";
}

// ---- memory ------------------------------------------------------------------------------------------------------

enum class Mem { Device, Pinned };

struct Memory {
  std::mutex mu;
  std::map<uintptr_t, std::pair<size_t, Mem>> blocks;  // start -> (bytes, kind)
  const std::pair<size_t, Mem>* find(const void* p, uintptr_t* start) {
    const uintptr_t v = reinterpret_cast<uintptr_t>(p);
    auto it = blocks.upper_bound(v);
    if (it == blocks.begin()) return nullptr;
    --it;
    if (v >= it->first + std::max<size_t>(it->second.first, 1)) return nullptr;
    if (start) *start = it->first;
    return &it->second;
  }
};
Memory& memory() {
  static Memory m;
  return m;
}

bool in_kind(const void* p, size_t bytes, bool device) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  uintptr_t start = 0;
  const auto* b = m.find(p, &start);
  if (!b) return !device && bytes > 0;  // pageable host memory
  if (reinterpret_cast<uintptr_t>(p) + bytes > start + b->first) return false;
  return device ? b->second == Mem::Device : true;  // pinned host memory is host memory too
}

// ---- streams, graphs, errors -------------------------------------------------------------------------------------

using Op = std::function<void()>;

struct ErrorState {
  cudaError_t last = cudaSuccess;    // cudaGetLastError()
  cudaError_t sticky = cudaSuccess;  // a kernel fault: returned by synchronising calls
};
thread_local ErrorState g_err;

std::mt19937& rng() {
  thread_local std::mt19937 r(20261208u);
  return r;
}

std::mutex g_attr_mu;
std::map<const void*, int> g_max_dyn_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel

}  // namespace
}  // namespace xc2emu

struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;
  std::vector<xc2emu::Op> captured;
};
struct CUgraph_st {
  std::vector<xc2emu::Op> ops;
};
struct CUgraphExec_st {
  std::vector<xc2emu::Op> ops;
};
struct CUevent_st {
  double ms = 0;
};

namespace xc2emu {
namespace {

CUstream_st g_default_stream;
CUstream_st* st(cudaStream_t s) { return s ? s : &g_default_stream; }

// Runs op now, or records it when the stream is capturing. After a kernel fault nothing more runs (checked when
// the op would run: now, or at each replay of a captured graph), as in a GPU's faulted context.
void enqueue(cudaStream_t s, Op op) {
  CUstream_st* x = st(s);
  if (x->capturing) {
    x->captured.push_back([op = std::move(op)]() {
      if (g_err.sticky == cudaSuccess) op();
    });
  } else if (g_err.sticky == cudaSuccess) {
    op();
  }
}

cudaError_t fail(cudaError_t e) {
  g_err.last = e;
  return e;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

bool device_accessible(const void* p) {
  if (!p) return true;
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  return m.find(p, nullptr) != nullptr;
}

void launch_error(cudaError_t e, const char* what) {
  std::fprintf(stderr, "xc2 CUDA emulator: %s\n", what);
  g_err.last = e;
}

void launch_closure(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                    std::function<void()> body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
    launch_error(cudaErrorInvalidConfiguration, "kernel launch with an invalid grid or block");
    return;
  }
  size_t allowed = kDefaultSmem;
  {
    std::lock_guard<std::mutex> lock(g_attr_mu);
    auto it = g_max_dyn_smem.find(kernel);
    if (it != g_max_dyn_smem.end()) allowed = std::max<size_t>(allowed, static_cast<size_t>(it->second));
  }
  if (smem > allowed) {
    launch_error(cudaErrorInvalidValue,
                 "kernel launch with more dynamic shared memory than allowed (cudaFuncSetAttribute not called?)");
    return;
  }
  enqueue(stream, [grid, block, smem, body = std::move(body)]() {
    auto b = std::make_unique<Block>();
    b->grid = grid;
    b->block = block;
    b->n = static_cast<int>(block.x * block.y * block.z);
    b->threads.resize(static_cast<size_t>(b->n));
    b->body = &body;
    b->rng = rng()() | 1u;
    b->smem.assign(smem + 128, 0xFF);  // uninitialised shared memory reads as NaN
    Block* saved = g_block;
    g_block = b.get();
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          b->bidx = make_uint3(x, y, z);
          const std::string err = run_block(*b);
          if (!err.empty()) {
            std::fprintf(stderr, "xc2 CUDA emulator: kernel fault in block (%u, %u, %u): %s\n", x, y, z, err.c_str());
            g_err.sticky = g_err.last = cudaErrorLaunchFailure;
            g_block = saved;
            return;
          }
        }
    g_block = saved;
  });
}

void enqueue_host_work(cudaStream_t stream, std::function<void()> op) { enqueue(stream, std::move(op)); }

uint3 thread_idx() { return g_block->cur->idx; }
uint3 block_idx() { return g_block->bidx; }
dim3 block_dim() { return g_block->block; }
dim3 grid_dim() { return g_block->grid; }
unsigned char* dynamic_smem() {
  const uintptr_t p = reinterpret_cast<uintptr_t>(g_block->smem.data());
  return reinterpret_cast<unsigned char*>((p + 127) & ~uintptr_t(127));
}
int lane_id() { return g_block->cur->linear & 31; }
void sync_block() { yield(State::WaitBlock, 0); }
void sync_warp(unsigned mask) { yield(State::WaitWarp, mask); }

uint64_t exchange(unsigned mask, uint64_t mine, int src_lane) {
  Block* b = g_block;
  Thread* t = b->cur;
  const int par = t->parity;
  t->parity ^= 1;
  b->slots[par][t->linear] = mine;
  yield(State::WaitWarp, mask);
  const int base = t->linear & ~31;
  return b->slots[par][base + src_lane];
}

}  // namespace xc2emu

// ---- the runtime API ---------------------------------------------------------------------------------------------
using namespace xc2emu;

extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = g_err.last;
  g_err.last = g_err.sticky;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_err.last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    default: return "cudaError (emulator)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure (xc2 CUDA emulator: kernel fault, see stderr)";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return "error (xc2 CUDA emulator)";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "xc2 CUDA emulator (CPU)");
  prop->totalGlobalMem = size_t(16) << 30;
  prop->sharedMemPerBlock = kDefaultSmem;
  prop->sharedMemPerBlockOptin = kMaxSmem;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = kMaxThreads;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->l2CacheSize = 50 << 20;
  prop->memoryBusWidth = 5120;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMemoryClockRate: *value = 2619000; return cudaSuccess;  // kHz (H100 SXM)
    case cudaDevAttrGlobalMemoryBusWidth: *value = 5120; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = 132; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(kMaxSmem); return cudaSuccess;
    default: return fail(cudaErrorInvalidValue);
  }
}

cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *total_b = size_t(16) << 30;
  *free_b = size_t(12) << 30;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<size_t>(value) > kMaxSmem) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(g_attr_mu);
  g_max_dyn_smem[func] = value;
  return cudaSuccess;
}

static cudaError_t alloc(void** p, size_t bytes, Mem kind) {
  if (bytes > (size_t(64) << 30)) return fail(cudaErrorMemoryAllocation);
  void* q = nullptr;  // exactly `bytes` (a sanitizer build then catches accesses past the end), 256-byte aligned
  if (posix_memalign(&q, 256, std::max<size_t>(bytes, 1)) != 0) return fail(cudaErrorMemoryAllocation);
  // Device memory reads as NaN until written, so that a read of what was never written shows (blocks up to 16 MiB:
  // tensors; larger ones are scratch such as cuBLASLt's workspace, and filling them costs the tests' time).
  if (kind == Mem::Device && bytes <= (size_t(16) << 20)) std::memset(q, 0xFF, bytes);
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  m.blocks[reinterpret_cast<uintptr_t>(q)] = {bytes, kind};
  *p = q;
  return cudaSuccess;
}

static cudaError_t release(void* p, Mem kind) {
  if (!p) return cudaSuccess;
  Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto it = m.blocks.find(reinterpret_cast<uintptr_t>(p));
    if (it == m.blocks.end() || it->second.second != kind) return fail(cudaErrorInvalidValue);
    m.blocks.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) { return alloc(p, bytes, Mem::Device); }
cudaError_t cudaFree(void* p) { return release(p, Mem::Device); }
cudaError_t cudaMallocHost(void** p, size_t bytes) { return alloc(p, bytes, Mem::Pinned); }
cudaError_t cudaFreeHost(void* p) { return release(p, Mem::Pinned); }

static cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = in_kind(dst, n, true) && in_kind(src, n, false); break;
    case cudaMemcpyDeviceToHost: ok = in_kind(dst, n, false) && in_kind(src, n, true); break;
    case cudaMemcpyDeviceToDevice: ok = in_kind(dst, n, true) && in_kind(src, n, true); break;
    case cudaMemcpyHostToHost: ok = in_kind(dst, n, false) && in_kind(src, n, false); break;
    case cudaMemcpyDefault:
      ok = (in_kind(dst, n, true) || in_kind(dst, n, false)) && (in_kind(src, n, true) || in_kind(src, n, false));
      break;
    default: ok = false;
  }
  if (!ok) {
    std::fprintf(stderr, "xc2 CUDA emulator: cudaMemcpy of %zu bytes (kind %d): a pointer is not in the memory its "
                         "kind says, or the range runs past its allocation\n", n, static_cast<int>(kind));
    return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
  if (const cudaError_t e = check_copy(dst, src, n, kind)) return e;
  if (n) enqueue(s, [=]() { std::memmove(dst, src, n); });
  return g_err.sticky;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind) {
  if (g_default_stream.capturing) return fail(cudaErrorStreamCaptureUnsupported);
  if (const cudaError_t e = check_copy(dst, src, n, kind)) return e;
  if (g_err.sticky) return g_err.sticky;
  std::memmove(dst, src, n);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s) {
  if (n && !in_kind(p, n, true)) {
    std::fprintf(stderr, "xc2 CUDA emulator: cudaMemsetAsync of %zu bytes outside device memory\n", n);
    return fail(cudaErrorInvalidValue);
  }
  if (n) enqueue(s, [=]() { std::memset(p, value, n); });
  return g_err.sticky;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  CUstream_st* x = st(s);
  if (x->capturing) {
    x->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (g_err.sticky) return fail(g_err.sticky);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return g_err.sticky ? fail(g_err.sticky) : cudaSuccess; }

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode) {
  CUstream_st* x = st(s);
  if (x->capturing) return fail(cudaErrorIllegalState);
  x->capturing = true;
  x->invalidated = false;
  x->captured.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  CUstream_st* x = st(s);
  if (!x->capturing) return fail(cudaErrorIllegalState);
  x->capturing = false;
  if (x->invalidated) {
    x->captured.clear();
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  auto* g = new CUgraph_st;
  g->ops = std::move(x->captured);
  x->captured.clear();
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue);
  auto* e = new CUgraphExec_st;
  e->ops = graph->ops;
  *exec = e;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!exec) return fail(cudaErrorInvalidValue);
  enqueue(s, [exec]() {
    for (const Op& op : exec->ops) op();
  });
  return g_err.sticky;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  enqueue(s, [e]() { e->ms = now_ms(); });
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return g_err.sticky ? fail(g_err.sticky) : cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = static_cast<float>(b->ms - a->ms);
  return cudaSuccess;
}

}  // extern "C"
