// The restricted pickle VM of PyTorch .bin files (io::unpickle).
#include "fuzz_util.h"
#include "io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xc2::fuzz::expect_only_xc2_errors([&] { xc2::io::unpickle(data, size, "fuzz.pkl"); });
  return 0;
}
