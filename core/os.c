/*
 * os.c: every call gostack makes to the OS for memory, and Go's throw.
 * Reservations are readable and writable from the start and committed
 * lazily (MAP_NORESERVE): a stack's pages cost nothing until touched.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define GOSTACK__MAP_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)

#ifdef GOSTACK_TEST_HOOKS
/*
 * Test builds only: fault injection at every OS memory request (arenas, the
 * arena table, metadata chunks, guards).
 * gostack__test_fault_nth = N fails the Nth request from now (then 0);
 * gostack__test_fault_rate = R fails about one request in R.
 */
_Atomic long gostack__test_fault_nth, gostack__test_fault_rate, gostack__test_faults;
_Atomic long gostack__test_os_calls;   /* requests seen */
_Atomic long gostack__test_decommits;  /* madvise(MADV_DONTNEED) calls */

static bool
fault(void)
{
	long nth = atomic_load_explicit(&gostack__test_fault_nth, memory_order_relaxed);
	long rate = atomic_load_explicit(&gostack__test_fault_rate, memory_order_relaxed);
	static _Atomic unsigned long seq;

	atomic_fetch_add_explicit(&gostack__test_os_calls, 1, memory_order_relaxed);
	if (nth > 0 && atomic_fetch_sub_explicit(&gostack__test_fault_nth, 1, memory_order_relaxed) == 1)
		goto hit;
	if (rate > 0) {
		unsigned long x = atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed) * 0x9e3779b97f4a7c15ul;

		if ((x >> 40) % (unsigned long)rate == 0)
			goto hit;
	}
	return false;
hit:
	atomic_fetch_add_explicit(&gostack__test_faults, 1, memory_order_relaxed);
	errno = ENOMEM;
	return true;
}
#else
#define fault() false
#endif

void *
gostack__os_reserve(size_t size, size_t align)
{
	size_t len = size + align;

	if (fault())
		return NULL;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, GOSTACK__MAP_FLAGS, -1, 0);

	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	/* Trim to the aligned part: one mapping of exactly `size` remains. */
	uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
	size_t head = a - (uintptr_t)p, tail = len - head - size;

	if (head != 0)
		munmap(p, head);
	if (tail != 0)
		munmap((char *)a + size, tail);
	return (void *)a;
}

void
gostack__os_unmap(void *p, size_t size)
{
	if (munmap(p, size) != 0)
		gostack__throw("munmap(%p, %zu) failed: errno %d", p, size, errno);
}

void
gostack__os_decommit(void *p, size_t size)
{
	/* Failure only costs RSS; the range stays valid either way. */
#ifdef GOSTACK_TEST_HOOKS
	atomic_fetch_add_explicit(&gostack__test_decommits, 1, memory_order_relaxed);
#endif
	(void)madvise(p, size, MADV_DONTNEED);
}

int
gostack__os_resident(void *p, size_t size, unsigned char *vec)
{
	return mincore(p, size, vec);
}

void
gostack__os_nohugepage(void *p, size_t size)
{
	/* Failure (a kernel without THP) changes nothing. */
	if (!gostack__opt(GOSTACK__OPT_THP))
		(void)madvise(p, size, MADV_NOHUGEPAGE);
}

size_t
gostack__os_page(void)
{
	static _Atomic size_t page;
	size_t p = atomic_load_explicit(&page, memory_order_relaxed);

	if (p == 0) {
		long v = sysconf(_SC_PAGESIZE);

		p = v > 0 ? (size_t)v : 4096;
		atomic_store_explicit(&page, p, memory_order_relaxed);
	}
	return p;
}

/* Linux 6.13's lightweight guard regions (include/uapi/asm-generic/mman-common.h). */
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

_Atomic int gostack__os_guard_mode;

bool
gostack__os_guard(void *p, size_t size)
{
	int mode = atomic_load_explicit(&gostack__os_guard_mode, memory_order_relaxed);

	if (fault())
		return false;
	if (mode != 2) {
		/* Guard markers live in the page tables: no VMA split, so no
		 * mapping per guard (vm.max_map_count is never the limit). */
		if (madvise(p, size, MADV_GUARD_INSTALL) == 0) {
			if (mode == 0)
				atomic_store_explicit(&gostack__os_guard_mode, 1, memory_order_relaxed);
			return true;
		}
		if (errno != EINVAL || mode == 1) {
			errno = ENOMEM;
			return false;
		}
		/* EINVAL on first use: a kernel before 6.13. */
		atomic_store_explicit(&gostack__os_guard_mode, 2, memory_order_relaxed);
	}
	if (mprotect(p, size, PROT_NONE) == 0)
		return true;
	if (errno == ENOMEM) {
		static _Atomic bool warned;

		if (!atomic_exchange_explicit(&warned, true, memory_order_relaxed))
			gostack__warn("guard pages: mprotect failed with ENOMEM: the process has too many "
			    "mappings (each mprotect guard is one; raise the vm.max_map_count sysctl, or use "
			    "Linux >= 6.13, whose MADV_GUARD_INSTALL needs none)");
	}
	errno = ENOMEM;
	return false;
}

void
gostack__os_unguard(void *p, size_t size)
{
	if (atomic_load_explicit(&gostack__os_guard_mode, memory_order_relaxed) == 2) {
		/* Back to read-write: the kernel merges the mapping again. */
		if (mprotect(p, size, PROT_READ | PROT_WRITE) != 0)
			gostack__throw("mprotect(%p, %zu, read-write) failed: errno %d", p, size, errno);
	} else if (madvise(p, size, MADV_GUARD_REMOVE) != 0) {
		gostack__throw("madvise(%p, %zu, MADV_GUARD_REMOVE) failed: errno %d", p, size, errno);
	}
}

static void
gostack__vline(const char *kind, const char *fmt, va_list ap)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "gostack: %s", kind);

	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof buf)
		n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
	if ((size_t)n >= sizeof buf - 1)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	/* One write(2): the line is never interleaved with another thread's. */
	ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
	(void)w;
}

void
gostack__throw(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	gostack__vline("", fmt, ap);
	va_end(ap);
	abort();
}

void
gostack__warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	gostack__vline("warning: ", fmt, ap);
	va_end(ap);
}
