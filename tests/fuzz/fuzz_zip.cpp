// The zip reader of PyTorch .bin files: end of central directory (zip64), central directory, local headers, and
// every stored entry's bytes with its CRC.
#include "fuzz_util.h"
#include "io/zip_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xc2::fuzz::expect_only_xc2_errors([&] {
    const xc2::io::ZipArchive zip = xc2::io::ZipArchive::parse(data, size, "fuzz.bin");
    for (const xc2::io::ZipEntry& e : zip.entries())
      xc2::fuzz::expect_only_xc2_errors([&] { zip.data(e, e.size < (1u << 16)); });
  });
  return 0;
}
