// A restricted unpickler for torch.save state dicts. It runs the opcode subset that protocols 2-5
// emit for a dict of tensors, over an arena of values referenced by index: no value owns another, so
// cycles, shared references and deep nesting cost nothing and nothing recurses. Globals come from a
// whitelist (OrderedDict, torch's tensor/parameter rebuild functions, torch.*Storage, torch dtypes);
// calls are interpreted, never executed. Limits bound the stack, the memo, the arena and the op count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xc2::io {

enum class PyKind : uint8_t {
  None, Bool, Int, Float, Str, Bytes,
  List, Tuple, Dict,  // items: List/Tuple elements; Dict: key0, value0, key1, value1, ... (insertion order)
  Global,             // s = "module.name" of a whitelisted global
  Storage,            // persistent id ('storage', torch.<s>, key = s2, location, numel = i)
  Tensor,             // _rebuild_tensor_v2: items[0] = Storage, i = storage_offset, shape, stride
};

struct PyValue {
  PyKind kind = PyKind::None;
  int64_t i = 0;                 // Bool/Int value; Storage numel; Tensor storage offset (elements)
  double f = 0;                  // Float
  std::string s;                 // Str/Bytes payload; Global name; Storage type ("BFloat16Storage")
  std::string s2;                // Storage key (the archive entry data/<key>)
  std::vector<uint32_t> items;   // children, as arena indices
  std::vector<int64_t> shape;    // Tensor
  std::vector<int64_t> stride;   // Tensor
};

struct PickleLimits {
  size_t max_stack = 1u << 20;    // values on the stack, marks included
  size_t max_memo = 1u << 20;     // memo entries
  size_t max_values = 1u << 22;   // arena size
  size_t max_ops = 1u << 26;      // opcodes executed
};

struct PickleResult {
  std::vector<PyValue> values;  // the arena
  uint32_t root = 0;            // index of the object STOP returned
};

// Runs the pickle program in [data, data + size). `where` prefixes error messages (e.g.
// "'pytorch_model.bin': archive/data.pkl"). Errors: Error{Io} for malformed or hostile input,
// Error{Unsupported} for a global outside the whitelist.
PickleResult unpickle(const uint8_t* data, size_t size, const std::string& where, const PickleLimits& limits = {});

const char* py_kind_name(PyKind kind);

}  // namespace xc2::io
