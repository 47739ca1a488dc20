#include "support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace xc2::test {
namespace {

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> v;
  for (const auto& a : argv) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  return v;
}

int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_data,
                          const std::vector<std::string>& extra_env) {
  int in_p[2], out_p[2], err_p[2];
  if (pipe(in_p) || pipe(out_p) || pipe(err_p)) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in_p[0], 0);
    dup2(out_p[1], 1);
    dup2(err_p[1], 2);
    for (int fd : {in_p[0], in_p[1], out_p[0], out_p[1], err_p[0], err_p[1]}) close(fd);
    for (const auto& e : extra_env) putenv(const_cast<char*>(e.c_str()));
    auto args = c_argv(argv);
    execv(args[0], args.data());
    _exit(127);
  }
  close(in_p[0]);
  close(out_p[1]);
  close(err_p[1]);
  signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  if (stdin_data.empty()) {
    close(in_p[1]);
    in_p[1] = -1;
  } else {
    fcntl(in_p[1], F_SETFL, O_NONBLOCK);
  }
  ProcessResult r;
  bool out_open = true, err_open = true;
  while (out_open || err_open || in_p[1] >= 0) {
    pollfd fds[3];
    int n = 0;
    if (out_open) fds[n++] = {out_p[0], POLLIN, 0};
    if (err_open) fds[n++] = {err_p[0], POLLIN, 0};
    if (in_p[1] >= 0) fds[n++] = {in_p[1], POLLOUT, 0};
    if (poll(fds, static_cast<nfds_t>(n), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == in_p[1]) {
        const ssize_t w = write(in_p[1], stdin_data.data() + written, stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 || written == stdin_data.size()) {
          close(in_p[1]);
          in_p[1] = -1;
        }
        continue;
      }
      char buf[65536];
      const ssize_t got = read(fds[i].fd, buf, sizeof(buf));
      if (got <= 0) {
        if (fds[i].fd == out_p[0]) out_open = false;
        else err_open = false;
        continue;
      }
      (fds[i].fd == out_p[0] ? r.out : r.err).append(buf, static_cast<size_t>(got));
    }
  }
  close(out_p[0]);
  close(err_p[0]);
  r.status = wait_process(pid);
  return r;
}

pid_t spawn_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int nul = open("/dev/null", O_RDONLY);
    dup2(nul, 0);
    dup2(o, 1);
    dup2(e, 2);
    auto args = c_argv(argv);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int wait_process(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return decode_status(st);
}

}  // namespace xc2::test
