// Device names: "cpu", "cuda", "cuda:N". "auto" is resolved in TypeScript (ts/device.ts).
#pragma once
#include <string>

namespace qn {

enum class DeviceType { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  std::string str() const;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// Parses "cpu", "cuda", "cuda:N"; throws E_ARG with the accepted forms otherwise.
Device parse_device(const std::string& name);

}  // namespace qn
