// Read-only memory mapping of a whole file (RAII). Checkpoint tensors are views into these maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace xc2 {

class MappedFile {
 public:
  // Throws Error{NotFound} if the file does not exist, Error{Io} if it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
std::string path_join(const std::string& a, const std::string& b);
std::string path_basename(const std::string& path);
// Whole file as bytes; Error{NotFound}/Error{Io} naming the file.
std::string read_file(const std::string& path);

}  // namespace xc2
