// A small backtracking regular-expression engine with Python `re` semantics for the subset the
// extractor needs: literals, classes, '.', groups (capturing, named (?P<n>..), (?:..), (?i:..)),
// alternation, greedy and lazy quantifiers, ^ $ \b, single-character lookbehind, lookahead.
// Matching works on UTF-8 code points. Every match runs under a step and a depth budget, so no
// pattern/input pair can run away: exceeding a budget throws Unsure.
#pragma once

#include <string>
#include <vector>

#include "core.hpp"

namespace paced {

// UTF-8 helpers shared with the hand-written matchers: one code point at i (invalid bytes decode as
// themselves, length 1), and Python's \s on a code point.
uint32_t utf8_decode(const std::string& s, size_t i, size_t* len);
bool unicode_space(uint32_t c);

class Regex {
 public:
  explicit Regex(const std::string& pattern, bool dotall = false);

  struct Match {
    size_t start = 0, end = 0;
    std::vector<std::pair<long, long>> groups;  // (start, end) per group, -1 when unset
  };
  // Python re.match at `pos` (anchored there). `steps` is a shared budget decremented per step.
  bool match_at(const std::string& s, size_t pos, Match* m, long* steps) const;
  // Python re.finditer semantics over s (non-overlapping, left to right), scanning from `from`
  // (lookbehinds and ^ still see the whole string).
  void finditer(const std::string& s, std::vector<Match>* out, long* steps,
                bool (*prefilter)(const std::string&, size_t) = nullptr, size_t from = 0) const;
  // finditer restricted to match starts in `starts` (ascending): the same matches as finditer with
  // a prefilter that accepts exactly those positions, without visiting every other byte.
  void finditer_at(const std::string& s, const std::vector<size_t>& starts, std::vector<Match>* out,
                   long* steps) const;
  int group_index(const std::string& name) const;
  int num_groups() const { return ngroups_; }

  struct RNode {
    enum T : uint8_t { Set, Any, Bol, Eol, WordB, NWordB, Open, Close, Alt, Rep, RepTail, LookBehindNot, LookAheadNot,
                       LookAhead, Accept } t;
    int next = -1;
    // Set
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    bool negate = false, icase = false;
    // Alt
    std::vector<int> branches;
    // Rep
    int body = -1, min = 0, max = -1;
    bool greedy = true, simple = false;
    int rep = -1;  // RepTail -> its Rep
    // group
    int group = -1;
    // lookaround: sub-chain start; whether the sub-chain sets capture groups
    int sub = -1;
    bool sub_sets_groups = true;
  };

 private:
  std::vector<RNode> nodes_;
  int start_ = -1;
  int ngroups_ = 0;
  std::vector<std::string> names_;
  bool dotall_;

  // parser
  struct P {
    const std::string* src;
    size_t i;
    bool icase;
  };
  int new_node(RNode::T t);
  // parse an alternation; returns (head, tail) where tail is the last node whose next is unset
  std::pair<int, int> parse_alt(P& p);
  std::pair<int, int> parse_seq(P& p);
  std::pair<int, int> parse_atom(P& p);
  void parse_class(P& p, RNode& n);
  uint32_t parse_escape_char(P& p, RNode* cls);

  friend struct RegexMatcher;
};

}  // namespace paced
