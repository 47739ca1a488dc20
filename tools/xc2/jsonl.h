// The JSON Lines records of `xc2 caption`, read back by `--resume` and `compose --pool`.
// Strings are written as UTF-8; bytes that are not valid UTF-8 (file names are bytes on Linux) are escaped
// reversibly as "\udcXX", as Python's surrogateescape does, so two different names never share a record.
// The reader accepts any JSON object per line and keeps the top-level string members.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace xc2::cli {

// A JSON string literal (with the quotes); invalid UTF-8 bytes become \udcXX.
std::string json_escape(const std::string& s);

// The top-level members of one JSON object: strings (decoded, \udcXX back to bytes) by name, and whether
// each other member is present. nullopt when the line is not one well-formed JSON object.
struct JsonRecord {
  std::map<std::string, std::string> strings;
  std::map<std::string, bool> present;  // every member, whatever its type
  bool has(const std::string& key) const { return present.count(key) > 0; }
  const std::string* string(const std::string& key) const {
    auto it = strings.find(key);
    return it == strings.end() ? nullptr : &it->second;
  }
};
std::optional<JsonRecord> parse_json_record(const std::string& line);

// The key under which --resume and de-duplication compare image paths: the lexically normal form
// ("./a/../b.png" -> "b.png"), the path unchanged when it is empty.
std::string path_key(const std::string& path);

}  // namespace xc2::cli
