/*
 * gostack_pthread.h: thread stacks from gostack, for pthread_attr_setstack.
 *
 *   gostack_t stk;
 *   pthread_attr_t at;
 *   pthread_attr_init(&at);
 *   if (gostack_pthread_attr_setstack(&at, guarded, 256 << 10, &stk) == 0 &&
 *       pthread_create(&tid, &at, fn, arg) == 0) {
 *       pthread_join(tid, NULL);
 *       gostack_allocator_free(guarded, stk);   // only after the join
 *   }
 *
 * Why this is sound, and where it stops being:
 *   - glibc uses a stack given with pthread_attr_setstack as it is: it puts
 *     its thread descriptor and static TLS at the top, never frees, caches
 *     or unmaps it, and adds no guard of its own (guardsize is ignored). An
 *     allocator with guard_size set gives the thread the guard below lo.
 *   - The thread runs on the stack until pthread_join returns (or, for a
 *     thread that is never joined, until an unknown moment after it exits).
 *     So the helper refuses a detached attr (EINVAL): a detached thread's
 *     stack can never be freed safely.
 *   - The stack must hold glibc's descriptor and TLS: the size is raised to
 *     at least sysconf(_SC_THREAD_STACK_MIN) (PTHREAD_STACK_MIN). 16 KiB and
 *     smaller orders come from the per-thread caches like any stack.
 * Returns 0 or an errno value, as pthread functions do (errno is set to
 * it as well); on failure nothing is allocated and attr is unchanged.
 */
#ifndef GOSTACK_PTHREAD_H
#define GOSTACK_PTHREAD_H

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#include "gostack.h"

static inline int
gostack_pthread_attr_setstack(pthread_attr_t *attr, gostack_allocator_t *a, size_t size, gostack_t *out)
{
	long min = sysconf(_SC_THREAD_STACK_MIN);
	int detached = 0, err;
	gostack_t stk;

	if (attr == NULL || out == NULL || pthread_attr_getdetachstate(attr, &detached) != 0 ||
	    detached == PTHREAD_CREATE_DETACHED) {
		errno = EINVAL;
		return EINVAL;
	}
	if (min > 0 && size < (size_t)min)
		size = (size_t)min;
	stk = a != NULL ? gostack_allocator_alloc(a, size) : gostack_alloc(size);
	if (stk.lo == 0)
		return errno;
	err = pthread_attr_setstack(attr, (void *)stk.lo, stk.hi - stk.lo);
	if (err != 0) {
		if (a != NULL)
			gostack_allocator_free(a, stk);
		else
			gostack_free(stk);
		errno = err;
		return err;
	}
	*out = stk;
	return 0;
}

#endif /* GOSTACK_PTHREAD_H */
