/*
 * boost_fiber_test: boost::context::fiber on gostack stacks through
 * gostack_cxx::boost_stack_allocator (include/gostack.hpp).
 *
 * - the allocator itself: sizes, rounding, alignment, bad_alloc, a private
 *   gostack allocator;
 * - the peak stack depth of one fiber of this test (stack painted before the
 *   fiber starts, scanned after it ends), which must leave room in 8 KiB;
 * - THREADS threads each create FIBERS fibers with
 *   std::allocator_arg, gostack_cxx::boost_stack_allocator(8192), all alive at
 *   once; each fiber stamps STAMP bytes of its own stack and switches back and
 *   forth ROUNDS times, checking its stamp after every switch. Half way
 *   through, every thread takes over the fibers of its neighbour: it resumes
 *   them to the end (their stacks are freed on a thread that did not allocate
 *   them) or, for every UNWIND_EVERY-th one, destroys them while suspended
 *   (Boost unwinds them with forced_unwind, then frees the stack);
 * - at the end, after gostack_thread_flush() in every thread, the default
 *   allocator's stats must show allocs == frees == the number of fibers,
 *   inuse_bytes == 0 and cached_bytes == 0, and after reclaim mapped_bytes == 0.
 *
 * Prints one line per failed check and "N passed, N failed" last; exits 1 on
 * any failure.
 */
#include <boost/context/fiber.hpp>

#include <gostack.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace ctx = boost::context;

static const unsigned THREADS = 4;
static const unsigned FIBERS = 1000;     /* per thread, all alive at once */
static const unsigned ROUNDS = 6;        /* switches back to the creator per fiber */
static const unsigned HANDOVER = 3;      /* rounds run by the creating thread */
static const unsigned UNWIND_EVERY = 7;  /* fibers destroyed while suspended */
static const std::size_t STAMP = 3072;   /* bytes of its own stack each fiber touches; forced
                                            unwinding takes about 3.5 KiB more (see test_depth) */
static const std::size_t STACK = 8192;

static std::atomic<unsigned> passed{0}, failed{0};

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (cond) {                                                    \
			passed++;                                              \
		} else {                                                       \
			failed++;                                              \
			std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__,    \
			    #cond);                                            \
			std::printf(__VA_ARGS__);                              \
			std::printf("\n");                                     \
			std::fflush(stdout);                                   \
		}                                                              \
	} while (0)

/* ---- the fibers ------------------------------------------------------- */

struct fiber_state {
	unsigned id = 0;
	unsigned rounds = 0;     /* rounds completed inside the fiber */
	unsigned bad = 0;        /* stamp mismatches seen inside the fiber */
	bool finished = false;
	bool unwound = false;
	std::uintptr_t lo = 0, hi = 0;   /* bounds of the stamp */
};

static unsigned char
pattern(unsigned id, unsigned round, std::size_t i)
{
	return static_cast<unsigned char>((id * 131u + round * 17u + i) ^ (i >> 8));
}

/* noinline so that the stamp is a real frame on the fiber's stack */
__attribute__((noinline)) static void
stamp(volatile unsigned char *buf, unsigned id, unsigned round)
{
	for (std::size_t i = 0; i < STAMP; i++)
		buf[i] = pattern(id, round, i);
}

__attribute__((noinline)) static bool
check(const volatile unsigned char *buf, unsigned id, unsigned round)
{
	for (std::size_t i = 0; i < STAMP; i++)
		if (buf[i] != pattern(id, round, i))
			return false;
	return true;
}

/* Marks the fiber unwound when Boost's forced_unwind passes through it. */
struct unwind_sentinel {
	fiber_state *st;
	~unwind_sentinel()
	{
		if (!st->finished)
			st->unwound = true;
	}
};

static ctx::fiber
make_fiber(fiber_state *st, std::size_t stack_size)
{
	return ctx::fiber(std::allocator_arg,
	    gostack_cxx::boost_stack_allocator(stack_size),
	    [st](ctx::fiber &&caller) {
		    unwind_sentinel sentinel{st};
		    volatile unsigned char buf[STAMP];
		    st->lo = reinterpret_cast<std::uintptr_t>(&buf[0]);
		    st->hi = st->lo + STAMP;
		    for (unsigned r = 0; r < ROUNDS; r++) {
			    stamp(buf, st->id, r);
			    caller = std::move(caller).resume();
			    if (!check(buf, st->id, r))
				    st->bad++;
			    st->rounds++;
		    }
		    st->finished = true;
		    return std::move(caller);
	    });
}

/* ---- the threads ------------------------------------------------------ */

class barrier {
public:
	explicit barrier(unsigned n) : n_(n) {}
	void
	wait()
	{
		std::unique_lock<std::mutex> lk(m_);
		unsigned gen = gen_;
		if (++count_ == n_) {
			count_ = 0;
			gen_++;
			cv_.notify_all();
		} else {
			cv_.wait(lk, [&] { return gen != gen_; });
		}
	}

private:
	std::mutex m_;
	std::condition_variable cv_;
	unsigned n_, count_ = 0, gen_ = 0;
};

struct thread_slot {
	std::vector<fiber_state> states;
	std::vector<ctx::fiber> fibers;
	unsigned resumed_bad = 0;   /* fibers found in the wrong state by their runner */
	unsigned overlaps = 0;      /* stamps of two live fibers overlapping */
};

static thread_slot slots[THREADS];
static barrier start_gate(THREADS), handover_gate(THREADS), done_gate(THREADS);

static void
worker(unsigned t)
{
	thread_slot &mine = slots[t];
	mine.states.resize(FIBERS);
	mine.fibers.reserve(FIBERS);
	start_gate.wait();

	/* Create them all, so FIBERS stacks of this thread are live at once. */
	for (unsigned i = 0; i < FIBERS; i++) {
		mine.states[i].id = t * FIBERS + i;
		mine.fibers.push_back(make_fiber(&mine.states[i], STACK));
	}
	/* The first HANDOVER rounds here, interleaved across all fibers. */
	for (unsigned r = 0; r < HANDOVER; r++)
		for (unsigned i = 0; i < FIBERS; i++) {
			mine.fibers[i] = std::move(mine.fibers[i]).resume();
			if (!mine.fibers[i] || mine.states[i].rounds != r)
				mine.resumed_bad++;
		}
	/* Live stamps must not overlap: the stacks are distinct. */
	{
		std::vector<std::pair<std::uintptr_t, std::uintptr_t>> r;
		for (unsigned i = 0; i < FIBERS; i++)
			r.emplace_back(mine.states[i].lo, mine.states[i].hi);
		std::sort(r.begin(), r.end());
		for (std::size_t i = 1; i < r.size(); i++)
			if (r[i].first < r[i - 1].second)
				mine.overlaps++;
	}
	handover_gate.wait();

	/* The rest on the neighbour's fibers: frees on another thread. */
	thread_slot &theirs = slots[(t + 1) % THREADS];
	for (unsigned i = 0; i < FIBERS; i++)
		if (i % UNWIND_EVERY == 0)
			theirs.fibers[i] = ctx::fiber();   /* forced unwind, then deallocate */
	for (unsigned r = HANDOVER; r <= ROUNDS; r++)
		for (unsigned i = 0; i < FIBERS; i++) {
			if (i % UNWIND_EVERY == 0)
				continue;
			theirs.fibers[i] = std::move(theirs.fibers[i]).resume();
			bool end = r == ROUNDS;
			if (static_cast<bool>(theirs.fibers[i]) == end)
				theirs.resumed_bad++;   /* must end exactly after ROUNDS */
		}
	done_gate.wait();
	gostack_thread_flush();
}

/* ---- the allocator alone ---------------------------------------------- */

static void
test_allocator()
{
	gostack_stats_t s0, s1;
	gostack_allocator_stats(gostack_default_allocator(), &s0);

	gostack_cxx::boost_stack_allocator a8(8192);
	ctx::stack_context sc = a8.allocate();
	std::uintptr_t sp = reinterpret_cast<std::uintptr_t>(sc.sp);
	CHECK(sc.size == 8192, "size %zu", sc.size);
	CHECK(sp % 4096 == 0 && sp != 0, "sp %#lx", static_cast<unsigned long>(sp));
	std::memset(reinterpret_cast<void *>(sp - sc.size), 0x5a, sc.size);
	gostack_allocator_stats(gostack_default_allocator(), &s1);
	CHECK(s1.allocs == s0.allocs + 1 && s1.inuse_bytes == s0.inuse_bytes + 8192,
	    "allocs %llu inuse %zu", static_cast<unsigned long long>(s1.allocs),
	    s1.inuse_bytes);
	a8.deallocate(sc);
	CHECK(sc.sp == nullptr && sc.size == 0, "stack_context not cleared");
	gostack_allocator_stats(gostack_default_allocator(), &s1);
	CHECK(s1.frees == s0.frees + 1 && s1.inuse_bytes == s0.inuse_bytes,
	    "frees %llu inuse %zu", static_cast<unsigned long long>(s1.frees),
	    s1.inuse_bytes);

	/* gostack's round2: 5000 -> 8192; 100 -> 2048; 40000 -> 65536 (stackLarge) */
	const std::size_t asks[][2] = {{5000, 8192}, {100, 2048}, {40000, 65536}};
	for (const auto &ask : asks) {
		gostack_cxx::boost_stack_allocator a(ask[0]);
		ctx::stack_context c = a.allocate();
		CHECK(c.size == ask[1], "asked %zu got %zu", ask[0], c.size);
		a.deallocate(c);
	}

	bool threw = false;
	try {
		gostack_cxx::boost_stack_allocator(0).allocate();
	} catch (const std::bad_alloc &) {
		threw = true;
	}
	CHECK(threw, "size 0 must throw std::bad_alloc");
	threw = false;
	try {
		gostack_cxx::boost_stack_allocator(GOSTACK_MAX_SIZE + 1).allocate();
	} catch (const std::bad_alloc &) {
		threw = true;
	}
	CHECK(threw, "size above GOSTACK_MAX_SIZE must throw std::bad_alloc");

	/* A private allocator: its stats move, the default's do not. */
	gostack_allocator_t *priv = gostack_allocator_new(nullptr);
	CHECK(priv != nullptr, "gostack_allocator_new");
	if (priv != nullptr) {
		gostack_allocator_stats(gostack_default_allocator(), &s0);
		{
			fiber_state st;
			ctx::fiber f(std::allocator_arg,
			    gostack_cxx::boost_stack_allocator(4096, priv),
			    [&st](ctx::fiber &&c) {
				    st.finished = true;
				    return std::move(c);
			    });
			gostack_stats_t ps;
			gostack_allocator_stats(priv, &ps);
			CHECK(ps.allocs == 1 && ps.inuse_bytes == 4096,
			    "private allocs %llu inuse %zu",
			    static_cast<unsigned long long>(ps.allocs), ps.inuse_bytes);
			f = std::move(f).resume();
			CHECK(!f && st.finished, "fiber on a private allocator did not finish");
		}
		gostack_stats_t ps;
		gostack_allocator_stats(priv, &ps);
		CHECK(ps.frees == 1 && ps.inuse_bytes == 0, "private frees %llu inuse %zu",
		    static_cast<unsigned long long>(ps.frees), ps.inuse_bytes);
		gostack_allocator_stats(gostack_default_allocator(), &s1);
		CHECK(s1.allocs == s0.allocs, "default allocator used instead of the private one");
		CHECK(gostack_allocator_delete(priv) == 0, "delete of an idle private allocator");
	}
}

/* Peak stack depth of this test's fiber body, normal end and forced unwind:
 * the stack is painted in allocate() and scanned in deallocate(). */
struct painting_allocator {
	gostack_cxx::boost_stack_allocator inner;
	std::size_t *peak;
	ctx::stack_context
	allocate()
	{
		ctx::stack_context sc = inner.allocate();
		std::memset(static_cast<char *>(sc.sp) - sc.size, 0xa5, sc.size);
		return sc;
	}
	void
	deallocate(ctx::stack_context &sc) noexcept
	{
		const unsigned char *lo =
		    static_cast<const unsigned char *>(sc.sp) - sc.size;
#if defined(BOOST_USE_VALGRIND)
		/* read a dead fiber's stack from outside: below its last stack
		 * pointer memcheck has it no-access */
		VALGRIND_MAKE_MEM_DEFINED(lo, sc.size);
#endif
		std::size_t untouched = 0;
		while (untouched < sc.size && lo[untouched] == 0xa5)
			untouched++;
		if (sc.size - untouched > *peak)
			*peak = sc.size - untouched;
		inner.deallocate(sc);
	}
};

static void
test_depth()
{
	for (int unwind = 0; unwind < 2; unwind++) {
		std::size_t peak = 0;
		fiber_state st;
		st.id = 12345;
		{
			ctx::fiber f(std::allocator_arg,
			    painting_allocator{
				gostack_cxx::boost_stack_allocator(STACK), &peak},
			    [&st](ctx::fiber &&caller) {
				    unwind_sentinel sentinel{&st};
				    volatile unsigned char buf[STAMP];
				    for (unsigned r = 0; r < ROUNDS; r++) {
					    stamp(buf, st.id, r);
					    caller = std::move(caller).resume();
					    if (!check(buf, st.id, r))
						    st.bad++;
				    }
				    st.finished = true;
				    return std::move(caller);
			    });
			f = std::move(f).resume();
			if (unwind) {
				f = ctx::fiber();
				CHECK(st.unwound, "fiber not unwound");
			} else {
				while (f)
					f = std::move(f).resume();
				CHECK(st.finished && st.bad == 0,
				    "fiber did not finish cleanly");
			}
		}
		std::printf("peak stack depth of a fiber that %s (stamp %zu bytes): "
			    "%zu of %zu bytes\n",
		    unwind ? "is unwound" : "returns", STAMP, peak, STACK);
		CHECK(peak > STAMP && peak + 512 <= STACK,
		    "peak depth %zu: want more than %zu and 512 bytes to spare below %zu",
		    peak, STAMP, STACK);
	}
}

int
main()
{
	test_allocator();
	test_depth();

	gostack_thread_flush();
	gostack_stats_t before;
	gostack_allocator_stats(gostack_default_allocator(), &before);

	std::vector<std::thread> threads;
	for (unsigned t = 0; t < THREADS; t++)
		threads.emplace_back(worker, t);
	for (auto &th : threads)
		th.join();

	unsigned bad = 0, rounds_short = 0, finished = 0, unwound = 0, resumed_bad = 0,
		 overlaps = 0, alive = 0;
	for (unsigned t = 0; t < THREADS; t++) {
		resumed_bad += slots[t].resumed_bad;
		overlaps += slots[t].overlaps;
		for (unsigned i = 0; i < FIBERS; i++) {
			const fiber_state &st = slots[t].states[i];
			bad += st.bad;
			if (slots[t].fibers[i])
				alive++;
			if (i % UNWIND_EVERY == 0) {
				unwound += st.unwound && !st.finished;
				if (st.rounds != HANDOVER - 1)   /* unwound at a resume point */
					rounds_short++;
			} else {
				finished += st.finished && !st.unwound;
				if (st.rounds != ROUNDS)
					rounds_short++;
			}
		}
	}
	const unsigned total = THREADS * FIBERS;
	const unsigned n_unwind = THREADS * ((FIBERS + UNWIND_EVERY - 1) / UNWIND_EVERY);
	CHECK(bad == 0, "%u stamp mismatches after a switch", bad);
	CHECK(overlaps == 0, "%u overlapping live stacks", overlaps);
	CHECK(resumed_bad == 0, "%u fibers in the wrong state after resume", resumed_bad);
	CHECK(rounds_short == 0, "%u fibers ran the wrong number of rounds", rounds_short);
	CHECK(finished == total - n_unwind, "%u of %u fibers finished", finished,
	    total - n_unwind);
	CHECK(unwound == n_unwind, "%u of %u fibers unwound", unwound, n_unwind);
	CHECK(alive == 0, "%u fibers still alive", alive);

	gostack_thread_flush();
	gostack_allocator_t *a = gostack_default_allocator();
	gostack_stats_t s;
	gostack_allocator_stats(a, &s);
	std::printf("after %u fibers on %u threads: allocs=%llu frees=%llu "
		    "inuse_bytes=%zu cached_bytes=%zu pooled_bytes=%zu mapped_bytes=%zu\n",
	    total, THREADS, static_cast<unsigned long long>(s.allocs),
	    static_cast<unsigned long long>(s.frees), s.inuse_bytes, s.cached_bytes,
	    s.pooled_bytes, s.mapped_bytes);
	CHECK(s.allocs == s.frees, "allocs %llu != frees %llu",
	    static_cast<unsigned long long>(s.allocs),
	    static_cast<unsigned long long>(s.frees));
	CHECK(s.allocs - before.allocs == total, "%llu stacks allocated for %u fibers",
	    static_cast<unsigned long long>(s.allocs - before.allocs), total);
	CHECK(s.inuse_bytes == 0, "inuse_bytes %zu", s.inuse_bytes);
	CHECK(s.cached_bytes == 0, "cached_bytes %zu after every thread flushed",
	    s.cached_bytes);
	CHECK(s.inuse_bytes + s.cached_bytes + s.pooled_bytes == s.mapped_bytes,
	    "inuse + cached + pooled != mapped");
	std::size_t released = gostack_allocator_reclaim(a);
	gostack_allocator_stats(a, &s);
	std::printf("reclaim released %zu bytes; mapped_bytes=%zu\n", released,
	    s.mapped_bytes);
	CHECK(s.mapped_bytes == 0 && s.pooled_bytes == 0,
	    "after reclaim: mapped_bytes %zu pooled_bytes %zu", s.mapped_bytes,
	    s.pooled_bytes);

	std::printf("%u passed, %u failed\n", passed.load(), failed.load());
	return failed.load() == 0 ? 0 : 1;
}
