// Checked output (output.h).
#include "output.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "cli_common.h"

namespace xc2::cli {

const char* const kStdoutName = "<stdout>";

void throw_write_error(const std::string& path, int err) {
  if (err == 0) err = EIO;
  throw WriteError("cannot write '" + path + "': " + std::strerror(err), err);
}

void library_write(const std::function<void()>& write) {
  try {
    write();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Io && std::string(e.what()).rfind("cannot write '", 0) == 0)
      throw WriteError(e.what(), 0);
    throw;
  }
}

namespace {

// A reader that went away: end quietly with SIGPIPE's status, as coreutils do.
[[noreturn]] void die_of_broken_pipe() {
  ::signal(SIGPIPE, SIG_DFL);
  ::raise(SIGPIPE);
  std::_Exit(128 + SIGPIPE);
}

[[noreturn]] void stdout_failed(int err) {
  if (err == EPIPE) die_of_broken_pipe();
  throw_write_error(kStdoutName, err);
}

bool is_regular_path(const std::string& path, bool* exists) {
  struct stat st {};
  *exists = ::stat(path.c_str(), &st) == 0;
  return *exists && S_ISREG(st.st_mode);
}

}  // namespace

void write_stdout(const std::string& s) {
  errno = 0;
  if ((!s.empty() && std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) || std::fflush(stdout) != 0)
    stdout_failed(errno);
}

void finish_stdout() {
  errno = 0;
  std::cout.flush();
  const bool flush_failed = std::fflush(stdout) != 0;
  const int err = errno;
  if (flush_failed || std::ferror(stdout) || std::cout.fail()) stdout_failed(err);
}

OutputFile::OutputFile(const std::string& path, Mode mode, bool lock) : path_(path) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
  if (mode == Mode::ReadWrite) flags = O_RDWR | O_CREAT | O_CLOEXEC;
  fd_ = ::open(path.c_str(), flags, 0666);
  if (fd_ < 0) throw_write_error(path, errno);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw_write_error(path, errno);
  regular_ = S_ISREG(st.st_mode);
  if (lock && regular_ && ::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK)
      throw UsageError("'" + path + "' is being written by another process (it holds the lock on the file); " +
                       "wait for it to finish or choose another --out");
    throw_write_error(path, err);
  }
  if (mode == Mode::Create && regular_ && st.st_size > 0)
    throw UsageError("'" + path + "' already exists");
  if (mode == Mode::Truncate && regular_ && ::ftruncate(fd_, 0) != 0) throw_write_error(path, errno);
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) die_of_broken_pipe();
      throw_write_error(path_, errno);
    }
    if (w == 0) throw_write_error(path_, ENOSPC);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void OutputFile::sync() {
  if (!regular_) return;
  if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) throw_write_error(path_, errno);
}

void OutputFile::close() {
  sync();
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && errno != EINTR) throw_write_error(path_, errno);
}

std::string OutputFile::read_all() const {
  std::string out;
  char buf[1 << 16];
  off_t off = 0;
  for (;;) {
    const ssize_t r = ::pread(fd_, buf, sizeof(buf), off);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw UsageError("cannot read '" + path_ + "': " + std::strerror(errno));
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
    off += r;
  }
  return out;
}

void OutputFile::truncate(size_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) throw_write_error(path_, errno);
}

void OutputFile::seek_end() {
  if (regular_ && ::lseek(fd_, 0, SEEK_END) < 0) throw_write_error(path_, errno);
}

void write_file_atomic(const std::string& path, const std::function<void(OutputFile&)>& fill) {
  bool exists = false;
  const bool regular = is_regular_path(path, &exists);
  if (exists && !regular) {  // /dev/stdout, /dev/full, a FIFO: written in place
    OutputFile out(path, OutputFile::Mode::Truncate, false);
    fill(out);
    out.close();
    return;
  }
  const std::string tmp = path + ".xc2-tmp-" + std::to_string(::getpid());
  try {
    OutputFile out(tmp, OutputFile::Mode::Truncate, false);
    try {
      fill(out);
      out.close();
    } catch (const WriteError& e) {
      throw_write_error(path, e.error_number);  // named by the file the user asked for
    }
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw_write_error(path, err);
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_file_atomic(path, [&contents](OutputFile& f) { f.write(contents); });
}

}  // namespace xc2::cli
