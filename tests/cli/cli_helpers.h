// Helpers shared by the tests that run the xc2 binary (tests/cli): the binary, the test data, output lines.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/test_util.h"

namespace xc2::clitest {

inline const std::string kExe = XC2_EXE;

inline test::ProcessResult xc2(std::vector<std::string> args, const std::string& in = "") {
  args.insert(args.begin(), kExe);
  return test::run_process(args, in);
}

inline std::string model(const std::string& name) { return test::data_path("models/" + name); }
inline std::string image(const std::string& name) { return test::data_path("images/" + name); }

// The non-empty lines of a text.
inline std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string l;
  while (std::getline(is, l))
    if (!l.empty()) out.push_back(l);
  return out;
}

}  // namespace xc2::clitest
