// The C++ tests' shared checking: CHECK counts and prints a failure without stopping the test
// (so one run reports every broken case), throws<E> tells whether a call raises exactly E.
#pragma once
#include <cstdio>
#include <functional>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { ++failures; std::printf("FAIL %s:%d: ", __FILE__, __LINE__); std::printf(__VA_ARGS__); std::printf("\n"); } } while (0)

template <class E>
static bool throws(const std::function<void()>& f) {
  try { f(); } catch (const E&) { return true; } catch (...) { return false; }
  return false;
}
