// Direct matcher for the number regex (see number_scan.hpp). The regex, as a reminder:
//
//   (?:^|\s|=)(?:\*\*)?<currency>?(?<!\d)
//   (?:(?P<integer1>-?[1-9]\d{0,2}(?:[ ,]\d{3})+)(?P<decimal1>\.\d+)?
//     |(?P<integer2>-?\d+)(?P<decimal2>[.,]\d+)|(?P<decimal3>\.\d+)|(?P<integer3>-?\d+))
//   (?P<percent>\s*(?:%|[Pp]ercent|\s*[Pp]ercentage|\s*[Pp]ct))?
//
// Backtracking only ever changes the outcome in two places, both handled explicitly: the prefix
// (at position 0 "^" is tried before "\s"), and \d{0,2} in integer1 (the longest run that still
// leaves a "[ ,]ddd" group). Everything after the number is optional, so the first alternative
// that matches is the match, with its greedy extent.
#include "number_scan.hpp"

#include <algorithm>

#include "textutil.hpp"

namespace paced {

NumberGroups NumberGroups::of(const Regex& re) {
  NumberGroups g;
  g.n = re.num_groups();
  g.integer1 = re.group_index("integer1");
  g.decimal1 = re.group_index("decimal1");
  g.integer2 = re.group_index("integer2");
  g.decimal2 = re.group_index("decimal2");
  g.decimal3 = re.group_index("decimal3");
  g.integer3 = re.group_index("integer3");
  g.percent = re.group_index("percent");
  return g;
}

namespace {

struct Scan {
  const std::string& s;
  const NumberGroups& g;
  const std::vector<uint32_t>& currency;

  bool digit(size_t i) const { return i < s.size() && is_digit(s[i]); }
  size_t digits(size_t i) const {  // end of the run of ASCII digits at i
    while (digit(i)) ++i;
    return i;
  }
  bool space_at(size_t i, size_t* len) const {
    if (i >= s.size()) return false;
    return unicode_space(utf8_decode(s, i, len));
  }
  static void set(Regex::Match* m, int gi, size_t a, size_t b) {
    if (gi >= 0) m->groups[(size_t)gi] = {(long)a, (long)b};
  }

  // percent group after the number ending at j; returns the match end
  size_t percent(size_t j, Regex::Match* m) const {
    size_t k = j, len;
    while (space_at(k, &len)) k += len;
    size_t e = std::string::npos;
    if (k < s.size() && s[k] == '%') e = k + 1;
    else if (k < s.size() && (s[k] == 'P' || s[k] == 'p') && starts_with(s, k + 1, "ercent")) e = k + 7;
    else if (k < s.size() && (s[k] == 'P' || s[k] == 'p') && starts_with(s, k + 1, "ct")) e = k + 3;
    if (e == std::string::npos) return j;
    set(m, g.percent, j, e);
    return e;
  }

  // the number alternatives at t; returns the end of the whole match, or npos
  size_t number(size_t t, Regex::Match* m) const {
    // (?<!\d): the prefix always leaves a non-digit before t, but keep the check exact
    if (t > 0 && is_digit(s[t - 1])) return std::string::npos;
    size_t i = t + (t < s.size() && s[t] == '-' ? 1 : 0);
    // integer1: -?[1-9]\d{0,2}(?:[ ,]\d{3})+  then (\.\d+)?
    if (i < s.size() && s[i] >= '1' && s[i] <= '9') {
      size_t run = digits(i + 1) - (i + 1);
      for (size_t k = std::min<size_t>(run, 2) + 1; k-- > 0;) {
        size_t j = i + 1 + k;
        auto group_at = [&](size_t x) {
          return x < s.size() && (s[x] == ' ' || s[x] == ',') && digit(x + 1) && digit(x + 2) && digit(x + 3);
        };
        if (!group_at(j)) continue;
        while (group_at(j)) j += 4;
        set(m, g.integer1, t, j);
        if (j < s.size() && s[j] == '.' && digit(j + 1)) {
          size_t d = digits(j + 1);
          set(m, g.decimal1, j, d);
          j = d;
        }
        return percent(j, m);
      }
    }
    // integer2 + decimal2: -?\d+[.,]\d+
    size_t e = digits(i);
    if (e > i && e < s.size() && (s[e] == '.' || s[e] == ',') && digit(e + 1)) {
      size_t d = digits(e + 1);
      set(m, g.integer2, t, e);
      set(m, g.decimal2, e, d);
      return percent(d, m);
    }
    // decimal3: \.\d+
    if (t < s.size() && s[t] == '.' && digit(t + 1)) {
      size_t d = digits(t + 1);
      set(m, g.decimal3, t, d);
      return percent(d, m);
    }
    // integer3: -?\d+
    if (e > i) {
      set(m, g.integer3, t, e);
      return percent(e, m);
    }
    return std::string::npos;
  }

  // after the prefix: (?:\*\*)? then the optional currency sign, then the number
  size_t after_prefix(size_t q, Regex::Match* m) const {
    if (starts_with(s, q, "**")) q += 2;  // without the "**" the number could not start at '*'
    if (q < s.size()) {
      size_t len;
      uint32_t c = utf8_decode(s, q, &len);
      if (std::binary_search(currency.begin(), currency.end(), c)) q += len;  // nor at a currency sign
    }
    return number(q, m);
  }

  // a match starting at p, or npos
  size_t at(size_t p, Regex::Match* m) const {
    std::fill(m->groups.begin(), m->groups.end(), std::pair<long, long>{-1, -1});
    if (p == 0) {  // "^" comes first among the prefix alternatives
      size_t e = after_prefix(0, m);
      if (e != std::string::npos) return e;
      std::fill(m->groups.begin(), m->groups.end(), std::pair<long, long>{-1, -1});
    }
    size_t len;
    if (space_at(p, &len)) return after_prefix(p + len, m);
    if (p < s.size() && s[p] == '=') return after_prefix(p + 1, m);
    return std::string::npos;
  }
};

}  // namespace

void number_finditer(const std::string& s, size_t from, const NumberGroups& g, const std::vector<uint32_t>& currency,
                     std::vector<Regex::Match>* out) {
  Scan sc{s, g, currency};
  Regex::Match m;
  m.groups.assign((size_t)g.n, {-1, -1});
  size_t pos = from;
  while (pos < s.size() || (pos == 0 && s.empty())) {
    // a match starts at 0 or at a space / '=' (ASCII or not): skip the other ASCII bytes quickly
    unsigned char c = (unsigned char)s[pos];
    if (pos > 0 && c < 0x80 && !is_space((char)c) && c != '=' && c != 0x1c && c != 0x1d && c != 0x1e && c != 0x1f) {
      ++pos;
      continue;
    }
    size_t e = s.empty() ? std::string::npos : sc.at(pos, &m);
    if (e != std::string::npos) {
      m.start = pos;
      m.end = e;
      m.groups[0] = {(long)pos, (long)e};
      out->push_back(m);
      pos = e;  // a match is never empty
    } else {
      pos = next_cp(s, pos);
    }
  }
}

}  // namespace paced
