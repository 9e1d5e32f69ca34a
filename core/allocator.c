/*
 * allocator.c: allocators and the process-wide default one, reclaim, and
 * fork.
 *
 * Fork: pthread_atfork handlers take every gostack lock in the documented
 * order (the scavenger's decay lock, so no pass is half done; the backend's
 * global hooks, e.g. RCU; then registry, each allocator's pools, heap, meta,
 * and last the scavenger's kick lock) so that the child starts from a
 * consistent state. In the child the forking thread, which holds them all,
 * gives them back, then adopts the caches of threads that did not survive;
 * the scavenger thread is started again on its next kick.
 */
#include <stdlib.h>
#include <string.h>

#include "mheap.h"
#include "pools.h"
#include "profile.h"
#include "tools.h"

struct gostack__allocator_list gostack__allocators = LIST_HEAD_INITIALIZER(gostack__allocators);
static uint32_t slots_used;                         /* registry lock: bitmap */
static uint64_t next_id = 1;                        /* registry lock */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static _Atomic(gostack_allocator_t *) default_alloc;


static void
fork_prepare(void)
{
	gostack_allocator_t *a;

	pthread_mutex_lock(&gostack__decay_lock);   /* no scavenger pass half done */
	gostack__backends_fork_prepare();
	pthread_mutex_lock(&gostack__registry_lock);
	LIST_FOREACH(a, &gostack__allocators, link)
		if (a->ops->fork_prepare)
			a->ops->fork_prepare(a->pools);
	gostack__heap_fork_prepare();
	gostack__meta_fork_prepare();
	gostack__scavenger_fork_prepare();
}

/* fork_prepare's locks given back in reverse order, in the parent and in
 * the child. The child's only thread is the one that ran fork_prepare and
 * holds every lock: it gives them back as the parent does (re-initializing
 * a held mutex would work with glibc but leave ThreadSanitizer believing it
 * held), restarts what did not survive (the scavenger, urcu's registry) and
 * adopts the caches of the threads that are gone. */
static void
fork_release(bool child)
{
	gostack_allocator_t *a;

	if (child)
		gostack__scavenger_fork_child();
	else
		gostack__scavenger_fork_parent();
	gostack__meta_fork_parent();
	gostack__heap_fork_parent();
	LIST_FOREACH(a, &gostack__allocators, link)
		if (a->ops->fork_parent)
			a->ops->fork_parent(a->pools);
	pthread_mutex_unlock(&gostack__registry_lock);
	if (child) {
		gostack__backends_fork_child();
		gostack__tcache_fork_child();
	} else {
		gostack__backends_fork_parent();
	}
	pthread_mutex_unlock(&gostack__decay_lock);
}

static void fork_parent(void) { fork_release(false); }
static void fork_child(void) { fork_release(true); }

static void
init_once_fn(void)
{
	/* A fork while this runs makes glibc run it again in the child: the
	 * fork handlers must not be registered twice (prepare would then take
	 * every lock twice). */
	static _Atomic bool atfork_done;

	gostack__options_init();   /* (already done at load, unless linked oddly) */
	gostack__tls_key_init();
	/* acq_rel: pairs with itself in a re-run of this function in a fork
	 * child (the flag is the only state; the handlers are registered once). */
	if (!atomic_exchange_explicit(&atfork_done, true, memory_order_acq_rel) &&
	    pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
		gostack__throw("pthread_atfork failed");
}

void
gostack__init(void)
{
	pthread_once(&init_once, init_once_fn);
}

gostack_allocator_t *
gostack_allocator_new(const gostack_config_t *cfg)
{
	gostack_config_t def;
	const struct gostack__pools_ops *ops;
	gostack_allocator_t *a;

	gostack__init();
	if (cfg == NULL) {
		memset(&def, 0, sizeof def);
		cfg = &def;
	}
	if (cfg->guard_size > GOSTACK_MAX_SIZE ||
	    (cfg->name != NULL && strnlen(cfg->name, GOSTACK_NAME_MAX + 1) > GOSTACK_NAME_MAX)) {
		errno = EINVAL;
		return NULL;
	}
	if ((ops = gostack__backend_of(cfg->backend)) == NULL)
		return NULL;
	if ((a = gostack__meta_alloc(sizeof *a)) == NULL)
		return NULL;
	a->no_cache = cfg->no_cache;
	if (cfg->name != NULL)
		memcpy(a->name, cfg->name, strlen(cfg->name) + 1);
	a->debug = cfg->debug || gostack__opt(GOSTACK__OPT_DEBUG) != 0;
	/* Debug mode keeps every free stack on lists linked through it, where
	 * its checks read the links: no per-CPU tier (pointer arrays). */
	a->percpu = !cfg->no_percpu && !a->debug && gostack__opt(GOSTACK__OPT_PERCPU) != 0;
	if (cfg->guard_size != 0) {
		a->page = gostack__os_page();
		a->guard = (cfg->guard_size + a->page - 1) & ~(a->page - 1);
	}
	a->decay_ms = cfg->decay_ms == 0 ? GOSTACK__DECAY_DEFAULT_MS : cfg->decay_ms < 0 ? -1 : cfg->decay_ms;
	/* The inline paths read each span's geometry, guarded or not (stack.c);
	 * under Valgrind every operation takes the slow paths (tools.h). With
	 * a depth profile they are the copies with the countdown. */
	bool plain = !a->no_cache && !a->debug && !gostack__tool_slow_only();

	a->profile = cfg->profile != 0 ? cfg->profile : (unsigned)gostack__opt(GOSTACK__OPT_PROFILE);
	a->fast = plain;
	a->fast_alloc = plain && a->profile == 0;
	a->fast_prof = plain && a->profile != 0;
	if (a->profile != 0 && !gostack__profile_init(a)) {
		gostack__meta_free(a, sizeof *a);
		errno = ENOMEM;
		return NULL;
	}
	a->ops = ops;
	a->backend = ops->kind;
	if ((a->pools = ops->create(a)) == NULL) {
		int e = errno;

		gostack__profile_destroy(a);
		gostack__meta_free(a, sizeof *a);
		errno = e;
		return NULL;
	}
	pthread_mutex_lock(&gostack__registry_lock);
	a->id = next_id++;
	a->slot = GOSTACK__SLOTS;
	for (int i = 0; i < GOSTACK__SLOTS; i++) {
		if (!(slots_used & (1u << i))) {
			slots_used |= 1u << i;
			a->slot = i;
			break;
		}
	}
	LIST_INSERT_HEAD(&gostack__allocators, a, link);
	pthread_mutex_unlock(&gostack__registry_lock);
	return a;
}

GOSTACK__DEFAULT_VERSION(gostack_allocator_new, "GOSTACK_0.2");

size_t
gostack_allocator_reclaim(gostack_allocator_t *a)
{
	size_t bytes;

	if (a == NULL) {
		errno = EINVAL;
		return 0;
	}
	if (a->debug) {
		struct gostack__tcache *t = gostack__tls.slot[a->slot];

		if (atomic_load_explicit(&t->id, memory_order_relaxed) == a->id)
			gostack__debug_check_tcache(t);
		if (a->ops->check != NULL)
			a->ops->check(a->pools);
	}
	pthread_mutex_lock(&gostack__decay_lock);
	/* The pools give their free spans to the heap (dirty: the heap's
	 * retain bound may scavenge on the way); then the arenas left empty
	 * are unmapped and the rest of the dirty memory goes by madvise. What
	 * this thread's heap calls gave back is the answer. */
	uint64_t before = gostack__heap_released_here();

	(void)a->ops->release(a->pools, GOSTACK__RELEASE_ALL, true);
	gostack__release_arenas();
	(void)gostack__heap_scavenge();
	bytes = (size_t)(gostack__heap_released_here() - before);
	pthread_mutex_unlock(&gostack__decay_lock);
	return bytes;
}

int
gostack_allocator_delete(gostack_allocator_t *a)
{
	struct gostack__tstat sum;
	size_t cached[GOSTACK_NUM_ORDERS];

	if (a == NULL || a->is_default) {
		errno = EINVAL;
		return EINVAL;
	}
	pthread_mutex_lock(&gostack__decay_lock);
	pthread_mutex_lock(&gostack__registry_lock);
	gostack__sum_stats(a, &sum, cached);
	if (gostack__inuse_of(&sum) != 0) {
		pthread_mutex_unlock(&gostack__registry_lock);
		pthread_mutex_unlock(&gostack__decay_lock);
		errno = EBUSY;
		return EBUSY;
	}
	/* Every thread's cache of a: the owners cannot be using a any more. */
	while (!LIST_EMPTY(&a->tcaches))
		gostack__tcache_retire(LIST_FIRST(&a->tcaches));
	LIST_REMOVE(a, link);
	if (a->slot < GOSTACK__SLOTS)
		slots_used &= ~(1u << a->slot);
	pthread_mutex_unlock(&gostack__registry_lock);
	a->ops->destroy(a->pools);
	if (atomic_load_explicit(&a->mapped, memory_order_relaxed) != 0)
		gostack__throw("allocator %p deleted with %zu bytes still mapped", (void *)a,
		    atomic_load_explicit(&a->mapped, memory_order_relaxed));
	gostack__release_arenas();
	pthread_mutex_unlock(&gostack__decay_lock);
	gostack__profile_destroy(a);
	gostack__meta_free(a, sizeof *a);
	return 0;
}

/* ---- the default allocator --------------------------------------------- */

/* The default allocator, configured from the options table (options.c). */
static void
default_init(void)
{
	gostack_config_t cfg;

	memset(&cfg, 0, sizeof cfg);
	cfg.no_cache = gostack__opt(GOSTACK__OPT_NOCACHE) != 0;
	cfg.guard_size = (size_t)gostack__opt(GOSTACK__OPT_GUARD);
	cfg.decay_ms = (int)gostack__opt(GOSTACK__OPT_DECAY_MS);
	cfg.backend = (gostack_backend_t)gostack__opt(GOSTACK__OPT_BACKEND);
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	if (a != NULL) {
		a->is_default = true;
		if (gostack__opt(GOSTACK__OPT_STATS))
			atexit(gostack__stats_at_exit);
	}
	/* Pairs with the acquire loads in gostack_default_allocator(): the
	 * allocator's fields are visible to every thread that sees the pointer. */
	atomic_store_explicit(&default_alloc, a, memory_order_release);
}

gostack_allocator_t *
gostack_default_allocator(void)
{
	/* Pairs with the release store in default_init(). */
	gostack_allocator_t *a = atomic_load_explicit(&default_alloc, memory_order_acquire);

	if (gostack__unlikely(a == NULL)) {
		pthread_once(&default_once, default_init);
		a = atomic_load_explicit(&default_alloc, memory_order_acquire);
		if (a == NULL)
			errno = ENOMEM;
	}
	return a;
}

gostack_t
gostack_alloc(size_t size)
{
	gostack_allocator_t *a = gostack_default_allocator();

	if (a == NULL)
		return (gostack_t){ 0, 0 };
	return gostack_allocator_alloc(a, size);
}

void
gostack_free(gostack_t stk)
{
	if (stk.lo == 0 && stk.hi == 0)
		return;
	gostack_allocator_free(gostack_default_allocator(), stk);
}
