// Restricted unpickler: the opcode subset, the global whitelist, and hostile programs (deep nesting,
// cycles, bad memo indices, huge lengths, stack underflow, limits). Oracle: hand-written programs.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/io_test_util.h"
#include "io/pickle.h"

namespace xc2::io {
namespace {

using iotest::Pickler;

PickleResult run(const std::string& bytes, const PickleLimits& limits = {}) {
  std::vector<uint8_t> buf(bytes.begin(), bytes.end());  // exact size, for ASan
  return unpickle(buf.data(), buf.size(), "'t.bin': archive/data.pkl", limits);
}

const PyValue& root(const PickleResult& r) { return r.values[r.root]; }

std::string u32le(uint32_t v) {
  std::string s;
  for (int k = 0; k < 4; ++k) s.push_back(static_cast<char>(v >> (8 * k)));
  return s;
}

TEST(Pickle, Scalars) {
  Pickler p;
  p.proto(2).mark().integer(7).integer(300).integer(-5).integer(70000).integer(int64_t{1} << 40);
  p.op(0x8a).raw(std::string("\x01\xff", 2));  // LONG1 -1
  p.op(0x8a).raw(std::string("\x00", 1));      // LONG1 0 (empty)
  p.op('G').raw(std::string("\x3f\xf8\x00\x00\x00\x00\x00\x00", 8));  // 1.5
  p.op('N').op(0x88).op(0x89).str("héllo");
  p.op(0x8c).raw(std::string("\x02hi", 3));                     // SHORT_BINUNICODE
  p.op('C').raw(std::string("\x03\x00\x01\x02", 4));            // SHORT_BINBYTES
  p.op('U').raw(std::string("\x01z", 2));                       // SHORT_BINSTRING
  p.op('T').raw(u32le(2) + "ab");                               // BINSTRING
  p.op('B').raw(u32le(1) + "q");                                // BINBYTES
  p.op(0x8d).raw(u32le(1) + u32le(0) + "w");                    // BINUNICODE8
  p.op('t').stop();
  const PickleResult r = run(p.bytes());
  const PyValue& t = root(r);
  ASSERT_EQ(t.kind, PyKind::Tuple);
  ASSERT_EQ(t.items.size(), 18u);
  const std::vector<int64_t> ints = {7, 300, -5, 70000, int64_t{1} << 40, -1, 0};
  for (size_t k = 0; k < ints.size(); ++k) {
    EXPECT_EQ(r.values[t.items[k]].kind, PyKind::Int);
    EXPECT_EQ(r.values[t.items[k]].i, ints[k]) << k;
  }
  EXPECT_EQ(r.values[t.items[7]].f, 1.5);
  EXPECT_EQ(r.values[t.items[8]].kind, PyKind::None);
  EXPECT_EQ(r.values[t.items[9]].i, 1);
  EXPECT_EQ(r.values[t.items[10]].i, 0);
  EXPECT_EQ(r.values[t.items[11]].s, "héllo");
  EXPECT_EQ(r.values[t.items[12]].s, "hi");
  EXPECT_EQ(r.values[t.items[13]].kind, PyKind::Bytes);
  EXPECT_EQ(r.values[t.items[13]].s, std::string("\x00\x01\x02", 3));
  EXPECT_EQ(r.values[t.items[14]].s, "z");
  EXPECT_EQ(r.values[t.items[15]].s, "ab");
  EXPECT_EQ(r.values[t.items[16]].s, "q");
  EXPECT_EQ(r.values[t.items[17]].s, "w");
}

TEST(Pickle, ContainersMemoAndFrames) {
  Pickler p;
  p.proto(4).op(0x95).raw(std::string(8, '\0'));            // FRAME 0 (a hint only)
  p.op('}').op(0x94);                                       // EMPTY_DICT, MEMOIZE -> memo[0]
  p.str("a").op(']').integer(1).op('a').op('s');           // "a": [1]
  p.str("b").mark().integer(2).integer(3).op('l').op('s');  // "b": [2, 3]
  p.mark().str("c").integer(1).integer(2).op(0x86).op('u'); // SETITEMS "c": (1, 2)
  p.op('0');                                                // POP the dict
  p.op('h').raw(std::string(1, '\0'));                      // BINGET 0 -> the dict again
  p.mark().str("k").integer(9).op('d');                     // DICT {"k": 9}
  p.op('r').raw(u32le(70000));                              // LONG_BINPUT
  p.op('j').raw(u32le(70000));                              // LONG_BINGET
  p.op(0x87).stop();                                        // TUPLE3
  const PickleResult r = run(p.bytes());
  const PyValue& t = root(r);
  ASSERT_EQ(t.kind, PyKind::Tuple);
  ASSERT_EQ(t.items.size(), 3u);
  const PyValue& d = r.values[t.items[0]];
  ASSERT_EQ(d.kind, PyKind::Dict);
  ASSERT_EQ(d.items.size(), 6u);
  EXPECT_EQ(r.values[d.items[0]].s, "a");
  EXPECT_EQ(r.values[d.items[1]].items.size(), 1u);
  EXPECT_EQ(r.values[d.items[3]].kind, PyKind::List);
  EXPECT_EQ(r.values[d.items[3]].items.size(), 2u);
  EXPECT_EQ(r.values[d.items[5]].kind, PyKind::Tuple);
  EXPECT_EQ(t.items[1], t.items[2]);  // same object through the memo
  EXPECT_EQ(r.values[t.items[1]].kind, PyKind::Dict);
}

TEST(Pickle, TensorGlobalsAndPersistentIds) {
  Pickler p;
  p.proto(2).global("torch._utils", "_rebuild_parameter").mark();
  p.global("torch._utils", "_rebuild_tensor_v2").mark().storage("BFloat16Storage", "7", 12).integer(2);
  p.tuple_of({2, 5}).tuple_of({5, 1}).op(0x89).ordered_dict().op('t').op('R');
  p.op(0x88).ordered_dict().op('t').op('R').stop();
  const PickleResult r = run(p.bytes());
  const PyValue& t = root(r);
  ASSERT_EQ(t.kind, PyKind::Tensor);
  EXPECT_EQ(t.i, 2);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(t.stride, (std::vector<int64_t>{5, 1}));
  const PyValue& s = r.values[t.items[0]];
  ASSERT_EQ(s.kind, PyKind::Storage);
  EXPECT_EQ(s.s, "BFloat16Storage");
  EXPECT_EQ(s.s2, "7");
  EXPECT_EQ(s.i, 12);

  // STACK_GLOBAL and NEWOBJ of OrderedDict; BUILD drops the state.
  Pickler q;
  q.proto(4).str("collections").str("OrderedDict").op(0x93).empty_tuple().op(0x81);
  q.op('}').str("_metadata").op('}').op('s').op('b').stop();
  const PickleResult r2 = run(q.bytes());
  EXPECT_EQ(root(r2).kind, PyKind::Dict);
  EXPECT_TRUE(root(r2).items.empty());
}

TEST(Pickle, RejectsDisallowedGlobals) {
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("os", "system").stop().bytes()), Unsupported,
                   "unsupported pickle global 'os.system'");
  EXPECT_XC2_ERROR(run(Pickler().proto(4).str("builtins").str("eval").op(0x93).stop().bytes()), Unsupported,
                   "unsupported pickle global 'builtins.eval'");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("torch", "load").stop().bytes()), Unsupported,
                   "'torch.load'");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("torch._utils", "_rebuild_qtensor").stop().bytes()), Unsupported,
                   "_rebuild_qtensor");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("collections", std::string(1000, 'x')).stop().bytes()), Io,
                   "over-long GLOBAL");
  // Whitelisted but not callable: a dtype, a storage class.
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("torch", "float32").empty_tuple().op('R').stop().bytes()), Io,
                   "'torch.float32' cannot be called");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(']').empty_tuple().op('R').stop().bytes()), Io, "calls a list");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("torch", "FloatStorage").empty_tuple().op(0x81).stop().bytes()), Io,
                   "NEWOBJ of a non-dict class");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).ordered_dict().global("collections", "OrderedDict").mark().integer(1)
                           .op('t').op('R').stop().bytes()),
                   Io, "OrderedDict called with arguments");
}

TEST(Pickle, RejectsBadTensorArguments) {
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("torch._utils", "_rebuild_tensor_v2").mark().integer(1).op('t')
                           .op('R').stop().bytes()),
                   Io, "_rebuild_tensor_v2 takes 6 or 7 arguments, got 1");
  Pickler p;
  p.proto(2).global("torch._utils", "_rebuild_tensor_v2").mark().integer(0).integer(0).tuple_of({1}).tuple_of({1});
  p.op(0x89).ordered_dict().op('t').op('R').stop();
  EXPECT_XC2_ERROR(run(p.bytes()), Io, "argument 0 is not a storage");
  Pickler q;
  q.proto(2).global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 4).integer(0);
  q.tuple_of({1, 2}).tuple_of({1}).op(0x89).ordered_dict().op('t').op('R').stop();
  EXPECT_XC2_ERROR(run(q.bytes()), Io, "size and stride differ");
  Pickler s;
  s.proto(2).global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 4).integer(0);
  s.mark().str("x").op('t').tuple_of({1}).op(0x89).ordered_dict().op('t').op('R').stop();
  EXPECT_XC2_ERROR(run(s.bytes()), Io, "tensor size holds a str");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).global("torch._utils", "_rebuild_parameter").mark().integer(1).op(0x89)
                           .op('N').op('t').op('R').stop().bytes()),
                   Io, "argument 0 is not a tensor");
}

TEST(Pickle, RejectsBadPersistentIds) {
  EXPECT_XC2_ERROR(run(Pickler().proto(2).str("x").op('Q').stop().bytes()), Io, "persistent id is not a");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).mark().str("module").global("torch", "FloatStorage").str("0").str("cpu")
                           .integer(1).op('t').op('Q').stop().bytes()),
                   Io, "not a 'storage' tuple");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).mark().str("storage").global("torch", "float32").str("0").str("cpu")
                           .integer(1).op('t').op('Q').stop().bytes()),
                   Io, "names no torch storage type");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).mark().str("storage").global("torch", "FloatStorage").integer(0).str("cpu")
                           .integer(1).op('t').op('Q').stop().bytes()),
                   Io, "storage key is not a string");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu")
                           .integer(-1).op('t').op('Q').stop().bytes()),
                   Io, "storage size is not an int >= 0");
}

TEST(Pickle, DeepNestingAndCyclesAreHarmless) {
  // 100k nested lists: [[[...]]] built with EMPTY_LIST ... APPEND; nothing recurses.
  Pickler p;
  p.proto(2);
  for (int k = 0; k < 100000; ++k) p.op(']');
  for (int k = 0; k < 99999; ++k) p.op('a');
  p.stop();
  const PickleResult r = run(p.bytes());
  EXPECT_EQ(root(r).kind, PyKind::List);

  // 100k marks, then STOP: underflow (STOP cannot reach below a mark), not a crash.
  Pickler m;
  m.proto(2);
  for (int k = 0; k < 100000; ++k) m.op(']').mark();
  m.stop();
  EXPECT_XC2_ERROR(run(m.bytes()), Io, "stack underflow");

  // A list appended into itself, and a dict that holds itself.
  const PickleResult c = run(Pickler().proto(2).op(']').binput(0).binget(0).op('a').stop().bytes());
  ASSERT_EQ(root(c).kind, PyKind::List);
  EXPECT_EQ(root(c).items.at(0), c.root);
  const PickleResult d = run(Pickler().proto(2).op('}').binput(0).str("me").binget(0).op('s').stop().bytes());
  EXPECT_EQ(root(d).items.at(1), d.root);
}

TEST(Pickle, RejectsMalformedPrograms) {
  EXPECT_XC2_ERROR(run(""), Io, "pickle ends without STOP");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(']').bytes()), Io, "ends without STOP");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('a').stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).integer(1).op(0x86).stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('t').stop().bytes()), Io, "MARK not found");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('1').stop().bytes()), Io, "MARK not found");
  // APPEND cannot reach the list below a MARK (Python semantics).
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(']').mark().op('a').stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(']').mark().integer(1).op('a').stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).binget(5).stop().bytes()), Io, "memo index 5 is not defined");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('j').raw(u32le(0xFFFFFFFFu)).stop().bytes()), Io, "memo index");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).binput(0).stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(0xff).stop().bytes()), Io, "unsupported pickle opcode 0xff at byte 2");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('I').raw("01\n").stop().bytes()), Io, "unsupported pickle opcode 0x49");
  EXPECT_XC2_ERROR(run(Pickler().proto(9).stop().bytes()), Io, "unsupported pickle protocol 9");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).integer(1).op('a').stop().bytes()), Io, "stack underflow");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).integer(1).integer(2).op('a').stop().bytes()), Io, "APPEND to a int");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(']').str("k").integer(2).op('s').stop().bytes()), Io, "SETITEM on a list");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('}').mark().integer(1).op('u').stop().bytes()), Io, "odd number");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).mark().integer(1).op('d').stop().bytes()), Io, "odd number");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('b').stop().bytes()), Io, "stack underflow");
}

TEST(Pickle, RejectsHugeLengthsWithoutAllocating) {
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('X').raw(u32le(0xFFFFFFFFu)).raw("abc").bytes()), Io,
                   "truncated pickle: needs 4294967295 more bytes, 3 left");
  EXPECT_XC2_ERROR(run(Pickler().proto(4).op(0x8d).raw(std::string(7, '\xff') + "\x7f").bytes()), Io, "truncated");
  EXPECT_XC2_ERROR(run(Pickler().proto(4).op(0x8e).raw(std::string(8, '\xff')).bytes()), Io, "truncated");
  EXPECT_XC2_ERROR(run(Pickler().proto(4).op(0x95).raw(std::string(8, '\xff')).bytes()), Io, "truncated");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('T').raw(u32le(0x80000000u)).bytes()), Io, "negative BINSTRING");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(0x8a).raw(std::string("\x09", 1) + std::string(9, '\1')).stop().bytes()),
                   Io, "does not fit in 64 bits");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op(0x8b).raw(u32le(0xFFFFFFF0u)).stop().bytes()), Io,
                   "does not fit in 64 bits");
  EXPECT_XC2_ERROR(run(Pickler().proto(2).op('J').raw("\x01\x02").bytes()), Io, "truncated");
}

TEST(Pickle, EnforcesLimits) {
  PickleLimits small;
  small.max_stack = 100;
  Pickler deep;
  deep.proto(2);
  for (int k = 0; k < 200; ++k) deep.op(']');
  EXPECT_XC2_ERROR(run(deep.bytes(), small), Io, "stack deeper than 100");
  Pickler marks;
  marks.proto(2);
  for (int k = 0; k < 200; ++k) marks.mark();
  EXPECT_XC2_ERROR(run(marks.bytes(), small), Io, "stack deeper than 100");

  PickleLimits memo;
  memo.max_memo = 4;
  Pickler mp;
  mp.proto(2).op(']');
  for (int k = 0; k < 8; ++k) mp.binput(static_cast<uint8_t>(k));
  EXPECT_XC2_ERROR(run(mp.bytes(), memo), Io, "memo larger than 4");

  PickleLimits ops;
  ops.max_ops = 50;
  Pickler op;
  op.proto(2).op(']');
  for (int k = 0; k < 100; ++k) op.op('2').op('0');  // DUP, POP
  EXPECT_XC2_ERROR(run(op.bytes(), ops), Io, "more than 50 pickle opcodes");

  PickleLimits vals;
  vals.max_values = 64;
  Pickler vp;
  vp.proto(2).op(']');
  for (int k = 0; k < 100; ++k) vp.integer(k).op('a');
  EXPECT_XC2_ERROR(run(vp.bytes(), vals), Io, "more than 64 pickle values");

  // The default limits stop a million marks.
  Pickler many;
  many.proto(2);
  for (int k = 0; k < (1 << 20) + 1; ++k) many.mark();
  EXPECT_XC2_ERROR(run(many.bytes()), Io, "stack deeper than");
}

}  // namespace
}  // namespace xc2::io
