/*
 * pools.c: the table of pool backends (pools.h) and the engine's calls that
 * run over all of them: fork, and quiescence before arenas
 * are unmapped. The engine never names a backend other than through this
 * table and an allocator's ops.
 */
#include "mheap.h"
#include "pools.h"

const struct gostack__pools_ops *const gostack__backends[] = {
	&gostack__mutex_pools,
#ifdef GOSTACK_HAVE_LOCKFREE
	&gostack__lockfree_pools,
#endif
	NULL
};

#define FOR_EACH_BACKEND(b) \
	for (const struct gostack__pools_ops *const *b = gostack__backends; *b != NULL; b++)

const struct gostack__pools_ops *
gostack__backend_of(gostack_backend_t kind)
{
	if (kind == GOSTACK_BACKEND_DEFAULT) {
		/* The process default: GOSTACK_BACKEND when set (options.c). */
		kind = (gostack_backend_t)gostack__opt(GOSTACK__OPT_BACKEND);
	}
	if (kind == GOSTACK_BACKEND_DEFAULT) {
#ifdef GOSTACK_HAVE_LOCKFREE
		kind = GOSTACK_BACKEND_LOCKFREE;
#else
		kind = GOSTACK_BACKEND_MUTEX;
#endif
	}
	if (kind != GOSTACK_BACKEND_MUTEX && kind != GOSTACK_BACKEND_LOCKFREE) {
		errno = EINVAL;
		return NULL;
	}
	FOR_EACH_BACKEND(b)
		if ((*b)->kind == kind)
			return *b;
	errno = ENOSYS;
	return NULL;
}

void
gostack__backends_fork_prepare(void)
{
	FOR_EACH_BACKEND(b)
		if ((*b)->global_fork_prepare != NULL)
			(*b)->global_fork_prepare();
}

void
gostack__backends_fork_parent(void)
{
	FOR_EACH_BACKEND(b)
		if ((*b)->global_fork_parent != NULL)
			(*b)->global_fork_parent();
}

void
gostack__backends_fork_child(void)
{
	FOR_EACH_BACKEND(b)
		if ((*b)->global_fork_child != NULL)
			(*b)->global_fork_child();
}

void
gostack__backends_quiesce(void)
{
	FOR_EACH_BACKEND(b)
		if ((*b)->global_quiesce != NULL)
			(*b)->global_quiesce();
}

void
gostack__release_arenas(void)
{
	struct gostack__arena *dead = gostack__heap_detach_empty();

	if (dead == NULL)
		return;
	/* A lock-free pop may still be reading a span struct of these arenas
	 * (a node it loaded before the span left its pool): unmap only after
	 * every such reader is done. No reader can reach them anew: they hold
	 * no span, so no pool holds a node in them. */
	gostack__backends_quiesce();
	gostack__heap_unmap(dead);
}
