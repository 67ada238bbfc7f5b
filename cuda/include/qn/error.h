// Error type of the native core. Every failure that can reach JavaScript is a qn::Error with a
// code; the binding maps it to a QloraError carrying the same code string (E_ARG, E_SHAPE, ...).
#pragma once
#include <stdexcept>
#include <string>

namespace qn {

enum class ErrorCode {
  Arg,       // E_ARG: a bad argument value or type
  Shape,     // E_SHAPE: shapes do not fit together
  DType,     // E_DTYPE: wrong element type
  Disposed,  // E_DISPOSED: the tensor or session was disposed
  Device,    // E_DEVICE: tensors from different devices/sessions mixed
  Oom,       // E_OOM: allocation failed
  NoDevice,  // E_NO_DEVICE: the device does not exist or the backend is not built/usable
  Cuda,      // E_CUDA: a CUDA runtime or cuBLASLt error
  Io,        // E_IO: file read/write failure
  Format,    // E_FORMAT: a corrupt or unsupported file
  NonFinite, // E_NONFINITE: NaN or Inf where a finite value is required
  Internal,  // E_INTERNAL: a bug
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] void fail(ErrorCode code, const std::string& message);

#define QN_CHECK(cond, code, msg)                      \
  do {                                                 \
    if (!(cond)) ::qn::fail(::qn::ErrorCode::code, msg); \
  } while (0)

}  // namespace qn
