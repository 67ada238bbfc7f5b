// qn_bench main() and the shared timing helpers (see bench.h).
#include "bench.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "qn/device.h"
#include "qn/error.h"
#include "qn/half.h"
#include "qn/ops/gemm.h"
#include "qn/parallel.h"
#include "qn/tensor.h"
#ifdef QN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace qnbench {

std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}

double time_op(qn::Context& ctx, int iters, const std::function<void()>& fn) {
  if (iters < 1) iters = 1;
  fn();
  ctx.synchronize();
#ifdef QN_WITH_CUDA
  if (ctx.device().type == qn::DeviceType::CUDA) {
    cudaStream_t st = static_cast<cudaStream_t>(ctx.stream());
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, st);
    for (int i = 0; i < iters; ++i) fn();
    cudaEventRecord(b, st);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    ctx.synchronize();
    return ms / 1e3 / iters;
  }
#endif
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  ctx.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

double time_best(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn) {
  double best = time_op(ctx, iters, fn);
  for (int r = 1; r < reps; ++r) best = std::min(best, time_op(ctx, iters, fn));
  return best;
}

Timing time_stats(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn) {
  if (reps < 1) reps = 1;
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) t.push_back(time_op(ctx, iters, fn));
  std::sort(t.begin(), t.end());
  const size_t h = t.size() / 2;
  return {t.size() % 2 ? t[h] : 0.5 * (t[h - 1] + t[h]), t.front()};
}

double gemm_rate_bf16(const std::shared_ptr<qn::Context>& ctx) {
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t m = cuda ? 8192 : 1024, k = cuda ? 8192 : 2048, n = cuda ? 8192 : 2048;
  qn::Tensor a = random(ctx, qn::DType::BF16, {m, k}, 1.f, 1), b = random(ctx, qn::DType::BF16, {n, k}, 1.f, 2);
  qn::Tensor c = qn::Tensor::empty(ctx, qn::DType::BF16, {m, n});
  const double s = time_median(*ctx, 3, cuda ? 10 : 2, [&] { qn::gemm(*ctx, qn::GemmArgs{a, b, c, false, true}); });
  return 2.0 * m * k * n / s;
}

std::shared_ptr<qn::Context> cpu_context() {
  static std::shared_ptr<qn::Context> c = qn::open_context(qn::parse_device("cpu"));
  return c;
}

std::vector<float> to_floats(const qn::Tensor& t) {
  const int64_t n = t.numel();
  std::vector<float> v(static_cast<size_t>(n));
  if (t.dtype() == qn::DType::F32) {
    t.ctx().copy_to_host(v.data(), t.raw(), v.size() * 4);
  } else if (t.dtype() == qn::DType::BF16 || t.dtype() == qn::DType::F16) {
    std::vector<uint16_t> h(v.size());
    t.ctx().copy_to_host(h.data(), t.raw(), h.size() * 2);
    for (size_t i = 0; i < h.size(); ++i) v[i] = t.dtype() == qn::DType::BF16 ? qn::bf16_to_f32(h[i]) : qn::f16_to_f32(h[i]);
  } else {
    throw qn::Error(qn::ErrorCode::Arg, "bench to_floats: not a float tensor");
  }
  return v;
}

qn::Tensor from_floats(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, const std::vector<float>& v) {
  qn::Tensor t = qn::Tensor::empty(ctx, dt, s);
  if (dt == qn::DType::F32) {
    ctx->copy_from_host(t.raw(), v.data(), v.size() * 4);
  } else {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = dt == qn::DType::BF16 ? qn::f32_to_bf16(v[i]) : qn::f32_to_f16(v[i]);
    ctx->copy_from_host(t.raw(), h.data(), h.size() * 2);
  }
  return t;
}

qn::Tensor convert(const std::shared_ptr<qn::Context>& ctx, const qn::Tensor& t, qn::DType dt) {
  if (t.dtype() == dt) {
    std::vector<uint8_t> b(t.nbytes());
    if (!b.empty()) t.ctx().copy_to_host(b.data(), t.raw(), b.size());
    qn::Tensor o = qn::Tensor::empty(ctx, dt, t.shape());
    if (!b.empty()) ctx->copy_from_host(o.raw(), b.data(), b.size());
    return o;
  }
  return from_floats(ctx, dt, t.shape(), to_floats(t));
}

qn::Tensor random(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, float scale, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(qn::shape_numel(s)));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  for (auto& x : v) x = d(rng);
  return from_floats(ctx, dt, s, v);
}

Err compare(const std::vector<float>& got, const std::vector<double>& ref) {
  double m = 0, r = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
    m = std::max(m, std::isnan(d) ? INFINITY : d);
    r = std::max(r, std::fabs(ref[i]));
  }
  return {m, r > 0 ? m / r : m};
}

Err compare(const std::vector<float>& got, const std::vector<float>& ref) {
  return compare(got, std::vector<double>(ref.begin(), ref.end()));
}

Err compare(const qn::Tensor& got, const qn::Tensor& ref) { return compare(to_floats(got), to_floats(ref)); }

std::string err_note(const Err& e) {
  char b[96];
  std::snprintf(b, sizeof b, "max abs err %.2e (rel %.2e)", e.abs, e.rel);
  return b;
}

double copy_bandwidth(const std::shared_ptr<qn::Context>& ctx, size_t bytes, int iters, int reps) {
  qn::Tensor src = qn::Tensor::empty(ctx, qn::DType::U8, {static_cast<int64_t>(bytes)});
  qn::Tensor dst = qn::Tensor::empty(ctx, qn::DType::U8, {static_cast<int64_t>(bytes)});
  ctx->memset(src.raw(), 1, bytes);
  ctx->memset(dst.raw(), 0, bytes);
  std::function<void()> copy = [&] { ctx->copy(dst.raw(), src.raw(), bytes); };
  if (ctx->device().type == qn::DeviceType::CPU) {
    copy = [&] {
      char* d = static_cast<char*>(dst.raw());
      const char* s = static_cast<const char*>(src.raw());
      qn::parallel_for(static_cast<int64_t>(bytes), 1 << 22,
                       [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, static_cast<size_t>(e - b)); });
    };
  }
  return 2.0 * static_cast<double>(bytes) / time_best(*ctx, reps, iters, copy);
}

std::string device_name(const qn::Context& ctx) {
#ifdef QN_WITH_CUDA
  if (ctx.device().type == qn::DeviceType::CUDA) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, ctx.device().index) == cudaSuccess) return p.name;
  }
#endif
  (void)ctx;
  return "";
}

double datasheet_bf16_flops(const qn::Context& ctx) {
  struct Known {
    const char* key;
    double tflops;
  };
  // Dense bf16 tensor-core TFLOP/s from NVIDIA's datasheets (no sparsity); first match wins.
  const Known k[] = {{"H200 NVL", 835.5}, {"H200", 989.4}, {"H100 NVL", 835.5}, {"H100 PCIe", 756.5}, {"H100", 989.4},
                     {"A100", 312.0},     {"L40S", 362.1}, {"4090", 165.2}};
  const std::string name = device_name(ctx);
  if (name.empty()) return 0;
  for (const auto& e : k)
    if (name.find(e.key) != std::string::npos) return e.tflops * 1e12;
  return 0;
}

static std::string full_note(const Row& r) {
  std::string n = r.checked ? err_note(r.err) : "";
  if (!r.note.empty()) n += (n.empty() ? "" : "; ") + r.note;
  return n;
}

// One table: ms/call (median) and either GB/s of `bytes` against the copy bandwidth or TFLOP/s of
// `flops` against the GEMM rate.
static void print_table(const std::string& title, const std::vector<Row>& rows, double ref_per_s, bool flops, const char* label) {
  std::printf("\n%s\n", title.c_str());
  std::printf("  %-40s %10s %10s %9s  %s\n", "case", "ms/call", flops ? "TFLOP/s" : "GB/s", label,
              "(ms/call: median)");
  for (const Row& r : rows) {
    const double per_s = (flops ? r.flops : r.bytes) / r.seconds;
    std::printf(flops ? "  %-40s %10.3f %10.4f %8.0f%%  %s\n" : "  %-40s %10.3f %10.1f %8.0f%%  %s\n", r.name.c_str(),
                r.seconds * 1e3, per_s / (flops ? 1e12 : 1e9), ref_per_s > 0 ? 100.0 * per_s / ref_per_s : 0.0,
                full_note(r).c_str());
  }
  std::fflush(stdout);
}

void print_rows(const std::string& title, const std::vector<Row>& rows, double copy_bytes_per_s) {
  print_table(title, rows, copy_bytes_per_s, false, "of copy");
}

void print_flop_rows(const std::string& title, const std::vector<Row>& rows, double peak_flops_per_s, const char* label) {
  print_table(title, rows, peak_flops_per_s, true, label);
}

}  // namespace qnbench

// Case-specific `--key value` settings (Options::params); the case that reads them documents them.
static const char* const kCaseKeys[] = {"preset", "batch", "seq", "steps", "warmup", "r", "ckpt", "compute", "optim"};

int main(int argc, char** argv) {
  qnbench::Options opt;
  for (int i = 1; i < argc; ++i) {
    bool case_key = false;
    for (const char* k : kCaseKeys)
      if (argv[i][0] == '-' && argv[i][1] == '-' && !std::strcmp(argv[i] + 2, k) && i + 1 < argc) {
        opt.params[k] = argv[++i];
        case_key = true;
        break;
      }
    if (case_key) continue;
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) opt.device = argv[++i];
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) opt.filter = argv[++i];
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) opt.iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--n") && i + 1 < argc) opt.n = std::strtoll(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr,
                   "usage: qn_bench [--device cpu|cuda[:N]] [--filter SUBSTRING] [--iters K] [--n N]\n"
                   "       qn_bench --filter model [--preset qwen2.5-0.5b|qwen2.5-3b|tiny] [--batch B] [--seq T] [--steps S]\n"
                   "                [--warmup W] [--r R] [--ckpt 0|1] [--compute bf16|f32] [--optim adamw|paged|8bit]\n"
                   "cases:");
      for (const auto& c : qnbench::registry()) std::fprintf(stderr, " %s%s", c.name.c_str(), c.explicit_only ? " (explicit)" : "");
      std::fprintf(stderr, "\n");
      return 2;
    }
  }
  const std::vector<qnbench::Case>& cases = qnbench::registry();
  int rc = 0, ran = 0;
  for (const auto& c : cases) {
    if (!opt.filter.empty() && c.name.find(opt.filter) == std::string::npos) continue;
    if (c.explicit_only && opt.filter.empty()) continue;
    ++ran;
    try {
      const int r = c.fn(opt);
      if (r) rc = r;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qn_bench %s: %s\n", c.name.c_str(), e.what());
      rc = 1;
    }
  }
  if (!ran) std::fprintf(stderr, "qn_bench: no case matches '%s'\n", opt.filter.c_str());
  return rc;
}
