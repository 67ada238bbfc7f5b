// dtype sizes and names.
#include "qn/dtype.h"

namespace qn {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::U8: return 1;
    case DType::I32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
  }
  return "?";
}

bool parse_dtype(const std::string& name, DType* out) {
  static const struct { const char* n; DType t; } table[] = {
      {"f32", DType::F32}, {"bf16", DType::BF16}, {"f16", DType::F16}, {"u8", DType::U8}, {"i32", DType::I32}};
  for (const auto& e : table)
    if (name == e.n) { *out = e.t; return true; }
  return false;
}

}  // namespace qn
