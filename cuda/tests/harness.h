// A small test harness for the native suite (qn_tests): QN_TEST registers a case; CHECK-style
// macros record failures; helpers make random tensors and compare them. Every op test runs on
// the CPU and, when `--device cuda` is given (npm run test:gpu), compares CUDA against CPU.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>
#include "qn/context.h"
#include "qn/half.h"
#include "qn/tensor.h"

namespace qnt {

struct TestCase {
  std::string name;
  std::function<void()> fn;
};
std::vector<TestCase>& registry();
struct Registrar {
  Registrar(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

// Failure recording (the runner counts a case failed if any check failed in it).
void record_failure(const std::string& where, const std::string& what);
int failures_in_current();

// The session for the backend under test (cpu, or cuda:N with --device) and the CPU reference.
std::shared_ptr<qn::Context> cpu_ctx();
std::shared_ptr<qn::Context> test_ctx();  // same as cpu_ctx() when no --device is given
bool testing_cuda();
uint64_t seed();

// Host <-> tensor helpers (values as float; bf16/f16 converted with RNE).
qn::Tensor from_floats(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, const std::vector<float>& v);
qn::Tensor from_bytes(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, const void* data);
std::vector<float> to_floats(const qn::Tensor& t);
std::vector<uint8_t> to_bytes(const qn::Tensor& t);
// A tensor filled with a poison pattern (NaN for floats, 0xAB bytes for ints) so unwritten
// elements show up in comparisons.
qn::Tensor poisoned(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s);
// Copies a tensor to another context (through the host).
qn::Tensor copy_to(const std::shared_ptr<qn::Context>& ctx, const qn::Tensor& t);
std::vector<float> random_floats(size_t n, float lo, float hi, uint64_t salt);

// Compares elementwise: |a-b| <= atol + rtol*|b|; NaN anywhere is a failure. Reports the worst.
bool all_close(const std::vector<float>& a, const std::vector<float>& b, float rtol, float atol, const std::string& what);
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace qnt

#define QN_TEST(name)                                                   \
  static void qn_test_##name();                                         \
  static ::qnt::Registrar qn_registrar_##name(#name, qn_test_##name);   \
  static void qn_test_##name()

#define EXPECT_TRUE(cond)                                                                        \
  do {                                                                                           \
    if (!(cond)) ::qnt::record_failure(std::string(__FILE__) + ":" + std::to_string(__LINE__), #cond); \
  } while (0)

#define EXPECT_EQ(a, b)                                                                          \
  do {                                                                                           \
    auto qn_a_ = (a);                                                                            \
    auto qn_b_ = (b);                                                                            \
    if (!(qn_a_ == qn_b_)) {                                                                     \
      std::ostringstream qn_o_;                                                                  \
      qn_o_ << #a << " == " << #b << " (" << qn_a_ << " vs " << qn_b_ << ")";                    \
      ::qnt::record_failure(std::string(__FILE__) + ":" + std::to_string(__LINE__), qn_o_.str()); \
    }                                                                                            \
  } while (0)

// Expects the statement to throw qn::Error with the given code.
#define EXPECT_THROWS_CODE(stmt, code_)                                                              \
  do {                                                                                               \
    bool qn_thrown_ = false;                                                                         \
    try {                                                                                            \
      stmt;                                                                                          \
    } catch (const ::qn::Error& e) {                                                                 \
      qn_thrown_ = e.code() == ::qn::ErrorCode::code_;                                               \
      if (!qn_thrown_)                                                                               \
        ::qnt::record_failure(std::string(__FILE__) + ":" + std::to_string(__LINE__),                \
                              std::string("wrong error code: ") + ::qn::error_code_name(e.code()) + " " + e.what()); \
      qn_thrown_ = true;                                                                             \
    }                                                                                                \
    if (!qn_thrown_)                                                                                 \
      ::qnt::record_failure(std::string(__FILE__) + ":" + std::to_string(__LINE__), "no throw: " #stmt); \
  } while (0)
