// gostack_bench: google-benchmark workloads for coroutine/fiber stack
// allocators. See harness/README.md for what each workload does and how the
// driver (harness/run) runs one process per contestant.
//
// Every benchmark is "<workload>/<contestant>/real_time/threads:N". All
// threads of a run meet at a barrier inside their first iteration and again
// after their last one, so every thread's real time spans the whole
// concurrent phase: with 64 threads on 2 cores a thread that happens to run
// alone early cannot make the run look faster than it was.
//
// After the timed loop (untimed): residual state is measured (maps, RSS),
// everything is freed, gostack caches are flushed, gostack's stats are
// checked for balance, gostack_allocator_reclaim runs and RSS is measured
// again. A failed check is reported with SkipWithError and a non-zero exit.

#include <benchmark/benchmark.h>

#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "contestants.hpp"
#include "measure.hpp"

namespace gsb {

uint64_t g_clock_overhead_ns = 0;
static long long g_proc_base_rss = 0;
static bool g_hwm_resettable = false;
static std::atomic<bool> g_failed{false};

constexpr size_t KiB = 1024;

// ---- workload parameters (also written to the JSON context) ----
constexpr int kHoldN = 128;              // hold: stacks per thread per round
constexpr int kBatch = 32;               // hand-off: stacks per batch
constexpr unsigned kRingCap = 16;        // hand-off: batches in flight per producer/consumer pair
constexpr int kServerSlots = 128;        // server: slots per lineage
constexpr int kServerRound = 1024;       // server: replacements per round (one thread per round)
constexpr int kSpawnWindow = 16;         // spawn: parked coroutines per thread
constexpr size_t kSpawnStack = 8 * KiB;  // spawn: starting stack size
constexpr int kSpawnDeepOneIn = 8;       // spawn: one coroutine in 8 grows 8 -> 16 -> 32 KiB
constexpr size_t kSpawnTouch = 2 * KiB;  // spawn: bytes of stack a coroutine writes
constexpr size_t kSpawnDeepTouch = 12 * KiB;
constexpr int kChurnStacks = 64;         // churn: stacks per short-lived thread

// 2, 4, 8, 16 KiB cycling: Go's four small orders.
inline size_t mix_size(uint64_t i) { return (2 * KiB) << (i & 3); }

struct Rng {
	uint64_t s;
	explicit Rng(uint64_t seed) : s(seed * 0x2545F4914F6CDD1Dull + 0x9E3779B97F4A7C15ull) {}
	uint64_t next() {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		return s;
	}
};

// ---- hand-off ring: single producer, single consumer, batches of stacks ----

inline void futex_wait(std::atomic<uint32_t>* a, uint32_t v) {
	syscall(SYS_futex, reinterpret_cast<uint32_t*>(a), FUTEX_WAIT_PRIVATE, v, nullptr, nullptr, 0);
}
inline void futex_wake(std::atomic<uint32_t>* a) {
	syscall(SYS_futex, reinterpret_cast<uint32_t*>(a), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	asm volatile("yield");
#endif
}

// Waits until word != v: a short spin, then futex sleep.
inline void wait_change(std::atomic<uint32_t>& word, uint32_t v, std::atomic<uint32_t>& waiting) {
	for (int i = 0; i < 256; i++) {
		if (word.load(std::memory_order_acquire) != v) return;
		cpu_relax();
	}
	while (word.load(std::memory_order_acquire) == v) {
		waiting.store(1, std::memory_order_seq_cst);
		if (word.load(std::memory_order_seq_cst) == v) futex_wait(&word, v);
		waiting.store(0, std::memory_order_relaxed);
	}
}

struct Ring {
	alignas(64) std::atomic<uint32_t> head{0};  // batches published by the producer
	std::atomic<uint32_t> cons_waiting{0};
	alignas(64) std::atomic<uint32_t> tail{0};  // batches freed by the consumer
	std::atomic<uint32_t> prod_waiting{0};
	alignas(64) Stk slot[kRingCap][kBatch];

	Stk* acquire_space(uint32_t h) {
		for (;;) {
			uint32_t t = tail.load(std::memory_order_acquire);
			if (h - t < kRingCap) return slot[h % kRingCap];
			wait_change(tail, t, prod_waiting);
		}
	}
	void publish(uint32_t h) {
		head.store(h + 1, std::memory_order_seq_cst);
		if (cons_waiting.load(std::memory_order_seq_cst)) futex_wake(&head);
	}
	Stk* acquire_data(uint32_t t) {
		while (head.load(std::memory_order_acquire) == t) wait_change(head, t, cons_waiting);
		return slot[t % kRingCap];
	}
	void release(uint32_t t) {
		tail.store(t + 1, std::memory_order_seq_cst);
		if (prod_waiting.load(std::memory_order_seq_cst)) futex_wake(&tail);
	}
};

// ---- per-run shared state ----

struct RunCtx {
	std::string prepare_error;
	const char* contestant = "";
	Barrier bar;
	std::mutex m;
	Hist alloc_h, free_h;
	uint64_t allocs = 0, frees = 0;
	long long maps_live = 0, rss_live = 0;
	gostack_stats_t gs_live{};
	std::vector<std::unique_ptr<Ring>> rings;

	void reset(int threads) {
		prepare_error.clear();
		bar.reset(threads);
		alloc_h.clear();
		free_h.clear();
		allocs = frees = 0;
		maps_live = rss_live = 0;
		gs_live = gostack_stats_t{};
		rings.clear();
	}
};
static RunCtx g_run;

template <class C, bool Rings>
void setup(const benchmark::State& st) {
	g_run.reset(st.threads());
	g_run.contestant = C::name();
	if (Rings)
		for (int i = 0; i < st.threads() / 2; i++) g_run.rings.emplace_back(new Ring());
	g_run.prepare_error = C::prepare();
	if (!g_run.prepare_error.empty()) {
		std::fprintf(stderr, "gostack_bench: %s\n", g_run.prepare_error.c_str());
		g_failed = true;
	}
	if (g_hwm_resettable) reset_hwm();
}

template <class C>
void teardown(const benchmark::State&) {
	C::finish();
	g_run.rings.clear();
}

// ---- per-thread state: the contestant's Local plus sampling and counts ----

template <class C>
struct Ctx {
	std::unique_ptr<typename C::Local> local{new typename C::Local()};
	Sampler smp;
	uint64_t allocs = 0, frees = 0, items = 0, threads_started = 0;

	explicit Ctx(uint64_t seed) : smp(seed) {}
	// After the untimed warm-up: latency samples count from the timed loop on.
	void warmed() {
		smp.alloc_h.clear();
		smp.free_h.clear();
	}

	[[noreturn]] static void alloc_failed(size_t n) {
		char buf[160];
		std::snprintf(buf, sizeof buf, "%s: allocation of %zu bytes failed (errno %d: %s)", C::name(), n,
		              errno, std::strerror(errno));
		die(buf);
	}
	Stk alloc(size_t n) {
		Stk s;
		if (GSB_UNLIKELY(--smp.alloc_left == 0)) {
			smp.alloc_left = smp.gap();
			uint64_t t0 = now_ns();
			s = local->alloc(n);
			uint64_t t1 = now_ns();
			smp.alloc_h.add(Sampler::net(t0, t1));
		} else {
			s = local->alloc(n);
		}
		if (GSB_UNLIKELY(!s.lo)) alloc_failed(n);
		allocs++;
		return s;
	}
	void free(Stk s) {
		if (GSB_UNLIKELY(--smp.free_left == 0)) {
			smp.free_left = smp.gap();
			uint64_t t0 = now_ns();
			local->free(s);
			uint64_t t1 = now_ns();
			smp.free_h.add(Sampler::net(t0, t1));
		} else {
			local->free(s);
		}
		frees++;
	}
};

// Returns false (after reporting) when the run cannot start.
inline bool begin(benchmark::State& state) {
	if (g_run.prepare_error.empty()) return true;
	state.SkipWithError(g_run.prepare_error.c_str());
	for (auto _ : state) {
	}
	return false;
}

template <class Body>
inline void timed_loop(benchmark::State& state, Body&& body) {
	benchmark::IterationCount left = state.max_iterations;
	bool first = true;
	for (auto _ : state) {
		if (GSB_UNLIKELY(first)) {
			first = false;
			g_run.bar.wait();  // everyone is in the loop: start together
		}
		body();
		if (GSB_UNLIKELY(--left == 0)) g_run.bar.wait();  // everyone is done
	}
}

inline std::string gostack_check(gostack_allocator_t* a, uint64_t allocs, uint64_t frees, const char* when,
                                 gostack_stats_t* out) {
	gostack_stats_t s;
	gostack_allocator_stats(a, &s);
	if (out) *out = s;
	std::string e;
	char buf[256];
	auto add = [&](const char* what) {
		if (!e.empty()) e += "; ";
		e += what;
	};
	if (s.inuse_bytes != 0) {
		std::snprintf(buf, sizeof buf, "inuse_bytes %zu != 0", s.inuse_bytes);
		add(buf);
	}
	if (s.allocs != s.frees) {
		std::snprintf(buf, sizeof buf, "allocs %" PRIu64 " != frees %" PRIu64, s.allocs, s.frees);
		add(buf);
	}
	if (s.allocs != allocs || s.frees != frees) {
		std::snprintf(buf, sizeof buf,
		              "stats count %" PRIu64 " allocs / %" PRIu64 " frees but the harness made %" PRIu64
		              " / %" PRIu64,
		              s.allocs, s.frees, allocs, frees);
		add(buf);
	}
	if (s.cached_bytes != 0) {
		std::snprintf(buf, sizeof buf, "cached_bytes %zu != 0 although every thread flushed or exited",
		              s.cached_bytes);
		add(buf);
	}
	if (s.inuse_bytes + s.cached_bytes + s.pooled_bytes != s.mapped_bytes) {
		std::snprintf(buf, sizeof buf, "inuse %zu + cached %zu + pooled %zu != mapped %zu", s.inuse_bytes,
		              s.cached_bytes, s.pooled_bytes, s.mapped_bytes);
		add(buf);
	}
	if (e.empty()) return e;
	return std::string("gostack stats do not balance ") + when + ": " + e;
}

// The untimed end of every run. make_live() rebuilds a live set for
// workloads that hold none at the end of the loop; free_all() frees whatever
// the thread still holds.
template <class C, class MakeLive, class FreeAll>
void finish_run(benchmark::State& state, std::unique_ptr<Ctx<C>>& T, MakeLive&& make_live, FreeAll&& free_all) {
	RunCtx& R = g_run;
	const bool leader = state.thread_index() == 0;
	state.SetItemsProcessed((int64_t)T->items);
	if (T->threads_started)
		state.counters["threads_per_second"] =
		    benchmark::Counter((double)T->threads_started, benchmark::Counter::kIsRate);

	{
		std::lock_guard<std::mutex> l(R.m);
		R.alloc_h.merge(T->smp.alloc_h);
		R.free_h.merge(T->smp.free_h);
	}
	make_live();
	R.bar.wait();
	if (leader) {
		R.maps_live = count_maps();
		R.rss_live = rss_bytes();
		if constexpr (C::is_gostack) gostack_allocator_stats(C::a, &R.gs_live);
	}
	R.bar.wait();
	free_all();
	if constexpr (C::is_gostack) gostack_thread_flush();
	{
		std::lock_guard<std::mutex> l(R.m);
		R.allocs += T->allocs;
		R.frees += T->frees;
	}
	R.bar.wait();
	long long rss_freed = 0, maps_freed = 0;
	std::string err;
	if (leader) {
		rss_freed = rss_bytes();
		maps_freed = count_maps();
		if constexpr (C::is_gostack) err = gostack_check(C::a, R.allocs, R.frees, "after every stack was freed and every thread flushed", nullptr);
	}
	R.bar.wait();
	T.reset();  // the thread's own allocator state (Boost pools) goes away
	R.bar.wait();
	if (!leader) return;

	auto& c = state.counters;
	if constexpr (C::is_gostack) {
		c["gs_mapped_live_bytes"] = (double)R.gs_live.mapped_bytes;
		c["gs_inuse_live_bytes"] = (double)R.gs_live.inuse_bytes;
		size_t released = gostack_allocator_reclaim(C::a);
		gostack_stats_t after;
		std::string e2 = gostack_check(C::a, R.allocs, R.frees, "after gostack_allocator_reclaim", &after);
		if (err.empty()) err = e2;
		c["gs_reclaimed_bytes"] = (double)released;
		c["gs_mapped_after_reclaim_bytes"] = (double)after.mapped_bytes;
		int rc = gostack_allocator_delete(C::a);
		if (rc != 0 && err.empty()) err = "gostack_allocator_delete returned " + std::to_string(rc) + " after everything was freed";
		C::a = nullptr;
	}
	long long rss_after = rss_bytes(), maps_after = count_maps(), hwm = hwm_bytes();
	// VmHWM is only brought up to date at some kernel events and RSS counters
	// are approximate per CPU, so the peak is at least every RSS read here.
	long long peak = std::max(std::max(hwm, R.rss_live), std::max(rss_freed, rss_after));
	c["rss_peak_bytes"] = (double)(peak - g_proc_base_rss);
	c["rss_live_bytes"] = (double)(R.rss_live - g_proc_base_rss);
	c["rss_freed_bytes"] = (double)(rss_freed - g_proc_base_rss);
	c["rss_after_bytes"] = (double)(rss_after - g_proc_base_rss);
	c["maps_live"] = (double)R.maps_live;
	c["maps_freed"] = (double)maps_freed;
	c["maps_after"] = (double)maps_after;
	c["lat_alloc_p50_ns"] = R.alloc_h.quantile(0.50);
	c["lat_alloc_p99_ns"] = R.alloc_h.quantile(0.99);
	c["lat_alloc_p999_ns"] = R.alloc_h.quantile(0.999);
	c["lat_free_p50_ns"] = R.free_h.quantile(0.50);
	c["lat_free_p99_ns"] = R.free_h.quantile(0.99);
	c["lat_free_p999_ns"] = R.free_h.quantile(0.999);
	c["lat_samples"] = (double)(R.alloc_h.n + R.free_h.n);
	c["stack_allocs"] = (double)R.allocs;
	if (!err.empty()) {
		std::fprintf(stderr, "gostack_bench: CHECK FAILED (%s, %d threads): %s\n", C::name(), state.threads(),
		             err.c_str());
		g_failed = true;
		state.SkipWithError(err.c_str());
	}
}

inline uint64_t seed_of(const benchmark::State& state) { return (uint64_t)state.thread_index() + 1; }

// ======================================================================
// 1. pair: alloc, touch one word, free.
template <class C>
void BM_pair(benchmark::State& state, size_t size) {
	if (!begin(state)) return;
	auto T = std::make_unique<Ctx<C>>(seed_of(state));
	Ctx<C>* t = T.get();
	t->free(t->alloc(size));  // warm-up (untimed): first use of the thread's cache / pool
	t->warmed();
	timed_loop(state, [&] {
		Stk s = t->alloc(size);
		touch(s);
		t->free(s);
	});
	T->items = (uint64_t)state.iterations();
	finish_run<C>(state, T, [] {}, [] {});
}

// 2. hold (Hoard threadtest): allocate N, touch each, free them all.
template <class C>
void BM_hold(benchmark::State& state) {
	if (!begin(state)) return;
	auto T = std::make_unique<Ctx<C>>(seed_of(state));
	Ctx<C>* t = T.get();
	std::vector<Stk> s(kHoldN);
	auto round = [&] {
		for (int i = 0; i < kHoldN; i++) {
			s[i] = t->alloc(mix_size(i));
			touch(s[i]);
		}
		for (int i = 0; i < kHoldN; i++) t->free(s[i]);
	};
	round();  // warm-up (untimed)
	t->warmed();
	timed_loop(state, round);
	T->items = (uint64_t)state.iterations() * kHoldN;
	// untimed: hold one set per thread so that maps/RSS "live" show N*threads stacks
	finish_run<C>(
	    state, T,
	    [&] {
		    for (int i = 0; i < kHoldN; i++) {
			    s[i] = t->alloc(mix_size(i));
			    touch(s[i]);
		    }
	    },
	    [&] {
		    for (int i = 0; i < kHoldN; i++) t->free(s[i]);
	    });
}

// 3. hand-off (xmalloc-test): even threads allocate batches, the next odd
// thread frees them. Needs >= 2 threads; contestants that cannot free on
// another thread (boost-pooled) are not run.
template <class C>
void BM_handoff(benchmark::State& state) {
	if (!begin(state)) return;
	auto T = std::make_unique<Ctx<C>>(seed_of(state));
	Ctx<C>* t = T.get();
	Ring& r = *g_run.rings[(size_t)state.thread_index() / 2];
	const bool producer = state.thread_index() % 2 == 0;
	uint32_t seq = 0;
	{  // warm-up (untimed): each side allocates and frees one batch itself
		Stk w[kBatch];
		for (int i = 0; i < kBatch; i++) w[i] = t->alloc(mix_size(i));
		for (int i = 0; i < kBatch; i++) t->free(w[i]);
		t->warmed();
	}
	if (producer) {
		timed_loop(state, [&] {
			Stk* b = r.acquire_space(seq);
			for (int i = 0; i < kBatch; i++) {
				b[i] = t->alloc(mix_size(i));
				touch(b[i]);
			}
			r.publish(seq++);
		});
		T->items = (uint64_t)state.iterations() * kBatch;
	} else {
		timed_loop(state, [&] {
			Stk* b = r.acquire_data(seq);
			for (int i = 0; i < kBatch; i++) t->free(b[i]);
			r.release(seq++);
		});
	}
	finish_run<C>(state, T, [] {}, [] {});
}

// 4. server (Larson): each thread owns slots; a round replaces random slots
// with stacks of random size (2..32 KiB), and every round runs on a new
// thread that inherits the slots (and, for boost-pooled, the pools).
template <class C>
void BM_server(benchmark::State& state) {
	if (!begin(state)) return;
	auto T = std::make_unique<Ctx<C>>(seed_of(state));
	Ctx<C>* t = T.get();
	std::vector<Stk> slot(kServerSlots);
	Rng rng(seed_of(state));
	for (auto& s : slot) {  // initial fill (untimed)
		s = t->alloc((2 * KiB) << (rng.next() % 5));
		touch(s);
	}
	t->warmed();
	timed_loop(state, [&] {
		std::thread th([&] {
			for (int k = 0; k < kServerRound; k++) {
				uint64_t r = rng.next();
				Stk& s = slot[r % kServerSlots];
				t->free(s);
				s = t->alloc((2 * KiB) << ((r >> 32) % 5));
				touch(s);
			}
		});
		th.join();
	});
	T->items = (uint64_t)state.iterations() * kServerRound;
	T->threads_started = (uint64_t)state.iterations();
	finish_run<C>(state, T, [] {}, [&] {
		for (auto& s : slot) t->free(s);
	});
}

// 5. spawn (Go's newproc1/gfget/gfput): descriptors are reused from a free
// list together with their stacks; a descriptor whose stack is not the
// starting size gives it back at gfput. Each coroutine really runs on its
// stack (Boost.Context fcontext switch), writes a few KiB of it, parks, and
// is finished when it leaves the window of kSpawnWindow live coroutines.
namespace bctx = boost::context::detail;

struct G {
	Stk stk;
	size_t stk_size = 0;  // requested size (boost-protected adds a guard page to [lo, hi))
	bctx::fcontext_t fc = nullptr;
	G* next = nullptr;
	bool deep = false;
};

static void coro_main(bctx::transfer_t t) {
	G* g = static_cast<G*>(t.data);
	size_t n = g->deep ? kSpawnDeepTouch : kSpawnTouch;
	char* buf = static_cast<char*>(__builtin_alloca(n));
	std::memset(buf, 0x5a, n);
	asm volatile("" : : "r"(buf) : "memory");
	t = bctx::jump_fcontext(t.fctx, nullptr);  // park
	bctx::jump_fcontext(t.fctx, nullptr);      // finish; never resumed
	__builtin_unreachable();
}

template <class C>
struct SpawnState {
	Ctx<C>* t;
	G* gfree = nullptr;
	G* window[kSpawnWindow] = {};
	unsigned head = 0, count = 0;
	std::vector<std::unique_ptr<G>> descs;
	Rng rng;
	SpawnState(Ctx<C>* t_, uint64_t seed) : t(t_), rng(seed) {}

	G* gfget() {
		G* g = gfree;
		if (g) {
			gfree = g->next;
		} else {
			descs.emplace_back(new G());
			g = descs.back().get();
		}
		if (!g->stk.lo) {
			g->stk = t->alloc(kSpawnStack);
			g->stk_size = kSpawnStack;
		}
		return g;
	}
	void gfput(G* g) {
		if (g->stk_size != kSpawnStack) {
			t->free(g->stk);
			g->stk = Stk{};
			g->stk_size = 0;
		}
		g->next = gfree;
		gfree = g;
	}
	// copystack's allocator traffic: allocate twice the size, free the old one.
	void grow(G* g) {
		Stk n = t->alloc(g->stk_size * 2);
		t->free(g->stk);
		g->stk = n;
		g->stk_size *= 2;
	}
	void finish(G* g) {
		bctx::jump_fcontext(g->fc, nullptr);
		gfput(g);
	}
	void spawn() {
		G* g = gfget();
		g->deep = rng.next() % kSpawnDeepOneIn == 0;
		if (g->deep) {
			grow(g);  // 8 -> 16 KiB
			grow(g);  // 16 -> 32 KiB
		}
		bctx::fcontext_t fc = bctx::make_fcontext(reinterpret_cast<void*>(g->stk.hi), g->stk.size(), coro_main);
		g->fc = bctx::jump_fcontext(fc, g).fctx;
		if (count == kSpawnWindow) {
			finish(window[head]);
			window[head] = g;
			head = (head + 1) % kSpawnWindow;
		} else {
			window[(head + count++) % kSpawnWindow] = g;
		}
	}
	void drain() {
		while (count) {
			finish(window[head]);
			head = (head + 1) % kSpawnWindow;
			count--;
		}
		for (G* g = gfree; g; g = g->next)
			if (g->stk.lo) {
				t->free(g->stk);
				g->stk = Stk{};
			}
	}
};

template <class C>
void BM_spawn(benchmark::State& state) {
	if (!begin(state)) return;
	auto T = std::make_unique<Ctx<C>>(seed_of(state));
	SpawnState<C> sp(T.get(), seed_of(state));
	for (int i = 0; i < 2 * kSpawnWindow; i++) sp.spawn();  // warm-up (untimed): window and free list filled
	T->warmed();
	timed_loop(state, [&] { sp.spawn(); });
	T->items = (uint64_t)state.iterations();
	finish_run<C>(state, T, [] {}, [&] { sp.drain(); });
}

// 6. thread churn (mimalloc's mleak pattern): a short-lived thread allocates
// stacks, frees half of them and exits without any explicit flush; its
// parent frees the other half after the join.
template <class C>
void BM_churn(benchmark::State& state) {
	if (!begin(state)) return;
	auto T = std::make_unique<Ctx<C>>(seed_of(state));
	Ctx<C>* t = T.get();
	Stk held[kChurnStacks];
	timed_loop(state, [&] {
		std::thread th([&] {
			for (int i = 0; i < kChurnStacks; i++) {
				held[i] = t->alloc(mix_size(i));
				touch(held[i]);
			}
			for (int i = 0; i < kChurnStacks; i += 2) t->free(held[i]);
		});
		th.join();
		for (int i = 1; i < kChurnStacks; i += 2) t->free(held[i]);
	});
	T->items = (uint64_t)state.iterations() * kChurnStacks;
	T->threads_started = (uint64_t)state.iterations();
	finish_run<C>(state, T, [] {}, [] {});
}

// ======================================================================

constexpr int kMaxThreads = 64;
static const size_t kPairSizes[] = {2 * KiB, 4 * KiB, 8 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1024 * KiB};

struct ContestantInfo {
	std::string name, kind, needs_malloc, note;
	bool available;
};
static std::vector<ContestantInfo> g_contestants;

template <class C>
void register_contestant(const char* kind) {
	const std::string n = C::name();
	auto reg = [&](const std::string& wl, auto fn, int min_threads, bool rings) {
		benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark((wl + "/" + n).c_str(), fn);
		b->Setup(rings ? setup<C, true> : setup<C, false>)->Teardown(teardown<C>);
		b->ThreadRange(min_threads, kMaxThreads)->UseRealTime();
	};
	for (size_t sz : kPairSizes) {
		benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(
		    ("pair_" + std::to_string(sz / KiB) + "KiB/" + n).c_str(), BM_pair<C>, sz);
		b->Setup(setup<C, false>)->Teardown(teardown<C>)->ThreadRange(1, kMaxThreads)->UseRealTime();
	}
	reg("hold", BM_hold<C>, 1, false);
	if (C::cross_thread_free) reg("handoff", BM_handoff<C>, 2, true);
	reg("server", BM_server<C>, 1, false);
	reg("spawn", BM_spawn<C>, 1, false);
	reg("churn", BM_churn<C>, 1, false);
	g_contestants.push_back({n, kind, C::needs_malloc, C::cross_thread_free ? "" : "not thread-safe: not run in handoff", true});
}

template <class C>
void consider_gostack() {
	const bool nocache = std::strstr(C::name(), "nocache") != nullptr;
	const gostack_backend_t b = std::strstr(C::name(), "lockfree") ? GOSTACK_BACKEND_LOCKFREE : GOSTACK_BACKEND_MUTEX;
	int e = gostack_probe(b, nocache);
	if (e == 0) {
		register_contestant<C>("gostack");
	} else {
		std::string why = std::string("gostack_allocator_new failed: ") + (e > 0 ? std::strerror(e) : "unknown error") +
		                  (e == ENOSYS ? " (ENOSYS: backend not built)" : "");
		g_contestants.push_back({C::name(), "gostack", "glibc", why, false});
	}
}

static void register_all() {
	consider_gostack<GostackLockfree>();
	consider_gostack<GostackMutex>();
	consider_gostack<GostackLockfreeNocache>();
	consider_gostack<GostackMutexNocache>();
	consider_gostack<GostackLockfreeNopercpu>();
	register_contestant<Glibc>("malloc");
	register_contestant<Jemalloc>("malloc");
	register_contestant<Tcmalloc>("malloc");
	register_contestant<Mimalloc>("malloc");
	register_contestant<Mmap>("os");
	register_contestant<BoostPooled>("boost");
	register_contestant<BoostProtected>("boost");
}

static std::string json_escape(const std::string& s) {
	std::string o;
	for (char c : s) {
		if (c == '"' || c == '\\') o += '\\';
		o += c;
	}
	return o;
}

static std::string params_json() {
	char buf[1024];
	std::snprintf(buf, sizeof buf,
	              "{\"hold_n\": %d, \"handoff_batch\": %d, \"handoff_ring_batches\": %u, \"server_slots\": %d, "
	              "\"server_round\": %d, \"spawn_window\": %d, \"spawn_stack\": %zu, \"spawn_deep_one_in\": %d, "
	              "\"spawn_touch\": %zu, \"spawn_deep_touch\": %zu, \"churn_stacks\": %d, \"max_threads\": %d, "
	              "\"latency_sample_one_in\": 64}",
	              kHoldN, kBatch, kRingCap, kServerSlots, kServerRound, kSpawnWindow, kSpawnStack, kSpawnDeepOneIn,
	              kSpawnTouch, kSpawnDeepTouch, kChurnStacks, kMaxThreads);
	return buf;
}

// Average cost of a first-touch page fault (mmap 16 MiB, write one byte per
// page): recorded in context.md because on a VM it can dwarf everything else.
static double page_fault_us() {
	const size_t n = 16u << 20, pg = (size_t)sysconf(_SC_PAGESIZE);
	char* p = static_cast<char*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	if (p == MAP_FAILED) return -1;
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < n; i += pg) p[i] = 1;
	uint64_t t1 = now_ns();
	::munmap(p, n);
	return (double)(t1 - t0) / 1000.0 / (double)(n / pg);
}

static void print_info() {
	std::printf("{\n  \"gostack_version\": \"%d.%d.%d\",\n  \"active_malloc\": \"%s\",\n", GOSTACK_VERSION_MAJOR,
	            GOSTACK_VERSION_MINOR, GOSTACK_VERSION_PATCH, active_malloc());
	std::printf("  \"clock_overhead_ns\": %" PRIu64 ",\n  \"hwm_resettable\": %s,\n", g_clock_overhead_ns,
	            g_hwm_resettable ? "true" : "false");
	std::printf("  \"page_fault_us\": %.2f,\n  \"depth_check\": true,\n", page_fault_us());
	std::printf("  \"params\": %s,\n  \"contestants\": [\n", params_json().c_str());
	for (size_t i = 0; i < g_contestants.size(); i++) {
		const auto& c = g_contestants[i];
		std::printf("    {\"name\": \"%s\", \"kind\": \"%s\", \"needs_malloc\": \"%s\", \"available\": %s, \"note\": \"%s\"}%s\n",
		            c.name.c_str(), c.kind.c_str(), c.needs_malloc.c_str(), c.available ? "true" : "false",
		            json_escape(c.note).c_str(), i + 1 < g_contestants.size() ? "," : "");
	}
	std::printf("  ]\n}\n");
}

// --depth-check FILE: the spawn workload once on a gostack-lockfree
// allocator with every stack sampled by the depth profile (config.profile
// 1, core/profile.c), then the profile held against what the coroutines
// wrote: kSpawnTouch on the 8 KiB stacks (plus the frames above it, within
// 1 KiB), nothing on the 16 KiB stacks (copystack's middle step frees them
// before they run), kSpawnDeepTouch on the 32 KiB ones (page granularity,
// plus a page for the frames). Writes the histograms as JSON (the driver
// plots them: depth.png); exit status 1 when a class is off.
static int depth_check(const char* path) {
	gostack_config_t cfg;
	std::memset(&cfg, 0, sizeof cfg);
	cfg.backend = GOSTACK_BACKEND_LOCKFREE;
	cfg.profile = 1;
	cfg.name = "depth-check";
	GostackLockfree::a = gostack_allocator_new(&cfg);
	if (!GostackLockfree::a) die("depth-check: gostack_allocator_new failed");
	const int spawns = 20000;
	{
		Ctx<GostackLockfree> T(1);
		SpawnState<GostackLockfree> sp(&T, 1);
		for (int i = 0; i < spawns; i++) sp.spawn();
		sp.drain();
	}
	gostack_thread_flush();
	gostack_stats_detail_t d;
	gostack_allocator_stats_detail(GostackLockfree::a, &d);
	struct Want { size_t size, lo, hi; const char* what; };
	const Want want[] = {
	    {kSpawnStack, kSpawnTouch, kSpawnTouch + 1024, "kSpawnTouch of alloca + memset, frames above it"},
	    {2 * kSpawnStack, 0, 0, "copystack's middle step: freed before it runs"},
	    {4 * kSpawnStack, kSpawnDeepTouch, kSpawnDeepTouch + 8192, "kSpawnDeepTouch, page granularity"},
	};
	FILE* f = std::fopen(path, "w");
	if (!f) die("depth-check: cannot write the JSON file");
	bool ok = true;
	std::fprintf(f, "{\"spawns\": %d, \"profile\": %u, \"buckets\": %d, \"classes\": [\n", spawns, d.profile,
	             GOSTACK_PROFILE_BUCKETS);
	bool first = true;
	for (int c = 0; c < GOSTACK_PROFILE_CLASSES; c++) {
		const gostack_depth_stats_t& x = d.depth[c];
		const Want* w = nullptr;
		for (const Want& v : want)
			if (v.size == x.size) w = &v;
		if (x.samples == 0 && !w) continue;
		// Every sample is 0 (a stack freed before a coroutine ran on it:
		// gfget's 8 KiB stack replaced by copystack for a deep one) or in
		// [lo, hi]: each non-empty bucket but the first meets [lo, hi];
		// the median and the max are in it.
		const size_t bw = x.size / GOSTACK_PROFILE_BUCKETS;
		bool cls_ok = w && x.samples > 0;
		for (int b = 1; cls_ok && b < GOSTACK_PROFILE_BUCKETS; b++)
			if (x.hist[b] != 0 && ((size_t)(b + 1) * bw < w->lo || (size_t)b * bw >= w->hi)) cls_ok = false;
		if (cls_ok && w->lo == 0) cls_ok = x.max == 0;
		else if (cls_ok) cls_ok = x.max >= w->lo && x.max <= w->hi && x.p50 >= w->lo && x.p50 <= w->hi;
		if (!cls_ok) ok = false;
		std::fprintf(f, "%s  {\"size\": %zu, \"samples\": %llu, \"p50\": %zu, \"p99\": %zu, \"max\": %zu, "
		             "\"written_lo\": %zu, \"written_hi\": %zu, \"what\": \"%s\", \"ok\": %s, \"hist\": [",
		             first ? "" : ",\n", x.size, (unsigned long long)x.samples, x.p50, x.p99, x.max, w ? w->lo : 0,
		             w ? w->hi : 0, w ? w->what : "unexpected class", cls_ok ? "true" : "false");
		for (int b = 0; b < GOSTACK_PROFILE_BUCKETS; b++)
			std::fprintf(f, "%s%llu", b ? ", " : "", (unsigned long long)x.hist[b]);
		std::fprintf(f, "]}");
		first = false;
		std::fprintf(stderr, "depth-check: %zu KiB stacks: %llu samples, p50 %zu, p99 %zu, max %zu bytes; written %zu..%zu: %s\n",
		             x.size >> 10, (unsigned long long)x.samples, x.p50, x.p99, x.max, w ? w->lo : 0, w ? w->hi : 0,
		             cls_ok ? "ok" : "MISMATCH");
	}
	std::fprintf(f, "\n], \"ok\": %s}\n", ok ? "true" : "false");
	std::fclose(f);
	(void)gostack_allocator_stats_print(GostackLockfree::a, 2);
	return ok ? 0 : 1;
}

}  // namespace gsb

int main(int argc, char** argv) {
	using namespace gsb;
	g_proc_base_rss = rss_bytes();
	g_clock_overhead_ns = calibrate_clock_overhead();
	g_hwm_resettable = reset_hwm();
	bool info = false;
	int w = 1;
	const char* depth_out = nullptr;
	for (int i = 1; i < argc; i++) {
		if (std::strcmp(argv[i], "--harness-info") == 0)
			info = true;
		else if (std::strcmp(argv[i], "--depth-check") == 0 && i + 1 < argc)
			depth_out = argv[++i];
		else
			argv[w++] = argv[i];
	}
	if (depth_out) return depth_check(depth_out);
	argc = w;
	register_all();
	if (info) {
		print_info();
		return 0;
	}
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
	benchmark::AddCustomContext("gostack_bench.active_malloc", active_malloc());
	benchmark::AddCustomContext("gostack_bench.clock_overhead_ns", std::to_string(g_clock_overhead_ns));
	benchmark::AddCustomContext("gostack_bench.hwm_resettable", g_hwm_resettable ? "true" : "false");
	benchmark::AddCustomContext("gostack_bench.process_base_rss_bytes", std::to_string(g_proc_base_rss));
	benchmark::AddCustomContext("gostack_bench.params", params_json());
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return g_failed ? 1 : 0;
}
