// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// libscx_hints from C++: the C header as is, and a scope object that
// restores the thread's hints however the scope is left (return or throw).
//
//   c++ hints_example.cpp $(pkg-config --cflags --libs scx_hints) -pthread
#include <cstdio>
#include <stdexcept>
#include <thread>

#include <scx_hints.h>

namespace {

class HintScope {
public:
	explicit HintScope(scx_hints_class cls) : saved_(scx_hints_save())
	{
		scx_hints_set_latency_class(cls);
	}
	~HintScope() { scx_hints_restore(saved_); }
	HintScope(const HintScope &) = delete;
	HintScope &operator=(const HintScope &) = delete;

private:
	scx_hints_saved saved_;
};

int failures;

void check(bool ok, const char *what)
{
	if (!ok) {
		std::fprintf(stderr, "check failed: %s\n", what);
		failures++;
	}
}

void render_frame()
{
	HintScope critical(SCX_HINTS_CLASS_CRITICAL);
	check(scx_hints_latency_class() == SCX_HINTS_CLASS_CRITICAL, "class inside the scope");
	throw std::runtime_error("frame dropped");
}

} // namespace

int main()
{
	scx_hints_set_latency_class(SCX_HINTS_CLASS_BATCH);
	try {
		render_frame();
	} catch (const std::exception &) {
	}
	check(scx_hints_latency_class() == SCX_HINTS_CLASS_BATCH, "class restored after a throw");

	std::thread t([] {
		check(scx_hints_latency_class() == SCX_HINTS_CLASS_NORMAL, "a new thread starts normal");
	});
	t.join();

	if (failures) {
		std::fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	std::printf("all checks passed\n");
	return 0;
}
