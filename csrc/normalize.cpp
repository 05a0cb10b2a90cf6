// LaTeX answer normalisation, following the steps math-verify applies to an extracted answer
// (basic LaTeX clean-up, units, nits, malformed operators, \boxed extraction), written as plain
// string scans so that each step is linear (or bounded) in the answer length.
#include <array>
#include <string>
#include <vector>

#include "core.hpp"
#include "textutil.hpp"

namespace paced {
namespace {

// ---- \boxed{...} / \fbox{...} extraction -----------------------------------------------------

bool has_separator(const std::string& t) {  // \b(and|or)\b | , | ;
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (c == ',' || c == ';') return true;
    bool wb_before = i == 0 || !is_word(t[i - 1]);
    if (!wb_before) continue;
    if (starts_with(t, i, "and") && (i + 3 == t.size() || !is_word(t[i + 3]))) return true;
    if (starts_with(t, i, "or") && (i + 2 == t.size() || !is_word(t[i + 2]))) return true;
  }
  return false;
}

size_t rfind_before(const std::string& s, const char* pat, size_t end) {  // occurrence fully inside [0,end)
  size_t n = std::strlen(pat);
  if (end < n) return std::string::npos;
  return s.rfind(pat, end - n);
}

// mode 1: "last" (several boxes only when close together), mode 2: "all"
std::string extract_boxed_content(const std::string& text, int mode) {
  std::vector<std::string> results;
  size_t current = text.size(), max_pos = text.size();
  bool have_last = false;
  size_t last_boxed_start = 0;
  while (true) {
    size_t b = rfind_before(text, "\\boxed", current);
    size_t f = rfind_before(text, "\\fbox", current);
    if (b == std::string::npos && f == std::string::npos) break;
    size_t start;
    size_t cmd_end;
    if (f == std::string::npos || (b != std::string::npos && b > f)) {
      start = b;
      cmd_end = b + 6;
    } else {
      start = f;
      cmd_end = f + 5;
    }
    size_t p = cmd_end;
    while (p < max_pos && is_space(text[p])) ++p;
    if (p >= max_pos) break;
    if (text[p] == '{') {
      // matching brace within max_pos
      size_t i = p;
      int depth = 1;
      bool found = false;
      size_t close = 0;
      while (i + 1 < max_pos) {
        ++i;
        if (text[i] == '{') {
          ++depth;
        } else if (text[i] == '}') {
          if (--depth == 0) {
            found = true;
            close = i;
            break;
          }
        }
      }
      if (!found) {
        if (results.empty()) results.push_back(text.substr(p));
        break;
      }
      std::string content = strip(text.substr(p + 1, close - p - 1));
      if (mode == 1 && have_last) {
        std::string between = close + 1 <= last_boxed_start ? text.substr(close + 1, last_boxed_start - close - 1) : "";
        size_t blen = cp_count(between, 0, between.size());
        const std::string& next = results.empty() ? std::string() : results.back();
        bool ok = blen < 10 || (next != content && blen < 70 && has_separator(between));
        if (!ok) break;
      }
      if (results.empty() || results.back() != content) results.push_back(content);
      have_last = true;
      last_boxed_start = start;
      max_pos = start;
    } else {
      if (results.empty()) results.push_back(text.substr(p));
      break;
    }
    current = start;
  }
  if (results.empty()) return text;
  std::string out;
  for (size_t i = results.size(); i-- > 0;) {
    out += results[i];
    if (i) out += ",";
  }
  return out;
}

// ---- basic LaTeX ------------------------------------------------------------------------------

const char* const kLeftDelims[] = {"\\{", "{", "\\|", "|", "[", "(", "\\rbracl", "\\lgroup", "\\lbrace",
                                   "\\lbrack", "\\vert", "\\lvert", "\\lceil", "\\lfloor", "\\vert",
                                   "\\lvert", "\\langle", "\\llcorner", "\\ulcorner"};
const char* const kRightDelims[] = {"\\}", "}", "\\|", "|", "]", ")", "\\rbrack", "\\rgroup", "\\rbrace",
                                    "\\rbrack", "\\vert", "\\rvert", "\\rceil", "\\rfloor", "\\vert",
                                    "\\rvert", "\\rangle", "\\lrcorner", "\\urcorner"};

// \m?left<delim> -> <delim> (and the same for \right)
std::string strip_left_right(const std::string& s, const char* word, const char* const* delims, size_t nd) {
  std::string out;
  out.reserve(s.size());
  size_t wl = std::strlen(word);
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\\') {
      size_t j = i + 1;
      if (j < s.size() && s[j] == 'm' && starts_with(s, j + 1, word)) ++j;
      if (starts_with(s, j, word)) {
        size_t k = j + wl;
        bool done = false;
        for (size_t d = 0; d < nd; ++d) {
          if (starts_with(s, k, delims[d])) {
            out += delims[d];
            i = k + std::strlen(delims[d]);
            done = true;
            break;
          }
        }
        if (done) continue;
      }
    }
    out += s[i++];
  }
  return out;
}

bool perm_char(char c) {
  return is_alnum(c) || c == '+' || c == '-' || c == '*' || c == '/' || c == '\\' || c == ' ';
}

// \(([a-zA-Z0-9+\-*/\\ ]+?)\)_{([a-zA-Z0-9+\-*/\\ ]+?)}  ->  \frac{(\1)!}{((\1)-(\2))!}
std::string fix_permutations(const std::string& s) {
  if (s.find(")_{") == std::string::npos) return s;
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '(') {
      size_t j = i + 1;
      while (j < s.size() && perm_char(s[j])) ++j;
      if (j > i + 1 && starts_with(s, j, ")_{")) {
        size_t k = j + 3;
        size_t m = k;
        while (m < s.size() && perm_char(s[m])) ++m;
        if (m > k && m < s.size() && s[m] == '}') {
          std::string a = s.substr(i + 1, j - i - 1), b = s.substr(k, m - k);
          out += "\\frac{(" + a + ")!}{((" + a + ")-(" + b + "))!}";
          i = m + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

// to_remove: \mathrm{th} | \!\s* | \text\s*\{\s*\} | \$ | $ | (?<!\\)["'] | \displaystyle
std::string remove_useless(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (starts_with(s, i, "\\mathrm{th}")) {
      i += 11;
      continue;
    }
    if (starts_with(s, i, "\\!")) {
      i += 2;
      while (i < s.size() && is_space(s[i])) ++i;
      continue;
    }
    if (starts_with(s, i, "\\text")) {
      size_t j = i + 5;
      while (j < s.size() && is_space(s[j])) ++j;
      if (j < s.size() && s[j] == '{') {
        ++j;
        while (j < s.size() && is_space(s[j])) ++j;
        if (j < s.size() && s[j] == '}') {
          i = j + 1;
          continue;
        }
      }
    }
    if (starts_with(s, i, "\\$")) {
      i += 2;
      continue;
    }
    if (s[i] == '$') {
      ++i;
      continue;
    }
    if ((s[i] == '"' || s[i] == '\'') && !(i > 0 && s[i - 1] == '\\')) {
      ++i;
      continue;
    }
    if (starts_with(s, i, "\\displaystyle")) {
      i += 13;
      continue;
    }
    out += s[i++];
  }
  return out;
}

bool word_boundary(const std::string& s, size_t i) {  // \b at position i
  bool a = i > 0 && is_word(s[i - 1]);
  bool b = i < s.size() && is_word(s[i]);
  return a != b;
}

// \s*\bWORD\b at i ; returns end or npos
size_t match_ws_word(const std::string& s, size_t i, const char* word) {
  size_t j = i;
  while (j < s.size() && is_space(s[j])) ++j;
  // \s* is greedy but may backtrack; \b before a word char needs a non-word char before, and
  // whitespace is non-word, so only the maximal run can be followed by the word.
  if (!starts_with(s, j, word)) return std::string::npos;
  if (!word_boundary(s, j)) return std::string::npos;
  size_t e = j + std::strlen(word);
  if (!word_boundary(s, e)) return std::string::npos;
  return e;
}

// The single-pass alternation of math-verify's replacement table.
std::string replace_in_latex(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    // math: \\math(?:rm|it|bf) -> \text
    if (c == '\\' && (starts_with(s, i, "\\mathrm") || starts_with(s, i, "\\mathit") || starts_with(s, i, "\\mathbf"))) {
      out += "\\text";
      i += 7;
      continue;
    }
    // text: \\text(?:normal|bf|it|rm) -> \text
    if (c == '\\' && starts_with(s, i, "\\text")) {
      if (starts_with(s, i + 5, "normal")) {
        out += "\\text";
        i += 11;
        continue;
      }
      if (starts_with(s, i + 5, "bf") || starts_with(s, i + 5, "it") || starts_with(s, i + 5, "rm")) {
        out += "\\text";
        i += 7;
        continue;
      }
    }
    // frac: \\(?:d|t|c)frac -> \frac
    if (c == '\\' && i + 5 < s.size() + 0 && (s.size() >= i + 6) &&
        (s[i + 1] == 'd' || s[i + 1] == 't' || s[i + 1] == 'c') && starts_with(s, i + 2, "frac")) {
      out += "\\frac";
      i += 6;
      continue;
    }
    // decimal_space: \s\. -> " 0."
    if (is_space(c) && i + 1 < s.size() && s[i + 1] == '.') {
      out += " 0.";
      i += 2;
      continue;
    }
    // decimal_brace: \{\. -> {0.
    if (c == '{' && i + 1 < s.size() && s[i + 1] == '.') {
      out += "{0.";
      i += 2;
      continue;
    }
    // approx: ~= -> \approx
    if (c == '~' && i + 1 < s.size() && s[i + 1] == '=') {
      out += "\\approx";
      i += 2;
      continue;
    }
    // comma: \s*\{\s*,\s*\} -> ,
    {
      size_t j = i;
      while (j < s.size() && is_space(s[j])) ++j;
      if (j < s.size() && s[j] == '{') {
        size_t k = j + 1;
        while (k < s.size() && is_space(s[k])) ++k;
        if (k < s.size() && s[k] == ',') {
          ++k;
          while (k < s.size() && is_space(s[k])) ++k;
          if (k < s.size() && s[k] == '}') {
            out += ",";
            i = k + 1;
            continue;
          }
        }
      }
    }
    // and_or: (?<![a-zA-Z])(,?\s*(?:and|or))(?![a-zA-Z]) -> ,
    if (!(i > 0 && is_alpha(s[i - 1]))) {
      size_t j = i;
      if (j < s.size() && s[j] == ',') ++j;
      while (j < s.size() && is_space(s[j])) ++j;
      size_t e = std::string::npos;
      if (starts_with(s, j, "and")) e = j + 3;
      else if (starts_with(s, j, "or")) e = j + 2;
      if (e != std::string::npos && !(e < s.size() && is_alpha(s[e]))) {
        out += ",";
        i = e;
        continue;
      }
    }
    // and_or_text: (,?\s*\\text{\s*(?:and|or)\s*}) -> ,
    {
      size_t j = i;
      if (j < s.size() && s[j] == ',') ++j;
      while (j < s.size() && is_space(s[j])) ++j;
      if (starts_with(s, j, "\\text{")) {
        size_t k = j + 6;
        while (k < s.size() && is_space(s[k])) ++k;
        size_t e = std::string::npos;
        if (starts_with(s, k, "and")) e = k + 3;
        else if (starts_with(s, k, "or")) e = k + 2;
        if (e != std::string::npos) {
          while (e < s.size() && is_space(s[e])) ++e;
          if (e < s.size() && s[e] == '}') {
            out += ",";
            i = e + 1;
            continue;
          }
        }
      }
    }
    // backslash_space: (?<!\\)\\\s -> " "
    if (c == '\\' && i + 1 < s.size() && is_space(s[i + 1]) && !(i > 0 && s[i - 1] == '\\')) {
      out += " ";
      i += 2;
      continue;
    }
    // infinity -> \infty
    if (starts_with(s, i, "infinity")) {
      out += "\\infty";
      i += 8;
      continue;
    }
    // dot: ,?(\\ldots) -> " "
    if (c == ',' && starts_with(s, i + 1, "\\ldots")) {
      out += " ";
      i += 7;
      continue;
    }
    if (starts_with(s, i, "\\ldots")) {
      out += " ";
      i += 6;
      continue;
    }
    // percentage: \s*\bpercentage\b -> \%
    {
      size_t e = match_ws_word(s, i, "percentage");
      if (e != std::string::npos) {
        out += "\\%";
        i = e;
        continue;
      }
    }
    if (starts_with(s, i, "\\text{percentage}")) {
      out += "%";
      i += 17;
      continue;
    }
    {
      size_t e = match_ws_word(s, i, "percent");
      if (e != std::string::npos) {
        out += "\\%";
        i = e;
        continue;
      }
    }
    if (starts_with(s, i, "\\text{percent}")) {
      out += "%";
      i += 14;
      continue;
    }
    {
      size_t e = match_ws_word(s, i, "pct");
      if (e != std::string::npos) {
        out += "\\%";
        i = e;
        continue;
      }
    }
    if (starts_with(s, i, "\\text{pct}")) {
      out += "%";
      i += 10;
      continue;
    }
    // inf: (?<!\\)inf(?!inity) -> \infty
    if (starts_with(s, i, "inf") && !(i > 0 && s[i - 1] == '\\') && !starts_with(s, i + 3, "inity")) {
      out += "\\infty";
      i += 3;
      continue;
    }
    // sqrt: " sqrt" -> \sqrt
    if (c == ' ' && starts_with(s, i + 1, "sqrt")) {
      out += "\\sqrt";
      i += 5;
      continue;
    }
    out += c;
    ++i;
  }
  return out;
}

// ---- units --------------------------------------------------------------------------------------

const char* const kUnits[] = {
    "integerpoint", "feet", "sue", "digit", "pound", "meal", "edge", "student", "children ticket", "multiple",
    "east", "degree", "mph", "kmph", "ft", "m square", " m east", "sq m", "deg", "mile", "q .", "monkey",
    "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab",
    "way", "west", "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "h", "no change", "men",
    "soldier", "pie", "bc", "excess", "st", "inches", "noon", "cent", "by", "gal", "kmh", "c", "acre", "rise",
    "a . m", "th", "\xCF\x80 r 2", "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "\xC2\xB0 f", "profit",
    "minw", "yr", "women", "am", "pm", "hr", "cu cm", "square", "v \xC3\xA2 \xE2\x82\xAC \xE2\x84\xA2", "are",
    "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph", "day", "hour", "minute", "min",
    "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "\xE2\x88\x8F cm \xC2\xB3", "hectare",
    "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm", "apple",
    "liter", "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s .", "metre", "meter", "inch"};

// unit lengths, and the longest: a tail longer than it plus "es" is no unit (checked first, as
// strip_unit_once asks about every position of the answer)
struct UnitLengths {
  size_t len[sizeof(kUnits) / sizeof(kUnits[0])];
  size_t max = 0;
  UnitLengths() {
    for (size_t i = 0; i < sizeof(kUnits) / sizeof(kUnits[0]); ++i) {
      len[i] = std::strlen(kUnits[i]);
      if (len[i] > max) max = len[i];
    }
  }
};
const UnitLengths& unit_lengths() {
  static const UnitLengths u;
  return u;
}

bool tail_is_unit(const std::string& s, size_t k) {  // s[k:] matches UNIT(s|es)?\s*$
  size_t e = s.size();
  while (e > k && is_space(s[e - 1])) --e;
  size_t len = e - k;
  const UnitLengths& L = unit_lengths();
  if (len > L.max + 2) return false;
  for (size_t ui = 0; ui < sizeof(kUnits) / sizeof(kUnits[0]); ++ui) {
    const char* u = kUnits[ui];
    size_t ul = L.len[ui];
    if (len < ul || std::memcmp(s.data() + k, u, ul) != 0) continue;
    size_t rest = len - ul;
    if (rest == 0) return true;
    if (rest == 1 && s[k + ul] == 's') return true;
    if (rest == 2 && s[k + ul] == 'e' && s[k + ul + 1] == 's') return true;
  }
  return false;
}

// (\d|\}|\s)\s*UNIT(s|es)?\s*$  ->  \1
std::string strip_unit_once(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (!(is_digit(c) || c == '}' || is_space(c))) continue;
    size_t j = i + 1;
    while (j < s.size() && is_space(s[j])) ++j;
    for (size_t k = j + 1; k-- > i + 1;) {
      if (tail_is_unit(s, k)) return s.substr(0, i + 1);
    }
  }
  return s;
}

// (\\(?:text|mbox){.*?})(\^\d|\{\^\d\})?$  ->  ""
std::string strip_trailing_text(const std::string& s) {
  if (s.find('\n') != std::string::npos) return s;  // '.' does not cross lines (never the case here)
  size_t n = s.size();
  // candidate closing braces: the regex needs "}" then optionally ^d or {^d} then the end
  std::vector<size_t> qs;
  if (n >= 1 && s[n - 1] == '}') qs.push_back(n - 1);
  if (n >= 3 && s[n - 3] == '}' && s[n - 2] == '^' && is_digit(s[n - 1])) qs.push_back(n - 3);
  if (n >= 5 && s[n - 5] == '}' && s[n - 4] == '{' && s[n - 3] == '^' && is_digit(s[n - 2]) && s[n - 1] == '}')
    qs.push_back(n - 5);
  if (qs.empty()) return s;
  size_t qmax = 0;
  for (size_t q : qs) qmax = std::max(qmax, q);
  for (size_t p = 0; p < n; ++p) {
    if (s[p] != '\\') continue;
    size_t open;
    if (starts_with(s, p, "\\text{")) open = p + 5;
    else if (starts_with(s, p, "\\mbox{")) open = p + 5;
    else continue;
    if (qmax > open) return strip(s.substr(0, p));
  }
  return s;
}

// ---- malformed operators ------------------------------------------------------------------------

// \^\s?\((.*?)\) -> ^{\1}
std::string fix_caret_paren(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '^') {
      size_t j = i + 1;
      if (j < s.size() && is_space(s[j]) && j + 1 < s.size() && s[j + 1] == '(') ++j;
      if (j < s.size() && s[j] == '(') {
        size_t close = s.find(')', j + 1);
        size_t nl = s.find('\n', j + 1);
        if (close != std::string::npos && (nl == std::string::npos || nl > close)) {
          out += "^{" + s.substr(j + 1, close - j - 1) + "}";
          i = close + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

// sqrt\s?\((.*?)\) -> \sqrt{\1}
std::string fix_sqrt_paren(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (starts_with(s, i, "sqrt")) {
      size_t j = i + 4;
      if (j < s.size() && is_space(s[j]) && j + 1 < s.size() && s[j + 1] == '(') ++j;
      if (j < s.size() && s[j] == '(') {
        size_t close = s.find(')', j + 1);
        if (close != std::string::npos) {
          out += "\\sqrt{" + s.substr(j + 1, close - j - 1) + "}";
          i = close + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

size_t opt_space(const std::string& s, size_t j) { return (j < s.size() && is_space(s[j])) ? j + 1 : j; }

// \\frac\s?(\d)\s?(\d+) -> \frac{\1}{\2}   and   \\log_\s?(\d)\s?(\d+) -> \log_{\1}{\2}
std::string fix_cmd_digits(const std::string& s, const char* cmd, const char* repl_open) {
  std::string out;
  size_t cl = std::strlen(cmd);
  for (size_t i = 0; i < s.size();) {
    if (starts_with(s, i, cmd)) {
      // \s? is optional: try with the space first, then without
      for (int use_space = 1; use_space >= 0; --use_space) {
        size_t j = i + cl;
        if (use_space) {
          if (!(j < s.size() && is_space(s[j]))) continue;
          ++j;
        }
        if (!(j < s.size() && is_digit(s[j]))) continue;
        char d1 = s[j];
        size_t k = j + 1;
        for (int use_space2 = 1; use_space2 >= 0; --use_space2) {
          size_t m = k;
          if (use_space2) {
            if (!(m < s.size() && is_space(s[m]))) continue;
            ++m;
          }
          if (!(m < s.size() && is_digit(s[m]))) continue;
          size_t e = m;
          while (e < s.size() && is_digit(s[e])) ++e;
          out += repl_open;
          out += d1;
          out += "}{" + s.substr(m, e - m) + "}";
          i = e;
          goto next;
        }
      }
    }
    out += s[i++];
  next:;
  }
  return out;
}

// \\frac\s?{(.*?)}\s?(\d) -> \frac{\1}{\2}
std::string fix_frac_brace_digit(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (starts_with(s, i, "\\frac")) {
      for (int sp = 1; sp >= 0; --sp) {
        size_t j = i + 5;
        if (sp) {
          if (!(j < s.size() && is_space(s[j]))) continue;
          ++j;
        }
        if (!(j < s.size() && s[j] == '{')) continue;
        // lazy .*? : the first '}' (no newline before it) followed by \s?\d
        for (size_t q = j + 1; q < s.size() && s[q] != '\n'; ++q) {
          if (s[q] != '}') continue;
          size_t m = q + 1;
          size_t d = std::string::npos;
          if (m < s.size() && is_space(s[m]) && m + 1 < s.size() && is_digit(s[m + 1])) d = m + 1;
          else if (m < s.size() && is_digit(s[m])) d = m;
          if (d != std::string::npos) {
            out += "\\frac{" + s.substr(j + 1, q - j - 1) + "}{" + s[d] + "}";
            i = d + 1;
            goto next;
          }
        }
      }
    }
    out += s[i++];
  next:;
  }
  return out;
}

// \\frac\s?(\d)\s?{(.*?)} -> \frac{\1}{\2}
std::string fix_frac_digit_brace(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (starts_with(s, i, "\\frac")) {
      size_t j = opt_space(s, i + 5);
      for (int attempt = 0; attempt < 2; ++attempt) {
        size_t jj = attempt == 0 ? j : i + 5;
        if (attempt == 1 && jj == j) break;
        if (!(jj < s.size() && is_digit(s[jj]))) continue;
        char d = s[jj];
        size_t k = jj + 1;
        for (int sp = 1; sp >= 0; --sp) {
          size_t m = k;
          if (sp) {
            if (!(m < s.size() && is_space(s[m]))) continue;
            ++m;
          }
          if (!(m < s.size() && s[m] == '{')) continue;
          size_t q = m + 1;
          while (q < s.size() && s[q] != '}' && s[q] != '\n') ++q;
          if (q < s.size() && s[q] == '}') {
            out += "\\frac{";
            out += d;
            out += "}{" + s.substr(m + 1, q - m - 1) + "}";
            i = q + 1;
            goto next;
          }
        }
      }
    }
    out += s[i++];
  next:;
  }
  return out;
}

// \\sqrt\s?(\d) -> \sqrt{\1}
std::string fix_sqrt_digit(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (starts_with(s, i, "\\sqrt")) {
      size_t j = i + 5;
      size_t d = std::string::npos;
      if (j < s.size() && is_space(s[j]) && j + 1 < s.size() && is_digit(s[j + 1])) d = j + 1;
      else if (j < s.size() && is_digit(s[j])) d = j;
      if (d != std::string::npos) {
        out += "\\sqrt{";
        out += s[d];
        out += "}";
        i = d + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

std::string lstrip(const std::string& s) {
  size_t a = 0;
  while (a < s.size() && is_space(s[a])) ++a;
  return s.substr(a);
}

std::vector<std::string> split_on(const std::string& s, const char* sep) {
  std::vector<std::string> parts;
  size_t sl = std::strlen(sep), pos = 0;
  while (true) {
    size_t f = s.find(sep, pos);
    if (f == std::string::npos) {
      parts.push_back(s.substr(pos));
      break;
    }
    parts.push_back(s.substr(pos, f - pos));
    pos = f + sl;
  }
  return parts;
}

// hendrycks' _fix_sqrt: \sqrt3 -> \sqrt{3}
std::string fix_sqrt_hendrycks(const std::string& s) {
  if (s.find("\\sqrt") == std::string::npos) return s;
  auto parts = split_on(s, "\\sqrt");
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string p = lstrip(parts[i]);
    if (!p.empty() && p[0] != '{' && p[0] != '[') {
      // python indexes code points; take one UTF-8 code point
      size_t e = next_cp(p, 0);
      out += "\\sqrt{" + p.substr(0, e) + "}" + p.substr(e);
    } else {
      out += "\\sqrt" + p;
    }
  }
  return out;
}

// hendrycks' _fix_fracs: \frac12 -> \frac{1}{2}, \frac1{2} -> \frac{1}{2}
std::string fix_fracs_hendrycks(const std::string& s) {
  auto parts = split_on(s, "\\frac");
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string p = lstrip(parts[i]);
    out += "\\frac";
    if (!p.empty() && p[0] == '{') {
      out += p;
      continue;
    }
    // code points a, b
    if (p.empty()) return s;
    size_t e1 = next_cp(p, 0);
    if (e1 >= p.size()) return s;  // fewer than 2 characters
    size_t e2 = next_cp(p, e1);
    std::string a = p.substr(0, e1), b = p.substr(e1, e2 - e1);
    if (b != "{") {
      out += "{" + a + "}{" + b + "}" + p.substr(e2);
    } else {
      out += "{" + a + "}" + b + p.substr(e2);
    }
  }
  return out;
}

// hendrycks' _fix_a_slash_b: "2/3" -> \frac{2}{3} (only for exactly int/int)
std::string fix_a_slash_b(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos || s.find('/', slash + 1) != std::string::npos) return s;
  std::string a = s.substr(0, slash), b = s.substr(slash + 1);
  auto canon_int = [](const std::string& t, std::string* out) {
    // python int(t) then str(): accepts surrounding whitespace, sign, underscores between digits;
    // the round-trip check then requires t to be canonical already
    if (t.empty()) return false;
    size_t i = 0;
    if (t[0] == '-' || t[0] == '+') i = 1;
    if (i >= t.size()) return false;
    for (size_t j = i; j < t.size(); ++j)
      if (!is_digit(t[j])) return false;
    if (t[0] == '+') return false;                       // str(int) never has '+'
    if (t.size() - i > 1 && t[i] == '0') return false;   // leading zero
    if (t == "-0") return false;
    *out = t;
    return true;
  };
  std::string ca, cb;
  if (!canon_int(a, &ca) || !canon_int(b, &cb)) return s;
  return "\\frac{" + ca + "}{" + cb + "}";
}

}  // namespace

std::string normalize_latex(const std::string& input, int boxed_mode) {
  std::string text = input;
  if (boxed_mode == 1 || boxed_mode == 2) text = extract_boxed_content(text, boxed_mode);

  // basic_latex
  replace_all(text, "\\mathrm{T}", "T");
  replace_all(text, "\\mathrm{d}", "d");
  replace_all(text, "{\\rm d}", "d");
  replace_all(text, "\\left[\\begin{matrix}", "\\begin{bmatrix}");
  replace_all(text, "\\end{matrix}\\right]", "\\end{bmatrix}");
  text = strip_left_right(text, "left", kLeftDelims, sizeof(kLeftDelims) / sizeof(kLeftDelims[0]));
  text = strip_left_right(text, "right", kRightDelims, sizeof(kRightDelims) / sizeof(kRightDelims[0]));
  text = fix_permutations(text);
  text = remove_useless(text);
  text = replace_in_latex(text);
  for (char& c : text)
    if (c == '\n' || c == '\t') c = ' ';
  if (text.find("matrix") == std::string::npos) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 2 < text.size() + 0 && text[i + 1] == '\\' && i + 2 < text.size() &&
          is_alpha(text[i + 2])) {
        out += '\\';
        ++i;
        continue;
      }
      out += text[i];
    }
    text = out;
  }

  // units
  {
    std::string t = strip_trailing_text(text);
    if (!t.empty() && t != text) text = t;
    for (int r = 0; r < 2; ++r) {
      std::string u = strip_unit_once(text);
      if (!u.empty() && u != text) text = u;
    }
  }

  // nits
  if (!text.empty() && text[0] == '.') text = "0" + text;
  if (text == "0.5") text = "\\frac{1}{2}";

  // malformed operators
  text = fix_caret_paren(text);
  text = fix_sqrt_paren(text);
  text = fix_cmd_digits(text, "\\frac", "\\frac{");
  text = fix_cmd_digits(text, "\\log_", "\\log_{");
  text = fix_frac_brace_digit(text);
  text = fix_frac_digit_brace(text);
  text = fix_sqrt_digit(text);
  replace_all(text, " sqrt", "\\sqrt");
  text = fix_sqrt_hendrycks(text);
  text = fix_fracs_hendrycks(text);
  text = fix_a_slash_b(text);
  return strip(text);
}

}  // namespace paced
