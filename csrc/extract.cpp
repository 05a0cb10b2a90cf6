// Answer extraction with math-verify's priorities (LatexExtractionConfig + ExprExtractionConfig):
//
//   priority 0    "final answer is <math> ... I hope"                 (sent to the fallback)
//   priority 50   "final answer ... is <math>", \boxed{...} (also inside $..$ / \[..\]),
//                 "final answer ... is <number>"
//   priority 100  "answer: <math>" / "answer: ... = <number>"
//   priority 200  "answer ... <math>" / "answer ... <number>"
//   priority 300  any $..$, $$..$$, \(..\), \[..\], " [..] ", -\frac{a}{b}; any number; any
//                 arithmetic expression like 3/4 or 2^10
//
// Within a priority the match ending last wins (then the longer one); a match whose answer does
// not parse is skipped. The first candidate's normalised text is kept as a string answer too.
#include <algorithm>
#include <string>
#include <vector>

#include "core.hpp"
#include "number_scan.hpp"
#include "regex.hpp"
#include "textutil.hpp"

namespace paced {

// the candidate text being parsed last in this thread (debug view of an undecided extraction)
thread_local std::string t_last_candidate;
const std::string& last_candidate() { return t_last_candidate; }

namespace {

struct LatexGroup {
  size_t cs, ce;
  int boxed_mode;  // 1 last, 2 all
  bool pct;
};

struct Cand {
  int prio;
  size_t start, end;
  int order;        // generation order (stable tie-break)
  bool is_latex;
  std::vector<LatexGroup> groups;  // latex
  Regex::Match m;                  // expr / number
};

// ---- LaTeX environments ----------------------------------------------------------------------

// Memo of "first position >= from where X occurs" for the text being extracted: the scans below
// ask it for increasing `from`, so a text of many "\[" without "\]" costs O(n), not O(n^2).
struct NextCache {
  const char* data = nullptr;
  size_t size = 0, from = 0, res = 0;
  bool valid = false;
};
thread_local NextCache t_next_close_bracket, t_next_close_paren, t_next_boxed;

template <class F>
size_t cached_next(NextCache& c, const std::string& s, size_t from, F compute) {
  if (c.valid && c.data == s.data() && c.size == s.size() && from >= c.from &&
      (c.res == std::string::npos || c.res >= from))
    return c.res;
  size_t r = compute(from);
  c.data = s.data();
  c.size = s.size();
  c.from = from;
  c.res = r;
  c.valid = true;
  return r;
}


bool has_boxed(const std::string& s, size_t a, size_t b) {  // \boxed{X+?} inside [a, b)
  size_t pos = a;
  while (true) {
    size_t f = cached_next(t_next_boxed, s, pos, [&](size_t from) { return s.find("\\boxed{", from); });
    if (f == std::string::npos || f + 7 > b) return false;
    size_t close = s.find('}', f + 8);
    if (close != std::string::npos && close < b) return true;
    pos = f + 1;
  }
}

struct Env {
  size_t end;
  size_t cs, ce;
  bool pct;
};

size_t skip_ws(const std::string& s, size_t i) {
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

// `-?\d+(?:[.,]\d+)?` at i followed by '}' ; returns position of '}' or npos
size_t frac_num(const std::string& s, size_t i) {
  if (i < s.size() && s[i] == '-') ++i;
  size_t a = i;
  while (i < s.size() && is_digit(s[i])) ++i;
  if (i == a) return std::string::npos;
  if (i < s.size() && s[i] == '}') return i;
  if (i + 1 < s.size() && (s[i] == '.' || s[i] == ',') && is_digit(s[i + 1])) {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i < s.size() && s[i] == '}') return i;
  }
  return std::string::npos;
}

bool env_core(const std::string& s, size_t p, bool boxed, size_t* end, size_t* cs, size_t* ce) {
  size_t n = s.size();
  char c = s[p];
  bool esc_before = p > 0 && s[p - 1] == '\\';
  // $$ ... $$
  if (c == '$' && p + 1 < n && s[p + 1] == '$' && !esc_before) {
    size_t q = s.find("$$", p + 2);
    if (q != std::string::npos && q > p + 2 && s[q - 1] != '\\' && (!boxed || has_boxed(s, p + 2, q))) {
      *cs = p + 2;
      *ce = q;
      *end = q + 2;
      return true;
    }
  }
  // \[ ... \]
  if (c == '\\' && p + 1 < n && s[p + 1] == '[' && !esc_before) {
    size_t q = cached_next(t_next_close_bracket, s, p + 2, [&](size_t f) { return s.find("\\]", f); });
    if (q != std::string::npos && q > p + 2 && s[q - 1] != '\\' && (!boxed || has_boxed(s, p + 2, q))) {
      *cs = p + 2;
      *ce = q;
      *end = q + 2;
      return true;
    }
  }
  // $ ... $  (no newline; \$ allowed inside)
  if (c == '$' && !esc_before && !(p > 0 && is_digit(s[p - 1]))) {
    size_t i = p + 1;
    while (i < n) {
      if (i > p + 1 && s[i] == '$') {
        if (!boxed || has_boxed(s, p + 1, i)) {
          *cs = p + 1;
          *ce = i;
          *end = i + 1;
          return true;
        }
        break;
      }
      if (s[i] == '\\' && i + 1 < n && s[i + 1] == '$') {
        i += 2;
        continue;
      }
      if (s[i] == '\n' || s[i] == '$') break;
      ++i;
    }
  }
  // \( ... \)
  if (c == '\\' && p + 1 < n && s[p + 1] == '(' && !esc_before) {
    // the first "\)" or newline after the opener
    size_t i = cached_next(t_next_close_paren, s, p + 2, [&](size_t f) {
      for (size_t k = f; k < n; ++k)
        if (s[k] == '\n' || (s[k] == '\\' && k + 1 < n && s[k + 1] == ')')) return k;
      return std::string::npos;
    });
    if (i == std::string::npos) i = n;
    while (i < n) {
      if (s[i] == '\\' && i + 1 < n && s[i + 1] == ')') {
        if (i > p + 2 && s[i - 1] != '\\' && (!boxed || has_boxed(s, p + 2, i))) {
          *cs = p + 2;
          *ce = i;
          *end = i + 2;
          return true;
        }
        break;
      }
      if (s[i] == '\n') break;
      ++i;
    }
  }
  // \s[ ... ]\s
  if (is_space(c) && p + 1 < n && s[p + 1] == '[') {
    size_t i = p + 2;
    while (i < n) {
      if (s[i] == ']') {
        if (i > p + 2 && i + 1 < n && is_space(s[i + 1]) && (!boxed || has_boxed(s, p + 2, i))) {
          *cs = p + 2;
          *ce = i;
          *end = i + 2;
          return true;
        }
        break;
      }
      if (s[i] == '[' || s[i] == '\n') break;
      ++i;
    }
  }
  // -?\frac{num}{num}
  if (!boxed && (c == '-' || c == '\\')) {
    size_t i = p;
    if (s[i] == '-') ++i;
    if (starts_with(s, i, "\\frac{")) {
      size_t q = frac_num(s, i + 6);
      if (q != std::string::npos && q + 1 < n && s[q + 1] == '{') {
        size_t r = frac_num(s, q + 2);
        if (r != std::string::npos) {
          *cs = p;
          *ce = r + 1;
          *end = r + 1;
          return true;
        }
      }
    }
  }
  return false;
}

// env + \s* + optional percent
bool env_at(const std::string& s, size_t p, bool boxed, Env* e) {
  if (p >= s.size()) return false;
  size_t end, cs, ce;
  if (!env_core(s, p, boxed, &end, &cs, &ce)) return false;
  size_t q = skip_ws(s, end);
  bool pct = false;
  if (starts_with(s, q, "\\%")) {
    q += 2;
    pct = true;
  } else if (q < s.size() && s[q] == '%') {
    q += 1;
    pct = true;
  } else if (q < s.size() && (s[q] == 'P' || s[q] == 'p') && starts_with(s, q + 1, "ercent")) {
    q += 7;
    pct = true;
  } else if (q < s.size() && (s[q] == 'P' || s[q] == 'p') && starts_with(s, q + 1, "ct")) {
    q += 3;
    pct = true;
  }
  e->end = q;
  e->cs = cs;
  e->ce = ce;
  e->pct = pct;
  return true;
}

// first env plus up to five "and / or / ," joined envs
bool envs_at(const std::string& s, size_t p, bool boxed, std::vector<LatexGroup>* groups, size_t* end) {
  Env e;
  if (!env_at(s, p, boxed, &e)) return false;
  groups->clear();
  groups->push_back({e.cs, e.ce, 0, e.pct});
  size_t pos = e.end;
  for (int k = 0; k < 5; ++k) {
    size_t x = skip_ws(s, pos);
    bool found = false;
    // (?:,?and|,?or|,)
    const char* seps[] = {",and", "and", ",or", "or", ","};
    for (const char* sep : seps) {
      if (!starts_with(s, x, sep)) continue;
      size_t y = x + std::strlen(sep);
      size_t w = skip_ws(s, y);
      for (size_t t = w + 1; t-- > y;) {
        Env e2;
        if (env_at(s, t, boxed, &e2)) {
          groups->push_back({e2.cs, e2.ce, 0, e2.pct});
          pos = e2.end;
          found = true;
          break;
        }
      }
      if (found) break;
    }
    if (!found) break;
  }
  *end = pos;
  return true;
}

// Where the answer-keyword patterns can start, found in one pass over the text: every pattern
// of priorities 0-200 begins with (?i:answer) or (?i:final answer), so the scans below visit only
// these positions (most responses have none) instead of testing every byte.
struct KeywordIndex {
  std::vector<size_t> answer;        // starts of case-insensitive "answer"
  std::vector<size_t> final_answer;  // starts of case-insensitive "final answer"
  bool boxed = false;                // "\boxed{" occurs (needed by the priority-50 environments)
};

KeywordIndex index_keywords(const std::string& s) {
  KeywordIndex k;
  const size_t n = s.size();
  for (size_t i = 0; i + 6 <= n; ++i) {
    if ((s[i] | 0x20) != 'a' || !starts_with_icase(s, i, "answer")) continue;
    k.answer.push_back(i);
    if (i >= 6 && starts_with_icase(s, i - 6, "final ")) k.final_answer.push_back(i - 6);
  }
  k.boxed = s.find("\\boxed{") != std::string::npos;
  return k;
}

bool env_start_char(const std::string& s, size_t p) {
  char c = s[p];
  return c == '$' || c == '\\' || c == '-' || (is_space(c) && p + 1 < s.size() && s[p + 1] == '[');
}

void latex_plain_matches(const std::string& s, int prio, bool boxed, std::vector<Cand>* out, int* order) {
  size_t p = 0;
  while (p < s.size()) {
    if (!env_start_char(s, p)) {
      ++p;
      continue;
    }
    std::vector<LatexGroup> g;
    size_t end;
    if (envs_at(s, p, boxed, &g, &end)) {
      for (auto& x : g) x.boxed_mode = 2;
      out->push_back(Cand{prio, p, end, (*order)++, true, g, {}});
      p = end > p ? end : p + 1;
    } else {
      ++p;
    }
  }
}

// (?i:final answer.{0,100}?)\s+is\:?\s*{envs}
void latex_final_answer(const std::string& s, const std::vector<size_t>& starts, std::vector<Cand>* out,
                        int* order) {
  size_t p = 0;
  for (size_t q : starts) {  // the "final answer" positions, ascending
    if (q < p) continue;
    p = q;
    bool matched = false;
    size_t x = p + 12;
    for (int k = 0; k <= 100 && x <= s.size() && !matched; ++k) {
      if (x < s.size() && is_space(s[x])) {
        size_t y = skip_ws(s, x);
        if (starts_with(s, y, "is")) {
          size_t z0 = y + 2;
          for (int colon = 1; colon >= 0 && !matched; --colon) {
            size_t z = z0;
            if (colon) {
              if (!(z < s.size() && s[z] == ':')) continue;
              ++z;
            }
            size_t w = skip_ws(s, z);
            for (size_t t = w + 1; t-- > z;) {
              std::vector<LatexGroup> g;
              size_t end;
              if (envs_at(s, t, false, &g, &end)) {
                for (auto& gg : g) gg.boxed_mode = 2;
                out->push_back(Cand{50, p, end, (*order)++, true, g, {}});
                p = end;
                matched = true;
                break;
              }
            }
          }
        }
      }
      if (x >= s.size()) break;
      x = next_cp(s, x);
    }
    if (!matched) ++p;
  }
}

// (?i:final answer is)\:?\s*{envs}\.?\s?I hope
void latex_final_answer_hope(const std::string& s, const std::vector<size_t>& starts, std::vector<Cand>* out,
                             int* order) {
  size_t p = 0;
  for (size_t q : starts) {  // the "final answer" positions, ascending
    if (q < p || !starts_with_icase(s, q, "final answer is")) continue;
    p = q;
    bool matched = false;
    for (int colon = 1; colon >= 0 && !matched; --colon) {
      size_t z = p + 15;
      if (colon) {
        if (!(z < s.size() && s[z] == ':')) continue;
        ++z;
      }
      size_t w = skip_ws(s, z);
      for (size_t t = w + 1; t-- > z && !matched;) {
        std::vector<LatexGroup> g;
        size_t end;
        if (!envs_at(s, t, false, &g, &end)) continue;
        size_t j = end;
        if (j < s.size() && s[j] == '.') ++j;
        bool ok = false;
        size_t e = 0;
        if (j < s.size() && is_space(s[j]) && starts_with(s, j + 1, "I hope")) {
          ok = true;
          e = j + 7;
        } else if (starts_with(s, j, "I hope")) {
          ok = true;
          e = j + 6;
        }
        if (ok) {
          for (auto& gg : g) gg.boxed_mode = 2;
          out->push_back(Cand{0, p, e, (*order)++, true, g, {}});
          p = e;
          matched = true;
        }
      }
    }
    if (!matched) ++p;
  }
}

// (?i:answer)(:)?.{0,50}?{envs}
void latex_answer(const std::string& s, const std::vector<size_t>& starts, bool colon, int prio,
                  std::vector<Cand>* out, int* order) {
  size_t p = 0;
  for (size_t q : starts) {  // the "answer" positions, ascending
    if (q < p || (colon && !(q + 6 < s.size() && s[q + 6] == ':'))) continue;
    p = q;
    size_t x = p + 6 + (colon ? 1 : 0);
    bool matched = false;
    for (int k = 0; k <= 50 && x <= s.size(); ++k) {
      std::vector<LatexGroup> g;
      size_t end;
      if (x < s.size() && env_start_char(s, x) && envs_at(s, x, false, &g, &end)) {
        for (auto& gg : g) gg.boxed_mode = 2;
        out->push_back(Cand{prio, p, end, (*order)++, true, g, {}});
        p = end;
        matched = true;
        break;
      }
      if (x >= s.size()) break;
      x = next_cp(s, x);
    }
    if (!matched) ++p;
  }
}

// (?P<first_latexBoxed>\\boxed{.+}) : from the first \boxed{ to the last '}'
void latex_plain_boxed(const std::string& s, std::vector<Cand>* out, int* order) {
  size_t f = s.find("\\boxed{");
  if (f == std::string::npos) return;
  size_t last = s.rfind('}');
  if (last == std::string::npos || last < f + 8) return;
  out->push_back(Cand{50, f, last + 1, (*order)++, true, {{f, last + 1, 1, false}}, {}});
}

// ---- numbers and plain expressions (regex engine) ---------------------------------------------

const std::string& currency_class() {
  static const std::string c =
      "[\\$\xE2\x82\xAC\xC2\xA3\xC2\xA5\xE2\x82\xB9\xE2\x82\xBD\xE2\x82\xAA\xE2\x82\xA9\xE2\x82\xAB\xE0\xB8\xBF"
      "\xE2\x82\xA1\xE2\x82\xA2\xE2\x82\xA3\xE2\x82\xA4\xE2\x82\xA5\xE2\x82\xA6\xE2\x82\xA7\xE2\x82\xA8\xE2\x82\xA9"
      "\xE2\x82\xAA\xE2\x82\xAB\xE2\x82\xAD\xE2\x82\xAE\xE2\x82\xAF\xE2\x82\xB0\xE2\x82\xB1\xE2\x82\xB2\xE2\x82\xB3"
      "\xE2\x82\xB4\xE2\x82\xB5\xE2\x82\xB6\xE2\x82\xB7\xE2\x82\xB8\xE2\x82\xB9\xE2\x82\xBA\xE2\x82\xBB\xE2\x82\xBC"
      "\xE2\x82\xBD\xE2\x82\xBE\xE2\x82\xBF]";
  return c;
}

struct ExprRegexes {
  std::string number_re, expr_re, prefix, suffix, expr_anch, num_anch, eon;
  Regex *final_answer_hope, *final_answer, *answer_colon, *answer_plain, *expr_plain, *number_plain;
  ExprRegexes() {
    number_re =
        "(?<!\\d)(?:(?P<integer1>-?[1-9]\\d{0,2}(?:[ ,]\\d{3})+)(?P<decimal1>\\.\\d+)?|"
        "(?P<integer2>-?\\d+)(?P<decimal2>[.,]\\d+)|(?P<decimal3>\\.\\d+)|(?P<integer3>-?\\d+))"
        "(?P<percent>\\s*(?:%|[Pp]ercent|\\s*[Pp]ercentage|\\s*[Pp]ct))?";
    std::string ops = "\\+\\-\\*\\\xC3\x97\\/\\^\\(\\)\\\xC3\xB7";
    std::string chars = "[\\d\\.\\s" + ops + "]";
    expr_re = "(?P<expr>-?\\(?-?\\d" + chars + "*[" + ops + "]" + chars + "+\\)?)";
    prefix = "(?:^|\\s|=)(?:\\*\\*)?";
    suffix = "(?:\\*\\*)?(?:\\.|,|:|\\s|\\)|\\$|$)";
    expr_anch = "(?:" + prefix + expr_re + suffix + ")";
    num_anch = "(?:" + prefix + currency_class() + "?" + number_re + ")";
    eon = "(?:" + expr_anch + "|" + num_anch + ")";
    final_answer_hope = new Regex("(?i:final answer is)\\:?\\s*" + eon + "\\.?\\s?I hope");
    final_answer = new Regex("(?i:final answer.{0,100}?)\\s+is\\:?" + eon);
    answer_colon = new Regex("(?i:answer)\\:(?:.{0,100}=\\s*|.{0,50}?)" + eon + "(?!\\s*=)");
    answer_plain = new Regex("(?i:answer)(?:.{0,100}=\\s*|.{0,50}?)" + eon + "(?!\\s*=)");
    expr_plain = new Regex(expr_anch);
    number_plain = new Regex(num_anch);
    number_groups = NumberGroups::of(*number_plain);
    currency = currency_code_points();
  }
  NumberGroups number_groups;
  std::vector<uint32_t> currency;

  // the code points of currency_class() (a regex class of literal characters), sorted
  static std::vector<uint32_t> currency_code_points() {
    const std::string& c = currency_class();
    std::vector<uint32_t> out;
    for (size_t i = 1; i + 1 < c.size();) {  // inside [ ... ]
      if (c[i] == '\\') {
        ++i;
        continue;
      }
      size_t len;
      out.push_back(utf8_decode(c, i, &len));
      i += len;
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};
const ExprRegexes& expr_regexes() {
  static const ExprRegexes r;  // compiled once (thread-safe static init), never freed
  return r;
}

// a number / expression match starts with \s or '=' (or at ^), then optional "**", then one of
// - ( . a digit or a currency sign ($ or non-ASCII)
bool pf_anchor(const std::string& s, size_t p) {
  if (p == 0) return true;
  if (p >= s.size()) return false;
  unsigned char c = (unsigned char)s[p];
  if (c >= 0xC2) return true;  // a non-ASCII space may start it: let the regex decide
  if (!(is_space((char)c) || c == '=')) return false;
  size_t q = p + 1;
  if (q + 1 < s.size() && s[q] == '*' && s[q + 1] == '*') q += 2;
  if (q >= s.size()) return false;
  unsigned char d = (unsigned char)s[q];
  return is_digit((char)d) || d == '-' || d == '(' || d == '.' || d == '$' || d >= 0x80 || d == '*';
}

void expr_matches(const std::string& s, const Regex& re, int prio, bool (*pf)(const std::string&, size_t),
                  std::vector<Cand>* out, int* order, long* steps, size_t from = 0) {
  std::vector<Regex::Match> ms;
  re.finditer(s, &ms, steps, pf, from);
  for (auto& m : ms) out->push_back(Cand{prio, m.start, m.end, (*order)++, false, {}, m});
}

void expr_matches_at(const std::string& s, const Regex& re, int prio, const std::vector<size_t>& starts,
                     std::vector<Cand>* out, int* order, long* steps) {
  std::vector<Regex::Match> ms;
  re.finditer_at(s, starts, &ms, steps);
  for (auto& m : ms) out->push_back(Cand{prio, m.start, m.end, (*order)++, false, {}, m});
}

// Where the priority-300 number / expression scan of a long text may start. A match of those
// regexes never contains an ASCII letter other than those of "percent" / "percentage" / "pct", so
// finditer from the start cannot have a match spanning such a "barrier" character: scanning from
// just after the last barrier before the final ~kTailWindow bytes finds exactly the matches that
// a full scan finds there. Those end last, so they come first in the candidate order; only when
// none of them (nor a LaTeX candidate ending after the barrier) parses is the full text scanned.
constexpr size_t kTailWindow = 256;
bool barrier_char(char c) {
  if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  switch (c) {
    case 'P': case 'p': case 'e': case 'r': case 'c': case 'n': case 't': case 'a': case 'g':
      return false;
    default:
      return true;
  }
}
size_t tail_scan_start(const std::string& s) {
  if (s.size() <= kTailWindow) return 0;
  for (size_t b = s.size() - kTailWindow; b-- > 0;)
    if (barrier_char(s[b])) return b + 1;
  return 0;
}

// ---- candidate -> parsed answer ------------------------------------------------------------

bool looks_complex(const std::string& s) {
  static const Regex re(
      "\\\\mathbb\\{C\\}|\\\\i\\b|\\bi\\b|\\\\text\\{i\\}|\\\\mathrm\\{i\\}|\\\\imath\\b|\\\\det|"
      "\\\\operatorname\\{tr\\}|\\\\operatorname\\{rank\\}|\\\\text\\{rank\\}|\\\\arg\\{|\\\\Re\\{|\\\\Im\\{|"
      "\\\\operatorname\\{Re\\}|\\\\operatorname\\{Im\\}|\\\\text\\{Re\\}|\\\\text\\{Im\\}");
  long steps = 1000000;
  for (size_t p = 0; p <= s.size(); ++p) {
    if (p < s.size() && s[p] != '\\' && s[p] != 'i') continue;
    if (re.match_at(s, p, nullptr, &steps)) return true;
  }
  return false;
}

// math-verify's retry: the part after the last '=' of a chain (when there are no , or ;)
std::string last_eq(const std::string& s) {
  if (s.find(',') != std::string::npos || s.find(';') != std::string::npos) return s;
  std::vector<size_t> eqs;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '=' && !(i > 0 && (s[i - 1] == '\\' || s[i - 1] == '<' || s[i - 1] == '!' || s[i - 1] == '>')))
      eqs.push_back(i);
  }
  if (eqs.size() >= 2) return s.substr(eqs.back() + 1);
  return s;
}

bool parse_latex_answer(const std::string& norm, Tree* t) {
  t->complex = looks_complex(norm);
  if (parse_latex(norm, t) == ParseStatus::Ok) return true;
  std::string le = last_eq(norm);
  if (le != norm) {
    bool c = looks_complex(le);
    if (parse_latex(le, t) == ParseStatus::Ok) {
      t->complex = c;
      return true;
    }
  }
  return false;
}

void wrap_pct(Tree* t) { t->root = t->op(NK::Pct, {t->root}); }

// returns true if an expression was extracted; *str gets the string fallback
bool extract_cand(const std::string& s, const Cand& c, Tree* out, std::string* str) {
  if (c.is_latex) {
    std::vector<Tree> trees(c.groups.size());
    std::vector<bool> ok(c.groups.size());
    std::vector<std::string> strs;
    for (size_t i = 0; i < c.groups.size(); ++i) {
      const LatexGroup& g = c.groups[i];
      if (g.ce - g.cs > Limits::kMaxAnswerBytes * 4) throw TooBig{"answer too long"};
      std::string norm = normalize_latex(s.substr(g.cs, g.ce - g.cs), g.boxed_mode);
      strs.push_back(norm);
      t_last_candidate = norm;
      ok[i] = parse_latex_answer(norm, &trees[i]);
      if (ok[i] && g.pct) wrap_pct(&trees[i]);
    }
    if (c.groups.size() > 1) {
      bool all = true;
      for (bool b : ok) all = all && b;
      if (all) {
        Tree t;
        std::vector<int> elems;
        for (auto& tr : trees) {
          const Node& r = tr.at(tr.root);
          if (r.kind == NK::FSet) {
            for (int k : r.kids) elems.push_back(t.import(tr, k));
          } else {
            elems.push_back(t.import(tr, tr.root));
          }
          if (&tr != &trees[0] && tr.complex != trees[0].complex) t.complex_mixed = true;
          t.complex_mixed = t.complex_mixed || tr.complex_mixed;
          t.complex = t.complex || tr.complex;
          t.import_bigops(tr);
        }
        t.root = t.op(NK::FSet, elems);
        *out = std::move(t);
        std::string joined;
        for (size_t i = 0; i < strs.size(); ++i) joined += (i ? " and " : "") + strs[i];
        *str = joined;
        return true;
      }
    }
    *str = strs[0];
    if (ok[0]) {
      *out = std::move(trees[0]);
      return true;
    }
    return false;
  }
  return false;  // numbers / expressions are handled by extract_expr_match
}

}  // namespace

std::vector<Regex::Match> number_plain_matches(const std::string& s, bool use_engine) {
  const ExprRegexes& R = expr_regexes();
  std::vector<Regex::Match> ms;
  if (use_engine) {
    long steps = 20000000;
    R.number_plain->finditer(s, &ms, &steps, pf_anchor, 0);
  } else {
    number_finditer(s, 0, R.number_groups, R.currency, &ms);
  }
  return ms;
}

// Builds a number / expression answer from a regex match of one of the expression regexes.
static bool extract_expr_match(const std::string& s, const Regex& re, const Regex::Match& m, Tree* out,
                               std::string* str) {
  auto get = [&](const char* name) -> std::string {
    int gi = re.group_index(name);
    if (gi < 0) return "";
    auto g = m.groups[(size_t)gi];
    if (g.first < 0 || g.second < 0) return "";
    return s.substr((size_t)g.first, (size_t)(g.second - g.first));
  };
  std::string expr = get("expr");
  std::string integer, decimal;
  for (const char* n : {"integer1", "integer2", "integer3"}) {
    std::string v = get(n);
    if (!v.empty()) {
      integer = v;
      break;
    }
  }
  for (const char* n : {"decimal1", "decimal2", "decimal3"}) {
    std::string v = get(n);
    if (!v.empty()) {
      decimal = v;
      break;
    }
  }
  bool pct = !get("percent").empty();
  if (!integer.empty() || !decimal.empty()) {
    std::string ii;
    for (char c : integer)
      if (c != ',' && c != ' ') ii += c;
    size_t z = 0;
    while (z < ii.size() && ii[z] == '0') ++z;
    ii = ii.substr(z);
    if (ii.empty()) ii = "0";
    for (char& c : decimal)
      if (c == ',') c = '.';
    std::string num = ii + decimal;
    *str = num;
    out->nodes.clear();
    out->bigops.clear();
    out->complex = false;
    bool neg = num[0] == '-';
    std::string body = neg ? num.substr(1) : num;
    if (body.empty() || body == ".") return false;
    size_t dot = body.find('.');
    BigInt v;
    if (dot == std::string::npos) {
      BigInt::from_string(body, &v);
      if (neg) v = -v;
      out->root = out->num(Rational(v));
    } else {
      std::string digs = body.substr(0, dot) + body.substr(dot + 1);
      BigInt::from_string(digs, &v);
      if (neg) v = -v;
      out->root = out->num(Rational::make(v, BigInt::pow10((int)(body.size() - dot - 1))), true, (int)digs.size());
    }
    if (pct) wrap_pct(out);
    return true;
  }
  if (!expr.empty()) {
    *str = expr;
    t_last_candidate = expr;
    std::string e = expr;
    std::string conv;
    for (char c : e) {
      if (c == '^') conv += "**";
      else conv += c;
    }
    out->complex = false;
    return parse_plain_expr(conv, out) == ParseStatus::Ok;
  }
  return false;
}

Extracted extract(const std::string& text_in) {
  const std::string* tp = &text_in;
  std::string tail;
  if (text_in.size() > Limits::kMaxResponseBytes) {
    tail = text_in.substr(text_in.size() - Limits::kMaxResponseBytes);
    tp = &tail;
  }
  const std::string& s = *tp;
  const ExprRegexes& R = expr_regexes();
  t_next_close_bracket.valid = false;
  t_next_close_paren.valid = false;
  t_next_boxed.valid = false;
  long steps = 20000000;
  const KeywordIndex kw = index_keywords(s);

  Extracted res;
  const int prios[] = {0, 50, 100, 200, 300, 301};
  size_t from = 0;  // priority 300: scan start of the number / expression regexes
  bool has_str_before = false;
  std::string str_before;
  for (int prio : prios) {
    if (prio == 300) {
      from = tail_scan_start(s);
      has_str_before = res.has_str;
      str_before = res.str;
      if (from == 0) continue;  // short text: one full scan (as priority "301")
    }
    if (prio == 301) {  // the full scan, when the tail scan found nothing that parses
      res.has_str = has_str_before;
      res.str = str_before;
      from = 0;
      prio = 300;
    }
    std::vector<Cand> cs;
    int order = 0;
    if (prio == 0) {
      if (s.find("I hope") == std::string::npos) continue;
      latex_final_answer_hope(s, kw.final_answer, &cs, &order);
      expr_matches_at(s, *R.final_answer_hope, 0, kw.final_answer, &cs, &order, &steps);
    } else if (prio == 50) {
      latex_final_answer(s, kw.final_answer, &cs, &order);
      if (kw.boxed) {
        latex_plain_matches(s, 50, true, &cs, &order);
        latex_plain_boxed(s, &cs, &order);
      }
      expr_matches_at(s, *R.final_answer, 50, kw.final_answer, &cs, &order, &steps);
    } else if (prio == 100) {
      latex_answer(s, kw.answer, true, 100, &cs, &order);
      expr_matches_at(s, *R.answer_colon, 100, kw.answer, &cs, &order, &steps);
    } else if (prio == 200) {
      latex_answer(s, kw.answer, false, 200, &cs, &order);
      expr_matches_at(s, *R.answer_plain, 200, kw.answer, &cs, &order, &steps);
    } else {
      latex_plain_matches(s, 300, false, &cs, &order);
      size_t before = cs.size();
      expr_matches(s, *R.expr_plain, 300, pf_anchor, &cs, &order, &steps, from);
      size_t mid = cs.size();
      {
        std::vector<Regex::Match> ms;
        number_finditer(s, from, R.number_groups, R.currency, &ms);
        for (auto& m : ms) cs.push_back(Cand{300, m.start, m.end, order++, false, {}, std::move(m)});
      }
      // remember which regex made which match
      for (size_t i = before; i < cs.size(); ++i) cs[i].m.groups.push_back({i < mid ? 1 : 2, 0});
    }
    if (cs.empty()) continue;
    std::stable_sort(cs.begin(), cs.end(), [](const Cand& a, const Cand& b) {
      if (a.end != b.end) return a.end > b.end;
      return a.start < b.start;
    });
    for (const Cand& c : cs) {
      if (prio == 300 && from > 0 && c.end <= from) break;  // not provably last: full scan
      Tree t;
      std::string str;
      bool got;
      if (c.is_latex) {
        got = extract_cand(s, c, &t, &str);
      } else {
        const Regex* re;
        Regex::Match m = c.m;
        if (prio == 0) re = R.final_answer_hope;
        else if (prio == 50) re = R.final_answer;
        else if (prio == 100) re = R.answer_colon;
        else if (prio == 200) re = R.answer_plain;
        else {
          re = m.groups.back().first == 1 ? R.expr_plain : R.number_plain;
          m.groups.pop_back();
        }
        got = extract_expr_match(s, *re, m, &t, &str);
      }
      if (!str.empty() && !res.has_str) {
        res.has_str = true;
        res.str = str;
      }
      if (got) {
        res.has_expr = true;
        res.expr = std::move(t);
        res.expr_str = str;
        return res;
      }
    }
  }
  return res;
}

}  // namespace paced
