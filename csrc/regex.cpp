// Backtracking regex engine (see regex.hpp).
#include "regex.hpp"

#include <algorithm>
#include <stdexcept>

#include "textutil.hpp"

namespace paced {

namespace {

// decode one UTF-8 code point at i; invalid bytes decode as themselves (0x80..0xFF) with length 1
inline uint32_t decode(const std::string& s, size_t i, size_t* len) {
  unsigned char c = (unsigned char)s[i];
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  int n = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 0;
  if (n == 0 || i + (size_t)n > s.size()) {
    *len = 1;
    return c;
  }
  uint32_t cp = c & (0xFF >> (n + 1));
  for (int k = 1; k < n; ++k) {
    unsigned char cc = (unsigned char)s[i + (size_t)k];
    if ((cc & 0xC0) != 0x80) {
      *len = 1;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  *len = (size_t)n;
  return cp;
}
inline size_t prev_cp(const std::string& s, size_t i) {  // i > 0
  size_t j = i - 1;
  int back = 0;
  while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80 && back < 3) {
    --j;
    ++back;
  }
  size_t len;
  decode(s, j, &len);
  if (j + len != i) return i - 1;  // invalid sequence: step one byte
  return j;
}
inline bool cp_space(uint32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == 0x1c || c == 0x1d ||
         c == 0x1e || c == 0x1f || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
         c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
inline bool cp_digit(uint32_t c) { return c >= '0' && c <= '9'; }
inline bool cp_word(uint32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (c >= 0xAA && !cp_space(c) && c != 0xD7 && c != 0xF7 && !(c >= 0x2000 && c <= 0x2BFF) &&
          !(c >= 0x20A0 && c <= 0x20CF));
}
constexpr uint32_t kDigitClass = 0xFFFFFF01, kSpaceClass = 0xFFFFFF02, kWordClass = 0xFFFFFF03;

inline bool set_has(const Regex::RNode& n, uint32_t c) {
  bool in = false;
  for (auto& r : n.ranges) {
    if (r.first == kDigitClass) {
      if (cp_digit(c)) in = true;
    } else if (r.first == kSpaceClass) {
      if (cp_space(c)) in = true;
    } else if (r.first == kWordClass) {
      if (cp_word(c)) in = true;
    } else if (c >= r.first && c <= r.second) {
      in = true;
    } else if (n.icase && c < 128) {
      uint32_t l = (uint32_t)to_lower((char)c);
      uint32_t u = (c >= 'a' && c <= 'z') ? c - 32 : c;
      if ((l >= r.first && l <= r.second) || (u >= r.first && u <= r.second)) in = true;
    }
    if (in) break;
  }
  return in != n.negate;
}

}  // namespace

uint32_t utf8_decode(const std::string& s, size_t i, size_t* len) { return decode(s, i, len); }
bool unicode_space(uint32_t c) { return cp_space(c); }

int Regex::new_node(RNode::T t) {
  RNode n;
  n.t = t;
  nodes_.push_back(n);
  return (int)nodes_.size() - 1;
}

Regex::Regex(const std::string& pattern, bool dotall) : dotall_(dotall) {
  names_.push_back("");
  P p{&pattern, 0, false};
  auto [h, t] = parse_alt(p);
  if (p.i != pattern.size()) throw std::invalid_argument("regex: unbalanced ')' in " + pattern);
  int acc = new_node(RNode::Accept);
  nodes_[(size_t)acc].group = 1;
  nodes_[(size_t)t].next = acc;
  start_ = h;
  ngroups_ = (int)names_.size();
  // lookarounds whose sub-pattern sets no capture group need not save and restore the groups
  for (auto& n : nodes_) {
    if (n.t != RNode::LookBehindNot && n.t != RNode::LookAheadNot && n.t != RNode::LookAhead) continue;
    std::vector<int> stack{n.sub};
    std::vector<bool> seen(nodes_.size(), false);
    bool groups = false;
    while (!stack.empty() && !groups) {
      int k = stack.back();
      stack.pop_back();
      if (k < 0 || seen[(size_t)k]) continue;
      seen[(size_t)k] = true;
      const RNode& x = nodes_[(size_t)k];
      if ((x.t == RNode::Open || x.t == RNode::Close) && x.group >= 0) groups = true;
      if (x.t == RNode::Accept) continue;
      stack.push_back(x.next);
      stack.push_back(x.body);
      stack.push_back(x.sub);
      for (int b : x.branches) stack.push_back(b);
    }
    n.sub_sets_groups = groups;
  }
}

int Regex::group_index(const std::string& name) const {
  for (size_t i = 0; i < names_.size(); ++i)
    if (names_[i] == name) return (int)i;
  return -1;
}

std::pair<int, int> Regex::parse_alt(P& p) {
  std::vector<std::pair<int, int>> br;
  br.push_back(parse_seq(p));
  while (p.i < p.src->size() && (*p.src)[p.i] == '|') {
    ++p.i;
    br.push_back(parse_seq(p));
  }
  if (br.size() == 1) return br[0];
  int alt = new_node(RNode::Alt);
  int join = new_node(RNode::Close);  // group -1: a no-op join
  for (auto& b : br) {
    nodes_[(size_t)alt].branches.push_back(b.first);
    nodes_[(size_t)b.second].next = join;
  }
  return {alt, join};
}

std::pair<int, int> Regex::parse_seq(P& p) {
  int head = new_node(RNode::Close);  // no-op head
  int tail = head;
  const std::string& s = *p.src;
  while (p.i < s.size() && s[p.i] != '|' && s[p.i] != ')') {
    auto [h, t] = parse_atom(p);
    nodes_[(size_t)tail].next = h;
    tail = t;
  }
  return {head, tail};
}

uint32_t Regex::parse_escape_char(P& p, RNode* cls) {
  const std::string& s = *p.src;
  char c = s[p.i++];
  switch (c) {
    case 'd':
      if (cls) cls->ranges.push_back({kDigitClass, 0});
      return kDigitClass;
    case 's':
      if (cls) cls->ranges.push_back({kSpaceClass, 0});
      return kSpaceClass;
    case 'w':
      if (cls) cls->ranges.push_back({kWordClass, 0});
      return kWordClass;
    case 'n':
      return '\n';
    case 't':
      return '\t';
    case 'r':
      return '\r';
    default:
      if ((unsigned char)c >= 0x80) {  // an escaped non-ASCII character: the whole code point
        size_t len;
        uint32_t cp = decode(s, p.i - 1, &len);
        p.i = p.i - 1 + len;
        return cp;
      }
      return (unsigned char)c;  // escaped punctuation is literal
  }
}

void Regex::parse_class(P& p, RNode& n) {
  const std::string& s = *p.src;
  n.t = RNode::Set;
  n.icase = p.icase;
  if (p.i < s.size() && s[p.i] == '^') {
    n.negate = true;
    ++p.i;
  }
  bool first = true;
  while (p.i < s.size() && (s[p.i] != ']' || first)) {
    first = false;
    uint32_t lo;
    if (s[p.i] == '\\') {
      ++p.i;
      size_t before = n.ranges.size();
      lo = parse_escape_char(p, &n);
      if (n.ranges.size() != before) continue;  // \d \s \w
    } else {
      size_t len;
      lo = decode(s, p.i, &len);
      p.i += len;
    }
    uint32_t hi = lo;
    if (p.i + 1 < s.size() && s[p.i] == '-' && s[p.i + 1] != ']') {
      ++p.i;
      if (s[p.i] == '\\') {
        ++p.i;
        hi = parse_escape_char(p, nullptr);
      } else {
        size_t len;
        hi = decode(s, p.i, &len);
        p.i += len;
      }
    }
    n.ranges.push_back({lo, hi});
  }
  if (p.i >= s.size()) throw std::invalid_argument("regex: unterminated class");
  ++p.i;  // ']'
}

std::pair<int, int> Regex::parse_atom(P& p) {
  const std::string& s = *p.src;
  int head = -1, tail = -1;
  char c = s[p.i];
  if (c == '(') {
    ++p.i;
    bool saved_icase = p.icase;
    int group = -1;
    enum { Plain, NonCap, LBNot, LANot, LA } kind = Plain;
    if (p.i < s.size() && s[p.i] == '?') {
      ++p.i;
      if (s[p.i] == ':') {
        kind = NonCap;
        ++p.i;
      } else if (s[p.i] == 'P' && s[p.i + 1] == '<') {
        size_t e = s.find('>', p.i);
        names_.push_back(s.substr(p.i + 2, e - p.i - 2));
        group = (int)names_.size() - 1;
        p.i = e + 1;
      } else if (s[p.i] == 'i' && s[p.i + 1] == ':') {
        kind = NonCap;
        p.icase = true;
        p.i += 2;
      } else if (s[p.i] == '<' && s[p.i + 1] == '!') {
        kind = LBNot;
        p.i += 2;
      } else if (s[p.i] == '!') {
        kind = LANot;
        ++p.i;
      } else if (s[p.i] == '=') {
        kind = LA;
        ++p.i;
      } else {
        throw std::invalid_argument("regex: unsupported group syntax");
      }
    } else {
      names_.push_back("");
      group = (int)names_.size() - 1;
    }
    auto [h, t] = parse_alt(p);
    if (p.i >= s.size() || s[p.i] != ')') throw std::invalid_argument("regex: missing ')'");
    ++p.i;
    p.icase = saved_icase;
    if (kind == LBNot || kind == LANot || kind == LA) {
      int acc = new_node(RNode::Accept);
      nodes_[(size_t)acc].group = 0;
      nodes_[(size_t)t].next = acc;
      int look = new_node(kind == LBNot ? RNode::LookBehindNot : kind == LANot ? RNode::LookAheadNot : RNode::LookAhead);
      nodes_[(size_t)look].sub = h;
      head = tail = look;
    } else if (group >= 0) {
      int open = new_node(RNode::Open);
      int close = new_node(RNode::Close);
      nodes_[(size_t)open].group = group;
      nodes_[(size_t)close].group = group;
      nodes_[(size_t)open].next = h;
      nodes_[(size_t)t].next = close;
      head = open;
      tail = close;
    } else {
      head = h;
      tail = t;
    }
  } else if (c == '[') {
    ++p.i;
    int n = new_node(RNode::Set);
    parse_class(p, nodes_[(size_t)n]);
    head = tail = n;
  } else if (c == '.') {
    ++p.i;
    head = tail = new_node(RNode::Any);
  } else if (c == '^') {
    ++p.i;
    head = tail = new_node(RNode::Bol);
  } else if (c == '$') {
    ++p.i;
    head = tail = new_node(RNode::Eol);
  } else if (c == '\\') {
    ++p.i;
    if (s[p.i] == 'b' || s[p.i] == 'B') {
      head = tail = new_node(s[p.i] == 'b' ? RNode::WordB : RNode::NWordB);
      ++p.i;
    } else {
      int n = new_node(RNode::Set);
      RNode& nd = nodes_[(size_t)n];
      nd.icase = p.icase;
      size_t before = nd.ranges.size();
      uint32_t ch = parse_escape_char(p, &nd);
      if (nodes_[(size_t)n].ranges.size() == before) nodes_[(size_t)n].ranges.push_back({ch, ch});
      head = tail = n;
    }
  } else {
    size_t len;
    uint32_t ch = decode(s, p.i, &len);
    p.i += len;
    int n = new_node(RNode::Set);
    nodes_[(size_t)n].icase = p.icase;
    nodes_[(size_t)n].ranges.push_back({ch, ch});
    head = tail = n;
  }
  // quantifier
  if (p.i < s.size()) {
    int mn = -1, mx = -1;
    char q = s[p.i];
    if (q == '*') {
      mn = 0;
      mx = -1;
      ++p.i;
    } else if (q == '+') {
      mn = 1;
      mx = -1;
      ++p.i;
    } else if (q == '?') {
      mn = 0;
      mx = 1;
      ++p.i;
    } else if (q == '{' && p.i + 1 < s.size() && (is_digit(s[p.i + 1]) || s[p.i + 1] == ',')) {
      size_t j = p.i + 1;
      int a = 0, b = -1;
      while (j < s.size() && is_digit(s[j])) a = a * 10 + (s[j++] - '0');
      if (s[j] == ',') {
        ++j;
        if (is_digit(s[j])) {
          b = 0;
          while (j < s.size() && is_digit(s[j])) b = b * 10 + (s[j++] - '0');
        }
      } else {
        b = a;
      }
      if (s[j] == '}') {
        mn = a;
        mx = b;
        p.i = j + 1;
      }
    }
    if (mn >= 0) {
      bool greedy = true;
      if (p.i < s.size() && s[p.i] == '?') {
        greedy = false;
        ++p.i;
      }
      int rep = new_node(RNode::Rep);
      int rtail = new_node(RNode::RepTail);
      RNode& r = nodes_[(size_t)rep];
      r.body = head;
      r.min = mn;
      r.max = mx;
      r.greedy = greedy;
      r.simple = head == tail && (nodes_[(size_t)head].t == RNode::Set || nodes_[(size_t)head].t == RNode::Any);
      nodes_[(size_t)tail].next = rtail;
      nodes_[(size_t)rtail].rep = rep;
      head = tail = rep;
    }
  }
  return {head, tail};
}

struct RegexMatcher {
  const Regex& re;
  const std::string& s;
  std::vector<std::pair<long, long>> groups;
  std::vector<std::pair<int, size_t>> rep_state;  // per node: (count, start pos) of the active loop
  long* steps;
  int depth = 0;
  size_t end = 0;

  RegexMatcher(const Regex& r, const std::string& str, long* st)
      : re(r), s(str), groups((size_t)r.ngroups_, {-1, -1}), rep_state(r.nodes_.size(), {0, 0}), steps(st) {}

  // after a successful m(start, pos): the match, with the groups cleared for the next attempt
  Regex::Match take(size_t pos) {
    Regex::Match m;
    m.start = pos;
    m.end = end;
    m.groups = groups;
    m.groups[0] = {(long)pos, (long)end};
    std::fill(groups.begin(), groups.end(), std::pair<long, long>{-1, -1});
    return m;
  }

  bool single(const Regex::RNode& n, size_t pos, size_t* next) const {
    if (pos >= s.size()) return false;
    size_t len;
    uint32_t c = decode(s, pos, &len);
    if (n.t == Regex::RNode::Any) {
      if (c == '\n' && !re.dotall_) return false;
    } else if (!set_has(n, c)) {
      return false;
    }
    *next = pos + len;
    return true;
  }

  bool word_at(size_t pos) const {
    if (pos >= s.size()) return false;
    size_t len;
    return cp_word(decode(s, pos, &len));
  }

  bool m(int ni, size_t pos) {
    if (--*steps < 0) throw Unsure{"regex step budget"};
    if (++depth > 4000) {
      --depth;
      throw Unsure{"regex depth budget"};
    }
    bool r = step(ni, pos);
    --depth;
    return r;
  }

  bool rep_try(int ni, size_t pos, int count) {
    const Regex::RNode& n = re.nodes_[(size_t)ni];
    auto saved = rep_state[(size_t)ni];
    bool can_more = n.max < 0 || count < n.max;
    if (n.greedy) {
      if (can_more) {
        rep_state[(size_t)ni] = {count, pos};
        if (m(n.body, pos)) return true;
        rep_state[(size_t)ni] = saved;
      }
      return count >= n.min && m(n.next, pos);
    }
    if (count >= n.min && m(n.next, pos)) return true;
    if (can_more) {
      rep_state[(size_t)ni] = {count, pos};
      if (m(n.body, pos)) return true;
      rep_state[(size_t)ni] = saved;
    }
    return false;
  }

  bool step(int ni, size_t pos) {
    const Regex::RNode& n = re.nodes_[(size_t)ni];
    switch (n.t) {
      case Regex::RNode::Set:
      case Regex::RNode::Any: {
        size_t nx;
        return single(n, pos, &nx) && m(n.next, nx);
      }
      case Regex::RNode::Bol:
        return pos == 0 && m(n.next, pos);
      case Regex::RNode::Eol:
        return (pos == s.size() || (pos + 1 == s.size() && s[pos] == '\n')) && m(n.next, pos);
      case Regex::RNode::WordB:
      case Regex::RNode::NWordB: {
        bool a = pos > 0 && word_at(prev_cp(s, pos));
        bool b = word_at(pos);
        bool wb = a != b;
        return (wb == (n.t == Regex::RNode::WordB)) && m(n.next, pos);
      }
      case Regex::RNode::Open: {
        auto saved = groups[(size_t)n.group];
        groups[(size_t)n.group].first = (long)pos;
        if (m(n.next, pos)) return true;
        groups[(size_t)n.group] = saved;
        return false;
      }
      case Regex::RNode::Close: {
        if (n.group < 0) return m(n.next, pos);
        auto saved = groups[(size_t)n.group];
        groups[(size_t)n.group].second = (long)pos;
        if (m(n.next, pos)) return true;
        groups[(size_t)n.group] = saved;
        return false;
      }
      case Regex::RNode::Alt:
        for (int b : n.branches)
          if (m(b, pos)) return true;
        return false;
      case Regex::RNode::Rep: {
        if (n.simple) {
          const Regex::RNode& body = re.nodes_[(size_t)n.body];
          if (!n.greedy) {  // lazy: try the continuation after 0, 1, 2, ... repetitions
            size_t p = pos, nx;
            for (int cnt = 0;; ++cnt) {
              if (cnt >= n.min && m(n.next, p)) return true;
              if (!(n.max < 0 || cnt < n.max) || !single(body, p, &nx)) return false;
              p = nx;
              if (--*steps < 0) throw Unsure{"regex step budget"};
            }
          }
          {  // greedy over single-byte characters: no position list needed
            size_t p = pos, nx;
            int cnt = 0;
            bool ascii = true;
            while ((n.max < 0 || cnt < n.max) && single(body, p, &nx)) {
              if (nx != p + 1) {
                ascii = false;
                break;
              }
              p = nx;
              ++cnt;
              if (--*steps < 0) throw Unsure{"regex step budget"};
            }
            if (ascii) {
              if (cnt < n.min) return false;
              for (int k = cnt; k >= n.min; --k)
                if (m(n.next, pos + (size_t)k)) return true;
              return false;
            }
          }
          std::vector<size_t> ps{pos};
          size_t p = pos, nx;
          while ((n.max < 0 || (int)ps.size() - 1 < n.max) && single(body, p, &nx)) {
            p = nx;
            ps.push_back(p);
            if (--*steps < 0) throw Unsure{"regex step budget"};
          }
          int cnt = (int)ps.size() - 1;
          if (cnt < n.min) return false;
          if (n.greedy) {
            for (int k = cnt; k >= n.min; --k)
              if (m(n.next, ps[(size_t)k])) return true;
          } else {
            for (int k = n.min; k <= cnt; ++k)
              if (m(n.next, ps[(size_t)k])) return true;
          }
          return false;
        }
        return rep_try(ni, pos, 0);
      }
      case Regex::RNode::RepTail: {
        int ri = n.rep;
        const Regex::RNode& r = re.nodes_[(size_t)ri];
        auto st = rep_state[(size_t)ri];
        int count = st.first + 1;
        if (pos == st.second) {  // empty iteration: stop looping
          return count >= r.min && m(r.next, pos);
        }
        auto saved = rep_state[(size_t)ri];
        bool ok = rep_try(ri, pos, count);
        rep_state[(size_t)ri] = saved;
        return ok;
      }
      case Regex::RNode::LookBehindNot: {
        if (pos > 0 && !n.sub_sets_groups) {
          if (m(n.sub, prev_cp(s, pos))) return false;
        } else if (pos > 0) {
          size_t pp = prev_cp(s, pos);
          auto saved = groups;
          bool hit = m(n.sub, pp);
          groups = saved;
          if (hit) return false;
        }
        return m(n.next, pos);
      }
      case Regex::RNode::LookAheadNot: {
        if (!n.sub_sets_groups) {
          if (m(n.sub, pos)) return false;
          return m(n.next, pos);
        }
        auto saved = groups;
        bool hit = m(n.sub, pos);
        groups = saved;
        if (hit) return false;
        return m(n.next, pos);
      }
      case Regex::RNode::LookAhead: {
        auto saved = groups;
        bool hit = m(n.sub, pos);
        if (!hit) {
          groups = saved;
          return false;
        }
        return m(n.next, pos);
      }
      case Regex::RNode::Accept:
        if (n.group == 1) end = pos;
        return true;
    }
    return false;
  }
};

bool Regex::match_at(const std::string& s, size_t pos, Match* out, long* steps) const {
  RegexMatcher mm(*this, s, steps);
  if (!mm.m(start_, pos)) return false;
  if (out) {
    out->start = pos;
    out->end = mm.end;
    out->groups = mm.groups;
    out->groups[0] = {(long)pos, (long)mm.end};
  }
  return true;
}

void Regex::finditer(const std::string& s, std::vector<Match>* out, long* steps,
                     bool (*prefilter)(const std::string&, size_t), size_t from) const {
  size_t pos = from;
  RegexMatcher mm(*this, s, steps);  // reused across positions (no allocation per attempt)
  while (pos <= s.size()) {
    if (prefilter && !prefilter(s, pos)) {
      pos = pos < s.size() ? next_cp(s, pos) : pos + 1;
      continue;
    }
    // groups are restored on every failed path; only a success leaves them set
    mm.depth = 0;
    mm.end = 0;
    if (mm.m(start_, pos)) {
      out->push_back(mm.take(pos));
      pos = out->back().end > pos ? out->back().end : next_cp(s, pos);
    } else {
      pos = pos < s.size() ? next_cp(s, pos) : pos + 1;
    }
  }
}

void Regex::finditer_at(const std::string& s, const std::vector<size_t>& starts, std::vector<Match>* out,
                        long* steps) const {
  if (starts.empty()) return;
  size_t pos = 0;  // no match may start before the end of the previous one
  RegexMatcher mm(*this, s, steps);
  for (size_t q : starts) {
    if (q < pos || q > s.size()) continue;
    mm.depth = 0;
    mm.end = 0;
    if (!mm.m(start_, q)) continue;
    out->push_back(mm.take(q));
    pos = out->back().end > q ? out->back().end : next_cp(s, q);
  }
}

}  // namespace paced
