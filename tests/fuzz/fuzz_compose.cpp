// The compose article parser (`xc2 compose --rewrite/--expand/...` read a Markdown article), and the Markdown it
// writes back.
#include "fuzz_util.h"
#include "xc2/compose.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xc2::fuzz::expect_only_xc2_errors([&] {
    const xc2::compose::Article a = xc2::compose::parse_markdown(xc2::fuzz::as_string(data, size), "/nonexistent");
    xc2::compose::to_markdown(a, "/nonexistent");
  });
  return 0;
}
