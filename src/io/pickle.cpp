// Restricted pickle VM for torch.save state dicts (see pickle.h). The machine is the standard one
// (Python's Lib/pickle.py, _Unpickler): a value stack with marks, a memo, and one opcode per step;
// values live in an arena and the stack, memo and containers hold arena indices.
//   REDUCE(OrderedDict, ())                        -> empty Dict
//   BINPERSID(('storage', torch.XStorage, key, location, numel)) -> Storage
//   REDUCE(_rebuild_tensor_v2, (storage, offset, size, stride, requires_grad, hooks[, metadata])) -> Tensor
//   REDUCE(_rebuild_parameter[_with_state], (tensor, requires_grad, hooks[, state])) -> that Tensor
// As in Python, no opcode reaches below the innermost MARK, so a stray APPEND cannot eat a mark.
#include "io/pickle.h"

#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/check.h"
#include "io/bytes.h"

namespace xc2::io {
namespace {

constexpr uint32_t kNone = 0, kTrue = 1, kFalse = 2;  // preallocated singletons
constexpr size_t kMaxGlobalLine = 512;

bool is_storage_type(const std::string& name) {
  static const char* const kTypes[] = {
      "FloatStorage",  "HalfStorage",         "BFloat16Storage",      "DoubleStorage", "LongStorage",
      "IntStorage",    "ShortStorage",        "CharStorage",          "ByteStorage",   "BoolStorage",
      "ComplexFloatStorage", "ComplexDoubleStorage", "QUInt8Storage", "QInt8Storage",  "QInt32Storage",
      "QUInt4x2Storage", "QUInt2x4Storage",   "UntypedStorage"};
  for (const char* t : kTypes) {
    if (name == t) return true;
  }
  return false;
}

bool is_torch_dtype(const std::string& name) {
  static const char* const kDtypes[] = {"float32", "float", "float16", "half", "bfloat16", "float64", "double",
                                        "int64",   "long",  "int32",   "int",  "int16",    "int8",    "uint8",
                                        "bool",    "complex64", "complex128"};
  for (const char* t : kDtypes) {
    if (name == t) return true;
  }
  return false;
}

class Vm {
 public:
  Vm(const uint8_t* data, size_t size, const std::string& where, const PickleLimits& limits)
      : data_(data), size_(size), where_(where), limits_(limits) {
    values_.resize(3);
    values_[kTrue].kind = PyKind::Bool;
    values_[kTrue].i = 1;
    values_[kFalse].kind = PyKind::Bool;
  }

  PickleResult run();

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    XC2_THROW(Io, where_, ": ", msg, " (pickle opcode 0x", hex(op_), " at byte ", op_pos_, ")");
  }
  static std::string hex(uint8_t b) {
    static const char* d = "0123456789abcdef";
    return std::string{d[b >> 4], d[b & 15]};
  }

  // --- input
  void need(uint64_t n) {
    if (n > size_ - pos_) fail("truncated pickle: needs " + std::to_string(n) + " more bytes, " +
                               std::to_string(size_ - pos_) + " left");
  }
  uint8_t u8() { need(1); return data_[pos_++]; }
  uint16_t u16() { need(2); const uint16_t v = detail::rd_u16(data_ + pos_); pos_ += 2; return v; }
  uint32_t u32() { need(4); const uint32_t v = detail::rd_u32(data_ + pos_); pos_ += 4; return v; }
  uint64_t u64() { need(8); const uint64_t v = detail::rd_u64(data_ + pos_); pos_ += 8; return v; }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  std::string line() {
    for (size_t i = pos_; i < size_ && i - pos_ <= kMaxGlobalLine; ++i) {
      if (data_[i] == '\n') {
        std::string s(reinterpret_cast<const char*>(data_ + pos_), i - pos_);
        pos_ = i + 1;
        return s;
      }
    }
    fail("unterminated or over-long GLOBAL name");
  }

  // --- arena and stack
  uint32_t make(PyKind kind) {
    if (values_.size() >= limits_.max_values) fail("more than " + std::to_string(limits_.max_values) + " pickle values");
    values_.emplace_back();
    values_.back().kind = kind;
    return static_cast<uint32_t>(values_.size() - 1);
  }
  uint32_t make_int(int64_t v) {
    const uint32_t idx = make(PyKind::Int);
    values_[idx].i = v;
    return idx;
  }
  uint32_t make_str(PyKind kind, std::string s) {
    const uint32_t idx = make(kind);
    values_[idx].s = std::move(s);
    return idx;
  }
  size_t frame_base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(uint32_t v) {
    if (stack_.size() + marks_.size() >= limits_.max_stack) fail("pickle stack deeper than " + std::to_string(limits_.max_stack));
    stack_.push_back(v);
  }
  uint32_t pop() {
    if (stack_.size() <= frame_base()) fail("pickle stack underflow");
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t top() {
    if (stack_.size() <= frame_base()) fail("pickle stack underflow");
    return stack_.back();
  }
  // Removes the innermost mark and the values above it; returns them in order.
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail("pickle MARK not found");
    const size_t base = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(base), stack_.end());
    stack_.resize(base);
    return items;
  }
  PyValue& at(uint32_t idx) { return values_[idx]; }

  // --- objects
  uint32_t make_global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    const bool ok = full == "collections.OrderedDict" || full == "torch._utils._rebuild_tensor_v2" ||
                    full == "torch._utils._rebuild_parameter" ||
                    full == "torch._utils._rebuild_parameter_with_state" ||
                    (module == "torch" && (is_storage_type(name) || is_torch_dtype(name)));
    if (!ok) {
      std::string shown = full.size() > 120 ? full.substr(0, 120) + "..." : full;
      XC2_THROW(Unsupported, where_, ": unsupported pickle global '", shown,
                "' (only tensors in an OrderedDict/dict are read; nothing is executed)");
    }
    return make_str(PyKind::Global, full);
  }
  std::vector<int64_t> int_tuple(uint32_t idx, const char* what) {
    const PyValue& v = at(idx);
    if (v.kind != PyKind::Tuple) fail(std::string("tensor ") + what + " is a " + py_kind_name(v.kind) + ", expected a tuple");
    std::vector<int64_t> out;
    out.reserve(v.items.size());
    for (uint32_t it : v.items) {
      if (at(it).kind != PyKind::Int) fail(std::string("tensor ") + what + " holds a " + py_kind_name(at(it).kind));
      out.push_back(at(it).i);
    }
    return out;
  }
  uint32_t call(uint32_t callable, uint32_t args_idx) {
    if (at(callable).kind != PyKind::Global) fail(std::string("pickle calls a ") + py_kind_name(at(callable).kind));
    if (at(args_idx).kind != PyKind::Tuple) fail("pickle call arguments are not a tuple");
    const std::string fn = at(callable).s;
    const std::vector<uint32_t> args = at(args_idx).items;  // copy: make() may reallocate the arena
    if (fn == "collections.OrderedDict") {
      if (!args.empty()) fail("OrderedDict called with arguments");
      return make(PyKind::Dict);
    }
    if (fn == "torch._utils._rebuild_tensor_v2") {
      if (args.size() != 6 && args.size() != 7) fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(args.size()));
      if (at(args[0]).kind != PyKind::Storage) fail("_rebuild_tensor_v2 argument 0 is not a storage");
      if (at(args[1]).kind != PyKind::Int) fail("_rebuild_tensor_v2 storage offset is not an int");
      std::vector<int64_t> shape = int_tuple(args[2], "size");
      std::vector<int64_t> stride = int_tuple(args[3], "stride");
      if (shape.size() != stride.size()) fail("tensor size and stride differ in length");
      const uint32_t t = make(PyKind::Tensor);
      PyValue& v = at(t);
      v.items = {args[0]};
      v.i = at(args[1]).i;
      v.shape = std::move(shape);
      v.stride = std::move(stride);
      return t;
    }
    if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
      const size_t want = fn == "torch._utils._rebuild_parameter" ? 3 : 4;
      if (args.size() != want) fail(fn + " takes " + std::to_string(want) + " arguments");
      if (at(args[0]).kind != PyKind::Tensor) fail(fn + " argument 0 is not a tensor");
      return args[0];
    }
    fail("pickle global '" + fn + "' cannot be called");
  }
  uint32_t persistent_load(uint32_t pid_idx) {
    const PyValue& pid = at(pid_idx);
    if (pid.kind != PyKind::Tuple || pid.items.size() != 5) fail("persistent id is not a ('storage', type, key, location, numel) tuple");
    const PyValue& tag = at(pid.items[0]);
    const PyValue& type = at(pid.items[1]);
    const PyValue& key = at(pid.items[2]);
    const PyValue& numel = at(pid.items[4]);
    if (tag.kind != PyKind::Str || tag.s != "storage") fail("persistent id is not a 'storage' tuple");
    if (type.kind != PyKind::Global || type.s.compare(0, 6, "torch.") != 0 || !is_storage_type(type.s.substr(6))) {
      fail("persistent id names no torch storage type");
    }
    if (key.kind != PyKind::Str) fail("storage key is not a string");
    if (numel.kind != PyKind::Int || numel.i < 0) fail("storage size is not an int >= 0");
    std::string type_name = type.s.substr(6);
    std::string key_s = key.s;
    const int64_t n = numel.i;
    const uint32_t s = make(PyKind::Storage);
    at(s).s = std::move(type_name);
    at(s).s2 = std::move(key_s);
    at(s).i = n;
    return s;
  }
  void memo_put(uint64_t idx) {
    if (idx > UINT32_MAX) fail("memo index too large");
    const uint32_t v = top();
    auto it = memo_.find(static_cast<uint32_t>(idx));
    if (it != memo_.end()) {
      it->second = v;
      return;
    }
    if (memo_.size() >= limits_.max_memo) fail("pickle memo larger than " + std::to_string(limits_.max_memo));
    memo_.emplace(static_cast<uint32_t>(idx), v);
  }
  void memo_get(uint64_t idx) {
    const auto it = memo_.find(static_cast<uint32_t>(idx));
    if (idx > UINT32_MAX || it == memo_.end()) fail("pickle memo index " + std::to_string(idx) + " is not defined");
    push(it->second);
  }
  int64_t long_bytes(uint64_t n) {
    if (n > 8) fail("pickle integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
    need(n);
    uint64_t v = 0;
    for (uint64_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(data_[pos_ + k]) << (8 * k);
    if (n > 0 && n < 8 && (data_[pos_ + n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    pos_ += static_cast<size_t>(n);
    int64_t out;
    std::memcpy(&out, &v, 8);
    return out;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  const std::string& where_;
  PickleLimits limits_;
  std::vector<PyValue> values_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
};

PickleResult Vm::run() {
  size_t n_ops = 0;
  while (true) {
    if (pos_ >= size_) {
      op_pos_ = pos_;
      op_ = 0;
      fail("pickle ends without STOP (truncated)");
    }
    if (++n_ops > limits_.max_ops) fail("more than " + std::to_string(limits_.max_ops) + " pickle opcodes");
    op_pos_ = pos_;
    op_ = data_[pos_++];
    switch (op_) {
      case 0x80: {  // PROTO
        const uint8_t proto = u8();
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
        break;
      }
      case 0x95: {  // FRAME: a length hint only
        const uint64_t n = u64();
        need(n);
        break;
      }
      case '.': {  // STOP
        PickleResult r;
        r.root = pop();
        r.values = std::move(values_);
        return r;
      }
      case '(':  // MARK
        if (stack_.size() + marks_.size() >= limits_.max_stack) fail("pickle stack deeper than " + std::to_string(limits_.max_stack));
        marks_.push_back(stack_.size());
        break;
      case '0':  // POP: the top value, or the innermost mark when its frame is empty
        if (stack_.size() > frame_base()) {
          stack_.pop_back();
        } else {
          pop_mark();
        }
        break;
      case '1':  // POP_MARK
        pop_mark();
        break;
      case '2':  // DUP
        push(top());
        break;
      case '}': push(make(PyKind::Dict)); break;   // EMPTY_DICT
      case ']': push(make(PyKind::List)); break;   // EMPTY_LIST
      case ')': push(make(PyKind::Tuple)); break;  // EMPTY_TUPLE
      case 't': case 'l': {  // TUPLE, LIST
        std::vector<uint32_t> items = pop_mark();
        const uint32_t v = make(op_ == 't' ? PyKind::Tuple : PyKind::List);
        at(v).items = std::move(items);
        push(v);
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
        const size_t n = op_ - 0x84u;
        std::vector<uint32_t> items(n);
        for (size_t k = n; k-- > 0;) items[k] = pop();
        const uint32_t v = make(PyKind::Tuple);
        at(v).items = std::move(items);
        push(v);
        break;
      }
      case 'd': {  // DICT
        std::vector<uint32_t> items = pop_mark();
        if (items.size() % 2 != 0) fail("DICT with an odd number of items");
        const uint32_t v = make(PyKind::Dict);
        at(v).items = std::move(items);
        push(v);
        break;
      }
      case 'a': {  // APPEND
        const uint32_t item = pop();
        const uint32_t list = top();
        if (at(list).kind != PyKind::List) fail(std::string("APPEND to a ") + py_kind_name(at(list).kind));
        at(list).items.push_back(item);
        break;
      }
      case 'e': {  // APPENDS
        std::vector<uint32_t> items = pop_mark();
        const uint32_t list = top();
        if (at(list).kind != PyKind::List) fail(std::string("APPENDS to a ") + py_kind_name(at(list).kind));
        at(list).items.insert(at(list).items.end(), items.begin(), items.end());
        break;
      }
      case 's': {  // SETITEM
        const uint32_t value = pop();
        const uint32_t key = pop();
        const uint32_t dict = top();
        if (at(dict).kind != PyKind::Dict) fail(std::string("SETITEM on a ") + py_kind_name(at(dict).kind));
        at(dict).items.push_back(key);
        at(dict).items.push_back(value);
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<uint32_t> items = pop_mark();
        if (items.size() % 2 != 0) fail("SETITEMS with an odd number of items");
        const uint32_t dict = top();
        if (at(dict).kind != PyKind::Dict) fail(std::string("SETITEMS on a ") + py_kind_name(at(dict).kind));
        at(dict).items.insert(at(dict).items.end(), items.begin(), items.end());
        break;
      }
      case 'J': {  // BININT (signed 32-bit)
        const uint32_t u = u32();
        int32_t s;
        std::memcpy(&s, &u, 4);
        push(make_int(s));
        break;
      }
      case 'K': push(make_int(u8())); break;   // BININT1
      case 'M': push(make_int(u16())); break;  // BININT2
      case 0x8a: {                             // LONG1
        const uint8_t n = u8();
        push(make_int(long_bytes(n)));
        break;
      }
      case 0x8b: {  // LONG4
        const uint32_t n = u32();
        push(make_int(long_bytes(n)));
        break;
      }
      case 'G': {  // BINFLOAT (big-endian double)
        need(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | data_[pos_ + k];
        pos_ += 8;
        const uint32_t v = make(PyKind::Float);
        std::memcpy(&at(v).f, &u, 8);
        push(v);
        break;
      }
      case 'N': push(kNone); break;
      case 0x88: push(kTrue); break;   // NEWTRUE
      case 0x89: push(kFalse); break;  // NEWFALSE
      case 0x8c: push(make_str(PyKind::Str, bytes(u8()))); break;    // SHORT_BINUNICODE
      case 'X': push(make_str(PyKind::Str, bytes(u32()))); break;    // BINUNICODE
      case 0x8d: push(make_str(PyKind::Str, bytes(u64()))); break;   // BINUNICODE8
      case 'U': push(make_str(PyKind::Str, bytes(u8()))); break;     // SHORT_BINSTRING (py2 str)
      case 'T': {                                                    // BINSTRING
        const uint32_t n = u32();
        if (n > INT32_MAX) fail("negative BINSTRING length");
        push(make_str(PyKind::Str, bytes(n)));
        break;
      }
      case 'C': push(make_str(PyKind::Bytes, bytes(u8()))); break;   // SHORT_BINBYTES
      case 'B': push(make_str(PyKind::Bytes, bytes(u32()))); break;  // BINBYTES
      case 0x8e: push(make_str(PyKind::Bytes, bytes(u64()))); break; // BINBYTES8
      case 'q': memo_put(u8()); break;                               // BINPUT
      case 'r': memo_put(u32()); break;                              // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;                      // MEMOIZE
      case 'h': memo_get(u8()); break;                               // BINGET
      case 'j': memo_get(u32()); break;                              // LONG_BINGET
      case 'c': {                                                    // GLOBAL "module\nname\n"
        const std::string module = line();
        const std::string name = line();
        push(make_global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop();
        const uint32_t module = pop();
        if (at(name).kind != PyKind::Str || at(module).kind != PyKind::Str) fail("STACK_GLOBAL needs two strings");
        const std::string m = at(module).s, n = at(name).s;
        push(make_global(m, n));
        break;
      }
      case 'R': {  // REDUCE
        const uint32_t args = pop();
        const uint32_t callable = pop();
        push(call(callable, args));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args); only OrderedDict is a class here
        const uint32_t args = pop();
        const uint32_t cls = pop();
        if (at(cls).kind != PyKind::Global || at(cls).s != "collections.OrderedDict") fail("NEWOBJ of a non-dict class");
        push(call(cls, args));
        break;
      }
      case 'b': {  // BUILD: state (e.g. OrderedDict._metadata) is not needed; drop it
        pop();
        top();
        break;
      }
      case 'Q': {  // BINPERSID
        const uint32_t pid = pop();
        push(persistent_load(pid));
        break;
      }
      default:
        XC2_THROW(Io, where_, ": unsupported pickle opcode 0x", hex(op_), " at byte ", op_pos_);
    }
  }
}

}  // namespace

const char* py_kind_name(PyKind kind) {
  switch (kind) {
    case PyKind::None: return "None";
    case PyKind::Bool: return "bool";
    case PyKind::Int: return "int";
    case PyKind::Float: return "float";
    case PyKind::Str: return "str";
    case PyKind::Bytes: return "bytes";
    case PyKind::List: return "list";
    case PyKind::Tuple: return "tuple";
    case PyKind::Dict: return "dict";
    case PyKind::Global: return "global";
    case PyKind::Storage: return "storage";
    case PyKind::Tensor: return "tensor";
  }
  return "?";
}

PickleResult unpickle(const uint8_t* data, size_t size, const std::string& where, const PickleLimits& limits) {
  Vm vm(data, size, where, limits);
  return vm.run();
}

}  // namespace xc2::io
