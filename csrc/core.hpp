// Shared types of the scorer: tri-state verdicts, work limits, the math expression tree.
//
// The pipeline mirrors math-verify's (the reference for verdicts):
//   extract.cpp    answer candidates from a response, in math-verify's priority order
//   normalize.cpp  LaTeX clean-up of a candidate (\left, \dfrac, units, \frac12, ...)
//   parse.cpp      recursive-descent LaTeX / plain-expression parser -> Tree
//   equiv.cpp      equivalence of two parsed answers (numbers, sets, intervals, relations, ...)
//   verify.cpp     verify(gold, response) and the threaded batch driver
// Every stage either decides or answers Unknown; Unknown goes to the Python fallback.
#pragma once

#include <algorithm>
#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "bigint.hpp"

namespace paced {

enum class Tri : uint8_t { False = 0, True = 1, Unknown = 2 };

inline Tri tri_or(Tri a, Tri b) {
  if (a == Tri::True || b == Tri::True) return Tri::True;
  if (a == Tri::Unknown || b == Tri::Unknown) return Tri::Unknown;
  return Tri::False;
}
inline Tri tri_and(Tri a, Tri b) {
  if (a == Tri::False || b == Tri::False) return Tri::False;
  if (a == Tri::Unknown || b == Tri::Unknown) return Tri::Unknown;
  return Tri::True;
}
inline Tri tri_of(bool b) { return b ? Tri::True : Tri::False; }

// Hard work limits: no input can take unbounded time or memory.
struct Limits {
  static constexpr size_t kMaxResponseBytes = 4u << 20;  // responses are truncated to their last 4 MiB
  static constexpr size_t kMaxAnswerBytes = 4096;        // a candidate answer longer than this is not parsed
  static constexpr int kMaxDepth = 200;                  // parser / evaluator recursion depth
  static constexpr size_t kMaxNodes = 4096;              // expression nodes per answer
  static constexpr int kMaxSetElems = 64;                // elements compared pairwise in sets / tuples
};

// Thrown by a stage that cannot decide; the verdict becomes Unknown (sent to math-verify).
struct Unsure {
  const char* why;
};
// Thrown when an input would exceed a work limit that math-verify itself would time out on
// (e.g. 5^{5^{5^5}}); the verdict becomes False and no fallback is attempted.
struct TooBig {
  const char* why;
};

enum class NK : uint8_t {
  Num,       // number: val; isfloat for decimal literals (sympy Float), else Integer / Rational
  Pct,       // percent: kids[0] * 1/100 kept unevaluated (math-verify compares 10% with 10 as equal)
  Sym,       // symbol: name
  Pi,        // pi
  E,         // Euler's number (e, \exp)
  I,         // imaginary unit (capital I)
  Inf,       // +infinity
  NegInf,    // -infinity
  Add,       // kids summed
  Mul,       // kids multiplied
  Pow,       // kids[0] ^ kids[1]
  Func,      // name(kids...): sin cos tan ... log(x, base) abs floor ceil factorial
  Rel,       // relation op(kids[0], kids[1])
  And,       // chain of relations a < b < c
  FSet,      // finite set {kids}
  Tuple,     // ordered tuple (kids)
  Interval,  // interval kids[0], kids[1] with lopen / ropen
  Matrix,    // rows x cols, kids row-major
  EmptySet,  // the empty set
};

enum class RelOp : uint8_t { Eq, Lt, Le, Gt, Ge, Ne };

struct Node {
  NK kind = NK::Num;
  bool isfloat = false;  // Num: a decimal literal
  bool lopen = false, ropen = false;
  RelOp op = RelOp::Eq;
  int rows = 0, cols = 0;
  int float_digits = 0;  // Num/isfloat: significant digits of the literal
  Rational val;
  std::string name;
  std::vector<int> kids;
};

// What an opaque \sum_{var=lo}^{hi} body / \prod node stands for (node ids in the same tree, not
// reachable from the root): evaluated only where its bounds are integers.
struct BigOp {
  std::string name;  // the opaque node's name
  bool prod = false;
  std::string var;   // the bound symbol
  int body = -1, lo = -1, hi = -1;
};

// An arena of nodes; node ids are indices. One tree per parsed answer.
struct Tree {
  std::vector<Node> nodes;
  int root = -1;
  bool complex = false;  // the answer text looks complex (i, \mathbb{C}, ...): symbols are not real
  std::vector<BigOp> bigops;
  // several answer groups joined into one set, read in different modes (some complex, some real):
  // which symbols are real is not known per node
  bool complex_mixed = false;

  int add(Node n) {
    if (nodes.size() >= Limits::kMaxNodes) throw TooBig{"too many expression nodes"};
    nodes.push_back(std::move(n));
    return (int)nodes.size() - 1;
  }
  const Node& at(int i) const { return nodes[(size_t)i]; }
  Node& at(int i) { return nodes[(size_t)i]; }

  int num(const Rational& v, bool isfloat = false, int digits = 0) {
    Node n;
    n.kind = NK::Num;
    n.val = v;
    n.isfloat = isfloat;
    n.float_digits = digits;
    return add(std::move(n));
  }
  int leaf(NK k, const std::string& name = "") {
    Node n;
    n.kind = k;
    n.name = name;
    return add(std::move(n));
  }
  int op(NK k, std::vector<int> kids) {
    Node n;
    n.kind = k;
    n.kids = std::move(kids);
    return add(std::move(n));
  }
  int func(const std::string& name, std::vector<int> kids) {
    Node n;
    n.kind = NK::Func;
    n.name = name;
    n.kids = std::move(kids);
    return add(std::move(n));
  }
  int rel(RelOp o, int a, int b) {
    Node n;
    n.kind = NK::Rel;
    n.op = o;
    n.kids = {a, b};
    return add(std::move(n));
  }
  // copies node `id` of `src` (recursively) into this tree
  int import(const Tree& src, int id, int depth = 0);
  // copies src's big-operator records (their subtrees) into this tree
  void import_bigops(const Tree& src);
  const BigOp* bigop(const std::string& name) const {
    for (const BigOp& b : bigops)
      if (b.name == name) return &b;
    return nullptr;
  }
  // drops the nodes from `n` on (a parser backtracking), with the records that use them
  void rewind(size_t n) {
    nodes.resize(n);
    while (!bigops.empty() && (size_t)std::max({bigops.back().lo, bigops.back().hi, bigops.back().body}) >= n)
      bigops.pop_back();
  }
};

// A parsed answer candidate: the tree, plus the normalised string math-verify would keep as its
// string fallback.
struct Parsed {
  Tree tree;
  std::string str;
};

// ---- stage entry points ----------------------------------------------------------------------

// Normalises a LaTeX answer like math-verify's default LatexExtractionConfig. boxed_mode: 0 none,
// 1 "last" (a plain \boxed match), 2 "all" (a math environment).
std::string normalize_latex(const std::string& s, int boxed_mode);

// Result of parsing a candidate: Ok (tree filled), Fail (math-verify's parser would reject it too,
// so extraction moves on to the next candidate), or throws Unsure / TooBig.
enum class ParseStatus : uint8_t { Ok, Fail };
ParseStatus parse_latex(const std::string& s, Tree* out);
ParseStatus parse_plain_expr(const std::string& s, Tree* out);  // sympy parse_expr subset

// Equivalence of gold and prediction trees (math-verify's sympy_expr_eq semantics).
Tri answers_equal(const Tree& gold, const Tree& pred);

// Extraction: the answers math-verify's parse() would return for `text` (the first parsed
// expression and the string fallback). Throws Unsure / TooBig.
struct Extracted {
  bool has_expr = false;
  Tree expr;
  bool has_str = false;
  std::string str;       // the first candidate's normalised text (math-verify's string fallback)
  std::string expr_str;  // the normalised text of the candidate that parsed
};
Extracted extract(const std::string& text);

struct Verdict {
  Tri tri;
  bool limit;  // decided False by a work limit
};
Verdict verify_one(const std::string& gold, const std::string& response);
// verify_one with the gold already extracted (batch calls extract each distinct gold once).
Verdict verify_against(const Extracted& gold, const std::string& response);

// Debug helper: the candidate answer text this thread parsed last.
const std::string& last_candidate();

// Debug helper: a readable rendering of a tree.
std::string tree_to_string(const Tree& t, int id = -1);

}  // namespace paced
