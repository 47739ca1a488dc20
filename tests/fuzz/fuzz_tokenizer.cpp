// tokenizer.model files (text::Tokenizer::load through libsentencepiece), then an encode and decode with the
// special pieces, when one loads.
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("fuzz-tokenizer", 0);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    const ssize_t w = write(fd, data + done, size - done);
    if (w <= 0) break;
    done += static_cast<size_t>(w);
  }
  xc2::fuzz::expect_only_xc2_errors([&] {
    auto tok = xc2::text::Tokenizer::load("/proc/self/fd/" + std::to_string(fd));
    const std::vector<int32_t> ids = tok->encode("Hello <s> world [UNUSED_TOKEN_146] \xe4\xbd\xa0\xe5\xa5\xbd", true);
    tok->decode(ids, true);
  });
  close(fd);
  return 0;
}
