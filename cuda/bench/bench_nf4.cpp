// NF4 benchmarks (qn_bench --filter nf4): dequantize GB/s for the Qwen2.5-3B linear shapes (double
// quant, blocksize 64) to bf16 and f32, against the copy bandwidth measured in the same run; the CPU
// row helper into a cache-resident panel (what the CPU GEMM does); and quantize time for all
// Qwen2.5-3B linear weights (one layer measured, times 36).
// Bytes per dequantize: n/2 codes + n/64 8-bit scales + nested scales (read) + n * 2 or 4 (written).
// Goals (issue 3): GPU >= 90 % of copy, CPU >= 50 % of memcpy, quantize all 3B linears < 2 s on GPU.
// Check (once per shape and output dtype, before timing, on both devices): the first 64K elements
// of the output against a float64 decode of the stored codes and double-quantized scales (the
// format in qn/ops/nf4.h); the rows helper likewise. Quantize: the restored weight against the
// input (the NF4 quantization error itself, as a fraction of the largest |w|).
#include <algorithm>
#include <cstdio>
#include <random>
#include "bench.h"
#include "qn/half.h"
#include "qn/nf4_weight.h"
#include "qn/ops/nf4.h"
#include "qn/parallel.h"

namespace {

qn::Tensor random_bf16(const std::shared_ptr<qn::Context>& ctx, int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<uint16_t> h(static_cast<size_t>(rows * cols));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 0.02f);
  for (auto& v : h) v = qn::f32_to_bf16(d(rng));
  qn::Tensor t = qn::Tensor::empty(ctx, qn::DType::BF16, {rows, cols});
  ctx->copy_from_host(t.raw(), h.data(), h.size() * 2);
  return t;
}

double nf4_bytes_read(const qn::Nf4Weight& w) {
  return static_cast<double>(w.codes.nbytes() + (w.nested ? w.absmax_q.nbytes() + w.nested_absmax.nbytes() + 1024
                                                          : w.absmax.nbytes()));
}

template <typename T>
std::vector<T> host(const qn::Tensor& t) {
  std::vector<T> v(t.nbytes() / sizeof(T));
  if (!v.empty()) t.ctx().copy_to_host(v.data(), t.raw(), t.nbytes());
  return v;
}

// float64 decode of the first `count` elements of w.
std::vector<double> nf4_reference(const qn::Nf4Weight& w, int64_t count) {
  const auto codes = host<uint8_t>(w.codes);
  std::vector<double> out(static_cast<size_t>(count));
  std::vector<float> absmax;
  if (w.nested) {
    const auto q = host<uint8_t>(w.absmax_q);
    const auto nested = host<float>(w.nested_absmax), map = host<float>(w.nested_map);
    for (size_t b = 0; b < q.size(); ++b) {
      const float scaled = map[q[b]] * nested[b / w.nested_blocksize];
      absmax.push_back(scaled + w.nested_offset);
    }
  } else {
    absmax = host<float>(w.absmax);
  }
  for (int64_t i = 0; i < count; ++i) {
    const int code = (i & 1) ? codes[i / 2] & 15 : codes[i / 2] >> 4;
    out[i] = double(qn::kNf4Codes[code]) * absmax[i / w.blocksize];
  }
  return out;
}

}  // namespace

QN_BENCH(nf4) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 50 : 5;
  std::printf("nf4 bench on %s: %d CPU threads, median of 5 x %d calls\n", ctx->device().str().c_str(), qn::num_threads(), iters);
  const int64_t shapes[][2] = {{2048, 2048}, {2048, 256}, {2048, 11008}, {11008, 2048}};
  // Copy bandwidth over a buffer as large as the largest f32 output.
  const int reps = 5;  // median of 5 (the CPU figures come from a shared machine)
  const double copy_bps = qnbench::copy_bandwidth(ctx, size_t(2048) * 11008 * 4, iters, reps);
  std::vector<qnbench::Row> rows;
  rows.push_back({"copy (90 MB)", 2.0 * 2048 * 11008 * 4, 2.0 * 2048 * 11008 * 4 / copy_bps, ""});
  double worst_frac = 1e9;
  for (auto& s : shapes) {
    const int64_t r = s[0], c = s[1], n = r * c;
    qn::Nf4Weight w = qn::nf4_quantize_weight(random_bf16(ctx, r, c, 1 + r + c), 64, true, "bench");
    const double rd = nf4_bytes_read(w);
    const int64_t cn = std::min<int64_t>(n, 1 << 16);
    const std::vector<double> ref = nf4_reference(w, cn);
    auto head = [&](const std::vector<float>& v) { return std::vector<float>(v.begin(), v.begin() + cn); };
    for (qn::DType od : {qn::DType::BF16, qn::DType::F32}) {
      qn::Tensor out = qn::Tensor::empty(ctx, od, {r, c});
      qn::nf4_dequantize(*ctx, qn::Nf4DequantizeArgs{w, out});
      const qnbench::Err e = qnbench::compare(head(qnbench::to_floats(out)), ref);
      const double sec = qnbench::time_median(*ctx, reps, iters, [&] { qn::nf4_dequantize(*ctx, qn::Nf4DequantizeArgs{w, out}); });
      const double bytes = rd + static_cast<double>(out.nbytes());
      worst_frac = std::min(worst_frac, bytes / sec / copy_bps);
      rows.push_back(qnbench::row("dequant " + std::to_string(r) + "x" + std::to_string(c) + " -> " + qn::dtype_name(od), bytes,
                                  sec, e, "vs float64 decode, 64K elements"));
    }
    if (!cuda) {
      // The GEMM path: 64-row panels into one reused bf16 buffer (stays in L2), all threads.
      const int64_t panel = 64;
      std::vector<uint16_t> first(static_cast<size_t>(std::min(r, panel) * c));
      qn::cpu::nf4_dequantize_rows(w, 0, std::min(r, panel), qn::DType::BF16, first.data());
      std::vector<float> firstf;
      for (int64_t i = 0; i < cn && i < static_cast<int64_t>(first.size()); ++i) firstf.push_back(qn::bf16_to_f32(first[i]));
      const qnbench::Err e = qnbench::compare(firstf, ref);
      const double sec = qnbench::time_median(*ctx, reps, iters, [&] {
        qn::parallel_for((r + panel - 1) / panel, 1, [&](int64_t p0, int64_t p1) {
          thread_local std::vector<uint16_t> buf;
          buf.resize(static_cast<size_t>(panel * c));
          for (int64_t p = p0; p < p1; ++p)
            qn::cpu::nf4_dequantize_rows(w, p * panel, std::min(r, (p + 1) * panel), qn::DType::BF16, buf.data());
        });
      });
      rows.push_back(qnbench::row("  rows helper " + std::to_string(r) + "x" + std::to_string(c) + " -> bf16 panel", rd + 2.0 * n,
                                  sec, e, "64-row panels, cache-resident; vs float64 decode"));
    }
  }
  qnbench::print_rows("nf4 dequantize (double quant, blocksize 64)", rows, copy_bps);
  std::printf("  worst dequantize: %.0f%% of copy (goal %s)\n", 100 * worst_frac, cuda ? ">= 90%" : ">= 50%");

  // Quantize: the 7 linear weights of one Qwen2.5-3B layer (bf16 in), with double quant, x 36.
  const int64_t lin[][2] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048}, {11008, 2048}, {11008, 2048}, {2048, 11008}};
  std::vector<qn::Tensor> ws;
  double params = 0, in_bytes = 0;
  for (auto& s : lin) {
    ws.push_back(random_bf16(ctx, s[0], s[1], 99 + s[0]));
    params += static_cast<double>(s[0] * s[1]);
    in_bytes += 2.0 * s[0] * s[1];
  }
  const int qiters = cuda ? 10 : 1;
  qnbench::Err qerr;
  for (auto& t : ws) {  // the quantization error: dequant(quant(w)) against w, relative to max |w|
    qn::Nf4Weight qw = qn::nf4_quantize_weight(t, 64, true, "bench");
    qn::Tensor back = qn::Tensor::empty(ctx, qn::DType::F32, t.shape());
    qn::nf4_dequantize(*ctx, qn::Nf4DequantizeArgs{qw, back});
    qerr.merge(qnbench::compare(qnbench::to_floats(back), qnbench::to_floats(t)));
  }
  const double layer_sec = qnbench::time_median(*ctx, cuda ? 3 : 3, qiters, [&] {
    for (auto& t : ws) qn::nf4_quantize_weight(t, 64, true, "bench");
  });
  std::vector<qnbench::Row> q;
  q.push_back(qnbench::row("quantize one layer (7 linears, bf16)", in_bytes + params / 2 + params / 64, layer_sec, qerr,
                           "NF4 error vs the input; x36 layers: " + std::to_string(layer_sec * 36).substr(0, 6) + " s (goal < 2 s on GPU)"));
  qnbench::print_rows("nf4 quantize + double quant, Qwen2.5-3B layer (" + std::to_string(params / 1e6).substr(0, 5) + "M params)",
                      q, copy_bps);
  return 0;
}
