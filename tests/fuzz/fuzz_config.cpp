// config.json (io::ModelConfig::parse): JSON, types, ranges, the vision and Partial-LoRA extensions.
#include "fuzz_util.h"
#include "io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xc2::fuzz::expect_only_xc2_errors(
      [&] { xc2::io::ModelConfig::parse(xc2::fuzz::as_string(data, size), "fuzz config.json"); });
  return 0;
}
