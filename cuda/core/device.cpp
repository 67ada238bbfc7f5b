// Device name parsing and printing.
#include "qn/device.h"
#include <cstdlib>
#include "qn/error.h"

namespace qn {

std::string Device::str() const {
  return type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& name) {
  Device d;
  if (name == "cpu") return d;
  if (name == "cuda") { d.type = DeviceType::CUDA; return d; }
  if (name.rfind("cuda:", 0) == 0 && name.size() > 5) {
    const std::string idx = name.substr(5);
    bool digits = idx.size() <= 4;
    for (char c : idx) digits = digits && c >= '0' && c <= '9';
    if (digits) {
      d.type = DeviceType::CUDA;
      d.index = std::atoi(idx.c_str());
      return d;
    }
  }
  fail(ErrorCode::Arg, "unknown device '" + name + "': expected cpu, cuda or cuda:N");
}

}  // namespace qn
