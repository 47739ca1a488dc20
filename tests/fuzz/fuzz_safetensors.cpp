// The safetensors header: size, JSON, dtypes, shapes, offsets (io::parse_safetensors).
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xc2::fuzz::expect_only_xc2_errors([&] { xc2::io::parse_safetensors(data, size, "fuzz.safetensors"); });
  return 0;
}
