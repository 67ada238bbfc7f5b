// Error code names as JavaScript sees them.
#include "qn/error.h"

namespace qn {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::Arg: return "E_ARG";
    case ErrorCode::Shape: return "E_SHAPE";
    case ErrorCode::DType: return "E_DTYPE";
    case ErrorCode::Disposed: return "E_DISPOSED";
    case ErrorCode::Device: return "E_DEVICE";
    case ErrorCode::Oom: return "E_OOM";
    case ErrorCode::NoDevice: return "E_NO_DEVICE";
    case ErrorCode::Cuda: return "E_CUDA";
    case ErrorCode::Io: return "E_IO";
    case ErrorCode::Format: return "E_FORMAT";
    case ErrorCode::NonFinite: return "E_NONFINITE";
    case ErrorCode::Internal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace qn
