// Byte-level text helpers (UTF-8 aware where math-verify counts characters).
#pragma once

#include <cstring>
#include <string>

namespace paced {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
// Python's \s on ASCII text (unicode spaces beyond ASCII are rare in answers and treated as text)
inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
// Python's \w: ASCII alnum, underscore, and (approximately) every non-ASCII byte
inline bool is_word(char c) { return is_alnum(c) || c == '_' || (unsigned char)c >= 0x80; }
inline char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

inline bool starts_with(const std::string& s, size_t pos, const char* lit) {
  size_t n = std::strlen(lit);
  return pos + n <= s.size() && std::memcmp(s.data() + pos, lit, n) == 0;
}
inline bool starts_with_icase(const std::string& s, size_t pos, const char* lit) {
  size_t n = std::strlen(lit);
  if (pos + n > s.size()) return false;
  for (size_t i = 0; i < n; ++i)
    if (to_lower(s[pos + i]) != to_lower(lit[i])) return false;
  return true;
}
// number of code points in s[a, b) (continuation bytes do not count)
inline size_t cp_count(const std::string& s, size_t a, size_t b) {
  size_t n = 0;
  for (size_t i = a; i < b && i < s.size(); ++i)
    if (((unsigned char)s[i] & 0xC0) != 0x80) ++n;
  return n;
}
// advance one code point from i (i < s.size())
inline size_t next_cp(const std::string& s, size_t i) {
  ++i;
  while (i < s.size() && ((unsigned char)s[i] & 0xC0) == 0x80) ++i;
  return i;
}
inline std::string strip(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && is_space(s[a])) ++a;
  while (b > a && is_space(s[b - 1])) --b;
  return s.substr(a, b - a);
}
inline void replace_all(std::string& s, const char* from, const char* to) {
  size_t fl = std::strlen(from), tl = std::strlen(to);
  if (!fl) return;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, fl, to);
    pos += tl;
  }
}

}  // namespace paced
