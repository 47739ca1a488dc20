// Checked output: every write, flush, sync and close of xc2's results is checked, and a failure ends the run
// with `xc2: error: cannot write 'PATH': <reason>` (exit 4) instead of a silent success.
//   - stdout: write_stdout() writes and flushes at once; a closed pipe ends the process quietly, as coreutils do
//     (SIGPIPE, or exit 141 where SIGPIPE is ignored);
//   - files: write_file_atomic() writes a whole result to a temporary file next to PATH, syncs it and renames it
//     over PATH, so a failed write leaves an existing PATH untouched; devices and FIFOs are written in place;
//   - OutputFile: an open file (caption's JSON Lines) with an exclusive lock, appends and syncs.
#pragma once

#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>

namespace xc2::cli {

// An output could not be written (exit 4). The message is "cannot write 'PATH': <strerror>".
struct WriteError : std::runtime_error {
  WriteError(const std::string& message, int err) : std::runtime_error(message), error_number(err) {}
  int error_number;
};
[[noreturn]] void throw_write_error(const std::string& path, int err);

// Runs `write`, a library call that writes files (convert, quantize): a failure of the library's writers (an
// Io error "cannot write 'PATH': <reason>") is a failed run (WriteError, exit 4), not bad input.
void library_write(const std::function<void()>& write);

// The display name of stdout in messages.
extern const char* const kStdoutName;

// Writes to stdout (through stdio, so it interleaves with std::cout) and flushes.
void write_stdout(const std::string& s);
// Flushes std::cout and stdout and checks that nothing failed since the start; main() calls it before exit 0.
void finish_stdout();

// An output file opened for writing: every write is checked (short writes retried, EINTR retried).
class OutputFile {
 public:
  enum class Mode {
    Create,     // create; refuse an existing non-empty regular file (the caller names the flag that allows it)
    Truncate,   // create or empty it (after the lock is taken)
    ReadWrite,  // create or open as is (caption --resume: read, repair the tail, append)
  };
  // Opens PATH; with `lock`, takes an exclusive non-blocking lock (regular files only) and throws UsageError
  // naming PATH when another process holds it.
  OutputFile(const std::string& path, Mode mode, bool lock);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  bool is_regular() const { return regular_; }
  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  // Data (not metadata) to the disk; no-op for devices, pipes and filesystems without fsync.
  void sync();
  // sync() + close(); throws on failure. The destructor closes without checks (error paths only).
  void close();
  std::string read_all() const;      // the current contents (ReadWrite)
  void truncate(size_t size);        // cut the file to `size` bytes
  void seek_end();

 private:
  std::string path_;
  int fd_ = -1;
  bool regular_ = false;
};

// Writes a whole file: `fill` writes the contents into the OutputFile. A regular (or new) PATH is written as
// PATH.xc2-tmp-PID, synced and renamed over PATH (an existing PATH stays untouched on failure); a device or FIFO
// is written in place.
void write_file_atomic(const std::string& path, const std::function<void(OutputFile&)>& fill);
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace xc2::cli
