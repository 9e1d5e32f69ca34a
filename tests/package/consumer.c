/* Uses an installed gostack: find_package(gostack CONFIG) or pkg-config. */
#include <gostack.h>
#include <gostack_pthread.h>
#include <stdio.h>
#include <string.h>

static void *
thread_fn(void *arg)
{
	return arg;
}

int
main(void)
{
	gostack_t s = gostack_alloc(8192), t;
	gostack_stats_t st;
	pthread_attr_t at;
	pthread_t th;
	void *p;

	if (s.lo == 0 || s.hi - s.lo != 8192 || gostack_version() < GOSTACK_VERSION_NUMBER)
		return 1;
	memset((void *)s.lo, 1, s.hi - s.lo);
	gostack_free_lo(s.lo);
	pthread_attr_init(&at);
	if (gostack_pthread_attr_setstack(&at, NULL, 64 << 10, &t) != 0 || pthread_create(&th, &at, thread_fn, &at) != 0)
		return 1;
	pthread_join(th, &p);
	gostack_free(t);
	if (p != &at || (p = gostack_cb_alloc(3000, NULL)) == NULL)
		return 1;
	gostack_cb_dealloc(p, 3000, NULL);
	gostack_allocator_stats(gostack_default_allocator(), &st);
	printf("consumer: gostack %u.%u, allocs %llu frees %llu\n", gostack_version() >> 16,
	    (gostack_version() >> 8) & 0xff, (unsigned long long)st.allocs, (unsigned long long)st.frees);
	return st.allocs == 3 && st.frees == 3 ? 0 : 1;
}
