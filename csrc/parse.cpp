// Recursive-descent parser for normalised LaTeX answers (and plain "1/2 + 3" expressions).
//
// It follows the grammar math-verify's LaTeX parser uses (elements separated by commas become
// sets, "(a, b)" is an interval, implicit multiplication binds tighter than "/", "2\frac{1}{2}" is
// a mixed number, symbols are lower-cased, ...), for the constructs that answers actually use.
// Constructs outside that subset throw Unsure (the pair goes to the fallback); syntax errors made
// only of well-understood tokens are Fail (math-verify's parser rejects them too).
#include <algorithm>
#include <atomic>
#include <iterator>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core.hpp"
#include "regex.hpp"
#include "textutil.hpp"

namespace paced {

int Tree::import(const Tree& src, int id, int depth) {
  if (depth > Limits::kMaxDepth) throw TooBig{"tree too deep"};
  Node n = src.at(id);
  std::vector<int> kids;
  kids.reserve(n.kids.size());
  for (int k : n.kids) kids.push_back(import(src, k, depth + 1));
  n.kids = std::move(kids);
  return add(std::move(n));
}

void Tree::import_bigops(const Tree& src) {
  for (const BigOp& b : src.bigops) {
    BigOp c = b;
    c.body = import(src, b.body);
    c.lo = import(src, b.lo);
    c.hi = import(src, b.hi);
    bigops.push_back(std::move(c));
  }
}

namespace {

struct ParseError {};

enum class T : uint8_t {
  Num, PctNum, ENot, Letter, ExpE, EUpper, Diff, Greek, OtherSym, Accent, Infty, Partial,
  Add, Sub, Mul, Div, LParen, RParen, LParenVis, RParenVis, LBrace, RBrace, LBraceVis, RBraceVis,
  LBracket, RBracket, LGroup, RGroup, LBrack, RBrack, Bar, Caret, Underscore, Comma, Semi, Colon, Period,
  Bang, Amp, RowSep, Assign, EqEq, Lt, Le, Gt, Ge, Ne, Approx, In, NotIn, Pm,
  Degree, Transpose, Cmd, MatBegin, MatEnd, SetLit, EmptySet, Eof
};

struct Tok {
  T t;
  std::string text;  // source text (numbers, letters, command names, accent content)
  std::string aux;   // accent command / matrix kind / set literal
  bool basic = true; // a token whose grammar we model fully (syntax errors with only these are Fail)
  size_t b = 0, e = 0; // source span of the reference's token (its getText(), used for subscript names)
};

// Commands the reference grammar knows as tokens (anything else is a lexer error there).
const std::set<std::string>& known_commands() {
  static const std::set<std::string> k = {
      "quad", "qquad", "negmedspace", "negthickspace", "thinspace", "medspace", "thickspace", "negthinspace",
      "vrule", "vcenter", "vbox", "vskip", "vspace", "hfil", "over", "lgroup", "rgroup", "lbrace", "rbrace",
      "lbrack", "rbrack", "phantom", "boxed", "lvert", "rvert", "vert", "langle", "rangle", "lfloor", "rfloor",
      "llcorner", "lrcorner", "lceil", "rceil", "ulcorner", "urcorner", "lim", "to", "rightarrow", "Rightarrow",
      "longrightarrow", "Longrightarrow", "int", "sum", "prod", "log", "ln", "exp", "sin", "cos", "tan", "csc",
      "sec", "cot", "Gamma", "gamma", "arcsin", "arccos", "arctan", "arccsc", "arcsec", "arccot", "sinh", "cosh",
      "tanh", "arsinh", "arcosh", "artanh", "arcsinh", "arccosh", "arctanh", "sqrt", "gcd", "lcm", "floor", "ceil",
      "max", "min", "det", "times", "cdot", "div", "frac", "dfrac", "tfrac", "cfrac", "binom", "tbinom", "dbinom",
      "choose", "mod", "mathit", "operatorname", "xrightarrow", "xRightarrow", "leftrightarrow",
      "Leftrightarrow", "exponentialE", "in", "equiv", "approx", "lt", "leq", "le", "leqslant", "gt", "geq",
      "ge", "geqslant", "ne", "neq", "infty", "partial", "cup", "cap", "setminus", "pm", "mp", "emptyset",
      "supseteq", "subseteq", "notin",
      // greek
      "alpha", "beta", "delta", "Delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "Theta", "vartheta",
      "iota", "kappa", "lambda", "Lambda", "mu", "nu", "xi", "Xi", "omicron", "pi", "Pi", "varpi", "rho", "varrho",
      "sigma", "Sigma", "varsigma", "tau", "upsilon", "Upsilon", "phi", "Phi", "varphi", "chi", "psi", "Psi",
      "omega", "Omega",
      // other symbols
      "Bbbk", "wp", "nabla", "bigstar", "angle", "nexists", "diagdown", "measuredangle", "eth", "diagup",
      "sphericalangle", "clubsuit", "varnothing", "Diamond", "complement", "diamondsuit", "imath", "Finv",
      "triangledown", "heartsuit", "jmath", "Game", "triangle", "spadesuit", "ell", "hbar", "vartriangle",
      "hslash", "blacklozenge", "lozenge", "blacksquare", "mho", "blacktriangle", "sharp", "prime", "Im", "flat",
      "square", "backprime", "Re", "natural", "surd", "circledS",
      // accents (need a brace group)
      "acute", "bar", "overline", "breve", "check", "widecheck", "dot", "ddot", "grave", "hat", "tilde",
      "widetilde", "vec", "overrightarrow", "bm", "boldsymbol", "text", "textit", "textbf", "textnormal",
      "mathbb", "mathbin", "mathbf", "mathcal", "mathclap", "mathclose", "mathellipsis", "mathfrak",
      "mathinner", "mathnormal", "mathop", "mathopen", "mathord", "mathpunct", "mathrel", "mathring",
      "mathrlap", "mathrm", "mathscr", "mathsf", "mathsterling", "mathtt", "mbox", "begin", "end", "variable",
      "not"};
  return k;
}
const std::set<std::string>& accent_commands() {
  static const std::set<std::string> k = {
      "acute", "bar", "overline", "breve", "check", "widecheck", "dot", "ddot", "grave", "hat", "tilde",
      "widetilde", "vec", "overrightarrow", "bm", "boldsymbol", "text", "textit", "textbf", "textnormal",
      "mathbb", "mathbin", "mathbf", "mathcal", "mathclap", "mathclose", "mathellipsis", "mathfrak",
      "mathinner", "mathit", "mathnormal", "mathop", "mathopen", "mathord", "mathpunct", "mathrel", "mathring",
      "mathrlap", "mathrm", "mathscr", "mathsf", "mathsterling", "mathtt", "mbox"};
  return k;
}
const std::map<std::string, std::string>& greek_names() {
  static const std::map<std::string, std::string> k = {
      {"alpha", "alpha"}, {"beta", "beta"}, {"delta", "delta"}, {"Delta", "Delta"}, {"epsilon", "epsilon"},
      {"varepsilon", "varepsilon"}, {"zeta", "zeta"}, {"eta", "eta"}, {"theta", "theta"}, {"Theta", "Theta"},
      {"vartheta", "vartheta"}, {"iota", "iota"}, {"kappa", "kappa"}, {"lambda", "lambda"},
      {"Lambda", "Lambda"}, {"mu", "mu"}, {"nu", "nu"}, {"xi", "xi"}, {"Xi", "Xi"}, {"omicron", "omicron"},
      {"pi", "pi"}, {"Pi", "Pi"}, {"varpi", "varpi"}, {"rho", "rho"}, {"varrho", "varrho"}, {"sigma", "sigma"},
      {"Sigma", "Sigma"}, {"varsigma", "varsigma"}, {"tau", "tau"}, {"upsilon", "upsilon"},
      {"Upsilon", "Upsilon"}, {"phi", "phi"}, {"Phi", "Phi"}, {"varphi", "varphi"}, {"chi", "chi"},
      {"psi", "psi"}, {"Psi", "Psi"}, {"omega", "omega"}, {"Omega", "Omega"}};
  return k;
}
const std::set<std::string>& other_symbols() {
  static const std::set<std::string> k = {
      "Bbbk", "wp", "nabla", "bigstar", "angle", "nexists", "diagdown", "measuredangle", "eth", "diagup",
      "sphericalangle", "clubsuit", "varnothing", "Diamond", "complement", "diamondsuit", "imath", "Finv",
      "triangledown", "heartsuit", "jmath", "Game", "triangle", "spadesuit", "ell", "hbar", "vartriangle",
      "hslash", "blacklozenge", "lozenge", "blacksquare", "mho", "blacktriangle", "sharp", "prime", "Im", "flat",
      "square", "backprime", "Re", "natural", "surd", "circledS"};
  return k;
}
const std::set<std::string>& single_arg_funcs() {
  static const std::set<std::string> k = {"log", "ln", "exp", "sin", "cos", "tan", "csc", "sec", "cot",
                                          "arcsin", "arccos", "arctan", "arccsc", "arcsec", "arccot", "sinh",
                                          "cosh", "tanh", "arsinh", "arcosh", "artanh", "arcsinh", "arccosh",
                                          "arctanh", "floor", "ceil", "det"};
  return k;
}

// The non-ASCII characters a token of the reference lexer can start with (each lexes alone;
// found by running the installed PSLexer on every code point up to U+2FFFF). '°' only follows '^'.
bool starts_reference_token(const std::string& s, size_t i) {
  static const uint32_t cps[] = {
      0xB1, 0xD7, 0xF7, 0x393, 0x394, 0x398, 0x39B, 0x39E, 0x3A0, 0x3A3, 0x3A5, 0x3A6, 0x3A8, 0x3A9, 0x3B1,
      0x3B2, 0x3B3, 0x3B4, 0x3B5, 0x3B6, 0x3B7, 0x3B8, 0x3B9, 0x3BA, 0x3BB, 0x3BC, 0x3BD, 0x3BE, 0x3BF, 0x3C0,
      0x3C1, 0x3C2, 0x3C3, 0x3C4, 0x3C5, 0x3C6, 0x3C7, 0x3C8, 0x3C9, 0x3D1, 0x3D5, 0x3D6, 0x3F1, 0x3F5,
      0x2102, 0x2115, 0x2119, 0x211A, 0x211D, 0x2124, 0x2135, 0x2136, 0x2137, 0x2138, 0x2205, 0x2209, 0x2212,
      0x2213, 0x2214, 0x2215, 0x2216, 0x2217, 0x2218, 0x2219, 0x2229, 0x222A, 0x2238, 0x2241, 0x2243, 0x2244,
      0x2245, 0x2247, 0x2248, 0x2249, 0x224A, 0x224B, 0x224E, 0x224F, 0x2250, 0x2251, 0x2252, 0x2253, 0x2254,
      0x2255, 0x2256, 0x2257, 0x225F, 0x2260, 0x2261, 0x2262, 0x2263, 0x2264, 0x2265, 0x2266, 0x2267, 0x226A,
      0x226B, 0x2272, 0x2273, 0x227A, 0x227B, 0x227E, 0x227F, 0x2286, 0x2287, 0x2295, 0x2297, 0x229E, 0x22A0,
      0x22A1, 0x22C4, 0x22C5, 0x22C6, 0x22C8, 0x22C9, 0x22CA, 0x22D6, 0x22D7};
  // decode one UTF-8 sequence; a malformed one is treated as a known character (undecided)
  unsigned char c = (unsigned char)s[i];
  int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
  if (n < 0 || i + (size_t)n >= s.size()) return true;
  uint32_t cp = c & (0x3F >> n);
  for (int k = 1; k <= n; ++k) {
    unsigned char cc = (unsigned char)s[i + (size_t)k];
    if ((cc & 0xC0) != 0x80) return true;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if (cp > 0x2FFFF) return true;  // beyond the scan: undecided
  return std::binary_search(std::begin(cps), std::end(cps), cp);
}

// ---------------------------------------------------------------------------------- lexer
class Lexer {
 public:
  explicit Lexer(const std::string& s) : s_(s) {}
  std::vector<Tok> run() {
    std::vector<Tok> out;
    while (true) {
      skip_ws();
      if (i_ >= s_.size()) break;
      size_t b = i_;
      out.push_back(next());
      out.back().b = b;
      out.back().e = i_;
      // GREEK_CMD / OTHER_SYMBOL_CMD: the command and one optional trailing space are one token
      if ((out.back().t == T::Greek || out.back().t == T::OtherSym) && i_ < s_.size() && s_[i_] == ' ')
        out.back().e = i_ + 1;
      if (out.size() > Limits::kMaxNodes) throw TooBig{"too many tokens"};
    }
    out.push_back(Tok{T::Eof, "", "", true, s_.size(), s_.size()});
    return out;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;

  void skip_ws() {
    while (i_ < s_.size()) {
      if (is_space(s_[i_])) {
        ++i_;
        continue;
      }
      if (s_[i_] == '\\' && i_ + 1 < s_.size() &&
          (s_[i_ + 1] == ',' || s_[i_ + 1] == ':' || s_[i_ + 1] == ';' || s_[i_ + 1] == '!' || s_[i_ + 1] == '$')) {
        i_ += 2;
        continue;
      }
      if (s_[i_] == '\\') {
        static const char* skips[] = {"qquad", "quad", "negmedspace", "negthickspace", "thinspace", "medspace",
                                      "thickspace", "negthinspace", "vrule", "vcenter", "vbox", "vskip",
                                      "vspace", "hfil"};
        bool skipped = false;
        for (const char* w : skips) {
          if (starts_with(s_, i_ + 1, w)) {
            // longest-match lexing: only when no longer command token starts here
            size_t e = i_ + 1 + std::strlen(w);
            size_t j = i_ + 1;
            while (j < s_.size() && is_alpha(s_[j])) ++j;
            if (j == e || std::string(w) == "quad") {
              if (std::string(w) == "quad" && j != e && starts_with(s_, i_ + 1, "qquad")) continue;
              i_ = e;
              skipped = true;
              break;
            }
          }
        }
        if (skipped) continue;
      }
      break;
    }
  }

  Tok tok(T t, std::string text = "", bool basic = true) { return Tok{t, std::move(text), "", basic}; }

  Tok number() {
    size_t a = i_;
    while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    if (i_ < s_.size() && s_[i_] == '.' && i_ + 1 < s_.size() && is_digit(s_[i_ + 1])) {
      ++i_;
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    }
    std::string num = s_.substr(a, i_ - a);
    // E notation: NUMBER 'E' [+-]? DIGIT+
    if (i_ < s_.size() && s_[i_] == 'E') {
      size_t j = i_ + 1;
      if (j < s_.size() && (s_[j] == '+' || s_[j] == '-')) ++j;
      if (j < s_.size() && is_digit(s_[j])) {
        while (j < s_.size() && is_digit(s_[j])) ++j;
        std::string t = s_.substr(a, j - a);
        i_ = j;
        return tok(T::ENot, t);
      }
    }
    // percent number: NUMBER WS? (\% | %)
    size_t j = i_;
    if (j < s_.size() && is_space(s_[j])) ++j;
    if (j < s_.size() && s_[j] == '%') {
      i_ = j + 1;
      return tok(T::PctNum, num);
    }
    if (starts_with(s_, j, "\\%")) {
      i_ = j + 2;
      return tok(T::PctNum, num);
    }
    return tok(T::Num, num);
  }

  // brace group content after position p (which must be '{'); ANTLR ACCENT: ('\}' | ~[}])*? '}'
  bool accent_content(size_t p, std::string* content, size_t* end) {
    if (p >= s_.size() || s_[p] != '{') return false;
    size_t q = p + 1;
    while (q < s_.size()) {
      if (s_[q] == '\\' && q + 1 < s_.size() && s_[q + 1] == '}') {
        // lazy: '}' could close here? "\}" is consumed as an escaped brace only if that leads to a
        // later close; the lazy loop tries closing at the first '}' first, which is the '}' of "\}"
        // only when preceded by '\' -- ANTLR's lazy ~[}] cannot consume '}', so "\}" is one unit.
        q += 2;
        continue;
      }
      if (s_[q] == '}') {
        *content = s_.substr(p + 1, q - p - 1);
        *end = q + 1;
        return true;
      }
      ++q;
    }
    return false;
  }

  Tok command() {
    size_t a = i_ + 1;
    size_t j = a;
    while (j < s_.size() && is_alpha(s_[j])) ++j;
    std::string word = s_.substr(a, j - a);
    if (word.empty()) {
      char c = a < s_.size() ? s_[a] : '\0';
      i_ = a + 1;
      switch (c) {
        case '(': return tok(T::LParenVis);
        case ')': return tok(T::RParenVis);
        case '{':
          if (i_ < s_.size() && starts_with(s_, i_, "\\}")) {
            i_ += 2;
            return tok(T::EmptySet);
          }
          return tok(T::LBraceVis);
        case '}': return tok(T::RBraceVis);
        case '|': return tok(T::Bar, "norm", false);
        case '\\': return tok(T::RowSep);
        case '%': throw ParseError{};  // a bare \% is not a token
        default: throw Unsure{"unknown escaped symbol"};
      }
    }
    // special multi-part tokens
    if (word == "mathbb") {
      size_t p = j;
      if (p + 2 < s_.size() + 1 && p + 2 <= s_.size() && s_[p] == '{' && p + 2 < s_.size() && s_[p + 2] == '}' &&
          std::strchr("NZQRCP", s_[p + 1])) {
        i_ = p + 3;
        Tok t = tok(T::SetLit, std::string(1, s_[p + 1]), false);
        return t;
      }
    }
    if (word == "begin" || word == "end") {
      static const char* kinds[] = {"pmatrix", "bmatrix", "matrix", "vmatrix", "array"};
      for (const char* k : kinds) {
        std::string pre = std::string("{") + k + "}";
        if (starts_with(s_, j, pre.c_str())) {
          if (std::string(k) == "vmatrix" || std::string(k) == "array") throw Unsure{"determinant / array"};
          i_ = j + pre.size();
          Tok t = tok(word == "begin" ? T::MatBegin : T::MatEnd, k, false);
          return t;
        }
      }
      throw ParseError{};
    }
    if (accent_commands().count(word) && word != "mathit") {
      size_t p = j;
      if (p < s_.size() && is_space(s_[p])) ++p;
      std::string content;
      size_t end;
      if (accent_content(p, &content, &end)) {
        i_ = end;
        Tok t = tok(T::Accent, content, true);
        t.aux = word;
        return t;
      }
    }
    // longest known command that prefixes the letters
    std::string best;
    for (size_t len = word.size(); len > 0; --len) {
      std::string w = word.substr(0, len);
      if (known_commands().count(w) && !accent_commands().count(w) && w != "begin" && w != "end" && w != "not" &&
          w != "variable") {
        best = w;
        break;
      }
    }
    if (best.empty()) {
      // \not\equiv, \variable{..}, an accent without braces: rare; unknown words are lexer errors
      if (word == "not" || word == "variable" || accent_commands().count(word)) throw Unsure{"rare command"};
      bool prefix_of_accent = false;
      for (const auto& acc : accent_commands())
        if (acc.compare(0, word.size(), word) == 0 && word.size() < acc.size()) prefix_of_accent = true;
      if (prefix_of_accent) throw Unsure{"partial accent"};
      throw ParseError{};
    }
    i_ = a + best.size();
    const std::string& w = best;
    if (w == "over") return tok(T::Div, w, false);
    if (w == "times" || w == "cdot") return tok(T::Mul, w);
    if (w == "div") return tok(T::Div, w);
    if (w == "lgroup") return tok(T::LGroup, w, false);
    if (w == "rgroup") return tok(T::RGroup, w, false);
    if (w == "lbrace") return tok(T::LBraceVis, w);
    if (w == "rbrace") return tok(T::RBraceVis, w);
    if (w == "lbrack") return tok(T::LBrack, w, false);
    if (w == "rbrack") return tok(T::RBrack, w, false);
    if (w == "lvert" || w == "rvert" || w == "vert") return tok(T::Bar, w, false);
    if (w == "infty") return tok(T::Infty);
    if (w == "partial") return tok(T::Partial, w, false);
    if (w == "in") return tok(T::In);
    if (w == "notin") return tok(T::NotIn, w, false);
    // \equiv is a plain relation (unlike =, its right side takes no \pm): a \equiv b \pmod{m} fails
    if (w == "equiv") return tok(T::EqEq, w);
    if (w == "approx") return tok(T::Approx);
    if (w == "lt") return tok(T::Lt);
    if (w == "gt") return tok(T::Gt);
    if (w == "le" || w == "leq" || w == "leqslant") return tok(T::Le);
    if (w == "ge" || w == "geq" || w == "geqslant") return tok(T::Ge);
    if (w == "ne" || w == "neq") return tok(T::Ne);
    if (w == "pm" || w == "mp") return tok(T::Pm, w);
    if (w == "emptyset") return tok(T::EmptySet);
    if (greek_names().count(w)) return tok(T::Greek, greek_names().at(w));
    if (other_symbols().count(w)) return tok(T::OtherSym, w);
    bool basic = w == "frac" || w == "dfrac" || w == "tfrac" || w == "cfrac" || w == "sqrt" || w == "boxed" ||
                 w == "sum" || w == "prod" || w == "lim" ||  // big operators: every unmodelled shape is Unsure
                 w == "binom" || w == "dbinom" || w == "tbinom" || w == "choose" ||  // \binom{a}{b}, {a \choose b}
                 w == "mod" ||                                                    // a \mod b, like a * b
                 w == "max" || w == "min" ||  // \max(a, ...) as the grammar reads it; other shapes are Unsure
                 // LIM_APPROACH_SYM is a token of \lim's subscript only: anywhere else a syntax error
                 w == "to" || w == "rightarrow" || w == "Rightarrow" || w == "longrightarrow" ||
                 w == "Longrightarrow" ||
                 w == "lfloor" || w == "rfloor" || w == "lceil" || w == "rceil";  // floor_group, ceil_group
    return tok(T::Cmd, w, basic);
  }

  Tok next() {
    char c = s_[i_];
    if (is_digit(c) || (c == '.' && i_ + 1 < s_.size() && is_digit(s_[i_ + 1]))) return number();
    if (c == '\\') return command();
    if (c == '^') {
      // degree / transpose literal tokens
      static const char* deg[] = {"^{\\circ}", "^{\\degree}", "^{\\circle}", "^\\circ", "^\\degree", "^\\circle",
                                  "^{\xC2\xB0}", "^\xC2\xB0"};
      for (const char* d : deg) {
        if (starts_with(s_, i_, d)) {
          size_t e = i_ + std::strlen(d);
          // "^\circle" is longer than "^\circ": longest match
          i_ = e;
          return tok(T::Degree);
        }
      }
      if (starts_with(s_, i_, "^{T}") || starts_with(s_, i_, "^{\\top}")) throw Unsure{"transpose"};
      if (starts_with(s_, i_, "^T")) throw Unsure{"transpose"};
      ++i_;
      return tok(T::Caret);
    }
    if (is_alpha(c)) {
      // multi-letter operator names the grammar lexes as single tokens (gcd, floor, norm, eye, ...);
      // checked first: "diag" is one token there, longer than the DIFFERENTIAL "di"
      static const char* names[] = {"arsinh", "arcsinh", "arcosh", "arccosh", "artanh", "arctanh", "gcd", "lcm",
                                    "floor", "ceil", "eye", "zeros", "ones", "cols", "rows", "diag", "norm",
                                    "rank", "trace", "tr", "rref", "hstack", "vstack", "nullspace", "orth",
                                    "eig", "svd", "SVD", "matrix", "pmatrix", "bmatrix", "vmatrix"};
      for (const char* nm : names)
        if (starts_with(s_, i_, nm)) throw Unsure{"operator-name letters"};
      // DIFFERENTIAL: 'd' WS*? ([a-zA-Z] | '\' [a-zA-Z]+), always longer than the letter 'd', so
      // "d\le 5" is the symbol dle times 5 there; the symbol is 'd' + the letters (the case kept)
      if (c == 'd') {
        size_t j = i_ + 1;
        while (j < s_.size() && is_space(s_[j])) ++j;
        if (j < s_.size() && is_alpha(s_[j])) {
          std::string name = "d" + std::string(1, s_[j]);
          i_ = j + 1;
          return tok(T::Diff, name);
        }
        if (j + 1 < s_.size() && s_[j] == '\\' && is_alpha(s_[j + 1])) {
          size_t e = j + 1;
          while (e < s_.size() && is_alpha(s_[e])) ++e;
          Tok t = tok(T::Diff, "d" + s_.substr(j + 1, e - j - 1));
          t.aux = "cmd";  // its source text is not its name (subscripts use source text)
          i_ = e;
          return t;
        }
      }
      ++i_;
      if (c == 'e') return tok(T::ExpE, "e");
      if (c == 'E') return tok(T::EUpper, "E");
      return tok(T::Letter, std::string(1, c));
    }
    ++i_;
    switch (c) {
      case '+': return tok(T::Add);
      case '-': return tok(T::Sub);
      case '*': return tok(T::Mul);
      case '/': return tok(T::Div);
      case '(': return tok(T::LParen);
      case ')': return tok(T::RParen);
      case '{':
        return tok(T::LBrace);
      case '}': return tok(T::RBrace);
      case '[': return tok(T::LBracket);
      case ']': return tok(T::RBracket);
      case '|': return tok(T::Bar, "|", false);
      case '_': return tok(T::Underscore);
      case ',': return tok(T::Comma);
      case ';': return tok(T::Semi);
      case ':': return tok(T::Colon);
      case '.': return tok(T::Period);
      case '&': return tok(T::Amp, "&", false);
      case '!':
        if (i_ < s_.size() && s_[i_] == '=') {
          ++i_;
          if (i_ < s_.size() && s_[i_] == '=') ++i_;
          return tok(T::Ne);
        }
        return tok(T::Bang);
      case '=':
        if (i_ < s_.size() && s_[i_] == '=') {
          ++i_;
          return tok(T::EqEq);
        }
        return tok(T::Assign);
      case '<':
        if (i_ < s_.size() && s_[i_] == '=') {
          if (i_ + 1 < s_.size() && s_[i_ + 1] == '>') throw Unsure{"<=>"};
          ++i_;
          return tok(T::Le);
        }
        if (i_ + 1 < s_.size() && s_[i_] == '-' && s_[i_ + 1] == '>') throw Unsure{"<->"};
        return tok(T::Lt);
      case '>':
        if (i_ < s_.size() && s_[i_] == '=') {
          ++i_;
          return tok(T::Ge);
        }
        return tok(T::Gt);
      case '~':
        if (i_ < s_.size() && s_[i_] == '=') {
          ++i_;
          return tok(T::Approx);
        }
        throw ParseError{};
      case '\'':
        throw Unsure{"prime / transpose"};
      default:
        break;
    }
    if ((unsigned char)c >= 0x80) {
      --i_;
      // a few common non-ASCII tokens; anything else is undecided
      struct U {
        const char* u;
        T t;
        const char* text;
      };
      static const U us[] = {{"\xE2\x88\x92", T::Sub, "-"},       {"\xC3\x97", T::Mul, "*"},
                             {"\xE2\x8B\x85", T::Mul, "*"},       {"\xC3\xB7", T::Div, "/"},
                             {"\xE2\x89\xA4", T::Le, ""},         {"\xE2\x89\xA5", T::Ge, ""},
                             {"\xE2\x89\xA0", T::Ne, ""},         {"\xE2\x89\x88", T::Approx, ""},
                             {"\xC2\xB1", T::Pm, "pm"},           {"\xCF\x80", T::Greek, "pi"},
                             {"\xE2\x88\x85", T::EmptySet, ""}};
      for (const U& u : us) {
        if (starts_with(s_, i_, u.u)) {
          i_ += std::strlen(u.u);
          return tok(u.t, u.text);
        }
      }
      // a character no lexer rule starts with is a lexer error there: the whole candidate fails
      if (!starts_reference_token(s_, i_)) throw ParseError{};
      throw Unsure{"non-ASCII character"};
    }
    // '#', '@', '?', '"', '`', '%', '$' etc. are no token of the grammar
    throw ParseError{};
  }
};

// LIM_APPROACH_SYM
bool is_approach(const std::string& w) {
  return w == "to" || w == "rightarrow" || w == "Rightarrow" || w == "longrightarrow" || w == "Longrightarrow";
}

// ---------------------------------------------------------------------------------- parser
class Parser {
 public:
  Parser(std::vector<Tok> toks, Tree* t, const std::string& src) : tk_(std::move(toks)), t_(*t), src_(src) {}

  int math();

 private:
  std::vector<Tok> tk_;
  size_t p_ = 0;
  Tree& t_;
  const std::string& src_;
  int depth_ = 0;
  int abs_depth_ = 0;

  struct Guard {
    int& d;
    explicit Guard(int& dd) : d(dd) {
      if (++d > Limits::kMaxDepth) throw TooBig{"nesting too deep"};
    }
    ~Guard() { --d; }
  };

  const Tok& cur() const { return tk_[p_]; }
  T ct() const { return tk_[p_].t; }
  T peek(size_t k = 1) const { return p_ + k < tk_.size() ? tk_[p_ + k].t : T::Eof; }
  void expect(T t) {
    if (ct() != t) throw ParseError{};
    ++p_;
  }
  bool accept(T t) {
    if (ct() == t) {
      ++p_;
      return true;
    }
    return false;
  }
  bool is_cmd(const char* name) const { return ct() == T::Cmd && cur().text == name; }

  // --- tree helpers mirroring the reference converter --------------------------------------
  bool is_int(int id) const {
    const Node& n = t_.at(id);
    return n.kind == NK::Num && !n.isfloat && n.val.is_integer();
  }
  bool is_rational_num(int id) const {  // sympy is_Rational (Integer or Rational, not Float)
    const Node& n = t_.at(id);
    return n.kind == NK::Num && !n.isfloat;
  }
  bool is_number(int id) const {  // sympy .func.is_Number (numbers and infinities)
    NK k = t_.at(id).kind;
    return k == NK::Num || k == NK::Inf || k == NK::NegInf;
  }
  bool is_matrix(int id) const { return t_.at(id).kind == NK::Matrix; }
  int negate_number(int id) {
    Node n = t_.at(id);
    if (n.kind == NK::Inf) return t_.leaf(NK::NegInf);
    if (n.kind == NK::NegInf) return t_.leaf(NK::Inf);
    n.val = -n.val;
    return t_.add(n);
  }
  int flat(NK k, int a, int b) {
    std::vector<int> kids;
    for (int x : {a, b}) {
      if (t_.at(x).kind == k) {
        for (int c : t_.at(x).kids) kids.push_back(c);
      } else {
        kids.push_back(x);
      }
    }
    return t_.op(k, kids);
  }
  int mul(int a, int b) {
    if (is_matrix(a) || is_matrix(b)) throw Unsure{"matrix arithmetic"};
    return flat(NK::Mul, a, b);
  }
  int add(int a, int b) {
    if (is_matrix(a) || is_matrix(b)) throw Unsure{"matrix arithmetic"};
    return flat(NK::Add, a, b);
  }
  int inv(int a) { return t_.op(NK::Pow, {a, t_.num(Rational(-1))}); }
  int div(int a, int b) {
    if (is_matrix(a) || is_matrix(b)) throw Unsure{"matrix arithmetic"};
    if (is_int(a) && is_int(b)) {
      if (t_.at(b).val.is_zero()) throw Unsure{"division by zero"};
      return t_.num(Rational::make(t_.at(a).val.num, t_.at(b).val.num));
    }
    return t_.op(NK::Mul, {a, inv(b)});
  }
  int neg(int a) {  // unary minus
    if (is_matrix(a)) throw Unsure{"matrix arithmetic"};
    if (is_number(a)) return negate_number(a);
    return mul(t_.num(Rational(-1)), a);
  }

  // --- grammar ------------------------------------------------------------------------------
  bool at_element_end() const {
    T t = ct();
    return t == T::Comma || t == T::Semi || t == T::Eof;
  }
  bool is_symbols_only(int id) const;
  int set_or_tuple(const std::vector<std::vector<int>>& groups);
  std::vector<std::vector<int>> semicolon_elements(bool no_relation, T closer);
  void element(bool no_relation, std::vector<int>* out, T closer);
  bool try_set_atom(int* out, T closer);
  int interval_or_tuple();
  int big_operator();
  int gcd_lcm();
  int relation();
  int expr();
  int additive();
  int mp(bool nofunc);
  int unary(bool nofunc);
  bool starts_comp(bool allow_func) const;
  int postfix(bool allow_func);
  int exp_(bool allow_func);
  int comp(bool allow_func);
  int atom();
  int atom_expr();
  std::string sub_text();
  std::string raw_text(size_t a, size_t b) const;
  int func();
  int frac();
  int matrix();
  int sup_value();
  int brace_expr();
  int binomial(int n, int k);
  bool has_symbol(int id) const;
  bool exact_value(int id, Rational* out) const;
  void check_reparsed_args(size_t from, size_t to) const;
};

bool Parser::is_symbols_only(int id) const {
  const Node& n = t_.at(id);
  if (n.kind == NK::Sym) return true;
  if (n.kind == NK::Pow && n.kids.size() == 2) {
    const Node& e = t_.at(n.kids[1]);
    if (e.kind == NK::Num && !e.isfloat && e.val == Rational(-1)) {
      const Node& b = t_.at(n.kids[0]);
      if (b.kind == NK::Sym) return true;
      if (!b.kids.empty()) {
        for (int k : b.kids)
          if (!is_symbols_only(k)) return false;
        return true;
      }
    }
  }
  if (!n.kids.empty() && n.kind != NK::Func && n.kind != NK::Matrix) {
    for (int k : n.kids)
      if (!is_symbols_only(k)) return false;
    return true;
  }
  return false;
}

int Parser::set_or_tuple(const std::vector<std::vector<int>>& groups) {
  if (groups.size() == 1) {
    if (groups[0].size() == 1) return groups[0][0];
    return t_.op(NK::FSet, groups[0]);
  }
  bool all1 = true;
  for (auto& g : groups) all1 = all1 && g.size() == 1;
  std::vector<int> kids;
  if (all1) {
    for (auto& g : groups) kids.push_back(g[0]);
    return t_.op(NK::FSet, kids);
  }
  for (auto& g : groups) kids.push_back(t_.op(NK::Tuple, g));
  return t_.op(NK::FSet, kids);
}

int Parser::math() {
  // set_elements_relation: atom_expr_list (IN | '=') semicolon_elements_no_relation
  size_t save = p_;
  size_t nodes_save = t_.nodes.size();
  try {
    int lhs = -1;
    if (ct() == T::LParen) {
      ++p_;
      std::vector<int> atoms{atom_expr()};
      while (accept(T::Comma)) atoms.push_back(atom_expr());
      expect(T::RParen);
      lhs = atoms.size() == 1 ? atoms[0] : t_.op(NK::Tuple, atoms);
    } else {
      lhs = atom_expr();
    }
    if (ct() == T::In || ct() == T::Assign) {
      ++p_;
      auto groups = semicolon_elements(true, T::Eof);
      if (ct() == T::Eof) {
        int rhs = set_or_tuple(groups);
        int r = t_.rel(RelOp::Eq, lhs, rhs);
        return r;
      }
    }
  } catch (ParseError&) {
  }
  p_ = save;
  t_.rewind(nodes_save);
  auto groups = semicolon_elements(false, T::Eof);
  if (ct() != T::Eof) {
    for (const Tok& tk : tk_)
      if (tk.t == T::Cmd && (tk.text == "cup" || tk.text == "cap" || tk.text == "setminus" || tk.text == "subseteq" ||
                             tk.text == "supseteq"))
        throw Unsure{"set operations"};
    throw ParseError{};
  }
  return set_or_tuple(groups);
}

std::vector<std::vector<int>> Parser::semicolon_elements(bool no_relation, T closer) {
  std::vector<std::vector<int>> groups;
  while (true) {
    std::vector<int> g;
    element(no_relation, &g, closer);
    while (accept(T::Comma)) element(no_relation, &g, closer);
    groups.push_back(std::move(g));
    if (!accept(T::Semi)) break;
  }
  return groups;
}

void Parser::element(bool no_relation, std::vector<int>* out, T closer) {
  Guard g(depth_);
  auto ended = [&]() { return at_element_end() || ct() == closer; };
  // plus_minus_expr: expr PM expr | PM expr
  if (ct() == T::Pm) {
    ++p_;
    int e = expr();
    out->push_back(neg(e));
    out->push_back(e);
    return;
  }
  // set_atom (tried before relation, as the grammar orders them)
  {
    size_t save = p_;
    size_t ns = t_.nodes.size();
    int sa;
    bool ok = false;
    try {
      ok = try_set_atom(&sa, closer) && ended();
    } catch (ParseError&) {
      ok = false;
    }
    if (ok) {
      out->push_back(sa);
      return;
    }
    p_ = save;
    t_.rewind(ns);
  }
  // plus_minus with a leading expr, or a relation / expr
  size_t save = p_;
  size_t ns = t_.nodes.size();
  try {
    int e = expr();
    if (ct() == T::Pm) {
      ++p_;
      int r = expr();
      out->push_back(add(e, r));
      out->push_back(add(e, neg(r)));
      return;
    }
  } catch (ParseError&) {
  }
  p_ = save;
  t_.rewind(ns);
  if (no_relation) {
    out->push_back(expr());
  } else {
    out->push_back(relation());
  }
}

bool Parser::try_set_atom(int* out, T closer) {
  (void)closer;
  T t = ct();
  if (t == T::SetLit) throw Unsure{"number sets"};
  if (t == T::EmptySet) {
    ++p_;
    *out = t_.leaf(NK::EmptySet);
    return true;
  }
  if (t == T::LBrace && peek() == T::RBrace) {
    p_ += 2;
    *out = t_.leaf(NK::EmptySet);
    return true;
  }
  if (t == T::LParen || t == T::LBracket || t == T::LParenVis || t == T::LBrack || t == T::LGroup) {
    *out = interval_or_tuple();
    return true;
  }
  if (t == T::LBrace || t == T::LBraceVis || (t == T::Cmd && cur().text == "boxed")) {
    bool boxed = t == T::Cmd;
    ++p_;
    if (boxed) expect(T::LBrace);
    T close = (t == T::LBraceVis) ? T::RBraceVis : T::RBrace;
    auto groups = semicolon_elements(false, close);
    expect(close);
    if (boxed) {
      *out = set_or_tuple(groups);
    } else {
      std::vector<int> kids;
      for (auto& g : groups)
        for (int k : g) kids.push_back(k);
      *out = t_.op(NK::FSet, kids);
    }
    return true;
  }
  return false;
}

int Parser::interval_or_tuple() {
  T open = ct();
  ++p_;
  // interval: open expr , expr close
  size_t save = p_;
  size_t ns = t_.nodes.size();
  try {
    int a = expr();
    if (accept(T::Comma)) {
      int b = expr();
      T close = ct();
      if (close == T::RParen || close == T::RBracket || close == T::RParenVis || close == T::RBrack ||
          close == T::RGroup) {
        ++p_;
        if (open == T::LBrack || open == T::LGroup || close == T::RBrack || close == T::RGroup)
          throw Unsure{"rare interval delimiters"};
        Node n;
        n.kind = NK::Interval;
        n.lopen = open == T::LParen || open == T::LParenVis;
        n.ropen = close == T::RParen || close == T::RParenVis;
        n.kids = {a, b};
        return t_.add(n);  // empty / degenerate intervals are resolved in equiv (they need values)
      }
    }
  } catch (ParseError&) {
  }
  p_ = save;
  t_.rewind(ns);
  // ordered tuple: ( elements ) | \( elements \) | [ elements ]
  T close;
  if (open == T::LParen) close = T::RParen;
  else if (open == T::LParenVis) close = T::RParenVis;
  else if (open == T::LBracket) close = T::RBracket;
  else throw ParseError{};
  auto groups = semicolon_elements(false, close);
  expect(close);
  if (groups.size() == 1 && groups[0].size() == 1) return groups[0][0];
  std::vector<int> kids;
  for (auto& g : groups)
    for (int k : g) kids.push_back(k);
  return t_.op(NK::Tuple, kids);
}

int Parser::relation() {
  Guard g(depth_);
  int lh = expr();
  while (true) {
    T t = ct();
    RelOp op;
    bool approx = false;
    switch (t) {
      case T::Assign:
      case T::EqEq: op = RelOp::Eq; break;
      case T::Lt: op = RelOp::Lt; break;
      case T::Le: op = RelOp::Le; break;
      case T::Gt: op = RelOp::Gt; break;
      case T::Ge: op = RelOp::Ge; break;
      case T::Ne: op = RelOp::Ne; break;
      case T::Approx: approx = true; op = RelOp::Eq; break;
      case T::In: throw Unsure{"\\in inside a relation"};
      default: return lh;
    }
    ++p_;
    int rh = expr();
    if (approx) {
      const Node& ln = t_.at(lh);
      if (ln.kind == NK::Rel || ln.kind == NK::And) throw Unsure{"approx chain"};
      lh = is_symbols_only(lh) ? rh : lh;
      continue;
    }
    const Node& ln = t_.at(lh);
    if (ln.kind == NK::And) {
      int last = ln.kids.back();
      int prev_rhs = t_.at(last).kids[1];
      int r = t_.rel(op, prev_rhs, rh);
      std::vector<int> kids = t_.at(lh).kids;
      kids.push_back(r);
      lh = t_.op(NK::And, kids);
    } else if (ln.kind == NK::Rel) {
      int r = t_.rel(op, t_.at(lh).kids[1], rh);
      lh = t_.op(NK::And, {lh, r});
    } else {
      lh = t_.rel(op, lh, rh);
    }
  }
}

int Parser::expr() {
  Guard g(depth_);
  return additive();
}

int Parser::additive() {
  int lh = mp(false);
  while (ct() == T::Add || ct() == T::Sub) {
    bool sub = ct() == T::Sub;
    ++p_;
    int rh = mp(false);
    if (sub) {
      if (is_matrix(rh) || is_matrix(lh)) throw Unsure{"matrix arithmetic"};
      rh = is_number(rh) ? negate_number(rh) : mul(t_.num(Rational(-1)), rh);
    }
    lh = add(lh, rh);
  }
  return lh;
}

int Parser::mp(bool nofunc) {
  Guard g(depth_);
  int lh = unary(nofunc);
  while (true) {
    T t = ct();
    if (t == T::Mul) {
      ++p_;
      lh = mul(lh, unary(nofunc));
    } else if (t == T::Div || t == T::Colon) {
      ++p_;
      lh = div(lh, unary(nofunc));
    } else if (t == T::Cmd && cur().text == "mod") {
      // a \mod b: sympy.Mod(a, b, evaluate=False) at the level of * and /
      ++p_;
      int rh = unary(nofunc);
      if (is_matrix(lh) || is_matrix(rh)) throw Unsure{"mod"};
      lh = t_.func("Mod", {lh, rh});
    } else {
      return lh;
    }
  }
}

int Parser::unary(bool nofunc) {
  Guard g(depth_);
  if (accept(T::Add)) return unary(nofunc);
  if (accept(T::Sub)) return neg(unary(nofunc));
  std::vector<int> parts{postfix(true)};
  while (starts_comp(!nofunc)) parts.push_back(postfix(!nofunc));
  // right-fold with the mixed-number rule: Integer followed by a positive Rational
  int rh = parts.back();
  for (size_t i = parts.size() - 1; i-- > 0;) {
    int res = parts[i];
    if (is_int(res) && is_rational_num(rh)) {
      const Rational& r = t_.at(rh).val;
      if (!r.num.is_neg() && !r.num.is_zero()) {
        const Rational& a = t_.at(res).val;
        BigInt whole = a.num * r.den;
        BigInt num = a.num.is_neg() ? whole - r.num : whole + r.num;
        rh = t_.num(Rational::make(num, r.den));
        continue;
      }
    }
    rh = mul(res, rh);
  }
  return rh;
}

bool Parser::starts_comp(bool allow_func) const {
  switch (ct()) {
    case T::Num: case T::PctNum: case T::ENot: case T::Letter: case T::ExpE: case T::EUpper: case T::Diff:
    case T::Greek: case T::OtherSym: case T::Accent: case T::Infty: case T::LParen: case T::LBracket:
    case T::LBrace: case T::LBraceVis: case T::LGroup: case T::LBrack: case T::MatBegin:
      return true;
    case T::Bar:
      if (abs_depth_ > 0) return false;
      throw Unsure{"bars inside a product"};
    case T::Cmd: {
      const std::string& w = cur().text;
      if (w == "frac" || w == "dfrac" || w == "tfrac" || w == "cfrac" || w == "binom" || w == "dbinom" ||
          w == "tbinom" || w == "boxed" || w == "phantom" || w == "sqrt" || w == "lfloor" || w == "lceil" ||
          w == "llcorner" || w == "ulcorner" || w == "langle")
        return true;
      if (single_arg_funcs().count(w) || w == "Gamma" || w == "gamma" || w == "gcd" || w == "lcm" || w == "max" ||
          w == "min" || w == "operatorname" || w == "int" || w == "sum" || w == "prod" || w == "lim" ||
          w == "exponentialE" || w == "mathit")
        return allow_func || w == "Gamma" || w == "gamma";
      return false;
    }
    default:
      return false;
  }
}

int Parser::postfix(bool allow_func) {
  Guard g(depth_);
  int e = exp_(allow_func);
  while (true) {
    if (ct() == T::Bang) {
      ++p_;
      // "!=" written together is one token (Ne, see the lexer); "5! = 120" with anything between
      // the two is a factorial and then '=' for the reference's lexer too
      e = t_.func("factorial", {e});
    } else if (ct() == T::Degree) {
      ++p_;  // degrees are kept as plain numbers (convert_degrees=False)
    } else if (ct() == T::Bar && abs_depth_ == 0) {
      throw Unsure{"eval-at bar"};
    } else {
      return e;
    }
  }
}

// \sum_{k=a}^{b} body, \prod_{k=a}^{b} body, \lim_{n \to a} body (body: a product, the grammar's
// mp), in the reference's one accepted shape of each. The value is opaque: a node no comparison can
// evaluate or match (each gets its own name), so a verdict that needs it stays undecided, while an
// equation's left side \sum ... = rhs is dropped like any other. Any other shape stays undecided.
int Parser::big_operator() {
  const bool lim = cur().text == "lim";
  const std::string kind = cur().text;
  ++p_;
  // the grammar needs a subscript (or, for \sum / \prod, a superscript) right after the operator
  if (ct() != T::Underscore && (lim || ct() != T::Caret)) throw ParseError{};
  BigOp op;
  try {
    expect(T::Underscore);
    expect(T::LBrace);
    if (ct() != T::Letter && ct() != T::Greek) throw Unsure{"command"};
    if (ct() == T::Letter && cur().text != "I") op.var = std::string(1, to_lower(cur().text[0]));
    ++p_;
    if (lim) {
      if (!(ct() == T::Cmd && is_approach(cur().text))) throw Unsure{"command"};
      ++p_;
      expr();
    } else {
      expect(T::Assign);
      op.lo = expr();
    }
    expect(T::RBrace);
    if (!lim) {
      expect(T::Caret);
      op.hi = sup_value();
    }
    if (ct() == T::Caret || ct() == T::Underscore) throw Unsure{"command"};
    op.body = mp(false);
  } catch (ParseError&) {
    throw Unsure{"command"};
  }
  // a process-wide counter: no two opaque nodes, in any gold or response, share a name
  static std::atomic<uint64_t> counter{0};
  op.name = "opaque:" + kind + std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
  int id = t_.func(op.name, {});
  // Sum(body, (var, lo, hi)) / Product: kept for an evaluation where the bounds are integers (the
  // record goes with its nodes if the parser backtracks)
  if (!lim && !op.var.empty()) {
    op.prod = kind == "prod";
    t_.bigops.push_back(op);
  }
  return id;
}

// sympy.binomial(n, k) evaluates as it is built (binomial.eval): k = 0 gives 1, k = 1 gives n, a
// negative integer k gives 0, and rational n with integer k gives the rational value (so
// 2\binom{4}{2} is the mixed number 2 + 6 there). Symbolic arguments stay binomial(n, k); shapes
// whose evaluation we do not mirror (floats, numeric expressions, fractional k) stay undecided.
int Parser::binomial(int n, int k) {
  if (is_matrix(n) || is_matrix(k)) throw Unsure{"binomial of a matrix"};
  for (int x : {n, k}) {
    std::vector<int> stack{x};
    while (!stack.empty()) {
      const Node& m = t_.at(stack.back());
      stack.pop_back();
      if (m.kind == NK::Num && m.isfloat) throw Unsure{"float binomial"};
      if (m.kind == NK::Func && m.name.rfind("opaque:", 0) == 0) throw Unsure{"binomial"};
      for (int c : m.kids) stack.push_back(c);
    }
  }
  Rational kv, nv;
  const bool k_val = !has_symbol(k) && exact_value(k, &kv), n_val = !has_symbol(n) && exact_value(n, &nv);
  if (k_val && (n_val || has_symbol(n))) {
    // binomial.eval's checks, in its order, on the values (the arguments may be unevaluated sums)
    if (kv.is_zero()) return t_.num(Rational(1));
    const Rational d = n_val ? nv - kv : Rational(1);  // (unused without a value of n)
    const bool nonneg_or_frac = n_val && (!nv.is_neg() || !nv.is_integer());
    if (nonneg_or_frac && d.is_zero()) return t_.num(Rational(1));
    if (kv == Rational(1)) return n;
    if (nonneg_or_frac && d == Rational(1)) return n;
    if (!kv.is_integer()) throw Unsure{"binomial with a fractional k"};  // Gamma quotients there
    if (kv.is_neg() || (n_val && !nv.is_neg() && nv.is_integer() && d.is_neg())) return t_.num(Rational(0));
    // _eval computes a value only for an Integer k (not for an unevaluated 3 - 1) and a number n
    if (!is_rational_num(k) || !n_val) return t_.func("binomial", {n, k});
    if (!kv.num.fits_int64() || kv.num.to_int64() > 1000) throw Unsure{"huge binomial"};
    const int64_t kk = kv.num.to_int64();
    if (nv.is_integer() && !nv.is_neg()) {
      if (Rational::cmp(kv, nv) > 0) return t_.num(Rational(0));
      if (!nv.num.fits_int64() || nv.num.to_int64() > 1000000) throw Unsure{"huge binomial"};
    } else if (nv.num.log10_abs() > 12 || nv.den.log10_abs() > 12) {
      throw Unsure{"huge binomial"};
    }
    // (n - k + 1) (n - k + 2) ... n / k!: the value both of _eval's branches compute
    Rational acc(1);
    for (int64_t i = 1; i <= kk; ++i) acc = acc * (nv - kv + Rational(i)) / Rational(i);
    return t_.num(acc);
  }
  if (has_symbol(k) && has_symbol(n)) return t_.func("binomial", {n, k});
  if (has_symbol(k) && n_val) {
    // a negative integer n with a k not known to be an integer is zoo there
    if (!nv.is_integer() || !nv.is_neg()) return t_.func("binomial", {n, k});
  }
  throw Unsure{"binomial"};
}

// the exact value of a symbol-free rational expression (numbers, + * and integer powers)
bool Parser::exact_value(int id, Rational* out) const {
  const Node& m = t_.at(id);
  switch (m.kind) {
    case NK::Num:
      if (m.isfloat) return false;
      *out = m.val;
      return true;
    case NK::Add:
    case NK::Mul: {
      Rational acc(m.kind == NK::Add ? 0 : 1);
      for (int c : m.kids) {
        Rational v;
        if (!exact_value(c, &v)) return false;
        acc = m.kind == NK::Add ? acc + v : acc * v;
      }
      *out = acc;
      return true;
    }
    case NK::Pow: {
      Rational b, e;
      if (!exact_value(m.kids[0], &b) || !exact_value(m.kids[1], &e)) return false;
      if (!e.is_integer() || !e.num.fits_int64()) return false;
      int64_t x = e.num.to_int64();
      if (x < -64 || x > 64 || (b.is_zero() && x < 0)) return false;
      Rational acc(1);
      for (int64_t i = 0; i < (x < 0 ? -x : x); ++i) acc = acc * b;
      *out = x < 0 ? Rational(1) / acc : acc;
      return true;
    }
    default:
      return false;
  }
}

bool Parser::has_symbol(int id) const {
  const Node& m = t_.at(id);
  if (m.kind == NK::Sym) return true;
  for (int c : m.kids)
    if (has_symbol(c)) return true;
  return false;
}

// \max / \min arguments are re-parsed there from the text of their tokens joined without the
// spaces between them, split at every comma: undecided where that text could read differently
// (2 3 becomes 23, \le q becomes \leq) or split differently (a nested comma).
void Parser::check_reparsed_args(size_t from, size_t to) const {
  int depth = 0;
  for (size_t i = from; i < to; ++i) {
    const Tok& k = tk_[i];
    if (k.t == T::LParen || k.t == T::LBracket || k.t == T::LBrace || k.t == T::LBraceVis || k.t == T::LParenVis)
      ++depth;
    else if (k.t == T::RParen || k.t == T::RBracket || k.t == T::RBrace || k.t == T::RBraceVis ||
             k.t == T::RParenVis)
      --depth;
    else if (k.t == T::Comma && depth != 0)
      throw Unsure{"nested comma in a max / min argument"};
    if (k.t == T::Accent && k.text.find(',') != std::string::npos) throw Unsure{"comma in a max / min argument"};
    if (i + 1 < to && tk_[i + 1].b > k.e) {
      auto word = [](char c) { return is_alnum(c) || c == '.'; };
      if (word(src_[k.e - 1]) && word(src_[tk_[i + 1].b])) throw Unsure{"spaced max / min argument"};
    }
  }
}

// \gcd(4, 6), \lcm(4, 6), \gcd(u, v): the reference re-parses each argument's text, nsimplify()s
// it and returns UnevaluatedExpr(sympy.gcd(args)) (a number that later doit() unwraps; no mixed
// number or fraction literal is formed with it). Decided for non-negative integer literals, and
// for the gcd of distinct single-letter symbols (polynomial gcd 1); anything else is undecided.
int Parser::gcd_lcm() {
  const bool is_gcd = cur().text == "gcd";
  size_t q = p_ + 2;  // after "\gcd ("
  std::vector<BigInt> ints;
  std::vector<std::string> syms;
  while (true) {
    const Tok& a = tk_[q];
    if (a.t == T::Num && a.text.find('.') == std::string::npos) {
      BigInt v;
      BigInt::from_string(a.text, &v);
      ints.push_back(v);
    } else if (a.t == T::Letter && a.text != "I") {
      std::string nm(1, to_lower(a.text[0]));
      if (std::find(syms.begin(), syms.end(), nm) != syms.end()) throw Unsure{"command"};
      syms.push_back(nm);
    } else {
      throw Unsure{"command"};
    }
    ++q;
    if (tk_[q].t == T::Comma) {
      ++q;
      continue;
    }
    if (tk_[q].t != T::RParen) throw Unsure{"command"};
    break;
  }
  int val;
  if (!syms.empty()) {
    if (!ints.empty() || !is_gcd || syms.size() < 2) throw Unsure{"command"};
    val = t_.num(Rational(1));
  } else {
    if (ints.size() < 2) throw Unsure{"command"};
    BigInt acc = ints[0];
    for (size_t i = 1; i < ints.size(); ++i) {
      if (is_gcd) {
        acc = BigInt::gcd(acc, ints[i]);
      } else if (acc.is_zero() || ints[i].is_zero()) {
        acc = BigInt(0);
      } else {
        BigInt g = BigInt::gcd(acc, ints[i]), quo;
        BigInt::divmod(acc, g, &quo, nullptr);
        acc = quo * ints[i];
      }
    }
    val = t_.num(Rational(acc));
  }
  p_ = q + 1;
  return t_.func("UnevaluatedExpr", {val});
}

int Parser::brace_expr() {
  expect(T::LBrace);
  int e = expr();
  expect(T::RBrace);
  return e;
}

int Parser::sup_value() {  // after '^': atom | { expr }
  if (ct() == T::LBrace) return brace_expr();
  return atom();
}

int Parser::exp_(bool allow_func) {
  int base = comp(allow_func);
  while (ct() == T::Caret) {
    ++p_;
    int e = sup_value();
    if (ct() == T::Underscore) throw Unsure{"sub after sup"};
    base = t_.op(NK::Pow, {base, e});
  }
  return base;
}

int Parser::frac() {
  ++p_;  // \frac
  expect(T::LBrace);
  if (ct() == T::Diff || ct() == T::Partial) throw Unsure{"derivative"};
  int top = expr();
  expect(T::RBrace);
  expect(T::LBrace);
  if (ct() == T::Diff || ct() == T::Partial) throw Unsure{"derivative"};
  int bot = expr();
  expect(T::RBrace);
  return div(top, bot);
}

int Parser::matrix() {
  std::string kind = cur().text;
  ++p_;
  std::vector<std::vector<int>> rows;
  rows.emplace_back();
  rows.back().push_back(expr());
  while (true) {
    if (accept(T::Amp)) {
      rows.back().push_back(expr());
    } else if (accept(T::RowSep)) {
      if (ct() == T::MatEnd) break;
      rows.emplace_back();
      rows.back().push_back(expr());
    } else {
      break;
    }
  }
  if (ct() != T::MatEnd || cur().text != kind) throw ParseError{};
  ++p_;
  size_t cols = rows[0].size();
  for (auto& r : rows)
    if (r.size() != cols) throw Unsure{"ragged matrix"};
  Node n;
  n.kind = NK::Matrix;
  n.rows = (int)rows.size();
  n.cols = (int)cols;
  for (auto& r : rows)
    for (int k : r) n.kids.push_back(k);
  return t_.add(n);
}

int Parser::func() {
  std::string name = cur().text;
  ++p_;
  if (!single_arg_funcs().count(name)) throw Unsure{"function"};
  if (name == "floor" || name == "ceil" || name == "det") throw Unsure{"floor/ceil/det"};
  int sub = -1, sup = -1;
  for (int k = 0; k < 2; ++k) {
    if (ct() == T::Underscore && sub < 0) {
      ++p_;
      if (ct() == T::ExpE) throw ParseError{};
      sub = ct() == T::LBrace ? brace_expr() : atom();
    } else if (ct() == T::Caret && sup < 0) {
      ++p_;
      sup = sup_value();
    }
  }
  int arg;
  size_t save = p_;
  size_t ns = t_.nodes.size();
  bool done = false;
  if (ct() == T::LParen) {
    try {
      ++p_;
      arg = expr();
      expect(T::RParen);
      done = true;
    } catch (ParseError&) {
      p_ = save;
      t_.rewind(ns);
    }
  }
  if (!done) arg = mp(true);
  std::string fname = name;
  if (name.rfind("arc", 0) == 0) fname = "a" + name.substr(3);
  else if (name == "arsinh" || name == "arcosh" || name == "artanh") fname = "a" + name.substr(2);
  std::vector<int> kids{arg};
  if (name == "log" || name == "ln") {
    if (sub >= 0) kids.push_back(sub);
    else if (name == "log") kids.push_back(t_.num(Rational(10)));
    else kids.push_back(t_.leaf(NK::E));
    fname = "log";
  } else if (sub >= 0) {
    throw Unsure{"subscripted function"};
  }
  if (sup >= 0) {
    const Node& sn = t_.at(sup);
    bool minus_one = sn.kind == NK::Num && !sn.isfloat && sn.val == Rational(-1);
    static const std::set<std::string> invertible = {"sin", "cos", "tan", "csc", "sec", "cot", "sinh", "cosh", "tanh"};
    if (minus_one && invertible.count(fname)) {
      fname = "a" + fname;
      sup = -1;
    }
  }
  if (fname == "exp") {
    int e = t_.op(NK::Pow, {t_.leaf(NK::E), arg});
    if (sup >= 0) e = t_.op(NK::Pow, {e, sup});
    return e;
  }
  int f = t_.func(fname, kids);
  if (sup >= 0) f = t_.op(NK::Pow, {f, sup});
  return f;
}

int Parser::comp(bool allow_func) {
  Guard g(depth_);
  T t = ct();
  switch (t) {
    case T::LParen: {
      ++p_;
      int e = expr();
      expect(T::RParen);
      return e;
    }
    case T::LBracket: {
      ++p_;
      int e = expr();
      expect(T::RBracket);
      return e;
    }
    case T::LBrace: {
      ++p_;
      int e = expr();
      if (ct() == T::Cmd && cur().text == "choose") {  // binom: { upper \choose lower }
        ++p_;
        int lower = expr();
        expect(T::RBrace);
        return binomial(e, lower);
      }
      expect(T::RBrace);
      return e;
    }
    case T::LBraceVis: {
      ++p_;
      int e = expr();
      expect(T::RBraceVis);
      return e;
    }
    case T::LGroup:
    case T::LBrack:
      throw Unsure{"rare group"};
    case T::Bar: {
      if (cur().text != "|") throw Unsure{"norm / vert"};
      ++p_;
      ++abs_depth_;
      int e = expr();
      --abs_depth_;
      expect(T::Bar);
      return t_.func("Abs", {e});
    }
    case T::MatBegin:
      return matrix();
    case T::Cmd: {
      const std::string& w = cur().text;
      if (w == "frac" || w == "dfrac" || w == "tfrac" || w == "cfrac") return frac();
      if (w == "boxed" || w == "phantom") {
        ++p_;
        return brace_expr();
      }
      if (w == "sqrt") {
        ++p_;
        int root = -1;
        if (accept(T::LBracket)) {
          root = expr();
          expect(T::RBracket);
        }
        int base = brace_expr();
        int e;
        if (root < 0) {
          e = t_.num(Rational::make(BigInt(1), BigInt(2)));
        } else if (is_int(root)) {
          if (t_.at(root).val.is_zero()) throw Unsure{"zeroth root"};
          e = t_.num(Rational::make(BigInt(1), t_.at(root).val.num));
        } else {
          e = inv(root);
        }
        return t_.op(NK::Pow, {base, e});
      }
      if (w == "binom" || w == "dbinom" || w == "tbinom") {
        ++p_;
        int a = brace_expr();
        int b = brace_expr();
        return binomial(a, b);
      }
      if (w == "lfloor" || w == "llcorner" || w == "lceil" || w == "ulcorner") {
        // floor_group / ceil_group (also without functions): floor(expr, evaluate=False)
        bool fl = w == "lfloor" || w == "llcorner";
        const char* close = w == "lfloor" ? "rfloor" : w == "llcorner" ? "lrcorner" : w == "lceil" ? "rceil" : "urcorner";
        ++p_;
        int e = expr();
        if (!is_cmd(close)) throw ParseError{};
        ++p_;
        return t_.func(fl ? "floor" : "ceiling", {e});
      }
      if (single_arg_funcs().count(w)) {
        if (!allow_func) throw ParseError{};
        return func();
      }
      if (allow_func && (w == "sum" || w == "prod" || w == "lim")) return big_operator();
      if (allow_func && (w == "gcd" || w == "lcm") && peek() == T::LParen) return gcd_lcm();
      if (allow_func && (w == "max" || w == "min") && peek() == T::LParen) {
        // \max(a) is a; \max(a, b, ...) is sympy's unevaluated Max: opaque, like \sum
        ++p_;
        ++p_;
        std::vector<int> args;
        const size_t first = p_;
        try {
          while (true) {
            args.push_back(expr());
            if (accept(T::Comma)) continue;
            expect(T::RParen);
            break;
          }
        } catch (ParseError&) {
          throw Unsure{"command"};
        }
        check_reparsed_args(first, p_ - 1);
        if (args.size() == 1) return args[0];
        static std::atomic<uint64_t> counter{0};
        return t_.func("opaque:" + w + std::to_string(counter.fetch_add(1, std::memory_order_relaxed)), {});
      }
      if (w == "gamma" || w == "Gamma") {
        // FUNC_GAMMA is an atom (get_symbol: EulerGamma) or the gamma function of what follows;
        // with nothing that could be its argument after it (\sin(\gamma), \frac{\gamma}{2}, \gamma = 2)
        // it can only be the constant
        switch (peek()) {
          case T::RParen: case T::RBrace: case T::RBracket: case T::Eof: case T::Assign: case T::EqEq:
          case T::Lt: case T::Le: case T::Gt: case T::Ge: case T::Ne: case T::Comma: case T::Semi: case T::Mul:
          case T::Div:
            ++p_;
            return t_.func("EulerGamma", {});
          default:
            break;
        }
      }
      throw Unsure{"command"};
    }
    case T::ExpE: {
      ++p_;
      if (ct() == T::Caret) {
        ++p_;
        int e = sup_value();
        return t_.op(NK::Pow, {t_.leaf(NK::E), e});
      }
      return t_.leaf(NK::E);
    }
    default:
      return atom();
  }
}

std::string Parser::sub_text() {  // after '_': atom | { expr | args } -> source text
  if (ct() == T::LBrace) {
    int depth = 0;
    std::string out;
    size_t start = p_;
    do {
      if (ct() == T::Eof) throw ParseError{};
      if (ct() == T::LBrace) ++depth;
      if (ct() == T::RBrace) --depth;
      ++p_;
    } while (depth > 0);
    bool simple = true;
    for (size_t i = start + 1; i + 1 < p_ && simple; ++i) {
      const Tok& k = tk_[i];
      if (k.t == T::Diff && k.e - k.b != 2) simple = false;  // "d x", "d\alpha": by source text, below
      else if (k.t == T::Num || k.t == T::Letter || k.t == T::ExpE || k.t == T::EUpper || k.t == T::Diff) out += k.text;
      else if (k.t == T::Add) out += "+";
      else if (k.t == T::Sub) out += "-";
      else if (k.t == T::Comma) out += ",";
      else simple = false;
    }
    if (simple) {
      if (out.empty()) throw ParseError{};
      return out;
    }
    // any other subscript (a_{\sigma(1)}, A_{\text{min}}, a_{2^r}): the grammar's expr or args,
    // which the reference names by its token texts run together (getText()); the parse only
    // checks it is one
    size_t end = p_;
    p_ = start + 1;
    expr();
    while (accept(T::Comma)) expr();
    if (p_ != end - 1) throw ParseError{};
    p_ = end;
    return raw_text(start + 1, end - 1);
  }
  const Tok& k = cur();
  if (k.t == T::Num || k.t == T::Letter || k.t == T::EUpper) {
    ++p_;
    return k.text;
  }
  if (k.t == T::ExpE) throw ParseError{};  // 'e' is no atom of the grammar
  if (k.t == T::Greek || k.t == T::OtherSym || k.t == T::Infty || k.t == T::Accent) {
    // a single atom: a_\infty, x_\alpha, A_\text{max} (by its source text, as above)
    if (peek() == T::Underscore || peek() == T::Caret) throw Unsure{"complex subscript"};
    ++p_;
    return raw_text(p_ - 1, p_);
  }
  throw Unsure{"complex subscript"};
}

// the reference's getText() of tokens [a, b): their source texts without the skipped whitespace
std::string Parser::raw_text(size_t a, size_t b) const {
  std::string out;
  for (size_t i = a; i < b; ++i) out += src_.substr(tk_[i].b, tk_[i].e - tk_[i].b);
  return strip(out);  // getText().strip()
}

int Parser::atom_expr() {
  const Tok& k = cur();
  std::string name;
  switch (k.t) {
    case T::Letter:
      if (k.text == "I" && peek() != T::Underscore && peek() != T::Caret) {
        ++p_;
        if (ct() == T::LParen) throw Unsure{"function call"};
        return t_.leaf(NK::I);
      }
      name = k.text;
      break;
    case T::Greek:
      name = k.text;
      break;
    case T::OtherSym:
      name = k.text;
      break;
    case T::Accent: {
      std::string acc = k.aux, txt;
      for (char c : k.text)
        if (c != ' ') txt += c;
      if (acc == "bar" || acc == "overline") name = "bar{" + txt + "}";
      else if (acc == "vec" || acc == "overrightarrow") name = "vec{" + txt + "}";
      else if (acc == "tilde" || acc == "widetilde") name = "tilde{" + txt + "}";
      else if (acc.find("text") != std::string::npos || acc.find("mbox") != std::string::npos) {
        for (char c : txt)
          if (c != '(' && c != ')') name += c;
        if (name.empty()) throw Unsure{"empty text"};
        for (char c : name)
          if (!is_alnum(c) && c != ' ' && c != '_' && c != '.') throw Unsure{"text with symbols"};
      } else if (acc.find("math") != std::string::npos) {
        name = "math{" + txt + "}";
      } else {
        name = acc + "{" + txt + "}";
      }
      break;
    }
    default:
      throw ParseError{};
  }
  ++p_;
  std::string sub;
  int sup = -1;
  for (int r = 0; r < 2; ++r) {
    if (ct() == T::Underscore && sub.empty()) {
      ++p_;
      std::string st = sub_text();
      sub = st.size() > 1 ? "_{" + st + "}" : "_" + st;
    } else if (ct() == T::Caret && sup < 0) {
      ++p_;
      sup = sup_value();
    }
  }
  if (ct() == T::LParen || (ct() == T::LBracket)) {
    // f(x): a letter directly applied to a single atom or to comma-separated arguments is a
    // function call in the reference grammar; a product otherwise. Leave those to the fallback.
    size_t q = p_ + 1;
    int depth = 1;
    bool comma = false;
    size_t ntok = 0;
    for (; q < tk_.size() && depth > 0; ++q) {
      T tt = tk_[q].t;
      if (tt == T::LParen || tt == T::LBracket || tt == T::LBrace) ++depth;
      else if (tt == T::RParen || tt == T::RBracket || tt == T::RBrace) --depth;
      else if (tt == T::Comma && depth == 1) comma = true;
      if (depth > 0) ++ntok;
    }
    if (comma || ntok <= 1) {
      // an undefined function applied to its arguments, f(x) / C(n, k), as the reference builds
      // it (sympy.Function(name)(*args)); it never evaluates (comparisons that need its value
      // stay undecided), but an equation's left side f(x) = ... is dropped like any other
      if (sup >= 0 || ntok == 0 || ct() != T::LParen) throw Unsure{"function call"};
      if (name.empty() || (name.size() == 1 && name[0] == 'I')) throw Unsure{"function call"};
      size_t save = p_;
      std::vector<int> args;
      try {
        ++p_;
        while (true) {
          args.push_back(expr());
          if (accept(T::Comma)) continue;
          expect(T::RParen);
          break;
        }
      } catch (ParseError&) {
        p_ = save;
        // with a comma at the top of well-closed parentheses this can only be func_common_args
        // (expr ',' args, or expr ','), so a syntax error in it is one there too
        bool brackets = false;
        for (size_t i = save + 1; i + 1 < q; ++i)
          brackets = brackets || tk_[i].t == T::LBracket || tk_[i].t == T::RBracket;
        if (depth == 0 && comma && !brackets && tk_[q - 2].t != T::Comma) throw;
        throw Unsure{"function call"};
      }
      int f = t_.func("fn:" + name + sub, args);
      if (ct() == T::Caret) {
        ++p_;
        f = t_.op(NK::Pow, {f, sup_value()});
      }
      return f;
    }
  }
  // a name that is a known constant
  std::string lname;
  for (char c : name) lname += to_lower(c);
  int base;
  std::string full = lname + sub;
  for (char& c : full) c = to_lower(c);
  if (full == "pi") base = t_.leaf(NK::Pi);
  else if (full == "gamma") throw Unsure{"EulerGamma"};
  else base = t_.leaf(NK::Sym, full);
  if (sup >= 0) return t_.op(NK::Pow, {base, sup});
  return base;
}

int Parser::atom() {
  const Tok& k = cur();
  switch (k.t) {
    case T::Letter:
    case T::Greek:
    case T::OtherSym:
    case T::Accent:
      return atom_expr();
    case T::Infty:
      ++p_;
      return t_.leaf(NK::Inf);
    case T::Partial:
      throw ParseError{};
    case T::Num:
    case T::PctNum:
    case T::ENot: {
      std::string text = k.text;
      T kind = k.t;
      ++p_;
      if (kind == T::Num && ct() == T::Underscore) {  // number_subexpr: the subscript is ignored
        ++p_;
        (void)sub_text();
      }
      int n;
      bool isfloat = text.find('.') != std::string::npos || kind == T::ENot;
      int digits = 0;
      for (char c : text)
        if (is_digit(c)) ++digits;
      if (kind == T::ENot) {
        size_t epos = text.find('E');
        std::string mant = text.substr(0, epos);
        long ex = std::strtol(text.c_str() + epos + 1, nullptr, 10);
        if (ex > 300 || ex < -300) throw TooBig{"exponent"};
        size_t dot = mant.find('.');
        std::string digs = dot == std::string::npos ? mant : mant.substr(0, dot) + mant.substr(dot + 1);
        long frac = dot == std::string::npos ? 0 : (long)(mant.size() - dot - 1);
        BigInt m;
        BigInt::from_string(digs, &m);
        long e10 = ex - frac;
        Rational v = e10 >= 0 ? Rational(m * BigInt::pow10((int)e10)) : Rational::make(m, BigInt::pow10((int)-e10));
        n = t_.num(v, true, digits);
      } else if (isfloat) {
        size_t dot = text.find('.');
        std::string digs = text.substr(0, dot) + text.substr(dot + 1);
        BigInt m;
        BigInt::from_string(digs, &m);
        n = t_.num(Rational::make(m, BigInt::pow10((int)(text.size() - dot - 1))), true, digits);
      } else {
        BigInt m;
        BigInt::from_string(text, &m);
        n = t_.num(Rational(m));
      }
      if (kind == T::PctNum) return t_.op(NK::Pct, {n});
      return n;
    }
    case T::EUpper:
      ++p_;
      return t_.leaf(NK::Sym, "e");
    case T::ExpE:
      throw ParseError{};  // 'e' is no atom of the grammar (x^e, \log_e fail there too)
    case T::Diff: {
      std::string name = k.text;
      ++p_;
      return t_.leaf(NK::Sym, name);
    }
    case T::Cmd:
      if (k.text == "Gamma" || k.text == "gamma") throw Unsure{"EulerGamma"};
      throw ParseError{};
    default:
      throw ParseError{};
  }
}

// ---- shapes the reference grammar never accepts, whatever surrounds them ------------------
// Each makes the whole input a syntax error there (latex2sympy raises; math-verify then tries the
// last equation of a chain, or the next candidate), even where our parser does not model every
// other token of the input. Only the tokens involved are checked.

// '_' (subexpr, subeq, limit_sub, eval_at_sub, transform_atom) takes an atom or '{': none of
// these tokens starts one
bool cannot_follow_underscore(T t) {
  switch (t) {
    case T::LParen: case T::RParen: case T::LBracket: case T::RBracket: case T::RBrace: case T::Add:
    case T::Sub: case T::Mul: case T::Div: case T::Comma: case T::Semi: case T::Assign: case T::EqEq:
    case T::Lt: case T::Le: case T::Gt: case T::Ge: case T::Ne: case T::Underscore: case T::Caret:
    case T::Eof:
      return true;
    default:
      return false;
  }
}

// index of the '}' closing the '{' at tk[open], or 0 when unbalanced (every '{' of the grammar
// is closed by a '}'; accents and \mathbb{..} swallow their own braces in both lexers)
size_t closing_brace(const std::vector<Tok>& tk, size_t open) {
  int depth = 0;
  for (size_t j = open; j < tk.size(); ++j) {
    if (tk[j].t == T::LBrace) ++depth;
    else if (tk[j].t == T::RBrace && --depth == 0) return j;
  }
  return 0;
}

// \sum / \prod: (subeq supexpr | supexpr subeq) mp, subeq = '_' '{' expr (= | == | \equiv) expr '}'.
// A subscript first that is no such equation (\sum_{s \in S}, \sum_{i<j}, \sum_k), or one not
// followed by '^', or neither '_' nor '^' after the operator, is an error. (A superscript first
// is left to the parser.)
bool bad_big_operator(const std::vector<Tok>& tk, size_t i) {
  size_t j = i + 1;
  if (tk[j].t == T::Caret) return false;
  if (tk[j].t != T::Underscore) return true;
  if (tk[j + 1].t != T::LBrace) return true;
  size_t m = closing_brace(tk, j + 1);
  if (m == 0) return true;
  bool eq = false;
  for (size_t q = j + 2; q < m; ++q) {
    switch (tk[q].t) {
      case T::In: case T::NotIn: case T::Lt: case T::Le: case T::Gt: case T::Ge: case T::Ne: case T::Approx:
        return true;  // no relation token can occur inside an expr
      case T::Assign: case T::EqEq:
        eq = true;
        break;
      default:
        break;
    }
  }
  return !eq || tk[m + 1].t != T::Caret;
}

// dot_product: \langle expr \rangle. A comma directly inside (no bracket of any kind open around
// it) belongs to no expr: \langle b, c \rangle is an error.
bool comma_in_angle(const std::vector<Tok>& tk, size_t i) {
  int depth = 0;
  for (size_t j = i + 1; j < tk.size(); ++j) {
    const Tok& k = tk[j];
    switch (k.t) {
      case T::LParen: case T::LBracket: case T::LBrace: case T::LBraceVis: case T::LParenVis: case T::LGroup:
      case T::LBrack:
        ++depth;
        break;
      case T::RParen: case T::RBracket: case T::RBrace: case T::RBraceVis: case T::RParenVis: case T::RGroup:
      case T::RBrack:
        if (--depth < 0) return false;
        break;
      case T::Comma:
        if (depth == 0) return true;
        break;
      case T::Cmd:
        if (k.text == "rangle" || k.text == "langle") return false;
        break;
      case T::MatBegin: case T::MatEnd: case T::Eof:
        return false;
      default:
        break;
    }
  }
  return false;
}

// LIM_APPROACH_SYM (\to, \rightarrow, ...) is a token of limit_sub only: \lim _ { x \to ...
bool stray_arrow(const std::vector<Tok>& tk, size_t i) {
  if (i < 4) return true;
  T v = tk[i - 1].t;
  return !(tk[i - 4].t == T::Cmd && tk[i - 4].text == "lim" && tk[i - 3].t == T::Underscore &&
           tk[i - 2].t == T::LBrace && (v == T::Letter || v == T::Greek || v == T::OtherSym));
}

bool definite_syntax_error(const std::vector<Tok>& tk) {
  for (size_t i = 0; i + 1 < tk.size(); ++i) {
    const Tok& k = tk[i];
    if (k.t == T::Underscore && cannot_follow_underscore(tk[i + 1].t)) return true;
    if (k.t == T::Cmd && (k.text == "sum" || k.text == "prod") && bad_big_operator(tk, i)) return true;
    if (k.t == T::Cmd && k.text == "langle" && comma_in_angle(tk, i)) return true;
    if (k.t == T::Cmd && is_approach(k.text) && stray_arrow(tk, i)) return true;
  }
  return false;
}

// comma_number_regex: ^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$
bool comma_number(const std::string& s, std::string* digits) {
  std::string t = strip(s);
  size_t i = 0;
  std::string out;
  if (i < t.size() && t[i] == '-') out += t[i++];
  size_t a = i;
  while (i < t.size() && is_digit(t[i])) ++i;
  if (i - a < 1 || i - a > 3) return false;
  out += t.substr(a, i - a);
  int groups = 0;
  while (i < t.size() && t[i] == ',') {
    if (i + 3 >= t.size() + 0 && i + 3 > t.size()) return false;
    for (int k = 1; k <= 3; ++k)
      if (i + (size_t)k >= t.size() || !is_digit(t[i + (size_t)k])) return false;
    out += t.substr(i + 1, 3);
    i += 4;
    ++groups;
  }
  if (groups == 0) return false;
  if (i < t.size() && t[i] == '.') {
    size_t b = i + 1;
    size_t j = b;
    while (j < t.size() && is_digit(t[j])) ++j;
    if (j == b) return false;
    out += t.substr(i, j - i);
    i = j;
  }
  if (i != t.size()) return false;
  *digits = out;
  return true;
}

}  // namespace

ParseStatus parse_latex(const std::string& s, Tree* out) {
  if (s.size() > Limits::kMaxAnswerBytes) throw TooBig{"answer too long"};
  out->nodes.clear();
  out->bigops.clear();
  out->root = -1;
  std::string digits;
  if (comma_number(s, &digits)) {
    // numbers like 1,000 (the reference reads them as one number); strip leading zeros
    bool isfloat = digits.find('.') != std::string::npos;
    bool neg = !digits.empty() && digits[0] == '-';
    std::string d = neg ? digits.substr(1) : digits;
    if (isfloat) {
      size_t dot = d.find('.');
      std::string m = d.substr(0, dot) + d.substr(dot + 1);
      BigInt v;
      BigInt::from_string(m, &v);
      if (neg) v = -v;
      int nd = 0;
      for (char c : m)
        if (is_digit(c)) ++nd;
      out->root = out->num(Rational::make(v, BigInt::pow10((int)(d.size() - dot - 1))), true, nd);
    } else {
      BigInt v;
      BigInt::from_string(d, &v);
      if (neg) v = -v;
      out->root = out->num(Rational(v));
    }
    return ParseStatus::Ok;
  }
  std::vector<Tok> toks;
  try {
    toks = Lexer(s).run();
  } catch (ParseError&) {
    return ParseStatus::Fail;
  }
  bool all_basic = true;
  for (const Tok& t : toks) all_basic = all_basic && t.basic;
  if (toks.size() == 1) return ParseStatus::Fail;  // empty
  if (definite_syntax_error(toks)) return ParseStatus::Fail;
  Parser p(toks, out, s);
  try {
    out->root = p.math();
  } catch (ParseError&) {
    if (all_basic) return ParseStatus::Fail;
    throw Unsure{"syntax error with rare tokens"};
  }
  return ParseStatus::Ok;
}

// ---------------------------------------------------------------------------------- plain expr
// A subset of sympy.parse_expr(..., evaluate=False) on strings made of digits, '.', + - * / ** ( )
// and spaces (what the plain-expression extractor produces).
namespace {
class PlainParser {
 public:
  PlainParser(const std::string& s, Tree* t) : s_(s), t_(*t) {}
  int parse() {
    int e = sum();
    ws();
    if (i_ != s_.size()) throw ParseError{};
    return e;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  Tree& t_;
  int depth_ = 0;
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
  }
  int sum() {
    if (++depth_ > Limits::kMaxDepth) throw TooBig{"nesting"};
    int lh = term();
    while (true) {
      ws();
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) {
        bool sub = s_[i_] == '-';
        ++i_;
        int rh = term();
        if (sub) rh = t_.op(NK::Mul, {t_.num(Rational(-1)), rh});
        lh = t_.op(NK::Add, {lh, rh});
      } else {
        --depth_;
        return lh;
      }
    }
  }
  int term() {
    int lh = factor();
    while (true) {
      ws();
      if (i_ < s_.size() && s_[i_] == '*' && !(i_ + 1 < s_.size() && s_[i_ + 1] == '*')) {
        ++i_;
        lh = t_.op(NK::Mul, {lh, factor()});
      } else if (i_ < s_.size() && s_[i_] == '/') {
        ++i_;
        if (i_ < s_.size() && s_[i_] == '/') throw Unsure{"floor division"};
        int rh = factor();
        lh = t_.op(NK::Mul, {lh, t_.op(NK::Pow, {rh, t_.num(Rational(-1))})});
      } else {
        return lh;
      }
    }
  }
  int factor() {
    ws();
    if (i_ < s_.size() && (s_[i_] == '-' || s_[i_] == '+')) {
      bool neg = s_[i_] == '-';
      ++i_;
      if (++depth_ > Limits::kMaxDepth) throw TooBig{"nesting"};
      int f = factor();
      --depth_;
      if (!neg) return f;
      const Node& n = t_.at(f);
      if (n.kind == NK::Num) {
        Node m = n;
        m.val = -m.val;
        return t_.add(m);
      }
      return t_.op(NK::Mul, {t_.num(Rational(-1)), f});
    }
    return power();
  }
  int power() {
    int base = primary();
    ws();
    if (i_ + 1 < s_.size() && s_[i_] == '*' && s_[i_ + 1] == '*') {
      i_ += 2;
      if (++depth_ > Limits::kMaxDepth) throw TooBig{"nesting"};
      int e = factor();  // right associative, binds a unary minus on its right
      --depth_;
      return t_.op(NK::Pow, {base, e});
    }
    return base;
  }
  int primary() {
    ws();
    if (i_ >= s_.size()) throw ParseError{};
    char c = s_[i_];
    if (c == '(') {
      ++i_;
      if (++depth_ > Limits::kMaxDepth) throw TooBig{"nesting"};
      int e = sum();
      --depth_;
      ws();
      if (i_ >= s_.size() || s_[i_] != ')') throw ParseError{};
      ++i_;
      ws();
      if (i_ < s_.size() && s_[i_] == '(') throw ParseError{};  // calling a number
      return e;
    }
    if (is_digit(c) || c == '.') {
      size_t a = i_;
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
      bool isfloat = false;
      if (i_ < s_.size() && s_[i_] == '.') {
        isfloat = true;
        ++i_;
        while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
      }
      std::string text = s_.substr(a, i_ - a);
      if (text == ".") throw ParseError{};
      if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == 'j' || s_[i_] == 'J' || s_[i_] == '_' ||
                             is_alpha(s_[i_])))
        throw Unsure{"python literal suffix"};
      ws();
      if (i_ < s_.size() && (s_[i_] == '(' || is_digit(s_[i_]) || s_[i_] == '.')) throw ParseError{};
      if (!isfloat) {
        // python rejects leading zeros in non-zero integer literals
        if (text.size() > 1 && text[0] == '0') {
          for (char d : text)
            if (d != '0') throw ParseError{};
        }
        BigInt v;
        BigInt::from_string(text, &v);
        return t_.num(Rational(v));
      }
      size_t dot = text.find('.');
      std::string digs = text.substr(0, dot) + text.substr(dot + 1);
      if (digs.empty()) throw ParseError{};
      BigInt m;
      BigInt::from_string(digs, &m);
      int nd = (int)digs.size();
      return t_.num(Rational::make(m, BigInt::pow10((int)(text.size() - dot - 1))), true, nd);
    }
    throw ParseError{};
  }
};
}  // namespace

ParseStatus parse_plain_expr(const std::string& s, Tree* out) {
  if (s.size() > Limits::kMaxAnswerBytes) throw TooBig{"expression too long"};
  out->nodes.clear();
  out->bigops.clear();
  for (char c : s) {
    if (!(is_digit(c) || c == '.' || c == '+' || c == '-' || c == '*' || c == '/' || c == '(' || c == ')' ||
          c == ' ' || c == '\t' || c == '\n'))
      return ParseStatus::Fail;  // e.g. x or ÷: a tokenizer/name error in sympy's parser
  }
  std::string t = s;
  for (char& c : t)
    if (c == '\n') c = ' ';
  try {
    PlainParser p(t, out);
    out->root = p.parse();
  } catch (ParseError&) {
    return ParseStatus::Fail;
  }
  return ParseStatus::Ok;
}

}  // namespace paced
