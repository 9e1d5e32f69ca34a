// The contestants: every way of getting a coroutine stack that the harness
// compares. Each is a type with
//   static const char* name();       label used everywhere (JSON, tables, plots)
//   static const char* needs_malloc; which malloc the process must run ("glibc"
//                                    = no LD_PRELOAD); checked before every run
//   static constexpr bool is_gostack, cross_thread_free;
//   static std::string prepare();    per run, before threads start ("" = ok)
//   static void finish();            per run, after everything is freed
//   struct Local { Stk alloc(size_t); void free(Stk); };
// A Local is what one user thread (or one lineage of threads, used one at a
// time) holds; for Boost's pooled allocator it owns the pools.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <dlfcn.h>
#include <sys/mman.h>

#include <boost/context/pooled_fixedsize_stack.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#include "gostack.h"
#include "measure.hpp"

namespace gsb {

struct Stk {
	uintptr_t lo = 0, hi = 0;
	size_t size() const { return hi - lo; }
};

// Write one word near the top of the stack, where a stack starts being used.
inline void touch(const Stk& s) {
	*reinterpret_cast<volatile uintptr_t*>(s.hi - 2 * sizeof(uintptr_t)) = s.hi;
}

// Which malloc implementation is serving this process (LD_PRELOAD check).
inline const char* active_malloc() {
	if (dlsym(RTLD_DEFAULT, "mi_malloc")) return "mimalloc";
	if (dlsym(RTLD_DEFAULT, "tc_malloc")) return "tcmalloc";
	if (dlsym(RTLD_DEFAULT, "mallctl")) return "jemalloc";
	return "glibc";
}

inline std::string check_malloc(const char* needs, const char* who) {
	const char* have = active_malloc();
	if (std::strcmp(have, needs) == 0) return "";
	return std::string(who) + " must run in a process whose malloc is " + needs +
	       ", but this process runs " + have + " (wrong or missing LD_PRELOAD)";
}

// ---------------------------------------------------------------- gostack

inline const char* gostack_label(gostack_backend_t b, bool nocache, bool nopercpu = false) {
	if (b == GOSTACK_BACKEND_LOCKFREE && nopercpu) return "gostack-lockfree-nopercpu";
	if (b == GOSTACK_BACKEND_LOCKFREE) return nocache ? "gostack-lockfree-nocache" : "gostack-lockfree";
	return nocache ? "gostack-mutex-nocache" : "gostack-mutex";
}

// 0 if an allocator of this configuration can be created, else its errno.
inline int gostack_probe(gostack_backend_t b, bool nocache) {
	gostack_config_t cfg;
	std::memset(&cfg, 0, sizeof cfg);
	cfg.backend = b;
	cfg.no_cache = nocache;
	errno = 0;
	gostack_allocator_t* a = gostack_allocator_new(&cfg);
	if (!a) return errno ? errno : -1;
	gostack_allocator_delete(a);
	return 0;
}

// NoPercpu: the lock-free pools without their per-CPU tier (config.no_percpu),
// the ablation that shows what the tier buys.
template <gostack_backend_t B, bool NoCache, bool NoPercpu = false>
struct Gostack {
	static constexpr bool is_gostack = true;
	static constexpr bool cross_thread_free = true;
	static constexpr const char* needs_malloc = "glibc";
	static inline gostack_allocator_t* a = nullptr;
	static const char* name() { return gostack_label(B, NoCache, NoPercpu); }

	static std::string prepare() {
		std::string e = check_malloc(needs_malloc, name());
		if (!e.empty()) return e;
		gostack_config_t cfg;
		std::memset(&cfg, 0, sizeof cfg);
		cfg.backend = B;
		cfg.no_cache = NoCache;
		cfg.no_percpu = NoPercpu;
		errno = 0;
		a = gostack_allocator_new(&cfg);
		if (!a) return std::string("gostack_allocator_new failed: ") + std::strerror(errno);
		return "";
	}
	static void finish() {}  // the allocator is deleted by the leader after the checks

	struct Local {
		gostack_allocator_t* al = a;
		Stk alloc(size_t n) {
			gostack_t s = gostack_allocator_alloc(al, n);
			return Stk{s.lo, s.hi};
		}
		void free(Stk s) {
			gostack_t g;
			g.lo = s.lo;
			g.hi = s.hi;
			gostack_allocator_free(al, g);
		}
	};
};

using GostackLockfree = Gostack<GOSTACK_BACKEND_LOCKFREE, false>;
using GostackMutex = Gostack<GOSTACK_BACKEND_MUTEX, false>;
using GostackLockfreeNocache = Gostack<GOSTACK_BACKEND_LOCKFREE, true>;
using GostackMutexNocache = Gostack<GOSTACK_BACKEND_MUTEX, true>;
using GostackLockfreeNopercpu = Gostack<GOSTACK_BACKEND_LOCKFREE, false, true>;

// ---------------------------------------------------------------- malloc family
// malloc's 16-byte alignment is all a stack needs (no workload here needs
// more), so plain malloc/free is what a user of these allocators would call.

template <class Tag>
struct Malloc {
	static constexpr bool is_gostack = false;
	static constexpr bool cross_thread_free = true;
	static constexpr const char* needs_malloc = Tag::name;
	static const char* name() { return Tag::name; }
	static std::string prepare() { return check_malloc(Tag::name, Tag::name); }
	static void finish() {}
	struct Local {
		Stk alloc(size_t n) {
			void* p = std::malloc(n);
			if (!p) return Stk{};
			return Stk{(uintptr_t)p, (uintptr_t)p + n};
		}
		void free(Stk s) { std::free((void*)s.lo); }
	};
};

struct GlibcTag { static constexpr const char* name = "glibc"; };
struct JemallocTag { static constexpr const char* name = "jemalloc"; };
struct TcmallocTag { static constexpr const char* name = "tcmalloc"; };
struct MimallocTag { static constexpr const char* name = "mimalloc"; };
using Glibc = Malloc<GlibcTag>;
using Jemalloc = Malloc<JemallocTag>;
using Tcmalloc = Malloc<TcmallocTag>;
using Mimalloc = Malloc<MimallocTag>;

// ---------------------------------------------------------------- mmap

struct Mmap {
	static constexpr bool is_gostack = false;
	static constexpr bool cross_thread_free = true;
	static constexpr const char* needs_malloc = "glibc";
	static const char* name() { return "mmap"; }
	static std::string prepare() { return check_malloc(needs_malloc, name()); }
	static void finish() {}
	struct Local {
		Stk alloc(size_t n) {
			void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE,
			                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
			if (p == MAP_FAILED) return Stk{};
			return Stk{(uintptr_t)p, (uintptr_t)p + n};
		}
		void free(Stk s) { ::munmap((void*)s.lo, s.size()); }
	};
};

// ---------------------------------------------------------------- Boost.Context

inline int size_slot(size_t n) {  // log2 of a power-of-two size
	return 63 - __builtin_clzll((unsigned long long)n);
}

// protected_fixedsize_stack keeps only its size: stateless and thread-safe.
// Its stack_context.size includes the guard page, so [lo, hi) does too.
struct BoostProtected {
	static constexpr bool is_gostack = false;
	static constexpr bool cross_thread_free = true;
	static constexpr const char* needs_malloc = "glibc";
	static const char* name() { return "boost-protected"; }
	static std::string prepare() { return check_malloc(needs_malloc, name()); }
	static void finish() {}
	struct Local {
		Stk alloc(size_t n) {
			boost::context::protected_fixedsize_stack a(n);
			boost::context::stack_context sc;
			try {
				sc = a.allocate();
			} catch (const std::bad_alloc&) {
				return Stk{};
			}
			return Stk{(uintptr_t)sc.sp - sc.size, (uintptr_t)sc.sp};
		}
		void free(Stk s) {
			boost::context::protected_fixedsize_stack a(s.size());
			boost::context::stack_context sc;
			sc.size = s.size();
			sc.sp = (void*)s.hi;
			a.deallocate(sc);
		}
	};
};

// pooled_fixedsize_stack is one fixed size per instance and not thread-safe,
// so a Local holds one pool per size, created on first use with Boost's
// defaults (next_size 32, no max), and is never used by two threads at once.
// Its memory goes back (to malloc) only when the pool is destroyed.
struct BoostPooled {
	static constexpr bool is_gostack = false;
	static constexpr bool cross_thread_free = false;
	static constexpr const char* needs_malloc = "glibc";
	static const char* name() { return "boost-pooled"; }
	static std::string prepare() { return check_malloc(needs_malloc, name()); }
	static void finish() {}
	struct Local {
		std::unique_ptr<boost::context::pooled_fixedsize_stack> pool[32];
		Stk alloc(size_t n) {
			auto& p = pool[size_slot(n)];
			if (GSB_UNLIKELY(!p)) p.reset(new boost::context::pooled_fixedsize_stack(n));
			boost::context::stack_context sc;
			try {
				sc = p->allocate();
			} catch (const std::bad_alloc&) {
				return Stk{};
			}
			return Stk{(uintptr_t)sc.sp - sc.size, (uintptr_t)sc.sp};
		}
		void free(Stk s) {
			boost::context::stack_context sc;
			sc.size = s.size();
			sc.sp = (void*)s.hi;
			pool[size_slot(s.size())]->deallocate(sc);
		}
	};
};

}  // namespace gsb
