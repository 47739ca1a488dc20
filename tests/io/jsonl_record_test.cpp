// The caption JSONL reader and writer (tools/xc2/jsonl.h), in the io suite so that it also runs under ASan:
// records read back as written, names that are not UTF-8 survive the round trip, malformed lines are refused.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "jsonl.h"

namespace xc2::cli {
namespace {

TEST(JsonlRecord, ReadsTheTopLevelStringsAndNotesTheOtherMembers) {
  const auto r = parse_json_record(
      R"({"path": "a\/b.png", "caption": "A \"red\" circle.\n\u00e9\ud83d\ude00", "ms": 1.5, "x": {"path": "no"}})");
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->string("path"));
  EXPECT_EQ(*r->string("path"), "a/b.png");
  EXPECT_EQ(*r->string("caption"), "A \"red\" circle.\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(r->has("ms"));
  EXPECT_TRUE(r->has("x"));
  EXPECT_EQ(r->string("ms"), nullptr);
  EXPECT_FALSE(r->has("error"));
}

TEST(JsonlRecord, NamesThatAreNotUtf8RoundTrip) {
  for (const std::string& name : {std::string("x\xff.png"), std::string("x\xfe.png"), std::string("\xc3("),
                                 std::string("ok \xc3\xa9.png"), std::string("\x01\x1f\"\\"), std::string()}) {
    const std::string lit = json_escape(name);
    const auto r = parse_json_record("{\"path\": " + lit + "}");
    ASSERT_TRUE(r) << lit;
    EXPECT_EQ(*r->string("path"), name);
  }
  EXPECT_NE(json_escape("x\xff.png"), json_escape("x\xfe.png"));
  EXPECT_EQ(json_escape("x\xff.png"), "\"x\\udcff.png\"");
  EXPECT_EQ(json_escape("ok \xc3\xa9.png"), "\"ok \xc3\xa9.png\"");  // valid UTF-8 is written as it is
}

TEST(JsonlRecord, MalformedLinesAreRefused) {
  for (const std::string& bad : std::initializer_list<std::string>
       {"", "   ", "[1, 2]", "\"path\"", "{", "{\"path\": \"a.png\"", "{\"path\": \"a.png\"} x", "{\"path\" \"a\"}",
        "{\"path\": \"\\x41\"}", "{\"path\": \"\\u12\"}", "{\"path\": \"a\nb\"}", "{\"a\": tru}", "{\"a\": 1.}",
        "{\"a\": [1, }", "{,}", "{\"a\": 1,}"}) {
    EXPECT_FALSE(parse_json_record(bad)) << bad;
  }
  EXPECT_TRUE(parse_json_record("  {}  "));
  EXPECT_TRUE(parse_json_record("{\"a\": [1, {\"b\": null}], \"c\": -2.5e3, \"d\": true}"));
}

TEST(JsonlRecord, DeeplyNestedInputIsRefusedWithoutExhaustingTheStack) {
  const std::string deep = "{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_FALSE(parse_json_record(deep));
}

TEST(JsonlRecord, PathKeysAreLexicallyNormal) {
  EXPECT_EQ(path_key("./a/../b.png"), "b.png");
  EXPECT_EQ(path_key("./../a.png"), path_key("../a.png"));
  EXPECT_EQ(path_key("dir//x.png"), "dir/x.png");
  EXPECT_EQ(path_key(""), "");
  EXPECT_NE(path_key("/a.png"), path_key("a.png"));
}

}  // namespace
}  // namespace xc2::cli
