// The JSONL reader of `xc2 caption --resume` (cli::parse_json_record), and the escape it reads back.
#include "fuzz_util.h"
#include "jsonl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string line = xc2::fuzz::as_string(data, size);
  xc2::fuzz::expect_only_xc2_errors([&] {
    xc2::cli::parse_json_record(line);
    // What xc2 writes for a path it reads back as the same path.
    const std::string rec = "{\"path\": " + xc2::cli::json_escape(line) + "}";
    const auto back = xc2::cli::parse_json_record(rec);
    if (!back || !back->string("path") || *back->string("path") != line) __builtin_trap();
  });
  return 0;
}
