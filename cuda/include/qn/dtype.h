// Element types a tensor can hold, their sizes and names. Shared by every backend.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace qn {

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2, U8 = 3, I32 = 4 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "f32", "bf16", "f16", "u8", "i32"
bool parse_dtype(const std::string& name, DType* out);

}  // namespace qn
