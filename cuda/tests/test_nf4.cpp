// nf4 ops: quantize / double quant / dequantize against an independent scalar reference written
// here (threshold counting, float64 mean, the bnb dQuantize search), CPU SIMD paths against each
// other, CUDA against CPU bit for bit, tails and odd sizes, zero blocks, round-trip error bounds,
// the GEMM row/tile helpers, and argument errors. The bitsandbytes known answers (fixtures) are
// checked from JS in test/nf4.test.mjs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include "harness.h"
#include "qn/error.h"
#include "qn/cpu_features.h"
#include "qn/ops/nf4.h"
#include "cpu/nf4_panels.h"

using namespace qn;
using namespace qnt;

namespace {

float vf(float x) {  // forces a float32 rounding point
  volatile float v = x;
  return v;
}

struct RefQuant {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
};

uint8_t ref_code(float s) {
  uint8_t c = 0;
  for (int i = 0; i < 15; ++i) c += s > kNf4Thresholds[i] ? 1 : 0;
  return c;
}

RefQuant ref_quantize(const std::vector<float>& x, int bs) {
  const int64_t n = static_cast<int64_t>(x.size()), nb = nf4_num_blocks(n, bs);
  RefQuant r;
  r.absmax.assign(nb, 0.f);
  for (int64_t i = 0; i < n; ++i) r.absmax[i / bs] = std::max(r.absmax[i / bs], std::fabs(x[i]));
  r.packed.assign((n + 1) / 2, 0);
  for (int64_t i = 0; i < (n + 1) / 2 * 2; ++i) {
    const float inv = vf(1.0f / r.absmax[i / bs]);
    const float v = i < n ? x[i] : 0.f;
    const uint8_t c = ref_code(vf(v * inv));
    r.packed[i / 2] |= (i % 2 == 0) ? static_cast<uint8_t>(c << 4) : c;
  }
  return r;
}

uint8_t ref_dynamic(float x) {
  const float* code = kDynamicMap8;
  int pivot = 127, up = 255, lo = 0;
  float lower = -1.f, upper = 1.f, val = code[pivot];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > val) { lo = pivot; lower = val; pivot += step; }
    else { up = pivot; upper = val; pivot -= step; }
    val = code[pivot];
  }
  if (up == 255) upper = code[255];
  if (lo == 0) lower = code[0];
  if (x > val) return static_cast<uint8_t>(x > vf(vf(upper + val) * 0.5f) ? up : pivot);
  return static_cast<uint8_t>(x < vf(vf(lower + val) * 0.5f) ? lo : pivot);
}

struct RefDq {
  float offset;
  std::vector<uint8_t> q;
  std::vector<float> nested, restored;
};

RefDq ref_double_quant(const std::vector<float>& a, int nbs) {
  RefDq r;
  double sum = 0;  // float64 sum in index order: equal to the ops' lane order unless rounding bites
  for (float v : a) sum += v;
  r.offset = static_cast<float>(sum / static_cast<double>(a.size()));
  const int64_t nb = static_cast<int64_t>(a.size()), nnb = nf4_num_blocks(nb, nbs);
  r.nested.assign(nnb, 0.f);
  for (int64_t i = 0; i < nb; ++i) r.nested[i / nbs] = std::max(r.nested[i / nbs], std::fabs(vf(a[i] - r.offset)));
  r.q.resize(nb);
  r.restored.resize(nb);
  for (int64_t i = 0; i < nb; ++i) {
    const float inv = vf(1.0f / r.nested[i / nbs]);
    r.q[i] = ref_dynamic(vf(vf(a[i] - r.offset) * inv));
    r.restored[i] = vf(vf(kDynamicMap8[r.q[i]] * r.nested[i / nbs]) + r.offset);
  }
  return r;
}

std::vector<float> gaussian(size_t n, uint64_t salt, float sigma = 1.f) {
  std::mt19937_64 rng(seed() * 7919ull + salt);
  std::normal_distribution<float> d(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  if (a.size() != b.size()) {
    record_failure(what, "size " + std::to_string(a.size()) + " vs " + std::to_string(b.size()));
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    uint32_t x, y;
    std::memcpy(&x, &a[i], 4);
    std::memcpy(&y, &b[i], 4);
    if (x != y) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "first difference at %zu: %.9g (0x%08x) vs %.9g (0x%08x)", i, a[i], x, b[i], y);
      record_failure(what, buf);
      return false;
    }
  }
  return true;
}

bool same_bytes(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, const std::string& what) {
  if (a == b) return true;
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  record_failure(what, "sizes " + std::to_string(a.size()) + "/" + std::to_string(b.size()) + ", first difference at byte " +
                           std::to_string(i) + (i < a.size() && i < b.size()
                                                    ? " (" + std::to_string(a[i]) + " vs " + std::to_string(b[i]) + ")"
                                                    : std::string()));
  return false;
}

struct Quantized {
  Tensor codes, absmax;
};

Quantized quantize_on(const std::shared_ptr<Context>& ctx, const Tensor& src, int bs, const std::string& name = "w") {
  const int64_t n = src.numel();
  Quantized q{poisoned(ctx, DType::U8, {(n + 1) / 2}), poisoned(ctx, DType::F32, {nf4_num_blocks(n, bs)})};
  nf4_quantize(*ctx, Nf4QuantizeArgs{src, q.codes, q.absmax, bs, name});
  return q;
}

Nf4Weight plain_weight(const Quantized& q, int64_t rows, int64_t cols, int bs) {
  Nf4Weight w;
  w.rows = rows;
  w.cols = cols;
  w.blocksize = bs;
  w.nested = false;
  w.codes = q.codes;
  w.absmax = q.absmax;
  return w;
}

std::vector<float> dequant_on(const std::shared_ptr<Context>& ctx, const Nf4Weight& w, DType od) {
  Tensor out = poisoned(ctx, od, {w.rows, w.cols});
  nf4_dequantize(*ctx, Nf4DequantizeArgs{w, out});
  return to_floats(out);
}

// CPU SIMD level restored at scope exit.
struct IsaScope {
  explicit IsaScope(int level) { cpu::detail::nf4_set_isa(level); }
  ~IsaScope() { cpu::detail::nf4_set_isa(-1); }
};

}  // namespace

QN_TEST(nf4_tables) {
  for (int i = 0; i < 15; ++i) {
    const float mid = static_cast<float>((static_cast<double>(kNf4Codes[i]) + kNf4Codes[i + 1]) / 2);
    EXPECT_EQ(kNf4Thresholds[i], mid);
  }
  EXPECT_EQ(kNf4Codes[0], -1.f);
  EXPECT_EQ(kNf4Codes[7], 0.f);
  EXPECT_EQ(kNf4Codes[15], 1.f);
  EXPECT_EQ(kDynamicMap8[127], 0.f);
  EXPECT_EQ(kDynamicMap8[255], 1.f);
  for (int i = 0; i < 255; ++i) EXPECT_TRUE(kDynamicMap8[i] < kDynamicMap8[i + 1]);
  EXPECT_TRUE(nf4_blocksize_ok(32) && nf4_blocksize_ok(64) && nf4_blocksize_ok(4096));
  EXPECT_TRUE(!nf4_blocksize_ok(16) && !nf4_blocksize_ok(48) && !nf4_blocksize_ok(8192) && !nf4_blocksize_ok(0));
}

// Every dtype, blocksize and a spread of sizes (tails, odd n, one element) against the reference;
// on CUDA the same tensors also against the CPU op.
QN_TEST(nf4_quantize_matches_reference) {
  auto ctx = test_ctx();
  const int64_t sizes[] = {1, 2, 3, 31, 32, 33, 63, 65, 127, 1000, 1001, 4097, 8193, 65536 + 17};
  const int bss[] = {32, 64, 128, 256, 1024, 4096};
  uint64_t salt = 10;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int bs : bss) {
      for (int64_t n : sizes) {
        std::vector<float> x = gaussian(n, ++salt, 0.05f);
        if (n > 100) x[n / 2] = 0.f;
        Tensor src = from_floats(ctx, dt, {n}, x);
        const std::vector<float> xs = to_floats(src);  // the values after the dtype rounding
        const RefQuant r = ref_quantize(xs, bs);
        Quantized q = quantize_on(ctx, src, bs);
        const std::string what = std::string(dtype_name(dt)) + " bs " + std::to_string(bs) + " n " + std::to_string(n);
        same_bytes(to_bytes(q.codes), r.packed, "codes " + what);
        same_bits(to_floats(q.absmax), r.absmax, "absmax " + what);
        if (n % 2) EXPECT_EQ(to_bytes(q.codes).back() & 15, 7);  // the padded 0.0 of the last block
      }
    }
  }
}

// Values exactly on the thresholds go to the lower code, one ulp above to the upper one; the
// codes themselves map to themselves.
QN_TEST(nf4_quantize_thresholds_and_codes) {
  auto ctx = test_ctx();
  std::vector<float> x(64, 0.f);
  x[0] = 1.f;  // absmax 1: s = x exactly
  int k = 1;
  for (int i = 0; i < 15; ++i) {
    x[k++] = kNf4Thresholds[i];
    x[k++] = std::nextafter(kNf4Thresholds[i], 2.f);
  }
  for (int i = 0; i < 16; ++i) x[k++] = kNf4Codes[i];
  Tensor src = from_floats(ctx, DType::F32, {64}, x);
  Quantized q = quantize_on(ctx, src, 64);
  const std::vector<uint8_t> p = to_bytes(q.codes);
  auto code = [&](int i) { return (i % 2 == 0) ? p[i / 2] >> 4 : p[i / 2] & 15; };
  k = 1;
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(code(k++), i);
    EXPECT_EQ(code(k++), i + 1);
  }
  for (int i = 0; i < 16; ++i) EXPECT_EQ(code(k++), i);
}

QN_TEST(nf4_zero_blocks_decode_to_zero) {
  auto ctx = test_ctx();
  const int bs = 64;
  std::vector<float> x = gaussian(4 * bs + 5, 3);
  for (int i = bs; i < 2 * bs; ++i) x[i] = 0.f;   // block 1 all zero
  for (int i = 4 * bs; i < 4 * bs + 5; ++i) x[i] = 0.f;  // the partial last block all zero, odd n
  x[3 * bs] = -0.f;
  for (int i = 3 * bs + 1; i < 4 * bs; ++i) x[i] = 0.f;  // block 3: only signed zeros
  const int64_t n = static_cast<int64_t>(x.size());
  Quantized q = quantize_on(ctx, from_floats(ctx, DType::F32, {n}, x), bs);
  const std::vector<float> am = to_floats(q.absmax);
  EXPECT_EQ(am[1], 0.f);
  EXPECT_EQ(am[3], 0.f);
  EXPECT_EQ(am[4], 0.f);
  const std::vector<uint8_t> codes = to_bytes(q.codes);
  for (int i = bs / 2; i < bs; ++i) EXPECT_EQ(codes[i], 0);  // code 0 (-1.0) x 0
  EXPECT_EQ(codes.back(), 0);                                // padded nibble of a zero block: 0 too
  for (DType od : {DType::F32, DType::BF16}) {
    const std::vector<float> y = dequant_on(ctx, plain_weight(q, 1, n, bs), od);
    for (int64_t i = 0; i < n; ++i)
      if (x[i] == 0.f) EXPECT_TRUE(y[i] == 0.f);  // exactly +-0, no NaN
  }
  // With double quant the restored scale of a zero block is not 0 (bitsandbytes does the same),
  // but everything stays finite.
  Nf4Weight w = nf4_quantize_weight(from_floats(ctx, DType::F32, {1, n}, x), bs, true, "zeros");
  for (float v : dequant_on(ctx, w, DType::F32)) EXPECT_TRUE(std::isfinite(v));
  // An all-zero tensor: absmax 0 everywhere, offset 0, nested 0 -> s = NaN -> q = 0 -> restored 0.
  std::vector<float> z(1000, 0.f);
  Nf4Weight wz = nf4_quantize_weight(from_floats(ctx, DType::BF16, {10, 100}, z), 64, true, "allzero");
  EXPECT_EQ(wz.nested_offset, 0.f);
  for (float v : dequant_on(ctx, wz, DType::BF16)) EXPECT_TRUE(v == 0.f);
}

// The double quant against the reference (offset, 8-bit codes, nested absmax, restored scales),
// the inverse op, and dequantize with nested scales == dequantize with the restored f32 scales.
QN_TEST(nf4_double_quant_matches_reference) {
  auto ctx = test_ctx();
  for (int64_t nb : {int64_t(1), int64_t(2), int64_t(255), int64_t(256), int64_t(257), int64_t(1000), int64_t(70001)}) {
    std::vector<float> a = random_floats(nb, 0.01f, 3.f, 100 + nb);
    if (nb > 10) a[3] = 0.f;  // a zero block
    Tensor am = from_floats(ctx, DType::F32, {nb}, a);
    const int64_t nnb = nf4_num_blocks(nb, 256);
    Tensor q = poisoned(ctx, DType::U8, {nb}), nested = poisoned(ctx, DType::F32, {nnb}),
           off = poisoned(ctx, DType::F32, {1});
    nf4_double_quant(*ctx, Nf4DoubleQuantArgs{am, q, nested, off, 256});
    const RefDq r = ref_double_quant(a, 256);
    const std::string what = "nb " + std::to_string(nb);
    EXPECT_EQ(to_floats(off)[0], r.offset);
    same_bytes(to_bytes(q), r.q, "absmax_q " + what);
    same_bits(to_floats(nested), r.nested, "nested_absmax " + what);
    Tensor restored = poisoned(ctx, DType::F32, {nb});
    nf4_double_dequant(*ctx, Nf4DoubleDequantArgs{q, nested, nf4_dynamic_map_tensor(ctx), r.offset, restored, 256});
    same_bits(to_floats(restored), r.restored, "restored " + what);
  }
  // Nested scales restored inside nf4_dequantize == the restored f32 scales of the inverse op.
  const int64_t rows = 37, cols = 320;
  std::vector<float> x = gaussian(rows * cols, 77, 0.02f);
  Tensor wt = from_floats(ctx, DType::BF16, {rows, cols}, x);
  Nf4Weight w = nf4_quantize_weight(wt, 32, true, "w");
  Tensor restored = poisoned(ctx, DType::F32, {w.nblocks()});
  nf4_double_dequant(*ctx, Nf4DoubleDequantArgs{w.absmax_q, w.nested_absmax, w.nested_map, w.nested_offset, restored, 256});
  Nf4Weight plain = w;
  plain.nested = false;
  plain.absmax = restored;
  for (DType od : {DType::F32, DType::BF16})
    same_bits(dequant_on(ctx, w, od), dequant_on(ctx, plain, od), std::string("nested vs restored ") + dtype_name(od));
}

// Dequantize: y = code * absmax in f32, bf16 = one RNE rounding of that; odd sizes and tails.
QN_TEST(nf4_dequantize_matches_reference) {
  auto ctx = test_ctx();
  const int64_t shapes[][2] = {{1, 1}, {1, 3}, {3, 33}, {48, 80}, {17, 97}, {64, 64}, {5, 1001}, {129, 257}};
  uint64_t salt = 500;
  for (int bs : {32, 64, 256, 4096}) {
    for (auto& s : shapes) {
      const int64_t n = s[0] * s[1];
      std::vector<float> x = gaussian(n, ++salt, 0.1f);
      Quantized q = quantize_on(ctx, from_floats(ctx, DType::F32, {s[0], s[1]}, x), bs);
      const std::vector<uint8_t> codes = to_bytes(q.codes);
      const std::vector<float> am = to_floats(q.absmax);
      std::vector<float> want(n), want_bf(n);
      for (int64_t i = 0; i < n; ++i) {
        const int c = (i % 2 == 0) ? codes[i / 2] >> 4 : codes[i / 2] & 15;
        want[i] = vf(kNf4Codes[c] * am[i / bs]);
        want_bf[i] = bf16_to_f32(f32_to_bf16(want[i]));
      }
      const std::string what = "bs " + std::to_string(bs) + " " + shape_str({s[0], s[1]});
      Nf4Weight w = plain_weight(q, s[0], s[1], bs);
      same_bits(dequant_on(ctx, w, DType::F32), want, "dequant f32 " + what);
      same_bits(dequant_on(ctx, w, DType::BF16), want_bf, "dequant bf16 " + what);
    }
  }
}

// Every CPU SIMD level gives the same bytes (quantize) and bits (dequantize, row/tile helpers).
QN_TEST(nf4_cpu_simd_paths_agree) {
  if (testing_cuda()) return;  // a CPU property
  auto ctx = cpu_ctx();
  const int64_t rows = 61, cols = 1000;
  const int64_t n = rows * cols;
  std::vector<float> x = gaussian(n, 901, 0.03f);
  for (int i = 0; i < 64; ++i) x[640 + i] = 0.f;  // a zero block
  std::vector<uint8_t> codes_ref;
  std::vector<float> f32_ref, bf_ref;
  for (int level : {0, 1, 2}) {
    IsaScope isa(level);
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      Tensor src = from_floats(ctx, dt, {rows, cols}, x);
      Quantized q = quantize_on(ctx, src, 64);
      const RefQuant r = ref_quantize(to_floats(src), 64);
      same_bytes(to_bytes(q.codes), r.packed, "simd level " + std::to_string(level) + " " + dtype_name(dt));
    }
    Nf4Weight w = nf4_quantize_weight(from_floats(ctx, DType::F32, {rows, cols}, x), 64, true, "w");
    const std::vector<float> f = dequant_on(ctx, w, DType::F32), b = dequant_on(ctx, w, DType::BF16);
    if (level == 0) {
      codes_ref = to_bytes(w.codes);
      f32_ref = f;
      bf_ref = b;
    } else {
      same_bytes(to_bytes(w.codes), codes_ref, "dq codes level " + std::to_string(level));
      same_bits(f, f32_ref, "dequant f32 level " + std::to_string(level));
      same_bits(b, bf_ref, "dequant bf16 level " + std::to_string(level));
    }
    // Row and tile helpers at odd offsets (unaligned heads and tails inside blocks).
    std::vector<float> rows_out((17 - 3) * cols);
    cpu::nf4_dequantize_rows(w, 3, 17, DType::F32, rows_out.data());
    same_bits(rows_out, std::vector<float>(f32_ref.begin() + 3 * cols, f32_ref.begin() + 17 * cols),
              "rows level " + std::to_string(level));
    const int64_t r0 = 5, r1 = 29, c0 = 7, c1 = 903, ldo = 1001;
    std::vector<uint16_t> tile((r1 - r0) * ldo, 0xFFFF);
    cpu::nf4_dequantize_tile(w, r0, r1, c0, c1, DType::BF16, tile.data(), ldo);
    std::vector<float> got, want;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        got.push_back(bf16_to_f32(tile[(r - r0) * ldo + (c - c0)]));
        want.push_back(bf_ref[r * cols + c]);
      }
    same_bits(got, want, "tile bf16 level " + std::to_string(level));
    EXPECT_EQ(tile[(r1 - r0 - 1) * ldo + (c1 - c0)], 0xFFFF);  // nothing past the tile width
    std::vector<float> range(777);
    cpu::nf4_dequantize_range(w, 12345, 12345 + 777, DType::F32, range.data());
    same_bits(range, std::vector<float>(f32_ref.begin() + 12345, f32_ref.begin() + 12345 + 777),
              "range level " + std::to_string(level));
  }
}

// Calls fn(bs, dq, w) for a [rows, cols] gaussian weight quantized with blocksizes 32, 64, 256,
// plain and double-quantized scales (the panel decoder tests).
template <typename F>
void for_each_panel_test_weight(int64_t rows, int64_t cols, uint64_t seed, const F& fn) {
  auto ctx = cpu_ctx();
  for (int bs : {32, 64, 256})
    for (bool dq : {false, true})
      fn(bs, dq, nf4_quantize_weight(from_floats(ctx, DType::F32, {rows, cols}, gaussian(rows * cols, seed + bs, 0.05f)), bs,
                                     dq, "w"));
}

// Records a failure naming the case when a decoded panel differs from the expected one; counts it.
void expect_same_panel(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, const char* kind, int bs,
                       bool dq, const char* offset_name, int64_t offset, int64_t k0, int64_t k1, int& checked) {
  char what[120];
  std::snprintf(what, sizeof what, "%s bs %d dq %d %s %lld k [%lld, %lld)", kind, bs, dq, offset_name, (long long)offset,
                (long long)k0, (long long)k1);
  if (got != want) record_failure(what, "panel differs from the dequantized tile");
  ++checked;
}

// The GEMM's fused decoder (cpu/nf4_panels.h) against the definition: the bf16 dequantized tile,
// interleaved in pairs of W rows. Bit for bit, with plain and double-quantized scales, blocksizes
// 32..256, odd and even row counts, and nothing written past the pairs.
QN_TEST(nf4_panel_decoder_matches_dequantize) {
  if (testing_cuda()) return;  // a CPU GEMM helper
  int checked = 0;
  for_each_panel_test_weight(45, 192, 77, [&](int bs, bool dq, const Nf4Weight& w) {
    for (int64_t c0 : {0, 64, 96, 128}) {
      if (!cpu::nf4_panels::can_decode_transposed(w, c0, 64)) continue;  // (no AVX-512 here)
      for (auto kr : {std::pair<int64_t, int64_t>{0, 45}, {3, 17}, {10, 11}, {44, 45}, {0, 32}}) {
        const int64_t k0 = kr.first, k1 = kr.second, pairs = (k1 - k0 + 1) / 2, R = 64;
        std::vector<uint16_t> got(static_cast<size_t>((pairs + 1) * 2 * R), 0xABCD);
        cpu::nf4_panels::decode_pairs_transposed(w, k0, k1, c0, static_cast<int>(R), got.data());
        std::vector<uint16_t> tile(static_cast<size_t>((k1 - k0) * 64));
        cpu::nf4_dequantize_tile(w, k0, k1, c0, c0 + 64, DType::BF16, tile.data(), 64);
        std::vector<uint16_t> want(got.size(), 0xABCD);
        for (int64_t j = 0; j < 2 * pairs; ++j)
          for (int64_t i = 0; i < 64; ++i)
            want[static_cast<size_t>((j / 2) * 2 * R + 2 * i + (j & 1))] =
                j < k1 - k0 ? tile[static_cast<size_t>(j * 64 + i)] : uint16_t(0);
        expect_same_panel(got, want, "panel decode", bs, dq, "c0", c0, k0, k1, checked);
      }
    }
  });
  if (cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl) EXPECT_TRUE(checked == 3 * 2 * 4 * 5);
}

// The forward's fused decoder (decode_rows_transposed: 64 W rows, k along the row) against the
// definition: the bf16 dequantized tile, transposed as pairs of k's. Bit for bit, with plain and
// double-quantized scales, blocksizes 32..256 (a 32-code run in the second half of a block), panel
// offsets, and nothing written past the k range.
QN_TEST(nf4_row_panel_decoder_matches_dequantize) {
  if (testing_cuda()) return;  // a CPU GEMM helper
  int checked = 0;
  for_each_panel_test_weight(130, 224, 91, [&](int bs, bool dq, const Nf4Weight& w) {
    for (int64_t r0 : {0, 3, 66})
      for (auto kr : {std::pair<int64_t, int64_t>{0, 224}, {32, 64}, {96, 192}, {160, 224}}) {
        const int64_t k0 = kr.first, k1 = kr.second, R = 64;
        if (!cpu::nf4_panels::can_decode_rows(w, k0, k1, 64)) continue;  // (no AVX-512 here)
        const int64_t lead = 2;  // panel units before k0 (the decoder writes from its dst on)
        std::vector<uint16_t> got(static_cast<size_t>((lead + (k1 - k0) / 2 + 1) * 2 * R), 0xABCD);
        cpu::nf4_panels::decode_rows_transposed(w, r0, k0, k1, static_cast<int>(R), got.data() + lead * 2 * R);
        std::vector<uint16_t> tile(static_cast<size_t>(64 * (k1 - k0)));
        cpu::nf4_dequantize_tile(w, r0, r0 + 64, k0, k1, DType::BF16, tile.data(), k1 - k0);
        std::vector<uint16_t> want(got.size(), 0xABCD);
        for (int64_t j = 0; j < k1 - k0; ++j)
          for (int64_t i = 0; i < 64; ++i)
            want[static_cast<size_t>((lead + j / 2) * 2 * R + 2 * i + (j & 1))] = tile[static_cast<size_t>(i * (k1 - k0) + j)];
        expect_same_panel(got, want, "row panel decode", bs, dq, "r0", r0, k0, k1, checked);
      }
  });
  if (cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl) EXPECT_TRUE(checked == 3 * 2 * 3 * 4);
}

// Round-trip error on N(0,1) weights, blocksize 64 (the figures are printed).
// Hard bounds from the format: plain absmax a: |w - w'| <= a * h, h = the largest half gap of the
// code table (0.1520); double quant with restored scale r: |w - w'| <= a * h + |r - a|, and
// |r - a| <= nested_absmax * (the largest half step of the dynamic map, 0.00703).
// Statistical bound: relative RMS error measured 0.0919-0.0921 over seeds 0-7 (std 8e-5) for both
// plain and double quant (the 8-bit scales add < 0.05 %); bounded at 0.095 = measured + 3 %, about
// 40 standard deviations, while a wrong table, a shifted threshold or a lost nibble moves it far more
// (uniform 4-bit codes give about 0.11).
QN_TEST(nf4_roundtrip_error_bounds) {
  auto ctx = test_ctx();
  const int64_t rows = 1024, cols = 1024, n = rows * cols;
  const std::vector<float> x = gaussian(n, 4242);
  Tensor src = from_floats(ctx, DType::F32, {rows, cols}, x);
  double h = 0.0;
  for (int i = 0; i < 15; ++i) h = std::max(h, (static_cast<double>(kNf4Codes[i + 1]) - kNf4Codes[i]) / 2);
  Quantized q = quantize_on(ctx, src, 64);
  const std::vector<float> am = to_floats(q.absmax);
  for (bool dq : {false, true}) {
    Nf4Weight w = nf4_quantize_weight(src, 64, dq, "w");
    const std::vector<float> y = dequant_on(ctx, w, DType::F32);
    std::vector<float> scale = am;
    if (dq) {
      Tensor restored = poisoned(ctx, DType::F32, {w.nblocks()});
      nf4_double_dequant(*ctx, Nf4DoubleDequantArgs{w.absmax_q, w.nested_absmax, w.nested_map, w.nested_offset,
                                                    restored, 256});
      scale = to_floats(restored);
      const std::vector<float> nested = to_floats(w.nested_absmax);
      double worst_scale = 0;
      for (int64_t b = 0; b < w.nblocks(); ++b)
        worst_scale = std::max(worst_scale, std::fabs(static_cast<double>(scale[b]) - am[b]) / nested[b / 256]);
      std::printf("    nf4 double quant: max |restored - absmax| / nested_absmax %.5f (bound 0.00704)\n", worst_scale);
      EXPECT_TRUE(worst_scale <= 0.00704);
    }
    double se = 0, ss = 0, worst = 0, excess = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = std::fabs(static_cast<double>(y[i]) - x[i]);
      const double a = am[i / 64], r = scale[i / 64];
      se += e * e;
      ss += static_cast<double>(x[i]) * x[i];
      worst = std::max(worst, e / a);
      excess = std::max(excess, e - (a * h + std::fabs(r - a)) * (1 + 1e-6));
    }
    const double rel_rms = std::sqrt(se / ss);
    std::printf("    nf4 round trip N(0,1) bs64 %s: rel RMS %.5f, max |err|/absmax %.4f\n",
                dq ? "double-quant" : "plain", rel_rms, worst);
    EXPECT_TRUE(rel_rms < 0.095);
    EXPECT_TRUE(excess <= 0.0);
  }
}

// CUDA codes, scales and outputs bit-identical to the CPU's, including misaligned views (the
// scalar kernels) and a non-finite report. Runs only with --device cuda.
QN_TEST(nf4_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  auto ctx = test_ctx();
  auto cpu = cpu_ctx();
  uint64_t salt = 7000;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int bs : {32, 64, 512, 4096}) {
      for (int64_t n : {int64_t(1), int64_t(7), int64_t(4095), int64_t(1 << 20), int64_t(3 * 11008 + 1)}) {
        std::vector<float> x = gaussian(n, ++salt, 0.02f);
        Tensor g = from_floats(ctx, dt, {n}, x), c = from_floats(cpu, dt, {n}, x);
        Quantized qg = quantize_on(ctx, g, bs), qc = quantize_on(cpu, c, bs);
        const std::string what = std::string(dtype_name(dt)) + " bs " + std::to_string(bs) + " n " + std::to_string(n);
        same_bytes(to_bytes(qg.codes), to_bytes(qc.codes), "cuda codes " + what);
        same_bits(to_floats(qg.absmax), to_floats(qc.absmax), "cuda absmax " + what);
      }
    }
  }
  // Misaligned source (row slices of an odd-width matrix) -> scalar load path.
  {
    std::vector<float> x = gaussian(9 * 1001, 31, 0.5f);
    Tensor g = from_floats(ctx, DType::BF16, {9, 1001}, x).slice_rows(1, 9);
    Tensor c = from_floats(cpu, DType::BF16, {9, 1001}, x).slice_rows(1, 9);
    Quantized qg = quantize_on(ctx, g, 64), qc = quantize_on(cpu, c, 64);
    same_bytes(to_bytes(qg.codes), to_bytes(qc.codes), "cuda codes misaligned");
  }
  // Double quant + dequantize (both dtypes, nested and plain, odd sizes).
  for (int64_t rows : {int64_t(1), int64_t(33), int64_t(2048)}) {
    const int64_t cols = rows == 2048 ? 2048 + 8 : 97;
    std::vector<float> x = gaussian(rows * cols, 40 + rows, 0.02f);
    Nf4Weight wg = nf4_quantize_weight(from_floats(ctx, DType::BF16, {rows, cols}, x), 64, true, "w");
    Nf4Weight wc = nf4_quantize_weight(from_floats(cpu, DType::BF16, {rows, cols}, x), 64, true, "w");
    const std::string what = shape_str({rows, cols});
    EXPECT_EQ(wg.nested_offset, wc.nested_offset);
    same_bytes(to_bytes(wg.absmax_q), to_bytes(wc.absmax_q), "cuda absmax_q " + what);
    same_bits(to_floats(wg.nested_absmax), to_floats(wc.nested_absmax), "cuda nested_absmax " + what);
    for (DType od : {DType::F32, DType::BF16})
      same_bits(dequant_on(ctx, wg, od), dequant_on(cpu, wc, od), std::string("cuda dequant ") + dtype_name(od) + " " + what);
    Tensor rg = poisoned(ctx, DType::F32, {wg.nblocks()}), rc = poisoned(cpu, DType::F32, {wc.nblocks()});
    nf4_double_dequant(*ctx, Nf4DoubleDequantArgs{wg.absmax_q, wg.nested_absmax, wg.nested_map, wg.nested_offset, rg, 256});
    nf4_double_dequant(*cpu, Nf4DoubleDequantArgs{wc.absmax_q, wc.nested_absmax, wc.nested_map, wc.nested_offset, rc, 256});
    same_bits(to_floats(rg), to_floats(rc), "cuda double dequant " + what);
    // Misaligned output view -> the scalar dequant kernel.
    Tensor big = poisoned(ctx, DType::BF16, {rows * cols + 1});
    Tensor outv = big.slice_rows(1, rows * cols + 1);
    nf4_dequantize(*ctx, Nf4DequantizeArgs{wg, outv});
    same_bits(to_floats(outv), dequant_on(cpu, wc, DType::BF16), "cuda dequant misaligned " + what);
  }
  // Non-finite input on the device: E_NONFINITE naming the tensor and the first bad element.
  std::vector<float> x = gaussian(5000, 5);
  x[4321] = NAN;
  x[4500] = INFINITY;
  Tensor g = from_floats(ctx, DType::F32, {50, 100}, x);
  try {
    quantize_on(ctx, g, 64, "model.layers.0.mlp.up_proj.weight");
    record_failure("cuda nonfinite", "no throw");
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::NonFinite);
    EXPECT_TRUE(std::string(e.what()).find("model.layers.0.mlp.up_proj.weight") != std::string::npos);
    EXPECT_TRUE(std::string(e.what()).find("4321 [43, 21]") != std::string::npos);
  }
}

QN_TEST(nf4_nonfinite_names_the_tensor) {
  auto ctx = test_ctx();
  struct Case {
    int64_t index;
    float value;
    const char* what;
  } cases[] = {{0, NAN, "nan"}, {4999, INFINITY, "inf"}, {77, -INFINITY, "-inf"}};
  for (const Case& c : cases) {
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      std::vector<float> x = gaussian(5000, 9);
      x[c.index] = c.value;
      if (c.index != 4999) x[4999] = NAN;  // a later one: the first is reported
      Tensor src = from_floats(ctx, dt, {50, 100}, x);
      try {
        quantize_on(ctx, src, 64, "model.layers.3.self_attn.q_proj.weight");
        record_failure("nonfinite", "no throw");
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_TRUE(e.code() == ErrorCode::NonFinite);
        EXPECT_TRUE(m.find("'model.layers.3.self_attn.q_proj.weight'") != std::string::npos);
        EXPECT_TRUE(m.find(std::string("(") + c.what + ")") != std::string::npos);
        EXPECT_TRUE(m.find("element " + std::to_string(c.index) + " [" + std::to_string(c.index / 100) + ", " +
                           std::to_string(c.index % 100) + "]") != std::string::npos);
        if (failures_in_current()) std::printf("    message: %s\n", m.c_str());
      }
    }
  }
}

QN_TEST(nf4_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor src = from_floats(ctx, DType::F32, {256}, gaussian(256, 1));
  Tensor codes = Tensor::empty(ctx, DType::U8, {128}), am = Tensor::empty(ctx, DType::F32, {4});
  for (int bs : {0, 16, 48, 100, 8192, -64})
    EXPECT_THROWS_CODE(nf4_quantize(*ctx, Nf4QuantizeArgs{src, codes, am, bs, "w"}), Arg);
  EXPECT_THROWS_CODE(nf4_quantize(*ctx, Nf4QuantizeArgs{src, Tensor::empty(ctx, DType::U8, {127}), am, 64, "w"}), Shape);
  EXPECT_THROWS_CODE(nf4_quantize(*ctx, Nf4QuantizeArgs{src, codes, Tensor::empty(ctx, DType::F32, {5}), 64, "w"}), Shape);
  EXPECT_THROWS_CODE(nf4_quantize(*ctx, Nf4QuantizeArgs{src, Tensor::empty(ctx, DType::F32, {128}), am, 64, "w"}), DType);
  EXPECT_THROWS_CODE(nf4_quantize(*ctx, Nf4QuantizeArgs{Tensor::empty(ctx, DType::I32, {256}), codes, am, 64, "w"}), DType);
  EXPECT_THROWS_CODE(nf4_quantize(*ctx, Nf4QuantizeArgs{Tensor::empty(ctx, DType::F32, {0}), Tensor::empty(ctx, DType::U8, {0}),
                                                        Tensor::empty(ctx, DType::F32, {0}), 64, "w"}),
                     Shape);
  EXPECT_THROWS_CODE(nf4_quantize_weight(src, 48, true, "w"), Arg);
  EXPECT_THROWS_CODE(nf4_quantize_weight(Tensor::empty(ctx, DType::F32, {2, 2, 64}), 64, true, "w"), Shape);
  EXPECT_THROWS_CODE(nf4_double_quant(*ctx, Nf4DoubleQuantArgs{am, Tensor::empty(ctx, DType::U8, {4}),
                                                               Tensor::empty(ctx, DType::F32, {1}),
                                                               Tensor::empty(ctx, DType::F32, {1}), 100}),
                     Arg);
  EXPECT_THROWS_CODE(nf4_double_quant(*ctx, Nf4DoubleQuantArgs{am, Tensor::empty(ctx, DType::U8, {3}),
                                                               Tensor::empty(ctx, DType::F32, {1}),
                                                               Tensor::empty(ctx, DType::F32, {1}), 256}),
                     Shape);
  Nf4Weight w = nf4_quantize_weight(from_floats(ctx, DType::F32, {4, 64}, gaussian(256, 2)), 64, true, "w");
  EXPECT_THROWS_CODE(nf4_dequantize(*ctx, Nf4DequantizeArgs{w, Tensor::empty(ctx, DType::F16, {4, 64})}), DType);
  EXPECT_THROWS_CODE(nf4_dequantize(*ctx, Nf4DequantizeArgs{w, Tensor::empty(ctx, DType::F32, {4, 63})}), Shape);
  Nf4Weight bad = w;
  bad.blocksize = 128;  // absmax_q no longer matches
  EXPECT_THROWS_CODE(nf4_dequantize(*ctx, Nf4DequantizeArgs{bad, Tensor::empty(ctx, DType::F32, {4, 64})}), Shape);
  bad = w;
  bad.rows = 5;
  EXPECT_THROWS_CODE(nf4_dequantize(*ctx, Nf4DequantizeArgs{bad, Tensor::empty(ctx, DType::F32, {5, 64})}), Shape);
  if (testing_cuda()) {
    Tensor h = Tensor::empty(cpu_ctx(), DType::F32, {4, 64});
    EXPECT_THROWS_CODE(nf4_dequantize(*ctx, Nf4DequantizeArgs{w, h}), Device);
  } else {
    float out[64];
    EXPECT_THROWS_CODE(cpu::nf4_dequantize_rows(w, 3, 5, DType::F32, out), Shape);
    EXPECT_THROWS_CODE(cpu::nf4_dequantize_rows(w, 0, 1, DType::F16, out), DType);
    EXPECT_THROWS_CODE(cpu::nf4_dequantize_tile(w, 0, 1, 0, 64, DType::F32, out, 32), Arg);
  }
}
