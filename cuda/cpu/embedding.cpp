// CPU embedding gather and scatter-add (see qn/ops/embedding.h). Rows split across the pool for
// the gather; the scatter-add splits the hidden dimension so each thread owns whole columns and
// adds tokens in order (deterministic, no atomics).
#include <algorithm>
#include <cstring>
#include "float_rows.h"
#include "qn/ops/embedding.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {

void embedding(Context&, const EmbeddingArgs& a) {
  const EmbeddingDims d = check_embedding(a);
  const int32_t* ids = a.ids.data<int32_t>();
  const int64_t h = d.h, v = d.v;
  xf::with_type(a.table.dtype(), [&](auto tt) {
    xf::with_type(a.out.dtype(), [&](auto to) {
      using TT = decltype(tt);
      using TO = decltype(to);
      const TT* table = static_cast<const TT*>(a.table.raw());
      TO* out = static_cast<TO*>(a.out.raw());
      parallel_for(d.n, std::max<int64_t>(1, 8192 / std::max<int64_t>(h, 1)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const int64_t id = ids[i];
          TO* dst = out + i * h;
          if (id < 0 || id >= v) {
            std::memset(static_cast<void*>(dst), 0, sizeof(TO) * h);
          } else if (std::is_same<TT, TO>::value) {
            std::memcpy(static_cast<void*>(dst), table + id * h, sizeof(TO) * h);
          } else {
            const TT* src = table + id * h;
            for (int64_t j = 0; j < h; ++j) dst[j] = xf::from_f32<TO>(xf::to_f32(src[j]));
          }
        }
      });
    });
  });
}

void embedding_backward(Context&, const EmbeddingBackwardArgs& a) {
  const EmbeddingDims d = check_embedding_backward(a);
  const int32_t* ids = a.ids.data<int32_t>();
  float* dtable = a.dtable.data<float>();
  const int64_t h = d.h, v = d.v, n = d.n;
  xf::with_type(a.dout.dtype(), [&](auto td) {
    using TD = decltype(td);
    const TD* dout = static_cast<const TD*>(a.dout.raw());
    parallel_for(h, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t id = ids[i];
        if (id < 0 || id >= v) continue;
        float* dst = dtable + id * h;
        const TD* src = dout + i * h;
        for (int64_t j = c0; j < c1; ++j) dst[j] += xf::to_f32(src[j]);
      }
    });
  });
}

}  // namespace cpu
}  // namespace qn
