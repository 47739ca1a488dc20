// The PyTorch reference's half of `xc2 bench`: tools/reference/bench_ref.py run with the same model, threads
// and workload, its one JSON line read back. The script is --reference-script, else found at run time in
// the source tree above the executable (build/xc2 -> tools/reference/bench_ref.py).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "bench_internal.h"
#include "core/mmap_file.h"

namespace xc2::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kScript = "tools/reference/bench_ref.py";

// The script in the nearest folder above the running executable that holds it; "" if none does.
std::string find_reference_script() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (fs::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    const fs::path candidate = dir / kScript;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
    if (dir == dir.root_path()) break;
  }
  return "";
}

double json_number(const std::string& line, const std::string& key) {
  const size_t k = line.find("\"" + key + "\"");
  if (k == std::string::npos) return 0;
  const size_t c = line.find(':', k);
  return c == std::string::npos ? 0 : std::atof(line.c_str() + c + 1);
}

}  // namespace

std::vector<RefNumbers> run_reference(const BenchOptions& o, const std::string& model_dir, int threads) {
  std::vector<RefNumbers> out;
  const std::string script = o.reference_script.empty() ? find_reference_script() : o.reference_script;
  if (script.empty() || !file_exists(script)) {
    RefNumbers r;
    r.error = script.empty() ? std::string("no ") + kScript + " above the xc2 executable (pass --reference-script)"
                             : "reference script '" + script + "' not found";
    out.push_back(r);
    return out;
  }
  const bool cuda = o.device == "cuda";
  const std::vector<const char*> dtypes = cuda ? std::vector<const char*>{"bfloat16"}
                                               : std::vector<const char*>{"float32", "bfloat16"};
  for (const char* dtype : dtypes) {
    std::ostringstream cmd;
    cmd << o.python << " '" << script << "' --model '" << model_dir << "' --threads " << threads << " --dtype "
        << dtype << " --text-tokens " << o.text_tokens << " --decode-steps " << o.decode_steps << " --repeats "
        << o.repeats << (cuda ? " --device cuda" : "") << " 2>&1";
    std::cerr << "xc2 bench: running the PyTorch reference (" << dtype << (cuda ? ", cuda" : "") << ") ...\n";
    RefNumbers r;
    r.dtype = dtype;
    FILE* p = ::popen(cmd.str().c_str(), "r");
    if (!p) {
      r.error = "cannot run " + o.python;
      out.push_back(r);
      continue;
    }
    std::string all, line;
    char buf[4096];
    while (std::fgets(buf, sizeof(buf), p)) all += buf;
    const int status = ::pclose(p);
    std::istringstream lines(all);
    while (std::getline(lines, line))
      if (line.rfind("{\"bench_ref\"", 0) == 0) {
        r.vit_ms = json_number(line, "vit_ms");
        r.prefill_ms = json_number(line, "prefill_ms");
        r.decode_tok_s = json_number(line, "decode_tok_s");
        r.ok = r.prefill_ms > 0;
      }
    if (!r.ok) r.error = "reference failed (status " + std::to_string(status) + "): " + all.substr(0, 300);
    out.push_back(r);
  }
  return out;
}

}  // namespace xc2::bench
