// Per-call state of Qwen2Model (shared by qwen2_model.cpp and qwen2_head.cpp).
#pragma once
#include <cstdint>
#include <vector>
#include "model/qwen2_model.h"

namespace qn {
namespace model {

struct Qwen2Model::Ctx {
  int64_t b = 0, t = 0, m = 0;
  Tensor ids, mask, pos, tgt;  // i32 [B, T]
  std::vector<int32_t> host_tgt;
  int64_t tokens = 0;
  bool training = false;
  // Per row: index of the first real token (T when none). Queries before it see no key at all
  // (left padding); see patch_masked_rows_*.
  std::vector<int64_t> first_real;
  bool any_masked_rows = false;
};

}  // namespace model
}  // namespace qn
