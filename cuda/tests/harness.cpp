// Test harness implementation and the runner's main(): `qn_tests [--device cuda[:N]] [--filter S]
// [--seed N]`. Prints one line per case and a closing "N passed, N failed" line.
#include "harness.h"
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include "qn/error.h"

namespace qnt {
namespace {

std::shared_ptr<qn::Context> g_cpu, g_test;
uint64_t g_seed = 0;
int g_failures_current = 0;

}  // namespace

std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}

void record_failure(const std::string& where, const std::string& what) {
  ++g_failures_current;
  std::fprintf(stderr, "    FAIL %s: %s\n", where.c_str(), what.c_str());
}
int failures_in_current() { return g_failures_current; }

std::shared_ptr<qn::Context> cpu_ctx() { return g_cpu; }
std::shared_ptr<qn::Context> test_ctx() { return g_test; }
bool testing_cuda() { return g_test->device().type == qn::DeviceType::CUDA; }
uint64_t seed() { return g_seed; }

qn::Tensor from_bytes(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, const void* data) {
  qn::Tensor t = qn::Tensor::empty(ctx, dt, s);
  if (t.nbytes()) ctx->copy_from_host(t.raw(), data, t.nbytes());
  return t;
}

qn::Tensor from_floats(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, const std::vector<float>& v) {
  std::vector<uint8_t> bytes(v.size() * qn::dtype_size(dt));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (dt) {
      case qn::DType::F32: std::memcpy(&bytes[i * 4], &v[i], 4); break;
      case qn::DType::BF16: { uint16_t h = qn::f32_to_bf16(v[i]); std::memcpy(&bytes[i * 2], &h, 2); break; }
      case qn::DType::F16: { uint16_t h = qn::f32_to_f16(v[i]); std::memcpy(&bytes[i * 2], &h, 2); break; }
      case qn::DType::U8: bytes[i] = static_cast<uint8_t>(v[i]); break;
      case qn::DType::I32: { int32_t x = static_cast<int32_t>(v[i]); std::memcpy(&bytes[i * 4], &x, 4); break; }
    }
  }
  return from_bytes(ctx, dt, s, bytes.data());
}

std::vector<uint8_t> to_bytes(const qn::Tensor& t) {
  std::vector<uint8_t> b(t.nbytes());
  if (!b.empty()) t.ctx().copy_to_host(b.data(), t.raw(), b.size());
  return b;
}

std::vector<float> to_floats(const qn::Tensor& t) {
  const std::vector<uint8_t> b = to_bytes(t);
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype()) {
      case qn::DType::F32: std::memcpy(&v[i], &b[i * 4], 4); break;
      case qn::DType::BF16: { uint16_t h; std::memcpy(&h, &b[i * 2], 2); v[i] = qn::bf16_to_f32(h); break; }
      case qn::DType::F16: { uint16_t h; std::memcpy(&h, &b[i * 2], 2); v[i] = qn::f16_to_f32(h); break; }
      case qn::DType::U8: v[i] = b[i]; break;
      case qn::DType::I32: { int32_t x; std::memcpy(&x, &b[i * 4], 4); v[i] = static_cast<float>(x); break; }
    }
  }
  return v;
}

qn::Tensor poisoned(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s) {
  qn::Tensor t = qn::Tensor::empty(ctx, dt, s);
  // 0xFF bytes: NaN for f32/bf16/f16, 255 / -1 for u8 / i32.
  ctx->memset(t.raw(), 0xFF, t.nbytes());
  return t;
}

qn::Tensor copy_to(const std::shared_ptr<qn::Context>& ctx, const qn::Tensor& t) {
  const std::vector<uint8_t> b = to_bytes(t);
  return from_bytes(ctx, t.dtype(), t.shape(), b.data());
}

std::vector<float> random_floats(size_t n, float lo, float hi, uint64_t salt) {
  std::mt19937_64 rng(g_seed * 1000003ull + salt);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

bool all_close(const std::vector<float>& a, const std::vector<float>& b, float rtol, float atol, const std::string& what) {
  if (a.size() != b.size()) {
    record_failure(what, "size " + std::to_string(a.size()) + " vs " + std::to_string(b.size()));
    return false;
  }
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    const double lim = atol + rtol * std::fabs(static_cast<double>(b[i]));
    const bool nan = std::isnan(a[i]) != std::isnan(b[i]);
    if (nan || d > lim || (std::isnan(a[i]) && std::isnan(b[i]))) {
      ++bad;
      const double excess = nan || std::isnan(d) ? 1e30 : d - lim;
      if (excess > worst_excess) { worst_excess = excess; worst = i; }
    }
  }
  if (bad) {
    std::ostringstream o;
    o << bad << "/" << a.size() << " elements differ; worst at " << worst << ": " << a[worst] << " vs " << b[worst]
      << " (rtol " << rtol << ", atol " << atol << ")";
    record_failure(what, o.str());
  }
  return bad == 0;
}

}  // namespace qnt

int main(int argc, char** argv) {
  std::string device = "cpu", filter;
  qnt::g_seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) % 1000000;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) qnt::g_seed = std::strtoull(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: qn_tests [--device cpu|cuda|cuda:N] [--filter SUBSTRING] [--seed N]\n");
      return 2;
    }
  }
  try {
    qnt::g_cpu = qn::open_context(qn::Device{});
    qnt::g_test = device == "cpu" ? qnt::g_cpu : qn::open_context(qn::parse_device(device));
  } catch (const qn::Error& e) {
    std::fprintf(stderr, "cannot open %s: %s\n", device.c_str(), e.what());
    return 2;
  }
  std::printf("qn_tests on %s, seed %llu\n", qnt::g_test->device().str().c_str(), (unsigned long long)qnt::g_seed);
  int passed = 0, failed = 0;
  for (const auto& tc : qnt::registry()) {
    if (!filter.empty() && tc.name.find(filter) == std::string::npos) continue;
    qnt::g_failures_current = 0;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      tc.fn();
      qnt::g_test->synchronize();
    } catch (const std::exception& e) {
      qnt::record_failure(tc.name, std::string("exception: ") + e.what());
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const bool ok = qnt::g_failures_current == 0;
    std::printf("%s %s (%.1f ms)\n", ok ? "ok  " : "FAIL", tc.name.c_str(), ms);
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
