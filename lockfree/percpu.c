/*
 * percpu.c: the per-CPU tier of the lock-free pools, between the threads'
 * caches (Go's per-P stackcache, core/stackcache.c) and the global ck_stack
 * pools (stackpool.c, stacklarge.c). Per CPU and per class, a bounded array
 * of free stacks, operated with restartable sequences (rseq) on glibc's
 * registration: a refill or release is a few plain loads and stores on a
 * CPU-local line, with no lock, no atomic read-modify-write and no RCU read
 * section. Overflow and underflow go to the global pools, in transfer
 * batches where they can (transfer.c). Classes
 * (lockfree.h): the four small orders (bins of gclink pointers) and
 * stackLarge's lists of 32 KiB .. 1 MiB stacks (bins of span pointers, a
 * few spans each: Go's stackLarge has no cache at all, so every large
 * stack was a DCAS on a shared list and an RMW on its byte count).
 *
 * Correctness argument.
 *  - Who writes a CPU's bins: only threads running on that CPU, inside a
 *    critical section (CS) that is one asm statement: arm rseq_cs; compare
 *    the CPU read before the asm with rseq's cpu_id (jump to abort if it
 *    differs); test the CPU's `stopped` word; load count and check it;
 *    for a push store the item into slot[count] (above count: nobody reads
 *    it); then exactly one committing store, count +- 1, the last
 *    instruction of the range. A thread preempted, migrated or signalled
 *    inside the range is moved to the abort label by the kernel before it
 *    runs again (before a signal handler runs, too), so no other thread's
 *    commit on that CPU can fall between its loads and its commit: the
 *    load-check-commit is atomic with respect to every local writer, and
 *    there is no ABA (a pop never dereferences a stack: it copies a
 *    pointer out of the array).
 *  - The abort label (outside the range, after the 4-byte RSEQ_SIG the
 *    kernel checks, encoded as ud1 so that falling into it traps) retries,
 *    unless rseq's cpu_id is negative (the thread is not registered): then
 *    the operation goes to the global pools. The CPU number is read from
 *    cpu_id_start with a volatile load on every try.
 *  - Remote access (drain: decay, reclaim, delete, debug checks), always
 *    under gostack__decay_lock: store `stopped` = 1 (relaxed), then
 *    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, FLAG_CPU, cpu),
 *    which IPIs the CPU if a thread of ours runs there and returns after
 *    full barriers on both sides. A CS that committed before the IPI is
 *    visible after it; one in flight at the IPI is restarted at abort; one
 *    that starts after the IPI sees stopped = 1 (our store precedes the
 *    syscall's entry barrier) and takes the slow path; a thread of ours not
 *    running on the CPU at that moment aborts when it resumes (preemption
 *    is an rseq event) and sees stopped after the scheduler's barriers. So
 *    once membarrier returns, nobody writes the CPU's bins: the drainer
 *    reads them with plain loads, empties them, and clears `stopped` with a
 *    release store. Nothing else ever writes a word that a local commit
 *    writes. Statistics read counts with relaxed loads without stopping
 *    (a racy, clamped snapshot, as tcmalloc's Length does).
 *  - fork: drains run under the decay lock, which fork_prepare takes
 *    first, so no CPU is stopped in the child. The child inherits glibc's
 *    registration and the membarrier registration; the bins stay valid.
 *  - Unload: the library is never unmapped (-z nodelete), so a lazily
 *    left rseq_cs pointer never dangles.
 *  - ThreadSanitizer cannot see the asm: a stack handed to the tier is
 *    released before the push and acquired after the pop (lockfree.h).
 * Fallback: without glibc's rseq registration (__rseq_size 0:
 * GLIBC_TUNABLES=glibc.pthread.rseq=0, Valgrind, seccomp, old kernels),
 * without MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, on other architectures, or
 * with the tier turned off (config.no_percpu, GOSTACK_PERCPU=0), the
 * lock-free pools run as before: thread cache <-> global pools.
 *  - Large bins hold spans, whose metadata is never freed while the span
 *    is the allocator's (a span in a bin is mapped, counted as pooled, and
 *    its arena cannot be detached), so a pop needs no grace period either;
 *    the span's large_free flag is untouched by the tier (a double free is
 *    still caught by its test in stackfree).
 * Memory held: at most GOSTACK__PCPU_BIN_BYTES per order per CPU and
 * GOSTACK__PCPU_LARGE_BYTES (but one span at least) per large class per
 * CPU (options.h): 128 + 256 + 512 + 512 KiB small (the 2 and 4 KiB bins
 * are bounded by their 64 slots first), and 128 + 256 + 512 + 512 + 512 KiB
 * + 1 MiB large = 4.3 MiB per CPU at most, counted as pooled (percpu_bytes
 * breaks it out). Decay drains bins that did not change between two looks:
 * small ones at the scavenger's pool sweeps (idle for decay_ms to 2 x
 * decay_ms), large ones at every pass, onto stackLarge, whose own decay
 * then gives them back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lockfree.h"

#if defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)) && !defined(GOSTACK_NO_RSEQ)
#define PCPU_RSEQ 1
#include <linux/membarrier.h>
#include <sys/rseq.h>
#endif

static _Atomic int pcpu_state;   /* 0 not probed, 1 available, -1 not */
static int ncpu;                   /* possible CPUs (ids 0 .. ncpu - 1) */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

#ifdef PCPU_RSEQ
/* Highest possible CPU id + 1, from /sys (the mask may have holes). */
static int
possible_cpus(void)
{
	char buf[256];
	int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC), last = -1;
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n > 0) {
		buf[n] = 0;
		for (char *p = buf; *p;) {   /* "0-1", "0,2-7", ...: the last number */
			if (*p >= '0' && *p <= '9') {
				int v = 0;

				while (*p >= '0' && *p <= '9')
					v = v * 10 + (*p++ - '0');
				if (v > last)
					last = v;
			} else {
				p++;
			}
		}
	}
	long conf = sysconf(_SC_NPROCESSORS_CONF);

	return last + 1 > conf ? last + 1 : (int)conf;
}
#endif

/* Test builds: a yield between reading the CPU and the critical section
 * (the window where a migration must make the CS abort); lfstack.c. */
#define test_window() gostack__lf_test_window()

#ifdef PCPU_RSEQ
/* glibc's __rseq_offset, copied by the probe before pcpu_state's release
 * store publishes the tier (a process constant; a fork child keeps it).
 * This thread's struct rseq is at %fs:rseq_off (%fs's base is the thread
 * pointer on x86-64), so the sections below address its fields with one
 * segment-relative operand: no load of the thread pointer, no GOT load of
 * the offset, no add. */
static ptrdiff_t rseq_off;

/* Volatile loads of this thread's cpu_id_start (offset 0) and cpu_id
 * (offset 4): the kernel rewrites them behind the compiler's back. */
static inline uint32_t
rseq_cpu_start(void)
{
	uint32_t v;

	__asm__ __volatile__("movl %%fs:(%1), %0" : "=r"(v) : "r"(rseq_off));
	return v;
}

static inline int32_t
rseq_cpu_id(void)
{
	uint32_t v;

	__asm__ __volatile__("movl %%fs:4(%1), %0" : "=r"(v) : "r"(rseq_off));
	return (int32_t)v;
}
#endif

static void
probe(void)
{
	int ok = -1;

#ifdef PCPU_RSEQ
	ncpu = possible_cpus();
	rseq_off = __rseq_offset;
	if (__rseq_size > 0 && rseq_cpu_id() >= 0 && ncpu > 0 && ncpu <= 65536 &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0)
		ok = 1;
#endif
	/* Release: pairs with the acquire in gostack__pcpu_available() (ncpu
	 * is set before; pthread_once orders it too). */
	atomic_store_explicit(&pcpu_state, ok, memory_order_release);
}

/* At load: the probe registers with membarrier (a kernel-wide sync that
 * can take a while), which must not happen inside the default allocator's
 * pthread_once, where a fork from another thread would leave the child
 * waiting on a once that never ends (ThreadSanitizer's pthread_once does
 * not reset a once in progress at fork as glibc's does). */
__attribute__((constructor)) static void
probe_at_load(void)
{
	pthread_once(&probe_once, probe);
}

bool
gostack__pcpu_available(void)
{
	pthread_once(&probe_once, probe);
	/* Acquire: pairs with probe()'s release store. */
	return atomic_load_explicit(&pcpu_state, memory_order_acquire) > 0;
}

/* Slots a bin of class k uses: its bytes bound over the stack size, within
 * the slots it has; a large bin always keeps one. */
static uint32_t
pcpu_cap(int k)
{
	size_t bytes = k < GOSTACK_NUM_ORDERS ? GOSTACK__PCPU_BIN_BYTES : GOSTACK__PCPU_LARGE_BYTES;
	size_t slots = k < GOSTACK_NUM_ORDERS ? GOSTACK__PCPU_SLOTS : GOSTACK__PCPU_LARGE_SLOTS;
	size_t n = bytes / gostack__class_size(k);

	return (uint32_t)(n < 1 ? 1 : n > slots ? slots : n);
}

/* The byte offset of a bin (its count; the slots follow at offset 8) in a
 * CPU's struct: small order o, or large class GOSTACK_NUM_ORDERS + i.
 * Arithmetic on the class, with no load on the way to the count; the
 * critical sections take it as it is, everything else through bin_of. */
static inline size_t
small_off(int o)
{
	return offsetof(struct gostack__pcpu_cpu, bin) + (size_t)o * sizeof(struct gostack__pcpu_bin);
}

static inline size_t
large_off(unsigned i)
{
	return offsetof(struct gostack__pcpu_cpu, lbin) + (size_t)i * sizeof(struct gostack__pcpu_lbin);
}

/* The count of CPU c's bin at offset off. */
static inline uint32_t *
bin_at(struct gostack__pcpu_cpu *c, size_t off)
{
	return (uint32_t *)(void *)((char *)c + off);
}

/* A CPU's bin of class k: its count. */
static inline uint32_t *
bin_of(struct gostack__pcpu_cpu *c, int k)
{
	return bin_at(c, k < GOSTACK_NUM_ORDERS ? small_off(k) : large_off((unsigned)(k - GOSTACK_NUM_ORDERS)));
}

static inline void **
slots_of(struct gostack__pcpu_cpu *c, int k)
{
	return (void **)(void *)((char *)bin_of(c, k) + 8);   /* slot[] at offset 8 (lockfree.h) */
}

struct gostack__pcpu *
gostack__pcpu_create(void)
{
	if (!gostack__pcpu_available())
		return NULL;
	size_t bytes = sizeof(struct gostack__pcpu) + (size_t)ncpu * sizeof(struct gostack__pcpu_cpu);
	struct gostack__pcpu *pc = gostack__os_reserve((bytes + 4095) & ~(size_t)4095, 4096);

	if (pc == NULL)
		return NULL;   /* the pools run without the tier */
	pc->ncpu = ncpu;
	pc->bytes = (bytes + 4095) & ~(size_t)4095;
	pthread_mutex_init(&pc->drain_lock, NULL);
	for (int k = 0; k < GOSTACK__PCPU_CLASSES; k++)
		pc->cap[k] = pcpu_cap(k);
	return pc;
}

void
gostack__pcpu_destroy(struct gostack__pcpu *pc)
{
	if (pc != NULL)
		gostack__os_unmap(pc, pc->bytes);
}

#ifdef PCPU_RSEQ
/*
 * The critical sections. %[rs]: rseq_off (%fs:(%[rs]) is this thread's
 * struct rseq: cpu_id at 4, rseq_cs at 8); %[cpu]: the
 * CPU the addresses were computed for; %[bin]: that CPU's bin. Outputs go
 * through memory ("gcc asm goto does not allow outputs" on gcc 12).
 * 1: start_ip, 2: post_commit, 3: the descriptor, 4: abort_ip.
 */
#define PCPU_CS_BEGIN \
	".pushsection __rseq_cs, \"aw\"\n\t" \
	".balign 32\n\t" \
	"3:\n\t" \
	".long 0, 0\n\t" \
	".quad 1f, 2f - 1f, 4f\n\t" \
	".popsection\n\t" \
	".pushsection __rseq_cs_ptr_array, \"aw\"\n\t" \
	".quad 3b\n\t" \
	".popsection\n\t" \
	"leaq 3b(%%rip), %%rax\n\t" \
	"movq %%rax, %%fs:8(%[rs])\n\t" \
	"1:\n\t" \
	"cmpl %[cpu], %%fs:4(%[rs])\n\t" \
	"jnz 4f\n\t" \
	"cmpl $0, (%[stopped])\n\t" \
	"jnz %l[slow]\n\t"
#define PCPU_CS_END \
	"2:\n\t" \
	".pushsection __rseq_failure, \"ax\"\n\t" \
	".byte 0x0f, 0xb9, 0x3d\n\t" \
	".long 0x53053053\n\t" \
	"4:\n\t" \
	"jmp %l[abort]\n\t" \
	".popsection\n\t"

/*
 * Batch pop: m = min(count, k) stacks of this CPU's bin into out[0 .. m)
 * (slot[count - m .. count), copied before the commit), then the one
 * committing store count -= m; *got = m. Returns 1, 0 (empty or stopped:
 * go global), -1 (this thread is not registered). bin: count at offset 0,
 * slot[] at offset 8 (lockfree.h).
 */
static inline int
pcpu_pop_batch(struct gostack__pcpu *pc, size_t off, void **out, uint32_t k, uint32_t *got)
{
	for (;;) {
		uint32_t cpu = rseq_cpu_start();
		struct gostack__pcpu_cpu *c = &pc->cpu[cpu];
		uint32_t *b = bin_at(c, off);

		test_window();
		__asm__ __volatile__ goto(
		    PCPU_CS_BEGIN
		    "movl (%[bin]), %%ecx\n\t"          /* n = count */
		    "movl %[k], %%edx\n\t"
		    "cmpl %%edx, %%ecx\n\t"
		    "cmovbl %%ecx, %%edx\n\t"            /* m = min(n, k) */
		    "testl %%edx, %%edx\n\t"
		    "jz %l[slow]\n\t"
		    "movl %%edx, (%[got])\n\t"           /* private: rewritten by every try */
		    "subl %%edx, %%ecx\n\t"              /* n - m: the first slot copied */
		    "leaq 8(%[bin], %%rcx, 8), %%rsi\n\t"
		    "5:\n\t"
		    "decl %%edx\n\t"
		    "movq (%%rsi, %%rdx, 8), %%rax\n\t"
		    "movq %%rax, (%[out], %%rdx, 8)\n\t"
		    "jnz 5b\n\t"
		    "movl %%ecx, (%[bin])\n\t"           /* commit: count = n - m */
		    PCPU_CS_END
		    :
		    : [rs] "r"(rseq_off), [cpu] "r"(cpu), [stopped] "r"(&c->stopped), [bin] "r"(b), [out] "r"(out),
		      [k] "r"(k), [got] "r"(got)
		    : "memory", "cc", "rax", "rcx", "rdx", "rsi"
		    : slow, abort);
		__asm__ __volatile__("" ::: "memory");
		return 1;
	abort:
		__asm__ __volatile__("" ::: "memory");
		if (rseq_cpu_id() < 0)
			return -1;
		continue;
	slow:
		__asm__ __volatile__("" ::: "memory");
		return 0;
	}
}

/* Batch push: m = min(k, cap - count) of in[0 .. m) into slot[count ..
 * count + m), then the commit count += m; *put = m. Returns as the pop. */
static inline int
pcpu_push_batch(struct gostack__pcpu *pc, int cls, size_t off, void *const *in, uint32_t k, uint32_t *put)
{
	uint32_t cap = pc->cap[cls];

	for (;;) {
		uint32_t cpu = rseq_cpu_start();
		struct gostack__pcpu_cpu *c = &pc->cpu[cpu];
		uint32_t *b = bin_at(c, off);

		test_window();
		__asm__ __volatile__ goto(
		    PCPU_CS_BEGIN
		    "movl (%[bin]), %%ecx\n\t"          /* n = count */
		    "movl %[cap], %%edx\n\t"
		    "subl %%ecx, %%edx\n\t"              /* room = cap - n (count <= cap) */
		    "cmpl %[k], %%edx\n\t"
		    "cmoval %[k], %%edx\n\t"             /* m = min(room, k) */
		    "testl %%edx, %%edx\n\t"
		    "jz %l[slow]\n\t"
		    "movl %%edx, (%[put])\n\t"
		    "leaq 8(%[bin], %%rcx, 8), %%rsi\n\t"
		    "addl %%edx, %%ecx\n\t"              /* n + m */
		    "5:\n\t"
		    "decl %%edx\n\t"
		    "movq (%[in], %%rdx, 8), %%rax\n\t"
		    "movq %%rax, (%%rsi, %%rdx, 8)\n\t"  /* above count: nobody reads them yet */
		    "jnz 5b\n\t"
		    "movl %%ecx, (%[bin])\n\t"           /* commit: count = n + m */
		    PCPU_CS_END
		    :
		    : [rs] "r"(rseq_off), [cpu] "r"(cpu), [stopped] "r"(&c->stopped), [bin] "r"(b), [in] "r"(in),
		      [k] "r"(k), [cap] "r"(cap), [put] "r"(put)
		    : "memory", "cc", "rax", "rcx", "rdx", "rsi"
		    : slow, abort);
		__asm__ __volatile__("" ::: "memory");
		return 1;
	abort:
		__asm__ __volatile__("" ::: "memory");
		if (rseq_cpu_id() < 0)
			return -1;
		continue;
	slow:
		__asm__ __volatile__("" ::: "memory");
		return 0;
	}
}

/* The single-item forms (large bins; any refill or release of one stack:
 * 16 KiB stacks, no-cache operations): the same
 * sections without the batch arithmetic, about a third of a batch's cost
 * for one item. Pop: count == 0 (or stopped) goes global; else
 * *out = slot[count - 1], then the commit count - 1. Push: count == cap
 * goes global; else slot[count] = item (above count: nobody reads it),
 * then the commit count + 1. Return as the batch forms. */
static inline int
pcpu_pop_one(struct gostack__pcpu *pc, size_t off, void **out)
{
	for (;;) {
		uint32_t cpu = rseq_cpu_start();
		struct gostack__pcpu_cpu *c = &pc->cpu[cpu];
		uint32_t *b = bin_at(c, off);

		test_window();
		__asm__ __volatile__ goto(
		    PCPU_CS_BEGIN
		    "movl (%[bin]), %%ecx\n\t"          /* n = count */
		    "testl %%ecx, %%ecx\n\t"
		    "jz %l[slow]\n\t"
		    "decl %%ecx\n\t"
		    "movq 8(%[bin], %%rcx, 8), %%rax\n\t"
		    "movq %%rax, (%[out])\n\t"          /* private: rewritten by every try */
		    "movl %%ecx, (%[bin])\n\t"           /* commit: count = n - 1 */
		    PCPU_CS_END
		    :
		    : [rs] "r"(rseq_off), [cpu] "r"(cpu), [stopped] "r"(&c->stopped), [bin] "r"(b), [out] "r"(out)
		    : "memory", "cc", "rax", "rcx"
		    : slow, abort);
		__asm__ __volatile__("" ::: "memory");
		return 1;
	abort:
		__asm__ __volatile__("" ::: "memory");
		if (rseq_cpu_id() < 0)
			return -1;
		continue;
	slow:
		__asm__ __volatile__("" ::: "memory");
		return 0;
	}
}

static inline int
pcpu_push_one(struct gostack__pcpu *pc, int cls, size_t off, void *item)
{
	uint32_t cap = pc->cap[cls];

	for (;;) {
		uint32_t cpu = rseq_cpu_start();
		struct gostack__pcpu_cpu *c = &pc->cpu[cpu];
		uint32_t *b = bin_at(c, off);

		test_window();
		__asm__ __volatile__ goto(
		    PCPU_CS_BEGIN
		    "movl (%[bin]), %%ecx\n\t"          /* n = count */
		    "cmpl %[cap], %%ecx\n\t"
		    "jae %l[slow]\n\t"                  /* full (count <= cap) */
		    "movq %[item], 8(%[bin], %%rcx, 8)\n\t"
		    "incl %%ecx\n\t"
		    "movl %%ecx, (%[bin])\n\t"           /* commit: count = n + 1 */
		    PCPU_CS_END
		    :
		    : [rs] "r"(rseq_off), [cpu] "r"(cpu), [stopped] "r"(&c->stopped), [bin] "r"(b), [item] "r"(item),
		      [cap] "r"(cap)
		    : "memory", "cc", "rax", "rcx"
		    : slow, abort);
		__asm__ __volatile__("" ::: "memory");
		return 1;
	abort:
		__asm__ __volatile__("" ::: "memory");
		if (rseq_cpu_id() < 0)
			return -1;
		continue;
	slow:
		__asm__ __volatile__("" ::: "memory");
		return 0;
	}
}
#else
static inline int
pcpu_pop_batch(struct gostack__pcpu *pc, size_t off, void **out, uint32_t k, uint32_t *got)
{
	(void)pc; (void)off; (void)out; (void)k; (void)got;
	return -1;
}
static inline int
pcpu_push_batch(struct gostack__pcpu *pc, int o, size_t off, void *const *in, uint32_t k, uint32_t *put)
{
	(void)pc; (void)o; (void)off; (void)in; (void)k; (void)put;
	return -1;
}
static inline int
pcpu_pop_one(struct gostack__pcpu *pc, size_t off, void **out)
{
	(void)pc; (void)off; (void)out;
	return -1;
}
static inline int
pcpu_push_one(struct gostack__pcpu *pc, int o, size_t off, void *item)
{
	(void)pc; (void)o; (void)off; (void)item;
	return -1;
}
#endif

/* A batch moves at most this many stacks in one CS (a refill is at most
 * 8: Go's half cache of 2 KiB stacks). */
#define PCPU_BATCH 16

size_t
gostack__pcpu_take(struct gostack__pcpu *pc, int order, void **out, size_t k)
{
	uint32_t got = 0;

	if (k == 1) {   /* Go's refill of 16 KiB stacks, a no-cache alloc: the single-item section */
		if (pcpu_pop_one(pc, small_off(order), out) <= 0)
			return 0;
		tsan_acquire(out[0]);
		return 1;
	}
	if (k > PCPU_BATCH)
		k = PCPU_BATCH;
	if (pcpu_pop_batch(pc, small_off(order), out, (uint32_t)k, &got) <= 0)
		return 0;
	for (uint32_t i = 0; i < got; i++)
		tsan_acquire(out[i]);
	return got;
}

size_t
gostack__pcpu_give(struct gostack__pcpu *pc, int order, void *const *in, size_t k)
{
	uint32_t put = 0;

	if (k == 1) {   /* a 16 KiB release, a no-cache free */
		tsan_release(in[0]);
		return pcpu_push_one(pc, order, small_off(order), in[0]) > 0 ? 1 : 0;
	}
	if (k > PCPU_BATCH)
		k = PCPU_BATCH;
	for (uint32_t i = 0; i < k; i++)
		tsan_release(in[i]);
	if (pcpu_push_batch(pc, order, small_off(order), in, (uint32_t)k, &put) <= 0)
		return 0;
	return put;
}

int
gostack__pcpu_ncpu(const struct gostack__pcpu *pc)
{
	return pc->ncpu;
}

/* stackLarge's list log2npages (32 KiB .. 1 MiB stacks) is class
 * GOSTACK_NUM_ORDERS + log2npages - GOSTACK__PCPU_LARGE_MIN (sizeclass.h's
 * numbering); other lists have no bin. A miss is a tail call to the global
 * list (stacklarge.c). */
struct gostack__span *
gostack__pcpu_large_get(struct gostack__lf_pools *lp, unsigned log2npages)
{
	unsigned i = log2npages - GOSTACK__PCPU_LARGE_MIN;   /* wraps below */
	void *s;

	if (i < GOSTACK__PCPU_LARGE_CLASSES && pcpu_pop_one(lp->pcpu, large_off(i), &s) > 0) {
		tsan_acquire(s);
		return s;
	}
	return gostack__lf_large_get_global(lp, log2npages);
}

void
gostack__pcpu_large_put(struct gostack__lf_pools *lp, struct gostack__span *s)
{
	unsigned i = gostack__large_list(s) - GOSTACK__PCPU_LARGE_MIN;

	if (i < GOSTACK__PCPU_LARGE_CLASSES) {
		tsan_release(s);
		if (pcpu_push_one(lp->pcpu, GOSTACK_NUM_ORDERS + (int)i, large_off(i), s) > 0)
			return;
	}
	gostack__lf_large_put_global(lp, s);
}

/* Stop CPU c and wait until no CS of ours runs on it (file comment). */
static void
stop_cpu(struct gostack__pcpu *pc, int c)
{
	atomic_store_explicit(&pc->cpu[c].stopped, 1, memory_order_relaxed);
#ifdef PCPU_RSEQ
	/* A full barrier on both sides and the IPI: the membarrier pairs of the
	 * file comment. Failure (it was registered at probe) would be a kernel
	 * bug: a fence on every CPU is the fallback. */
	if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, c) != 0 &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0) != 0)
		gostack__throw("membarrier(PRIVATE_EXPEDITED_RSEQ) failed: errno %d", errno);
#endif
}

static void
start_cpu(struct gostack__pcpu *pc, int c)
{
	/* Release: the drainer's emptying of the bins happens before any CS
	 * that sees stopped = 0 (its load inside the CS is ordered after by
	 * x86-TSO; the C side pairs with nothing else). */
	atomic_store_explicit(&pc->cpu[c].stopped, 0, memory_order_release);
}

size_t
gostack__pcpu_drain(struct gostack__pcpu *pc, bool all, int first, int end,
    void (*put)(void *, int, void *const *, uint32_t), void *arg)
{
	size_t moved = 0;

	pthread_mutex_lock(&pc->drain_lock);   /* one drainer at a time */
	for (int c = 0; c < pc->ncpu; c++) {
		struct gostack__pcpu_cpu *cpu = &pc->cpu[c];
		bool take[GOSTACK__PCPU_CLASSES], any = false;

		for (int k = first; k < end; k++) {
			uint32_t n = __atomic_load_n(bin_of(cpu, k), __ATOMIC_RELAXED);

			/* Decay: only bins that stood still since the last look. */
			take[k] = n != 0 && (all || n == cpu->seen[k]);
			cpu->seen[k] = n;
			any |= take[k];
		}
		if (!any)
			continue;
		stop_cpu(pc, c);
		for (int k = first; k < end; k++) {
			uint32_t *count = bin_of(cpu, k), n = __atomic_load_n(count, __ATOMIC_RELAXED);
			void *items[GOSTACK__PCPU_SLOTS];

			if (!take[k] || n == 0)
				continue;
			if (n > pc->cap[k])
				gostack__throw("per-CPU bin %d of CPU %d holds %u, over its %u", k, c, n, pc->cap[k]);
			memcpy(items, slots_of(cpu, k), n * sizeof items[0]);
			for (uint32_t i = 0; i < n; i++)
				tsan_acquire(items[i]);
			__atomic_store_n(count, 0, __ATOMIC_RELAXED);
			cpu->seen[k] = 0;
			put(arg, k, items, n);
			moved += (size_t)n * gostack__class_size(k);
		}
		start_cpu(pc, c);
	}
	pthread_mutex_unlock(&pc->drain_lock);
	return moved;
}

void gostack__pcpu_fork_prepare(struct gostack__pcpu *pc) { if (pc != NULL) pthread_mutex_lock(&pc->drain_lock); }
void gostack__pcpu_fork_parent(struct gostack__pcpu *pc) { if (pc != NULL) pthread_mutex_unlock(&pc->drain_lock); }

size_t
gostack__pcpu_bytes(const struct gostack__pcpu *pc, int first, int end)
{
	size_t total = 0;

	for (int c = 0; c < pc->ncpu; c++) {
		for (int k = first; k < end; k++) {
			uint32_t n = __atomic_load_n(bin_of((struct gostack__pcpu_cpu *)&pc->cpu[c], k), __ATOMIC_RELAXED);

			if (n > pc->cap[k])
				n = pc->cap[k];   /* a torn snapshot: clamp */
			total += (size_t)n * gostack__class_size(k);
		}
	}
	return total;
}
