/*
 * gostack.hpp: a Boost.Context StackAllocator over gostack (header-only,
 * C++11 or later).
 *
 *     #include <boost/context/fiber.hpp>
 *     #include <gostack.hpp>
 *
 *     namespace ctx = boost::context;
 *     ctx::fiber f{std::allocator_arg, gostack_cxx::boost_stack_allocator(8192),
 *                  [](ctx::fiber &&caller) { ...; return std::move(caller); }};
 *     f = std::move(f).resume();
 *
 * gostack_cxx::boost_stack_allocator models Boost.Context's StackAllocator
 * concept (doc/stack.qbk): built from a size, allocate() returns a
 * boost::context::stack_context, deallocate() takes it back. It works with
 * boost::context::fiber, callcc/continuation, Boost.Coroutine2 and
 * Boost.Fiber (anything that takes a StackAllocator).
 *
 * - allocate() takes a stack of the requested size from gostack (the default
 *   allocator unless one is passed to the constructor). gostack rounds the size
 *   up to a power of two of at least 2 KiB, so sctx.size is the rounded size
 *   (hi - lo) and sctx.sp is hi, the top: the stack grows down from it.
 *   Sizes under 32 KiB (2, 4, 8, 16 KiB) come from the calling thread's
 *   cache; the default, 16 KiB, is the largest of those.
 * - deallocate() frees exactly that stack: lo is sp - size. It may run on any
 *   thread (gostack takes cross-thread frees), e.g. when a fiber created on one
 *   thread finishes or is unwound on another.
 * - Failure (ENOMEM, or a size of 0 or above GOSTACK_MAX_SIZE: EINVAL) throws
 *   std::bad_alloc, like Boost's own allocators; errno says why.
 * - Guard pages come from the allocator: pass one created with
 *   config.guard_size (or set GOSTACK_GUARD for the default allocator) and
 *   every stack has no-access memory directly below lo, so an overflow
 *   faults; without one, stacks of an allocator sit next to each other and
 *   must be sized for their deepest use. Memory is not zeroed.
 * - Copies are independent and cheap (a size and a pointer); the allocator is
 *   thread-safe because gostack is. No state is kept here.
 * - With BOOST_USE_VALGRIND defined (as for Boost's own allocators) each stack
 *   is registered with VALGRIND_STACK_REGISTER in allocate() and deregistered
 *   in deallocate(), and the id is kept in sctx.valgrind_stack_id. allocate()
 *   also marks the stack addressable and undefined (VALGRIND_MAKE_MEM_UNDEFINED):
 *   memcheck leaves the memory of a finished fiber's stack no-access, and
 *   gostack hands that memory out again.
 * - Under AddressSanitizer, allocate() unpoisons the stack: gostack hands out
 *   reused memory, and a stack that last ran a fiber which never returned may
 *   keep that fiber's redzone poison (Boost.Context itself does the fiber
 *   switch annotations when built with BOOST_USE_ASAN).
 * - Threads that are done with fibers may call gostack_thread_flush() to give
 *   their cached stacks back to the global pools (thread exit does it too).
 *
 * This header includes <boost/context/stack_context.hpp> itself (and
 * <gostack.h>); it is usable only where the Boost.Context headers are
 * installed (Debian: libboost-context-dev). Link gostack::gostack and, for
 * fibers, Boost::context.
 */
#ifndef GOSTACK_HPP
#define GOSTACK_HPP

#if defined(__has_include)
#if !__has_include(<boost/context/stack_context.hpp>)
#error "gostack.hpp needs the Boost.Context headers (<boost/context/stack_context.hpp>; Debian: libboost-context-dev)"
#endif
#endif

#include <cstddef>
#include <cstdint>
#include <new>

#include <boost/context/stack_context.hpp>

#if defined(BOOST_USE_VALGRIND)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define GOSTACK_HPP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GOSTACK_HPP_ASAN 1
#endif
#endif
#if defined(GOSTACK_HPP_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#include <gostack.h>

namespace gostack_cxx {

class boost_stack_allocator {
public:
	/* The largest size served from per-thread caches (order 3). */
	static constexpr std::size_t default_size = 16384;

	/* size: bytes asked of gostack for every stack (rounded up to a power of
	 * two of at least 2 KiB). a: the gostack allocator to use; nullptr means
	 * the process-wide default allocator. */
	explicit boost_stack_allocator(std::size_t size = default_size,
	    gostack_allocator_t *a = nullptr) noexcept
	    : size_(size), alloc_(a)
	{
	}

	boost::context::stack_context
	allocate()
	{
		gostack_t stk = alloc_ != nullptr
		    ? gostack_allocator_alloc(alloc_, size_)
		    : gostack_alloc(size_);
		if (stk.lo == 0)
			throw std::bad_alloc();
#if defined(GOSTACK_HPP_ASAN)
		ASAN_UNPOISON_MEMORY_REGION(reinterpret_cast<void *>(stk.lo),
		    stk.hi - stk.lo);
#endif
		boost::context::stack_context sctx;
		sctx.size = static_cast<std::size_t>(stk.hi - stk.lo);
		sctx.sp = reinterpret_cast<void *>(stk.hi);
#if defined(BOOST_USE_VALGRIND)
		/* Reused memory: below the last stack pointer of the fiber that
		 * ran on it, memcheck still has it no-access. Hand it out as
		 * malloc would, addressable and undefined. */
		VALGRIND_MAKE_MEM_UNDEFINED(reinterpret_cast<void *>(stk.lo),
		    stk.hi - stk.lo);
		/* Valgrind takes the lowest and the highest addressable byte. */
		sctx.valgrind_stack_id = VALGRIND_STACK_REGISTER(
		    reinterpret_cast<void *>(stk.lo),
		    reinterpret_cast<void *>(stk.hi - 1));
#endif
		return sctx;
	}

	void
	deallocate(boost::context::stack_context &sctx) noexcept
	{
		if (sctx.sp == nullptr)
			return;
#if defined(BOOST_USE_VALGRIND)
		VALGRIND_STACK_DEREGISTER(sctx.valgrind_stack_id);
#endif
		gostack_t stk;
		stk.hi = reinterpret_cast<std::uintptr_t>(sctx.sp);
		stk.lo = stk.hi - sctx.size;
		if (alloc_ != nullptr)
			gostack_allocator_free(alloc_, stk);
		else
			gostack_free(stk);
		sctx.sp = nullptr;
		sctx.size = 0;
	}

	std::size_t
	size() const noexcept
	{
		return size_;
	}

	/* nullptr: the default allocator. */
	gostack_allocator_t *
	allocator() const noexcept
	{
		return alloc_;
	}

private:
	std::size_t size_;
	gostack_allocator_t *alloc_;
};

} /* namespace gostack_cxx */

#undef GOSTACK_HPP_ASAN

#endif /* GOSTACK_HPP */
