// The blocked GEMM driver (see gemm_driver.h).
//
// Loop nest, BLIS-style, for one chunk of at most ~1k rows of C:
//   pack all of A for the chunk (every MR-row panel of every k block), in parallel
//   parallel over tasks = (column block of nc columns) x (a share of the rows when N is narrow):
//     for each k block (kc_max k's):  pack the task's B block (kc x nc, NR-column panels)
//       for each mc-row block of A:  for each NR panel of B:  for each MR panel of A:  micro-kernel
// A k block of A (mc x kc) and B (kc x nc) fit together in a 1 MB L2. With one k block, each tile
// goes from the micro-kernel to the epilogue through a stack tile; with several, the task keeps an
// fp32 accumulator for its rows x nc and runs the epilogue after the last block (so a bf16 C is
// rounded once). When N is much narrower than NR and M is not, the problem is run transposed
// (C^T = B^T A^T) so the narrow side fills MR instead of wasting most of an NR panel. When all
// of A would be large and C is small (long K: a full-logits LM-head backward, as in logits() and the
// lm_head bench; the model's head works per vocabulary chunk below that size), the k blocks run in groups
// (A packed one group at a time, ~8 MB) with one shared fp32 accumulator for C.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include "gemm_driver.h"
#include "gemm_kernels.h"
#include "qn/cpu_features.h"
#include "qn/error.h"
#include "qn/half.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace gemm_impl {
namespace {

constexpr int kMaxTile = 6 * 64;  // largest MR x NR of the kernels
constexpr int64_t kRowChunk = 1024;

std::atomic<int> g_isa_limit{3};  // 3 avx512bf16, 2 avx512, 1 avx2, 0 scalar

int env_isa_limit() {
  static const int v = [] {
    const char* e = std::getenv("QN_GEMM_ISA");
    if (!e) return 3;
    const std::string s(e);
    return s == "scalar" ? 0 : s == "avx2" ? 1 : s == "avx512" ? 2 : 3;
  }();
  return v;
}

const Kernel& pick_base(bool bf16) {
  const CpuFeatures& f = cpu_features();
  const int lim = std::min(env_isa_limit(), g_isa_limit.load());
  if (bf16 && lim >= 3 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512_bf16) return kKernelAvx512Bf16;
  if (lim >= 2 && f.avx512f && f.avx512bw) return kKernelAvx512F32;
  if (lim >= 1 && f.avx2 && f.fma) return kKernelAvx2F32;
  return kKernelScalarF32;
}

int env_int(const char* name) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) : 0;
}

// The kernel with its blocking, which QN_GEMM_KC / QN_GEMM_MC / QN_GEMM_NC override (tuning).
Kernel pick(bool bf16) {
  Kernel k = pick_base(bf16);
  static const int kc = env_int("QN_GEMM_KC"), mc = env_int("QN_GEMM_MC"), nc = env_int("QN_GEMM_NC");
  if (kc > 0) k.kc_max = (kc + 31) / 32 * 32;  // block boundaries are multiples of 32 k's
  if (mc > 0) k.mc = std::max(1, mc / k.mr) * k.mr;
  if (nc > 0) k.nc = std::max(1, nc / k.nr) * k.nr;
  return k;
}

// A grow-only 64-byte-aligned scratch buffer, one per thread and role.
struct Scratch {
  void* p = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > cap) {
      std::free(p);
      cap = (bytes + 4095) / 4096 * 4096;
      p = std::aligned_alloc(64, cap);
      if (!p) {
        cap = 0;
        fail(ErrorCode::Oom, "gemm: cannot allocate " + std::to_string(bytes) + " bytes of packing scratch");
      }
    }
    return p;
  }
  void trim(size_t keep) {
    if (cap > keep) {
      std::free(p);
      p = nullptr;
      cap = 0;
    }
  }
};
thread_local Scratch t_pack_a, t_pack_b, t_acc, t_cbuf;

double fill_ratio(int64_t x, int r) { return static_cast<double>(x) / static_cast<double>((x + r - 1) / r * r); }

void run_blocked(const Problem& p, const Kernel& K) {
  const int kstep = K.fmt == Format::BF16Pair ? 2 : 1;
  const int esize = K.fmt == Format::BF16Pair ? 2 : 4;
  int64_t nkb = (p.k + K.kc_max - 1) / K.kc_max;
  int kc_blk = static_cast<int>((p.k + nkb - 1) / nkb);
  // Block boundaries on multiples of 32 k's (kc_max is one, so this never exceeds it): the packers
  // and the NF4 tile decoder run their vector loops on 32-k (16-unit) steps, and a K of in + r
  // (the LoRA concatenations) would otherwise leave a scalar edge in every block.
  kc_blk = (kc_blk + 31) / 32 * 32;
  nkb = (p.k + kc_blk - 1) / kc_blk;
  auto panel = [&](int R, int64_t b) {
    Panel P;
    P.R = R;
    P.k0 = b * kc_blk;
    P.kc = static_cast<int>(std::min<int64_t>(kc_blk, p.k - P.k0));
    P.kc_pad = (P.kc + kstep - 1) / kstep * kstep;
    P.fmt = K.fmt;
    return P;
  };
  const size_t slot_a = static_cast<size_t>(K.mr) * kc_blk * esize;
  const size_t slot_b = static_cast<size_t>(K.nr) * kc_blk * esize;
  const int threads = num_threads();
  const int64_t row_chunk = kRowChunk / K.mr * K.mr;

  for (int64_t m0 = 0; m0 < p.m; m0 += row_chunk) {
    const int64_t rows = std::min(row_chunk, p.m - m0);
    const int64_t npm = (rows + K.mr - 1) / K.mr;
    const int64_t panels = (p.n + K.nr - 1) / K.nr;
    // Long K with a narrow C (the LM-head backward: K = vocab, N = hidden): instead of packing all of
    // A up front (tens of MB, read again from memory by every task), run the k blocks in groups whose
    // A panels stay under kGroupBytes, accumulating into one fp32 C buffer for the chunk. Same blocks,
    // same order of accumulation: the results are identical.
    constexpr size_t kGroupBytes = size_t(8) << 20;
    const int64_t kg = std::max<int64_t>(1, static_cast<int64_t>(kGroupBytes / (slot_a * npm)));
    const size_t cbuf_floats = static_cast<size_t>(npm * K.mr) * static_cast<size_t>(panels * K.nr);
    const bool grouped = nkb > kg && cbuf_floats * sizeof(float) <= (size_t(16) << 20);
    const int64_t group = grouped ? kg : nkb;
    float* cbuf = grouped ? static_cast<float*>(t_cbuf.get(cbuf_floats * sizeof(float))) : nullptr;
    for (int64_t g0 = 0; g0 < nkb; g0 += group) {
    const int64_t g1 = std::min(nkb, g0 + group), ngb = g1 - g0;
    char* abuf = static_cast<char*>(t_pack_a.get(slot_a * npm * ngb));
    parallel_for(npm * ngb, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t idx = b0; idx < b1; ++idx) {
        const int64_t b = g0 + idx / npm, pi = idx % npm;
        const int64_t i0 = m0 + pi * K.mr;
        p.pack_a(i0, static_cast<int>(std::min<int64_t>(K.mr, p.m - i0)), panel(K.mr, b), abuf + idx * slot_a);
      }
    });

    // Tasks: equal shares of the NR column panels (at most nc / NR each, or one share per thread
    // when N is narrow; a multiple of the thread count so the shares end together), and row
    // shares when there are fewer panels than threads.
    // Handed out one at a time from an atomic counter: parallel_for would give out chunks of
    // several tasks, which leaves threads idle at the end.
    // When every thread's even share of the panels is at most two nc blocks (N up to ~1k columns on
    // 2 threads: the 0.5B projections and the LM-head backward), one task per thread instead:
    // each task re-reads all of A, so fewer tasks read less (measured 10-15% on those shapes,
    // bf16 and f32; no change for wide N).
    int64_t per_task = std::max(1, K.nc / K.nr);
    const int64_t even_share = (panels + threads - 1) / threads;
    if (even_share <= 2 * per_task) per_task = std::max<int64_t>(per_task, even_share);
    int64_t ntn = threads * ((panels + threads * per_task - 1) / (threads * per_task));
    ntn = std::min(ntn, panels);
    int64_t msplit = 1;
    if (ntn < threads) msplit = std::max<int64_t>(1, std::min<int64_t>(npm, (threads + ntn - 1) / ntn));
    const int64_t ntasks = ntn * msplit;
    const int64_t mc_panels = std::max(1, K.mc / K.mr);
    std::atomic<int64_t> next_task{0};

    parallel_for(std::min<int64_t>(threads, ntasks), 1, [&](int64_t, int64_t) {
      alignas(64) float tile[kMaxTile];
      for (int64_t t = next_task.fetch_add(1); t < ntasks; t = next_task.fetch_add(1)) {
        const int64_t tn = t / msplit, tm = t % msplit;
        const int64_t q0 = panels * tn / ntn, q1 = panels * (tn + 1) / ntn;
        const int64_t j0 = q0 * K.nr, cols = std::min(q1 * K.nr, p.n) - j0;
        const int64_t pm0 = npm * tm / msplit, pm1 = npm * (tm + 1) / msplit;
        if (pm1 <= pm0 || cols <= 0) continue;
        const int64_t npn = (cols + K.nr - 1) / K.nr;
        char* bbuf = static_cast<char*>(t_pack_b.get(slot_b * npn));
        // fp32 accumulator of the task's rows x columns: the task's own (one group) or its part of cbuf.
        const int64_t ldacc = grouped ? panels * K.nr : npn * K.nr;
        float* acc = grouped ? cbuf + pm0 * K.mr * ldacc + q0 * K.nr
                     : nkb > 1 ? static_cast<float*>(t_acc.get(sizeof(float) * (pm1 - pm0) * K.mr * ldacc))
                               : nullptr;
        for (int64_t b = g0; b < g1; ++b) {
          const Panel PB = panel(K.nr, b);
          for (int64_t q = 0; q < npn; ++q) {
            const int64_t jq = j0 + q * K.nr;
            p.pack_b(jq, static_cast<int>(std::min<int64_t>(K.nr, p.n - jq)), PB, bbuf + q * slot_b);
          }
          const bool last = b == nkb - 1;
          for (int64_t pi0 = pm0; pi0 < pm1; pi0 += mc_panels) {
            const int64_t pi1 = std::min(pm1, pi0 + mc_panels);
            for (int64_t q = 0; q < npn; ++q) {
              const char* bp = bbuf + q * slot_b;
              const int64_t jq = j0 + q * K.nr;
              const int nr = static_cast<int>(std::min<int64_t>(K.nr, p.n - jq));
              for (int64_t pi = pi0; pi < pi1; ++pi) {
                const char* ap = abuf + ((b - g0) * npm + pi) * slot_a;
                const int64_t i0 = m0 + pi * K.mr;
                const int mr = static_cast<int>(std::min<int64_t>(K.mr, p.m - i0));
                if (nkb == 1) {
                  K.fn(PB.kc_pad, ap, bp, tile, K.nr, false);
                  p.epilogue(i0, jq, mr, nr, tile, K.nr);
                } else {
                  float* cp = acc + (pi - pm0) * K.mr * ldacc + q * K.nr;
                  K.fn(PB.kc_pad, ap, bp, cp, ldacc, b > 0);
                  if (last) p.epilogue(i0, jq, mr, nr, cp, ldacc);
                }
              }
            }
          }
        }
      }
    });
    }
  }
  t_pack_a.trim(size_t(64) << 20);
}

}  // namespace

const char* kernel_name(bool bf16) { return pick(bf16).name; }

void set_isa_limit(const char* name) {
  const std::string s = name ? name : "";
  g_isa_limit = s == "scalar" ? 0 : s == "avx2" ? 1 : s == "avx512" ? 2 : 3;
}

void run(const Problem& p) {
  if (p.m <= 0 || p.n <= 0) return;
  const Kernel K = pick(p.bf16);
  if (p.k <= 0) {
    const float zero[64] = {};
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; j += 64) p.epilogue(i, j, 1, static_cast<int>(std::min<int64_t>(64, p.n - j)), zero, 64);
    return;
  }
  const double direct = fill_ratio(p.m, K.mr) * fill_ratio(p.n, K.nr);
  const double swapped = fill_ratio(p.n, K.mr) * fill_ratio(p.m, K.nr);
  if (swapped > 1.25 * direct) {
    Problem q;
    q.m = p.n;
    q.n = p.m;
    q.k = p.k;
    q.bf16 = p.bf16;
    q.pack_a = p.pack_b;
    q.pack_b = p.pack_a;
    const EpilogueFn& e = p.epilogue;
    q.epilogue = [&e](int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld) {
      float t[kMaxTile];
      for (int ii = 0; ii < mr; ++ii)
        for (int jj = 0; jj < nr; ++jj) t[jj * mr + ii] = tile[ii * ld + jj];
      e(j0, i0, nr, mr, t, mr);
    };
    run_blocked(q, K);
    return;
  }
  run_blocked(p, K);
}

// ---- epilogue helpers ---------------------------------------------------------------------------
namespace {

__attribute__((target("avx512f"))) void finish_row_f32_avx512(float* out, const float* acc, int n, float alpha,
                                                              float beta, const float* bias) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    __m512 v = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, acc + j));
    if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, out + j), v);
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
    _mm512_mask_storeu_ps(out + j, m, v);
  }
}

// A whole f32 tile with non-temporal stores for the 64-byte-aligned full vectors (C far larger than
// the caches, e.g. the LM head's logits: no read-for-ownership of lines that are only written);
// an sfence orders them before the task's completion is published.
__attribute__((target("avx512f"))) void finish_tile_f32_stream_avx512(float* out, int64_t ldc, const float* acc, int64_t ld,
                                                                      int mr, int nr, float alpha, const float* bias) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int i = 0; i < mr; ++i) {
    float* o = out + i * ldc;
    const float* a = acc + i * ld;
    for (int j = 0; j < nr; j += 16) {
      const __mmask16 m = nr - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nr - j)) - 1);
      __m512 v = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, a + j));
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
      if (m == 0xffff && (reinterpret_cast<uintptr_t>(o + j) & 63) == 0) _mm512_stream_ps(o + j, v);
      else _mm512_mask_storeu_ps(o + j, m, v);
    }
  }
  _mm_sfence();
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void finish_row_bf16_avx512(uint16_t* out, const float* acc, int n, float alpha,
                                                               float beta, const float* bias) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    __m512 v = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, acc + j));
    if (beta != 0.f) {
      const __m256i h = _mm256_maskz_loadu_epi16(m, out + j);
      v = _mm512_fmadd_ps(vb, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)), v);
    }
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
    _mm256_mask_storeu_epi16(out + j, m, f32_to_bf16_avx512(v));
  }
}

// A whole tile into bf16 C (rows i < mr of ld-strided acc), with vcvtne2ps2bf16 (32 values per
// instruction; rounds to nearest even like f32_to_bf16, and treats f32 denormals as zero, which
// the bf16 GEMMs downstream flush anyway).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void finish_tile_bf16_avx512bf16(
    uint16_t* out, int64_t ldc, const float* acc, int64_t ld, int mr, int nr, float alpha, float beta, const float* bias) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const bool scaled = alpha != 1.f;
  for (int i = 0; i < mr; ++i) {
    const float* a = acc + i * ld;
    uint16_t* o = out + i * ldc;
    for (int j = 0; j < nr; j += 32) {
      const int left = nr - j;
      const __mmask16 m0 = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const __mmask16 m1 = left >= 32 ? __mmask16(0xffff) : left > 16 ? __mmask16((1u << (left - 16)) - 1) : __mmask16(0);
      const __mmask32 m = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1ull << left) - 1);
      __m512 v0 = _mm512_maskz_loadu_ps(m0, a + j), v1 = _mm512_maskz_loadu_ps(m1, a + j + 16);
      if (scaled) {
        v0 = _mm512_mul_ps(va, v0);
        v1 = _mm512_mul_ps(va, v1);
      }
      if (beta != 0.f) {
        const __m512i h = _mm512_maskz_loadu_epi16(m, o + j);
        const __m512 c0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
        const __m512 c1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
        v0 = _mm512_fmadd_ps(vb, c0, v0);
        v1 = _mm512_fmadd_ps(vb, c1, v1);
      }
      if (bias) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, bias + j));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, bias + j + 16));
      }
      _mm512_mask_storeu_epi16(o + j, m, (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
    }
  }
}

bool epilogue_avx512bf16() {
  static const bool v = cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl &&
                        cpu_features().avx512_bf16;
  return v;
}

bool epilogue_avx512() {
  static const bool v = cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl;
  return v;
}

inline float to_f(float v) { return v; }
inline float to_f(uint16_t h) { return bf16_to_f32(h); }
inline void from_f(float v, float* o) { *o = v; }
inline void from_f(float v, uint16_t* o) { *o = f32_to_bf16(v); }

template <typename T>
void finish_row_scalar(T* out, const float* acc, int n, float alpha, float beta, const float* bias) {
  for (int j = 0; j < n; ++j) {
    float v = alpha * acc[j];
    if (beta != 0.f) v += beta * to_f(out[j]);
    if (bias) v += bias[j];
    from_f(v, out + j);
  }
}

}  // namespace

void finish_row_f32(float* out, const float* acc, int n, float alpha, float beta, const float* bias) {
  if (epilogue_avx512()) return finish_row_f32_avx512(out, acc, n, alpha, beta, bias);
  finish_row_scalar(out, acc, n, alpha, beta, bias);
}

void finish_row_bf16(uint16_t* out, const float* acc, int n, float alpha, float beta, const float* bias) {
  if (epilogue_avx512()) return finish_row_bf16_avx512(out, acc, n, alpha, beta, bias);
  finish_row_scalar(out, acc, n, alpha, beta, bias);
}

EpilogueFn store_epilogue(void* c, DType dt, int64_t ldc, float alpha, float beta, const float* bias, bool stream) {
  if (dt == DType::F32) {
    float* cf = static_cast<float*>(c);
    if (stream && beta == 0.f && epilogue_avx512())
      return [=](int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld) {
        finish_tile_f32_stream_avx512(cf + i0 * ldc + j0, ldc, tile, ld, mr, nr, alpha, bias ? bias + j0 : nullptr);
      };
    return [=](int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld) {
      for (int ii = 0; ii < mr; ++ii)
        finish_row_f32(cf + (i0 + ii) * ldc + j0, tile + ii * ld, nr, alpha, beta, bias ? bias + j0 : nullptr);
    };
  }
  uint16_t* ch = static_cast<uint16_t*>(c);
  if (epilogue_avx512bf16())
    return [=](int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld) {
      finish_tile_bf16_avx512bf16(ch + i0 * ldc + j0, ldc, tile, ld, mr, nr, alpha, beta, bias ? bias + j0 : nullptr);
    };
  return [=](int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld) {
    for (int ii = 0; ii < mr; ++ii)
      finish_row_bf16(ch + (i0 + ii) * ldc + j0, tile + ii * ld, nr, alpha, beta, bias ? bias + j0 : nullptr);
  };
}

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
