// Running the xc2 binary (or any program) from tests: arguments without a shell, optional stdin,
// captured stdout and stderr, exit status.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace xc2::test {

struct ProcessResult {
  int status = -1;     // exit code, or 128 + signal number
  std::string out, err;
};

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                          const std::vector<std::string>& extra_env = {});

// Starts a program in the background with stdout and stderr sent to files; returns its pid.
pid_t spawn_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path);
// Waits for a pid; returns the exit code or 128 + signal.
int wait_process(pid_t pid);

}  // namespace xc2::test
