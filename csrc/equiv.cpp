// Equivalence of two parsed answers with math-verify's rules:
//  - equations: "x = 3" vs "3" compares the right-hand side; relations compare lhs - rhs (also
//    flipped, and up to a constant factor, which is what solving both gives)
//  - sets are unordered (elements paired after sorting by value), tuples ordered, intervals
//    compare their ends and open/closed flags; an open interval also matches a 2-element tuple
//  - a symbol matches the same name (case-insensitive for long names) or letters multiplied
//    together ("\text{yes}" vs "yes")
//  - numbers: when either side is a decimal literal both are rounded to 6 decimal places
//    (half-to-even); two integers compare as integers (so 10% equals 10); otherwise values are
//    compared exactly (rational arithmetic on big integers) or, for pi / e / radicals /
//    functions, numerically in double precision with a relative tolerance of 1e-12 (differences
//    above 1e-8 are "different", anything in between is undecided)
//  - expressions with variables: evaluated at several fixed pseudo-random points
#include <algorithm>
#include <cmath>
#include <complex>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core.hpp"

namespace paced {
namespace {

using cd = std::complex<double>;

// A symbol read in complex mode (latex2sympy's is_real=False: Symbol(name, real=False)) is another
// sympy symbol than the real one of the same name. When both answers are imported into one tree,
// complex-mode symbols get this mark in front of their name, so that structural equality and the
// evaluation at points keep them apart; comparisons by name (math-verify's symbol rules) drop it.
const char kComplexMark = '\x01';
bool is_complex_sym(const std::string& name) { return !name.empty() && name[0] == kComplexMark; }
std::string base_name(const std::string& name) { return is_complex_sym(name) ? name.substr(1) : name; }

struct Ctx {
  Tree t;  // gold and prediction imported into one tree
  int depth = 0;
  // complex-mode symbols carry kComplexMark (see above); false when an answer joins groups read in
  // different modes, whose symbols cannot be told apart
  bool marked = true;
  // (unmarked trees only) exactly one side was read in complex mode: its symbols are distinct from
  // the other side's same-named real symbols
  bool mixed_complex = false;
  // inside the evaluation at points only: factorials of negative reals through Gamma and
  // undefined functions as fixed pseudo-random functions of their argument values. Such values
  // can only show that two expressions differ (ext_used then forbids a True)
  bool allow_ext = false;
  bool ext_used = false;
  // inside the evaluation at integer points only: sums / products with integer bounds take their
  // values; `mag` collects the size of their terms (cancellation among them limits the accuracy)
  bool allow_bigop = false;
  double mag = 0;
  // exact evaluation at a rational point: the symbols' values (else symbols are not exact)
  const std::map<std::string, Rational>* renv = nullptr;
  // exact values of sums / products with integer bounds (a numeric answer's doit())
  bool exact_sums = false;
  // with allow_ext: an undefined function call's value depends on the function's name only (as
  // for math-verify's unwrap_fcs, which turns each call into a symbol of its own)
  bool fn_by_name = false;
  // with allow_ext: another choice of the pseudo-random function values
  uint64_t fn_salt = 0;
};

struct DGuard {
  int& d;
  explicit DGuard(int& dd) : d(dd) {
    if (++d > Limits::kMaxDepth) throw TooBig{"expression too deep"};
  }
  ~DGuard() { --d; }
};

// ---------------------------------------------------------------- exact rational evaluation
bool has_float(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Num && n.isfloat) return true;
  for (int k : n.kids)
    if (has_float(t, k, depth + 1)) return true;
  return false;
}

bool exact(Ctx& c, int id, Rational* out) {
  DGuard g(c.depth);
  const Node& n = c.t.at(id);
  switch (n.kind) {
    case NK::Num:
      *out = n.val;
      return true;
    case NK::Sym: {
      if (!c.renv) return false;
      auto it = c.renv->find(n.name);
      if (it == c.renv->end()) return false;
      *out = it->second;
      return true;
    }
    case NK::Pct: {
      Rational v;
      if (!exact(c, n.kids[0], &v)) return false;
      *out = v / Rational(100);
      return true;
    }
    case NK::Add: {
      Rational acc(0);
      for (int k : n.kids) {
        Rational v;
        if (!exact(c, k, &v)) return false;
        acc = acc + v;
      }
      *out = acc;
      return true;
    }
    case NK::Mul: {
      Rational acc(1);
      for (int k : n.kids) {
        Rational v;
        if (!exact(c, k, &v)) return false;
        acc = acc * v;
      }
      *out = acc;
      return true;
    }
    case NK::Pow: {
      Rational b, e;
      if (!exact(c, n.kids[0], &b)) return false;
      if (!exact(c, n.kids[1], &e)) return false;
      if (!e.is_integer()) return false;
      if (!e.num.fits_int64()) throw TooBig{"huge exponent"};
      int64_t k = e.num.to_int64();
      if (b.is_zero()) {
        if (k < 0) throw Unsure{"zero to a negative power"};
        *out = k == 0 ? Rational(1) : Rational(0);
        return true;
      }
      uint64_t ak = (uint64_t)(k < 0 ? -k : k);
      double digits = std::max(b.num.is_zero() ? 0.0 : b.num.log10_abs(), b.den.log10_abs()) * (double)ak;
      if (digits > 3000) throw TooBig{"power too large"};
      Rational r = Rational::make(BigInt::pow(b.num, ak), BigInt::pow(b.den, ak));
      *out = k < 0 ? Rational(1) / r : r;
      return true;
    }
    case NK::Func: {
      if (n.name == "factorial") {
        Rational v;
        if (!exact(c, n.kids[0], &v)) return false;
        if (!v.is_integer() || v.is_neg()) return false;
        if (!v.num.fits_int64() || v.num.to_int64() > 1000) throw TooBig{"huge factorial"};
        BigInt acc(1);
        for (int64_t i = 2; i <= v.num.to_int64(); ++i) acc = acc * BigInt(i);
        *out = Rational(acc);
        return true;
      }
      if (n.name == "binomial") {
        Rational a, b;
        if (!exact(c, n.kids[0], &a) || !exact(c, n.kids[1], &b)) return false;
        if (!a.is_integer() || !b.is_integer() || a.is_neg()) return false;
        if (!a.num.fits_int64() || a.num.to_int64() > 100000) throw TooBig{"huge binomial"};
        int64_t nn = a.num.to_int64(), kk = b.num.fits_int64() ? b.num.to_int64() : -1;
        if (kk < 0 || kk > nn) {
          *out = Rational(0);
          return true;
        }
        kk = std::min(kk, nn - kk);
        if (kk > 2000) throw TooBig{"huge binomial"};
        BigInt acc(1);
        for (int64_t i = 1; i <= kk; ++i) {
          acc = acc * BigInt(nn - kk + i);
          BigInt q;
          BigInt::divmod(acc, BigInt(i), &q, nullptr);
          acc = q;
        }
        *out = Rational(acc);
        return true;
      }
      if (n.name == "Mod") {  // sympy: a - b*floor(a/b), the sign of b
        Rational a, b;
        if (!exact(c, n.kids[0], &a) || !exact(c, n.kids[1], &b)) return false;
        if (b.is_zero()) throw Unsure{"mod 0"};
        Rational q = a / b;
        BigInt fl, r;
        BigInt::divmod(q.num, q.den, &fl, &r);  // truncation toward zero
        if (r.is_neg()) fl = fl - BigInt(1);
        *out = a - b * Rational(fl);
        return true;
      }
      if (n.name == "Abs") {
        Rational v;
        if (!exact(c, n.kids[0], &v)) return false;
        *out = v.is_neg() ? -v : v;
        return true;
      }
      if (n.name == "UnevaluatedExpr") return exact(c, n.kids[0], out);  // \gcd, \lcm: doit() unwraps it
      if ((c.allow_bigop || c.exact_sums) && n.name.rfind("opaque:", 0) == 0) {
        // Sum / Product over integer bounds of rational terms: what doit() computes. A decimal
        // literal inside (a sympy Float, not our exact decimal) is left alone
        const BigOp* op = c.t.bigop(n.name);
        if (!op || has_float(c.t, op->body) || has_float(c.t, op->lo) || has_float(c.t, op->hi)) return false;
        Rational lo, hi;
        if (!exact(c, op->lo, &lo) || !exact(c, op->hi, &hi)) return false;
        if (!lo.is_integer() || !hi.is_integer()) return false;
        Rational cnt = hi - lo + Rational(1);
        if (cnt.is_neg() || cnt.is_zero() || !cnt.num.fits_int64() || cnt.num.to_int64() > 200) return false;
        std::map<std::string, Rational> env;
        if (c.renv) env = *c.renv;
        const std::map<std::string, Rational>* saved = c.renv;
        Rational acc(op->prod ? 1 : 0);
        bool ok = true;
        for (int64_t k = 0; k < cnt.num.to_int64() && ok; ++k) {
          env[op->var] = lo + Rational(BigInt(k));
          c.renv = &env;
          Rational v;
          try {
            ok = exact(c, op->body, &v);
          } catch (...) {
            c.renv = saved;
            throw;
          }
          c.renv = saved;
          if (ok) acc = op->prod ? acc * v : acc + v;
        }
        if (!ok) return false;
        *out = acc;
        return true;
      }
      if (n.name == "floor" || n.name == "ceiling") {  // doit() / evalf() of floor(q): an Integer
        Rational v;
        if (!exact(c, n.kids[0], &v)) return false;
        BigInt q, r;
        BigInt::divmod(v.num, v.den, &q, &r);  // truncation toward zero
        if (n.name == "floor" && r.is_neg()) q = q - BigInt(1);
        if (n.name == "ceiling" && !r.is_neg() && !r.is_zero()) q = q + BigInt(1);
        *out = Rational(q);
        return true;
      }
      return false;
    }
    default:
      return false;
  }
}

// ---------------------------------------------------------------- numeric evaluation
using Env = std::map<std::string, cd>;

cd ev(Ctx& c, int id, const Env& env) {
  DGuard g(c.depth);
  const Node& n = c.t.at(id);
  switch (n.kind) {
    case NK::Num:
      return cd(n.val.to_double(), 0);
    case NK::Pct:
      return ev(c, n.kids[0], env) / 100.0;
    case NK::Sym: {
      auto it = env.find(n.name);
      if (it == env.end()) throw Unsure{"unbound symbol"};
      return it->second;
    }
    case NK::Pi:
      return cd(M_PI, 0);
    case NK::E:
      return cd(M_E, 0);
    case NK::I:
      return cd(0, 1);
    case NK::Add: {
      cd acc = 0;
      for (int k : n.kids) acc += ev(c, k, env);
      return acc;
    }
    case NK::Mul: {
      cd acc = 1;
      for (int k : n.kids) acc *= ev(c, k, env);
      return acc;
    }
    case NK::Pow: {
      const Node& e = c.t.at(n.kids[1]);
      cd b = ev(c, n.kids[0], env);
      if (e.kind == NK::Num && !e.isfloat && e.val.is_integer() && e.val.num.fits_int64()) {
        int64_t k = e.val.num.to_int64();
        if (std::llabs(k) > 100000) throw TooBig{"huge exponent"};
        if (b == cd(0, 0) && k < 0) throw Unsure{"division by zero"};
        return std::pow(b, (double)k);
      }
      cd ex = ev(c, n.kids[1], env);
      if (b == cd(0, 0)) {
        if (ex.real() > 0) return 0;
        throw Unsure{"0 to a non-positive power"};
      }
      // real base, rational exponent with odd denominator: sympy's principal root is complex
      // for negative bases, as is std::pow on complex numbers
      return std::exp(ex * std::log(b));
    }
    case NK::Func: {
      std::vector<cd> a;
      for (int k : n.kids) a.push_back(ev(c, k, env));
      const std::string& f = n.name;
      if (f == "sin") return std::sin(a[0]);
      if (f == "cos") return std::cos(a[0]);
      if (f == "tan") return std::tan(a[0]);
      if (f == "csc") return 1.0 / std::sin(a[0]);
      if (f == "sec") return 1.0 / std::cos(a[0]);
      if (f == "cot") return 1.0 / std::tan(a[0]);
      if (f == "asin") return std::asin(a[0]);
      if (f == "acos") return std::acos(a[0]);
      if (f == "atan") return std::atan(a[0]);
      if (f == "sinh") return std::sinh(a[0]);
      if (f == "cosh") return std::cosh(a[0]);
      if (f == "tanh") return std::tanh(a[0]);
      if (f == "log") {
        if (a[0] == cd(0, 0)) throw Unsure{"log 0"};
        return std::log(a[0]) / std::log(a[1]);
      }
      if (f == "Abs") return std::abs(a[0]);
      if (f == "Mod") {
        if (a[0].imag() != 0 || a[1].imag() != 0 || a[1].real() == 0) throw Unsure{"mod"};
        return a[0].real() - a[1].real() * std::floor(a[0].real() / a[1].real());
      }
      if (f == "factorial") {
        if (c.allow_ext && a[0].imag() == 0 && a[0].real() < 0 && a[0].real() > -170 &&
            std::abs(a[0].real() - std::round(a[0].real())) > 1e-3) {
          c.ext_used = true;
          return std::tgamma(a[0].real() + 1);
        }
        if (std::abs(a[0].imag()) > 0 || a[0].real() < 0 || a[0].real() > 170) throw Unsure{"factorial"};
        return std::tgamma(a[0].real() + 1);
      }
      if (f == "binomial") {
        Rational r;
        if (exact(c, id, &r)) return r.to_double();
        // real arguments: Gamma(n+1) / (Gamma(k+1) Gamma(n-k+1)), away from the poles
        if (a[0].imag() != 0 || a[1].imag() != 0) throw Unsure{"symbolic binomial"};
        double n = a[0].real(), k = a[1].real();
        for (double x : {n + 1, k + 1, n - k + 1})
          if (x <= 0 && std::abs(x - std::round(x)) < 1e-9) throw Unsure{"symbolic binomial"};
        if (std::abs(n) > 100 || std::abs(k) > 100) throw Unsure{"symbolic binomial"};
        return std::tgamma(n + 1) / (std::tgamma(k + 1) * std::tgamma(n - k + 1));
      }
      if (f == "UnevaluatedExpr") return a[0];
      if (c.allow_bigop && f.rfind("opaque:", 0) == 0 && c.t.bigop(f)) {
        const BigOp& op = *c.t.bigop(f);
        cd lo = ev(c, op.lo, env), hi = ev(c, op.hi, env);
        auto integral = [](cd z) {
          return z.imag() == 0 && std::isfinite(z.real()) && std::abs(z.real()) < 1e6 &&
                 std::abs(z.real() - std::round(z.real())) < 1e-9;
        };
        if (!integral(lo) || !integral(hi)) throw Unsure{"bounds"};
        long l = std::lround(lo.real()), h = std::lround(hi.real());
        if (h < l || h - l > 200) throw Unsure{"bounds"};
        Env e2 = env;
        cd acc = op.prod ? 1.0 : 0.0;
        for (long k = l; k <= h; ++k) {
          e2[op.var] = cd((double)k, 0);
          cd v = ev(c, op.body, e2);
          acc = op.prod ? acc * v : acc + v;
          c.mag = std::max(c.mag, std::abs(v));
          c.mag = std::max(c.mag, std::abs(acc));
        }
        return acc;
      }
      if (f == "EulerGamma") return cd(0.57721566490153286, 0);
      if (f == "floor" || f == "ceiling") {
        Rational r;
        if (exact(c, id, &r)) return r.to_double();
        // a real value away from the integers (where a double's error could flip the result)
        double x = a[0].real();
        if (a[0].imag() != 0 || !std::isfinite(x) || std::abs(x) > 1e12 ||
            std::abs(x - std::round(x)) < 1e-9 * std::max(1.0, std::abs(x)))
          throw Unsure{"floor / ceiling"};
        return f == "floor" ? std::floor(x) : std::ceil(x);
      }
      if (c.allow_ext && f.rfind("fn:", 0) == 0) {
        // a fixed function of the name and the argument values (rounded), in [0.5, 2.5)
        uint64_t h = 1469598103934665603ull;
        auto mix = [&](uint64_t v) {
          h ^= v;
          h *= 1099511628211ull;
        };
        for (char ch : f) mix((unsigned char)ch);
        mix(c.fn_salt);
        for (const cd& z : a) {
          if (c.fn_by_name) break;
          if (!std::isfinite(z.real()) || !std::isfinite(z.imag())) throw Unsure{"unknown function"};
          mix((uint64_t)(int64_t)std::llround(z.real() * 1e6));
          mix((uint64_t)(int64_t)std::llround(z.imag() * 1e6));
        }
        c.ext_used = true;
        return cd(0.5 + (double)(h % 1000003) / 500001.5, 0);
      }
      throw Unsure{"unknown function"};
    }
    default:
      throw Unsure{"not a scalar"};
  }
}

void collect_syms(const Tree& t, int id, std::vector<std::string>* out, bool* has_func, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Sym) {
    if (std::find(out->begin(), out->end(), n.name) == out->end()) out->push_back(n.name);
  }
  if (n.kind == NK::Func && n.name != "Abs") *has_func = true;
  if (n.kind == NK::Func && n.name.rfind("opaque:", 0) == 0) {
    // a Sum's free symbols: its bounds', and its body's other than the bound one
    if (const BigOp* op = t.bigop(n.name)) {
      collect_syms(t, op->lo, out, has_func, depth + 1);
      collect_syms(t, op->hi, out, has_func, depth + 1);
      std::vector<std::string> body;
      collect_syms(t, op->body, &body, has_func, depth + 1);
      for (const std::string& v : body)
        if (v != op->var && std::find(out->begin(), out->end(), v) == out->end()) out->push_back(v);
    }
  }
  if (n.kind == NK::Pow) {
    const Node& e = t.at(n.kids[1]);
    if (e.kind != NK::Num) *has_func = true;
  }
  for (int k : n.kids) collect_syms(t, k, out, has_func, depth + 1);
}

bool is_scalar_kind(NK k) {
  return k == NK::Num || k == NK::Pct || k == NK::Sym || k == NK::Pi || k == NK::E || k == NK::I || k == NK::Add ||
         k == NK::Mul || k == NK::Pow || k == NK::Func;
}
bool scalar_tree(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (!is_scalar_kind(n.kind)) return false;
  for (int k : n.kids)
    if (!scalar_tree(t, k, depth + 1)) return false;
  return true;
}

int cmp_tol(cd a, cd b) {  // 1 equal, 0 different, -1 undecided
  if (!std::isfinite(a.real()) || !std::isfinite(a.imag()) || !std::isfinite(b.real()) || !std::isfinite(b.imag()))
    return -1;
  double scale = std::max({1.0, std::abs(a), std::abs(b)});
  double d = std::abs(a - b);
  if (d <= 1e-12 * scale) return 1;
  if (d > 1e-8 * scale) return 0;
  return -1;
}

// value of a numeric (symbol-free) scalar: exact when possible, else double
struct Val {
  bool is_exact;
  Rational q;
  cd z;
};
Val value(Ctx& c, int id) {
  Val v;
  Rational r;
  c.exact_sums = true;
  bool ex;
  try {
    ex = exact(c, id, &r);
  } catch (...) {
    c.exact_sums = false;
    throw;
  }
  c.exact_sums = false;
  if (ex) {
    v.is_exact = true;
    v.q = r;
    v.z = cd(r.to_double(), 0);
    return v;
  }
  v.is_exact = false;
  v.z = ev(c, id, Env{});
  return v;
}

Tri values_equal(const Val& a, const Val& b) {
  if (a.is_exact && b.is_exact) return tri_of(a.q == b.q);
  int r = cmp_tol(a.z, b.z);
  if (r < 0) return Tri::Unknown;
  return tri_of(r == 1);
}

// round half to even at 6 decimals, exact; returns false when undecidable
bool round6(const Val& v, Rational* out) {
  if (v.is_exact) {
    BigInt scale = BigInt::pow10(6);
    Rational x = v.q * Rational(scale);
    BigInt q, r;
    BigInt::divmod(x.num, x.den, &q, &r);  // truncation toward zero
    // floor
    if (r.is_neg()) {
      q = q - BigInt(1);
      r = r + x.den;
    }
    // compare 2r with den
    int c = BigInt::cmp(r * BigInt(2), x.den);
    if (c > 0 || (c == 0 && !q.is_even())) q = q + BigInt(1);
    *out = Rational::make(q, scale);
    return true;
  }
  if (std::abs(v.z.imag()) > 1e-12 * std::max(1.0, std::abs(v.z))) return false;
  double x = v.z.real() * 1e6;
  if (!std::isfinite(x) || std::abs(x) > 1e15) return false;
  double fl = std::floor(x);
  double frac = x - fl;
  if (std::abs(frac - 0.5) < 1e-6) return false;  // too close to a tie to know sympy's rounding
  double rr = frac > 0.5 ? fl + 1 : fl;
  *out = Rational::make(BigInt((int64_t)rr), BigInt::pow10(6));
  return true;
}

// ---------------------------------------------------------------- structure helpers
bool struct_eq(const Tree& t, int a, int b, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& x = t.at(a);
  const Node& y = t.at(b);
  if (x.kind != y.kind) return false;
  switch (x.kind) {
    case NK::Num:
      if (x.isfloat != y.isfloat) return false;
      return x.val == y.val;
    case NK::Sym:
      return x.name == y.name;
    case NK::Func:
      if (x.name != y.name) return false;
      break;
    case NK::Rel:
      if (x.op != y.op) return false;
      break;
    case NK::Interval:
      if (x.lopen != y.lopen || x.ropen != y.ropen) return false;
      break;
    case NK::Matrix:
      if (x.rows != y.rows || x.cols != y.cols) return false;
      break;
    case NK::FSet: {
      // sets: same elements regardless of order (structurally)
      std::vector<bool> used(y.kids.size(), false);
      for (int k : x.kids) {
        bool found = false;
        for (size_t j = 0; j < y.kids.size(); ++j) {
          if (struct_eq(t, k, y.kids[j], depth + 1)) {
            found = true;
            used[j] = true;
          }
        }
        if (!found) return false;
      }
      for (bool u : used)
        if (!u) return false;
      return true;
    }
    default:
      break;
  }
  if (x.kids.size() != y.kids.size()) return false;
  for (size_t i = 0; i < x.kids.size(); ++i)
    if (!struct_eq(t, x.kids[i], y.kids[i], depth + 1)) return false;
  return true;
}

bool is_set_kind(NK k) { return k == NK::FSet || k == NK::Interval || k == NK::EmptySet; }
bool is_setlike(NK k) { return is_set_kind(k) || k == NK::Tuple; }

bool symbols_only(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Sym) return true;
  if (n.kind == NK::Pow) {
    const Node& e = t.at(n.kids[1]);
    if (e.kind == NK::Num && !e.isfloat && e.val == Rational(-1)) {
      const Node& b = t.at(n.kids[0]);
      if (b.kind == NK::Sym) return true;
      if (!b.kids.empty()) {
        for (int k : b.kids)
          if (!symbols_only(t, k, depth + 1)) return false;
        return true;
      }
    }
  }
  if (n.kind == NK::Num || n.kind == NK::Pi || n.kind == NK::E || n.kind == NK::I || n.kind == NK::Inf ||
      n.kind == NK::NegInf || n.kind == NK::EmptySet)
    return false;
  if (!n.kids.empty()) {
    for (int k : n.kids)
      if (!symbols_only(t, k, depth + 1)) return false;
    return true;
  }
  return false;
}

bool is_relation(const Tree& t, int id) {
  const Node& n = t.at(id);
  if (n.kind == NK::Rel) return true;
  if (n.kind == NK::And && !n.kids.empty()) {
    for (int k : n.kids)
      if (t.at(k).kind != NK::Rel) return false;
    return true;
  }
  return false;
}
bool is_equation(const Tree& t, int id) {
  const Node& n = t.at(id);
  if (n.kind == NK::Rel) return n.op == RelOp::Eq;
  if (n.kind == NK::And && !n.kids.empty()) {
    for (int k : n.kids)
      if (!(t.at(k).kind == NK::Rel && t.at(k).op == RelOp::Eq)) return false;
    return true;
  }
  return false;
}
bool is_assignment(const Tree& t, int id) {
  const Node& n = t.at(id);
  if (n.kind == NK::Rel && n.op == RelOp::Eq) return symbols_only(t, n.kids[0]);
  if (n.kind == NK::And && !n.kids.empty()) return is_equation(t, id) && symbols_only(t, t.at(n.kids[0]).kids[0]);
  return false;
}
int last_rel(const Tree& t, int id) {
  const Node& n = t.at(id);
  return n.kind == NK::And ? last_rel(t, n.kids.back()) : id;
}
int first_rel(const Tree& t, int id) {
  const Node& n = t.at(id);
  return n.kind == NK::And ? n.kids[0] : id;
}

Tri expr_eq(Ctx& c, int g, int p);
bool has_inf(const Tree& t, int id, int depth = 0);

// a power of zero with a negative integer exponent somewhere (sympy: zoo)
bool has_zero_neg_pow(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Pow) {
    const Node& b = t.at(n.kids[0]);
    const Node& e = t.at(n.kids[1]);
    if (b.kind == NK::Num && b.val.is_zero() && e.kind == NK::Num && e.val.is_neg()) return true;
  }
  for (int k : n.kids)
    if (has_zero_neg_pow(t, k, depth + 1)) return true;
  return false;
}

// An interval with variable ends stays an Interval for latex2sympy and sympy when r - l > 0 at some
// real point (their symbols are real): then "r < l" / "r <= l" (the tuple rule) and sympy's
// emptiness check "r < l" are never True (False or undecidable: an Interval either way), and the
// ends are not the same expression (sympy's one-point set). Each end must also be real at some
// point (sympy rejects an end it knows is not real). An infinite end on its own side is fine.
bool symbolic_interval_stays(Ctx& c, int l, int r, const std::vector<std::string>& syms) {
  NK lk = c.t.at(l).kind, rk = c.t.at(r).kind;
  if (lk == NK::Inf || rk == NK::NegInf) return false;
  if (lk == NK::NegInf || rk == NK::Inf) return lk != rk && scalar_tree(c.t, lk == NK::NegInf ? r : l);
  if (!scalar_tree(c.t, l) || !scalar_tree(c.t, r) || struct_eq(c.t, l, r)) return false;
  static const double pts[] = {0.3781, -1.2917, 2.1183, 0.7349, 1.6421, 0.5573, -0.8861, 2.9077};
  if (c.t.complex) {
    // complex mode (the rule above assumes real symbols): only an r - l that takes both signs
    bool pos = false, neg = false;
    for (int k = 0; k < 4; ++k) {
      Env env;
      for (size_t i = 0; i < syms.size(); ++i) env[syms[i]] = cd(pts[(k + 3 * i) % 8] + 0.137 * (double)i, 0);
      try {
        cd d = ev(c, r, env) - ev(c, l, env);
        if (std::abs(d.imag()) > 1e-9 || !std::isfinite(d.real())) continue;
        if (d.real() > 1e-6) pos = true;
        if (d.real() < -1e-6) neg = true;
      } catch (Unsure&) {
      }
    }
    return pos && neg;
  }
  bool pos = false, lreal = false, rreal = false;
  for (int k = 0; k < 8; ++k) {
    Env env;
    for (size_t i = 0; i < syms.size(); ++i) env[syms[i]] = cd(pts[(k + 3 * i) % 8] + 0.137 * (double)i, 0);
    try {
      cd a = ev(c, l, env), b = ev(c, r, env);
      if (!std::isfinite(a.real()) || !std::isfinite(a.imag()) || !std::isfinite(b.real()) || !std::isfinite(b.imag()))
        continue;
      bool ar = std::abs(a.imag()) <= 1e-12 * std::max(1.0, std::abs(a));
      bool br = std::abs(b.imag()) <= 1e-12 * std::max(1.0, std::abs(b));
      lreal = lreal || ar;
      rreal = rreal || br;
      if (ar && br && b.real() - a.real() > 1e-6 * std::max({1.0, std::abs(a), std::abs(b)})) pos = true;
    } catch (Unsure&) {
    }
  }
  return pos && lreal && rreal;
}

// sympy's Interval(l, r, lo, ro) and latex2sympy's "empty interval is a tuple" rule
int resolve_interval(Ctx& c, int id) {
  const Node n = c.t.at(id);
  if (n.kind != NK::Interval) return id;
  int l = n.kids[0], r = n.kids[1];
  std::vector<std::string> syms;
  bool hf = false;
  collect_syms(c.t, l, &syms, &hf);
  collect_syms(c.t, r, &syms, &hf);
  if (!syms.empty()) {
    if (!c.t.complex && struct_eq(c.t, l, r) && scalar_tree(c.t, l) && !has_inf(c.t, l) && !has_zero_neg_pow(c.t, l)) {
      // the same expression at both ends: latex2sympy's r <= l is True for (c, c) (a tuple), its
      // r < l False for [c, c], and sympy makes Interval(c, c) the set {c}, Interval.Lopen(c, c) empty
      if (n.lopen && n.ropen) return c.t.op(NK::Tuple, {l, r});
      if (n.lopen || n.ropen) return c.t.leaf(NK::EmptySet);
      return c.t.op(NK::FSet, {l});
    }
    if (symbolic_interval_stays(c, l, r, syms)) return id;
    throw Unsure{"symbolic interval"};
  }
  auto num = [&](int k, double* v) {
    NK kk = c.t.at(k).kind;
    if (kk == NK::Inf) {
      *v = INFINITY;
      return;
    }
    if (kk == NK::NegInf) {
      *v = -INFINITY;
      return;
    }
    if (!scalar_tree(c.t, k)) throw Unsure{"interval end"};
    cd z = value(c, k).z;
    if (std::abs(z.imag()) > 1e-12) throw Unsure{"complex interval end"};
    *v = z.real();
  };
  double a, b;
  num(l, &a);
  num(r, &b);
  if (std::isfinite(a) && std::isfinite(b) && std::abs(a - b) <= 1e-9 * std::max({1.0, std::abs(a), std::abs(b)}) &&
      a != b)
    throw Unsure{"near-degenerate interval"};
  if ((n.lopen && n.ropen && b <= a) || (!n.lopen && !n.ropen && b < a)) return c.t.op(NK::Tuple, {l, r});
  if (a > b || (a == b && (n.lopen || n.ropen))) return c.t.leaf(NK::EmptySet);
  if (a == b) return c.t.op(NK::FSet, {l});
  return id;
}

// sort key for set elements: the (unwrapped) numeric value
double sort_key(Ctx& c, int id) {
  int k = id;
  if (is_assignment(c.t, k)) k = c.t.at(last_rel(c.t, k)).kids[1];
  if (!scalar_tree(c.t, k)) throw Unsure{"non-numeric set element"};
  std::vector<std::string> syms;
  bool hf = false;
  collect_syms(c.t, k, &syms, &hf);
  if (!syms.empty()) throw Unsure{"symbolic set element"};
  cd z = value(c, k).z;
  if (std::abs(z.imag()) > 1e-12 || !std::isfinite(z.real())) throw Unsure{"complex set element"};
  return z.real();
}

std::vector<int> sorted_elems(Ctx& c, const std::vector<int>& kids) {
  std::vector<std::pair<double, int>> v;
  for (int k : kids) v.push_back({sort_key(c, k), k});
  std::stable_sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < v.size(); ++i) {
    if (std::abs(v[i].first - v[i - 1].first) <= 1e-9 * std::max(1.0, std::abs(v[i].first)) &&
        !struct_eq(c.t, v[i].second, v[i - 1].second))
      throw Unsure{"tied set elements"};
  }
  std::vector<int> out;
  for (auto& x : v) out.push_back(x.second);
  return out;
}

std::vector<int> dedup(Ctx& c, const std::vector<int>& kids) {
  std::vector<int> out;
  for (int k : kids) {
    bool dup = false;
    for (int o : out)
      if (struct_eq(c.t, k, o)) dup = true;
    if (!dup) out.push_back(k);
  }
  return out;
}

// true when some element of a (or of b) compares False with every element of the other side
bool has_unmatched(Ctx& c, const std::vector<int>& a, const std::vector<int>& b) {
  auto eq = [&](int x, int y) {
    try {
      return expr_eq(c, x, y);
    } catch (Unsure&) {
      return Tri::Unknown;
    }
  };
  auto none = [&](int x, const std::vector<int>& ys, bool x_gold) {
    for (int y : ys)
      if ((x_gold ? eq(x, y) : eq(y, x)) != Tri::False) return false;
    return true;
  };
  for (int x : a)
    if (none(x, b, true)) return true;
  for (int y : b)
    if (none(y, a, false)) return true;
  return false;
}

// sympy's default_sort_key order (math-verify's sort_key: the assignment's right side, evalf'ed
// where that works, which keeps the order of numbers) for elements made of numbers, symbols,
// tuples, intervals and equations: class key (Number (1, 0), Symbol (2, 0), other Basic (5, 0)
// with the class name), then the argument count and the arguments in turn; numbers by value,
// symbols by name. Anything else: Unsure.
int sympy_key_cmp(Ctx& c, int a, int b, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  auto cls = [&](int id, int* rank) -> std::string {
    const Node& n = c.t.at(id);
    switch (n.kind) {
      case NK::Num: *rank = 1; return "Number";
      case NK::Sym: *rank = 2; return "Symbol";
      case NK::Tuple: *rank = 5; return "Tuple";
      case NK::Interval: *rank = 5; return "Interval";
      case NK::Rel:
        if (n.op == RelOp::Eq) {
          *rank = 5;
          return "Equality";
        }
        break;
      default: break;
    }
    throw Unsure{"non-numeric set element"};
  };
  int ra = 0, rb = 0;
  std::string ca = cls(a, &ra), cb = cls(b, &rb);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ca != cb) return ca < cb ? -1 : 1;
  const Node& x = c.t.at(a);
  const Node& y = c.t.at(b);
  if (x.kind == NK::Num) return Rational::cmp(x.val, y.val);
  if (x.kind == NK::Sym) {
    std::string u = base_name(x.name), v = base_name(y.name);
    return u == v ? 0 : (u < v ? -1 : 1);
  }
  std::vector<int> xa = x.kids, ya = y.kids;
  if (xa.size() != ya.size()) return xa.size() < ya.size() ? -1 : 1;
  for (size_t i = 0; i < xa.size(); ++i) {
    int r = sympy_key_cmp(c, xa[i], ya[i], depth + 1);
    if (r) return r;
  }
  if (x.kind == NK::Interval) {  // then left_open, right_open: BooleanFalse before BooleanTrue
    if (x.lopen != y.lopen) return x.lopen ? 1 : -1;
    if (x.ropen != y.ropen) return x.ropen ? 1 : -1;
  }
  return 0;
}

// set elements in sympy's order for the kinds above; Unsure on other kinds or on ties
std::vector<int> sympy_ordered(Ctx& c, const std::vector<int>& kids) {
  std::vector<int> keys, out = kids;
  for (int& k : out) k = resolve_interval(c, k);  // latex2sympy's reading of each element
  std::vector<std::pair<int, int>> v;             // (key node, element)
  for (int k : out) {
    int key = is_assignment(c.t, k) ? c.t.at(last_rel(c.t, k)).kids[1] : k;
    v.push_back({key, k});
  }
  for (auto& e : v)
    for (auto& f : v)
      if (&e != &f && sympy_key_cmp(c, e.first, f.first) == 0) throw Unsure{"tied set elements"};
  std::sort(v.begin(), v.end(), [&](auto& l, auto& r) { return sympy_key_cmp(c, l.first, r.first) < 0; });
  out.clear();
  for (auto& e : v) out.push_back(e.second);
  return out;
}

Tri deep_compare(Ctx& c, int g, int p, bool g_is_set, bool p_is_set, bool p_unsorted) {
  std::vector<int> gk = c.t.at(g).kids, pk = c.t.at(p).kids;
  if (g_is_set) gk = dedup(c, gk);
  if (p_is_set && !p_unsorted) pk = dedup(c, pk);
  if (p_is_set && p_unsorted && dedup(c, pk).size() != pk.size()) throw Unsure{"duplicate set elements"};
  if (gk.size() != pk.size()) return Tri::False;
  if ((int)gk.size() > Limits::kMaxSetElems) throw Unsure{"large set"};
  try {
    if (g_is_set) {
      gk = sorted_elems(c, gk);
      pk = sorted_elems(c, pk);
    } else if (p_is_set && !p_unsorted) {
      pk = sorted_elems(c, pk);
    }
  } catch (Unsure&) {
    // the reference's order (sympy's sort keys) is unknown here, but it pairs the elements one to
    // one: an element equal to no element of the other side makes some pair unequal in any order
    if (has_unmatched(c, gk, pk)) return Tri::False;
    if (g_is_set) {
      gk = sympy_ordered(c, gk);
      pk = sympy_ordered(c, pk);
    } else if (p_is_set && !p_unsorted) {
      pk = sympy_ordered(c, pk);
    } else {
      throw;
    }
  }
  Tri acc = Tri::True;
  for (size_t i = 0; i < gk.size(); ++i) {
    acc = tri_and(acc, expr_eq(c, gk[i], pk[i]));
    if (acc == Tri::False) return acc;
  }
  return acc;
}

Tri compare_sets(Ctx& c, int g, int p) {
  g = resolve_interval(c, g);
  p = resolve_interval(c, p);
  NK gk = c.t.at(g).kind, pk = c.t.at(p).kind;
  int a = is_setlike(gk) ? g : c.t.op(NK::FSet, {g});
  int b = is_setlike(pk) ? p : c.t.op(NK::FSet, {p});
  NK ak = c.t.at(a).kind, bk = c.t.at(b).kind;
  if (ak == NK::Interval && bk == NK::Interval) {
    const Node& x = c.t.at(a);
    const Node& y = c.t.at(b);
    if (x.lopen != y.lopen || x.ropen != y.ropen) return Tri::False;
    return tri_and(expr_eq(c, x.kids[0], y.kids[0]), expr_eq(c, x.kids[1], y.kids[1]));
  }
  if (struct_eq(c.t, a, b)) return Tri::True;
  if (ak == NK::EmptySet || bk == NK::EmptySet) {
    if (ak == bk) return Tri::True;
    if (ak == NK::Tuple || bk == NK::Tuple) return Tri::False;
    if (ak == NK::FSet || bk == NK::FSet) return Tri::False;  // a non-empty finite set
    throw Unsure{"empty set vs interval"};
  }
  // both sets: symmetric difference empty?  For finite sets of numbers this is value equality.
  if (ak == NK::FSet && bk == NK::FSet) {
    // deep comparison covers value equality with the same rounding rules; a True there is what
    // the symmetric difference would also give for exact values
    Tri d = deep_compare(c, a, b, true, true, false);
    if (d != Tri::False) return d;
    // symmetric difference uses exact equality: Float vs Rational compare by value
    return Tri::False;
  }
  if ((ak == NK::FSet || ak == NK::Tuple) && (bk == NK::FSet || bk == NK::Tuple)) {
    bool gset = ak == NK::FSet, pset = bk == NK::FSet;
    if (!gset && pset) return deep_compare(c, a, b, false, true, true);  // tuple vs set: set kept in order
    return deep_compare(c, a, b, gset, pset, false);
  }
  if (ak == NK::Interval && (bk == NK::FSet || bk == NK::Tuple)) {
    const Node& x = c.t.at(a);
    if (x.lopen && x.ropen && c.t.at(b).kids.size() == 2) {
      int tup = c.t.op(NK::Tuple, {x.kids[0], x.kids[1]});
      return deep_compare(c, tup, b, false, bk == NK::FSet, true);
    }
    if (bk == NK::FSet) return Tri::False;
    return Tri::False;
  }
  if (bk == NK::Interval && (ak == NK::FSet || ak == NK::Tuple)) {
    const Node& y = c.t.at(b);
    if (y.lopen && y.ropen && c.t.at(a).kids.size() == 2) {
      int tup = c.t.op(NK::Tuple, {y.kids[0], y.kids[1]});
      return deep_compare(c, a, tup, ak == NK::FSet, false, false);
    }
    return Tri::False;
  }
  if (ak == NK::Matrix || bk == NK::Matrix) return Tri::False;
  throw Unsure{"set comparison"};
}

Tri compare_symbols(Ctx& c, int g, int p) {
  const Node& x = c.t.at(g);
  const Node& y = c.t.at(p);
  // math-verify compares names here, never assumptions: a complex-mode symbol's mark is dropped
  auto lower = [](std::string s) {
    s = base_name(s);
    for (char& ch : s) ch = (char)std::tolower((unsigned char)ch);
    return s;
  };
  if (x.kind == NK::Sym && lower(x.name) == "e" && y.kind == NK::E) return Tri::True;
  if (y.kind == NK::Sym && lower(y.name) == "e" && x.kind == NK::E) return Tri::True;
  auto concat = [&](const Node& m, std::string* out) {
    if (m.kind != NK::Mul) return false;
    for (int k : m.kids) {
      const Node& a = c.t.at(k);
      if (a.kind == NK::E) *out += "e";
      else if (a.kind == NK::Sym) *out += base_name(a.name);
      else return false;
    }
    return true;
  };
  std::string cat;
  if (x.kind == NK::Sym && concat(y, &cat)) return tri_of(lower(x.name) == lower(cat));
  cat.clear();
  if (y.kind == NK::Sym && concat(x, &cat)) return tri_of(lower(y.name) == lower(cat));
  if (x.kind == NK::Sym && y.kind == NK::Sym) {
    std::string a = base_name(x.name), b = base_name(y.name);
    if (a.size() > 1) a = lower(a);
    if (b.size() > 1) b = lower(b);
    return tri_of(a == b);
  }
  // str(gold) == str(pred): different kinds of expressions print differently
  if (x.kind == NK::Sym || y.kind == NK::Sym) {
    const Node& other = x.kind == NK::Sym ? y : x;
    if (other.kind == NK::Num || other.kind == NK::Add || other.kind == NK::Mul || other.kind == NK::Pow ||
        other.kind == NK::Pct || other.kind == NK::Pi || other.kind == NK::E || other.kind == NK::I ||
        other.kind == NK::Inf || other.kind == NK::NegInf || other.kind == NK::Matrix || other.kind == NK::Func)
      return Tri::False;
    // a relation prints with its operator ("x > y", "Eq(x, 2)"), never as a bare symbol name
    if (other.kind == NK::Rel || other.kind == NK::And) return Tri::False;
  }
  throw Unsure{"symbol comparison"};
}

bool atomic_num(const Tree& t, int id, bool* isfloat, bool* isint, bool* pct) {
  const Node& n = t.at(id);
  const Node* m = &n;
  *pct = false;
  if (n.kind == NK::Pct) {
    m = &t.at(n.kids[0]);
    *pct = true;
  }
  if (m->kind != NK::Num) return false;
  *isfloat = m->isfloat;
  *isint = !m->isfloat && m->val.is_integer();
  return true;
}

bool has_inf(const Tree& t, int id, int depth) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Inf || n.kind == NK::NegInf) return true;
  for (int k : n.kids)
    if (has_inf(t, k, depth + 1)) return true;
  return false;
}

// an undefined function call f(x), or an opaque node (\sum, \lim, Max: its arguments could hold one)
// nonzero numbers times at least one power of 0 with a negative integer exponent (and nothing else)
bool is_zoo_product(const Tree& t, int id) {
  auto zero_pow = [&](const Node& n) {
    if (n.kind != NK::Pow) return false;
    const Node& b = t.at(n.kids[0]);
    const Node& e = t.at(n.kids[1]);
    return b.kind == NK::Num && b.val.is_zero() && e.kind == NK::Num && !e.isfloat && e.val.is_integer() &&
           e.val.is_neg();
  };
  const Node& n = t.at(id);
  if (zero_pow(n)) return true;
  if (n.kind != NK::Mul) return false;
  bool any = false;
  for (int k : n.kids) {
    const Node& m = t.at(k);
    if (zero_pow(m)) any = true;
    else if (!(m.kind == NK::Num && !m.val.is_zero())) return false;
  }
  return any;
}

bool has_undef_call(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Func && (n.name.rfind("fn:", 0) == 0 || n.name.rfind("opaque:", 0) == 0)) return true;
  for (int k : n.kids)
    if (has_undef_call(t, k, depth + 1)) return true;
  return false;
}


// ---------------------------------------------------------------- exact normal form
// An exact normal form for sums of products of symbols (integer powers), sums to negative integer
// powers (kept as atoms), and exponentials b^E of positive rational bases (rewritten over prime
// bases p^(v_p E), the integer part of a constant exponent moved into the coefficient) or of e.
// Two expressions with the same form are the same function; sympy's simplify(a - b) reaches 0
// for these (expand, powsimp), so a match proves math-verify's True. Anything else: no form.
using AtomPow = std::map<std::string, int64_t>;  // atom -> nonzero integer exponent
struct P0 {                                       // polynomial without exponentials (exponents)
  std::map<AtomPow, Rational> t;
};
struct Mono {
  AtomPow a;
  std::map<std::string, P0> ex;  // exponential base (prime digits or "E") -> exponent
};
struct NF {
  std::map<std::string, std::pair<Mono, Rational>> t;  // serialized monomial -> (monomial, coefficient)
};
constexpr size_t kNFMaxTerms = 256;
constexpr int64_t kNFMaxExp = 1000;

std::string rat_str(const Rational& q) { return q.num.to_string() + "/" + q.den.to_string(); }
std::string atoms_str(const AtomPow& a) {
  std::string s;
  for (auto& kv : a) s += kv.first + "^" + std::to_string(kv.second) + "*";
  return s;
}
std::string p0_str(const P0& p) {
  std::string s = "(";
  for (auto& kv : p.t) s += atoms_str(kv.first) + ":" + rat_str(kv.second) + "+";
  return s + ")";
}
std::string mono_str(const Mono& m) {
  std::string s = atoms_str(m.a);
  for (auto& kv : m.ex) s += "[" + kv.first + "^" + p0_str(kv.second) + "]";
  return s;
}
std::string nf_str(const NF& f) {
  std::string s = "{";
  for (auto& kv : f.t) s += kv.first + ":" + rat_str(kv.second.second) + ";";
  return s + "}";
}
void p0_add(P0* a, const P0& b, const Rational& k) {
  for (auto& kv : b.t) {
    Rational v = a->t[kv.first] + kv.second * k;
    if (v.is_zero()) a->t.erase(kv.first);
    else a->t[kv.first] = v;
  }
}
bool add_atom(AtomPow* a, const std::string& name, int64_t e) {
  int64_t v = (*a)[name] + e;
  if (std::llabs(v) > kNFMaxExp) return false;
  if (v == 0) a->erase(name);
  else (*a)[name] = v;
  return true;
}
// moves the integer part of each prime exponent's constant term into *coef
bool mono_fold(Mono* m, Rational* coef) {
  for (auto it = m->ex.begin(); it != m->ex.end();) {
    if (it->first != "E") {
      auto c = it->second.t.find(AtomPow{});
      if (c != it->second.t.end()) {
        const Rational& q = c->second;
        BigInt fl, r;
        BigInt::divmod(q.num, q.den, &fl, &r);
        if (r.is_neg()) fl = fl - BigInt(1);
        if (!fl.is_zero()) {
          if (!fl.fits_int64() || std::llabs(fl.to_int64()) > kNFMaxExp) return false;
          int64_t k = fl.to_int64();
          BigInt p;
          BigInt::from_string(it->first, &p);
          BigInt pk = BigInt::pow(p, (uint64_t)std::llabs(k));
          *coef = *coef * (k > 0 ? Rational(pk) : Rational(BigInt(1)) / Rational(pk));
          Rational rest = q - Rational(fl);
          if (rest.is_zero()) it->second.t.erase(c);
          else c->second = rest;
        }
      }
    }
    if (it->second.t.empty()) it = m->ex.erase(it);
    else ++it;
  }
  return true;
}
bool nf_add_term(NF* f, Mono m, Rational coef) {
  if (!mono_fold(&m, &coef)) return false;
  if (coef.is_zero()) return true;
  std::string k = mono_str(m);
  auto it = f->t.find(k);
  if (it == f->t.end()) {
    if (f->t.size() >= kNFMaxTerms) return false;
    f->t.emplace(k, std::make_pair(std::move(m), coef));
  } else {
    it->second.second = it->second.second + coef;
    if (it->second.second.is_zero()) f->t.erase(it);
  }
  return true;
}
bool nf_mul(const NF& a, const NF& b, NF* out) {
  NF r;
  for (auto& x : a.t)
    for (auto& y : b.t) {
      Mono m = x.second.first;
      for (auto& kv : y.second.first.a)
        if (!add_atom(&m.a, kv.first, kv.second)) return false;
      for (auto& kv : y.second.first.ex) p0_add(&m.ex[kv.first], kv.second, Rational(1));
      if (!nf_add_term(&r, std::move(m), x.second.second * y.second.second)) return false;
    }
  *out = std::move(r);
  return true;
}
NF nf_const(const Rational& q) {
  NF f;
  nf_add_term(&f, Mono{}, q);
  return f;
}
// prime factorisation of a positive integer up to 10^12
bool factor(BigInt n, std::vector<std::pair<int64_t, int64_t>>* out) {
  if (!n.fits_int64()) return false;
  int64_t v = n.to_int64();
  if (v <= 0 || v > 1000000000000LL) return false;
  for (int64_t p = 2; p * p <= v; ++p) {
    int64_t e = 0;
    while (v % p == 0) {
      v /= p;
      ++e;
    }
    if (e) out->push_back({p, e});
  }
  if (v > 1) out->push_back({v, 1});
  return true;
}
// the exponent of an exponential: a form without exponentials
bool nf_to_p0(const NF& f, P0* out) {
  for (auto& kv : f.t) {
    if (!kv.second.first.ex.empty()) return false;
    out->t[kv.second.first.a] = kv.second.second;
  }
  return true;
}
bool normal_form(const Tree& t, int id, NF* out, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  switch (n.kind) {
    case NK::Num:
      if (n.isfloat) return false;
      *out = nf_const(n.val);
      return true;
    case NK::Sym:
    case NK::Pi: {
      Mono m;
      m.a[n.kind == NK::Pi ? std::string("\x02pi") : n.name] = 1;
      NF f;
      nf_add_term(&f, std::move(m), Rational(1));
      *out = std::move(f);
      return true;
    }
    case NK::E: {
      Mono m;
      m.ex["E"] = P0{{{AtomPow{}, Rational(1)}}};
      NF f;
      nf_add_term(&f, std::move(m), Rational(1));
      *out = std::move(f);
      return true;
    }
    case NK::Add: {
      NF acc;
      for (int k : n.kids) {
        NF x;
        if (!normal_form(t, k, &x, depth + 1)) return false;
        for (auto& kv : x.t)
          if (!nf_add_term(&acc, kv.second.first, kv.second.second)) return false;
      }
      *out = std::move(acc);
      return true;
    }
    case NK::Mul: {
      NF acc = nf_const(Rational(1));
      for (int k : n.kids) {
        NF x;
        if (!normal_form(t, k, &x, depth + 1) || !nf_mul(acc, x, &acc)) return false;
      }
      *out = std::move(acc);
      return true;
    }
    case NK::Pow: {
      const Node& b = t.at(n.kids[0]);
      const Node& e = t.at(n.kids[1]);
      if (e.kind == NK::Num && !e.isfloat && e.val.is_integer()) {
        if (!e.val.num.fits_int64() || std::llabs(e.val.num.to_int64()) > kNFMaxExp) return false;
        int64_t k = e.val.num.to_int64();
        NF x;
        if (!normal_form(t, n.kids[0], &x, depth + 1)) return false;
        if (x.t.size() == 1) {  // a monomial: every exponent times k
          Mono m = x.t.begin()->second.first;
          Rational c = x.t.begin()->second.second;
          for (auto& kv : m.a) {
            if (std::llabs(kv.second * k) > kNFMaxExp) return false;
            kv.second *= k;
          }
          for (auto& kv : m.ex) {
            P0 z;
            p0_add(&z, kv.second, Rational(k));
            kv.second = z;
          }
          if (k < 0 && c.is_zero()) return false;
          Rational ck = Rational::make(BigInt::pow(c.num, (uint64_t)std::llabs(k)), BigInt::pow(c.den, (uint64_t)std::llabs(k)));
          if (k < 0) ck = Rational(1) / ck;
          NF f;
          if (!nf_add_term(&f, std::move(m), ck)) return false;
          *out = std::move(f);
          return true;
        }
        if (x.t.empty()) {  // 0^k
          if (k <= 0) return false;
          *out = NF{};
          return true;
        }
        if (k > 0) {
          if (k > 16) return false;
          NF acc = x;
          for (int64_t i = 1; i < k; ++i)
            if (!nf_mul(acc, x, &acc)) return false;
          *out = std::move(acc);
          return true;
        }
        Mono m;  // a sum to a negative power: an atom named by the sum's form
        m.a["\x03inv" + nf_str(x)] = -k;
        NF f;
        nf_add_term(&f, std::move(m), Rational(1));
        *out = std::move(f);
        return true;
      }
      // b^E: b a positive rational number or e
      if (!(b.kind == NK::E || (b.kind == NK::Num && !b.isfloat && !b.val.is_neg() && !b.val.is_zero()))) return false;
      NF xe;
      P0 ex;
      if (!normal_form(t, n.kids[1], &xe, depth + 1) || !nf_to_p0(xe, &ex)) return false;
      Mono m;
      if (b.kind == NK::E) {
        m.ex["E"] = ex;
      } else {
        std::vector<std::pair<int64_t, int64_t>> fn, fd;
        if (!factor(b.val.num, &fn) || !factor(b.val.den, &fd)) return false;
        for (auto& pe : fn) p0_add(&m.ex[std::to_string(pe.first)], ex, Rational(pe.second));
        for (auto& pe : fd) p0_add(&m.ex[std::to_string(pe.first)], ex, Rational(-pe.second));
      }
      NF f;
      if (!nf_add_term(&f, std::move(m), Rational(1))) return false;
      *out = std::move(f);
      return true;
    }
    case NK::Func: {
      // factorial(s + k), s a symbol, k a small integer: s! times (s+1)...(s+k), or divided by
      // s (s-1) ... (s+k+1) (the Gamma recurrence, which sympy's simplify applies as well)
      if (n.name != "factorial" || n.kids.size() != 1) return false;
      const Node& a = t.at(n.kids[0]);
      int sym = -1;
      int64_t k = 0;
      if (a.kind == NK::Sym) {
        sym = n.kids[0];
      } else if (a.kind == NK::Add && a.kids.size() == 2) {
        for (int j = 0; j < 2; ++j) {
          const Node& u = t.at(a.kids[j]);
          const Node& v = t.at(a.kids[1 - j]);
          if (u.kind == NK::Sym && v.kind == NK::Num && !v.isfloat && v.val.is_integer() && v.val.num.fits_int64()) {
            sym = a.kids[j];
            k = v.val.num.to_int64();
          }
        }
      }
      if (sym < 0 || std::llabs(k) > 8) return false;
      const std::string& name = t.at(sym).name;
      Mono m;
      m.a["\x04fact:" + name] = 1;
      NF acc;
      nf_add_term(&acc, std::move(m), Rational(1));
      for (int64_t j = 1; j <= std::llabs(k); ++j) {
        // the factor s + j (k > 0) or s - j + 1 (k < 0)
        int64_t off = k > 0 ? j : 1 - j;
        NF f;
        Mono ms;
        ms.a[name] = 1;
        nf_add_term(&f, std::move(ms), Rational(1));
        nf_add_term(&f, Mono{}, Rational(off));
        if (k < 0) {  // divide: a monomial s inverts, a sum becomes an atom
          if (off == 0) {
            Mono inv;
            inv.a[name] = -1;
            f = NF{};
            nf_add_term(&f, std::move(inv), Rational(1));
          } else {
            Mono inv;
            inv.a["\x03inv" + nf_str(f)] = 1;
            f = NF{};
            nf_add_term(&f, std::move(inv), Rational(1));
          }
        }
        if (!nf_mul(acc, f, &acc)) return false;
      }
      *out = std::move(acc);
      return true;
    }
    default:
      return false;
  }
}

// powers b^E with a number or e as base and an exponent that is no integer literal
void exp_bases(const Tree& t, int id, std::vector<std::string>* bases, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Pow) {
    const Node& b = t.at(n.kids[0]);
    const Node& e = t.at(n.kids[1]);
    bool int_exp = e.kind == NK::Num && !e.isfloat && e.val.is_integer();
    if (!int_exp && (b.kind == NK::Num || b.kind == NK::E)) bases->push_back(b.kind == NK::E ? "E" : rat_str(b.val));
  }
  for (int k : n.kids) exp_bases(t, k, bases, depth + 1);
}

// sympy's simplify does not always reconcile its own rewritings of mixed bases ((2^n + 4^n + 1)^3
// against its expansion stays nonzero: 8^n, 2^{3n}, 64^n...): the form is only trusted when every
// exponential of both sides has one and the same base, or each side has a single exponential
bool same_normal_form(const Tree& t, int a, int b) {
  std::vector<std::string> ba, bb;
  exp_bases(t, a, &ba);
  exp_bases(t, b, &bb);
  bool one_base = true;
  for (auto* v : {&ba, &bb})
    for (auto& x : *v) one_base = one_base && x == (ba.empty() ? bb[0] : ba[0]);
  if (!one_base && !(ba.size() == 1 && bb.size() == 1)) return false;
  NF x, y;
  if (!normal_form(t, a, &x) || !normal_form(t, b, &y)) return false;
  return nf_str(x) == nf_str(y);
}

// 0 times symbols and numbers (a text gold "0 is the only possible value" reads so): sympy's doit()
// and any evaluation (a - b) make it the number 0, whatever the symbols
bool zero_product(const Tree& t, int id) {
  const Node& n = t.at(id);
  if (n.kind != NK::Mul) return false;
  bool zero = false;
  for (int k : n.kids) {
    const Node& m = t.at(k);
    if (m.kind == NK::Num && !m.isfloat && m.val.is_zero()) zero = true;
    else if (!(m.kind == NK::Num || m.kind == NK::Sym || m.kind == NK::E || m.kind == NK::Pi || m.kind == NK::I))
      return false;
  }
  return zero;
}

// numbers, symbols, pi, e, sums, products and powers only
bool plain_algebra(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  switch (n.kind) {
    case NK::Num:
    case NK::Sym:
    case NK::Pi:
    case NK::E:
      return true;
    case NK::Add:
    case NK::Mul:
    case NK::Pow:
      for (int k : n.kids)
        if (!plain_algebra(t, k, depth + 1)) return false;
      return true;
    default:
      return false;
  }
}

// no opaque node (\sum, Max: not evaluable here) anywhere
bool has_fn_call_only(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Func && n.name.rfind("opaque:", 0) == 0) return false;
  for (int k : n.kids)
    if (!has_fn_call_only(t, k, depth + 1)) return false;
  return true;
}

// an undefined function applied to arguments, f(x) or C(n, k), against an expression without
// any undefined function: their difference never simplifies to 0
bool undef_call_vs_other(const Tree& t, int g, int p) {
  auto is_undef_call = [&](int id) {
    const Node& n = t.at(id);
    return n.kind == NK::Func && n.name.rfind("fn:", 0) == 0;
  };
  return (is_undef_call(g) && !has_undef_call(t, p)) || (is_undef_call(p) && !has_undef_call(t, g));
}

// a constant expression holding undefined function calls (\zeta(2) - 1) against one without any:
// when its value changes with the calls' values (two choices of them), the difference is a
// non-constant function of unknowns, which never simplifies to 0
bool depends_on_undef_calls(Ctx& c, int g, int p) {
  bool gu = has_undef_call(c.t, g), pu = has_undef_call(c.t, p);
  if (gu == pu) return false;
  int side = gu ? g : p;
  if (!has_fn_call_only(c.t, side)) return false;
  cd v[2];
  for (int k = 0; k < 2; ++k) {
    c.allow_ext = true;
    c.fn_salt = (uint64_t)k * 7919u;
    try {
      v[k] = ev(c, side, Env{});
    } catch (Unsure&) {
      c.allow_ext = false;
      c.fn_salt = 0;
      return false;
    } catch (...) {
      c.allow_ext = false;
      c.fn_salt = 0;
      throw;
    }
    c.allow_ext = false;
    c.fn_salt = 0;
  }
  return cmp_tol(v[0], v[1]) == 0;
}

// exact values at rational points of plain algebra with integer powers (too large for a double:
// n^{1987} + 2^{1987}): a difference at one point shows the two rational functions differ
bool differ_at_rational_points(Ctx& c, int g, int p, const std::vector<std::string>& syms) {
  if (!plain_algebra(c.t, g) || !plain_algebra(c.t, p)) return false;
  static const int pts[][4][2] = {{{3, 7}, {-4, 3}, {11, 5}, {5, 7}},
                                  {{5, 3}, {4, 7}, {-7, 8}, {9, 4}},
                                  {{-2, 5}, {7, 3}, {3, 11}, {-6, 7}}};
  for (const auto& pt : pts) {
    std::map<std::string, Rational> env;
    for (size_t i = 0; i < syms.size(); ++i)
      env[syms[i]] = Rational::make(BigInt(pt[i % 4][0]), BigInt(pt[i % 4][1])) +
                     Rational::make(BigInt((long)(i / 4)), BigInt(13));
    c.renv = &env;
    Rational a, b;
    bool ok = false;
    try {
      ok = exact(c, g, &a) && exact(c, p, &b);
    } catch (Unsure&) {
    } catch (TooBig&) {
    } catch (...) {
      c.renv = nullptr;
      throw;
    }
    c.renv = nullptr;
    if (ok && !(a == b)) return true;
  }
  return false;
}

bool has_bigop(const Tree& t, int id, int depth = 0) {
  if (depth > Limits::kMaxDepth) throw TooBig{"deep"};
  const Node& n = t.at(id);
  if (n.kind == NK::Func && t.bigop(n.name)) return true;
  for (int k : n.kids)
    if (has_bigop(t, k, depth + 1)) return true;
  return false;
}

// \sum_{k=0}^{n} ... against a closed form: a Sum with symbolic bounds has values only where its
// bounds are integers. With every symbol an integer, its terms are summed (exactly when they are
// rational; else in doubles, undefined functions as fixed pseudo-random ones, with a tolerance
// scaled by the largest term): a difference at one such point shows the two differ, whatever
// closed form sympy finds for the Sum. Agreement proves nothing.
bool differ_at_integer_points(Ctx& c, int g, int p, const std::vector<std::string>& syms) {
  if (!has_bigop(c.t, g) && !has_bigop(c.t, p)) return false;
  static const int pts[][4] = {{4, 7, 3, 5}, {5, 3, 6, 4}, {6, 5, 4, 7}, {7, 4, 5, 3}};
  bool differ = false;
  for (const auto& pt : pts) {
    std::map<std::string, Rational> renv;
    Env env;
    for (size_t i = 0; i < syms.size(); ++i) {
      long v = pt[i % 4] + 2 * (long)(i / 4);
      renv[syms[i]] = Rational(BigInt(v));
      env[syms[i]] = cd((double)v, 0);
    }
    c.allow_bigop = true;
    c.renv = &renv;
    try {
      Rational a, b;
      bool ex = exact(c, g, &a) && exact(c, p, &b);
      c.renv = nullptr;
      if (ex) {
        differ = !(a == b);
      } else {
        c.allow_ext = true;
        c.mag = 0;
        cd x = ev(c, g, env), y = ev(c, p, env);
        double scale = std::max({1.0, std::abs(x), std::abs(y), c.mag});
        differ = std::isfinite(x.real()) && std::isfinite(x.imag()) && std::isfinite(y.real()) &&
                 std::isfinite(y.imag()) && c.mag < 1e12 && std::abs(x - y) > 1e-6 * scale;
      }
    } catch (Unsure&) {
    } catch (TooBig&) {
    } catch (...) {
      c.allow_bigop = c.allow_ext = false;
      c.renv = nullptr;
      throw;
    }
    c.allow_bigop = c.allow_ext = false;
    c.renv = nullptr;
    if (differ) return true;
  }
  return false;
}

Tri numeric_or_symbolic(Ctx& c, int g, int p) {
  // a product with a literal 0 factor is compared as the number 0: math-verify's numeric test
  // either evaluates it (doit() before ==, round() or a - b) or, when the other side is an atomic
  // number, evaluates that side, with the same outcome as for the number 0
  if (zero_product(c.t, g)) g = c.t.num(Rational(0));
  if (zero_product(c.t, p)) p = c.t.num(Rational(0));
  const Node& x = c.t.at(g);
  const Node& y = c.t.at(p);
  if (x.kind == NK::Matrix || y.kind == NK::Matrix) {
    if (x.kind != NK::Matrix || y.kind != NK::Matrix) return Tri::False;
    if (x.rows != y.rows || x.cols != y.cols) return Tri::False;
    Tri acc = Tri::True;
    std::vector<int> xk = x.kids, yk = y.kids;
    for (size_t i = 0; i < xk.size(); ++i) {
      acc = tri_and(acc, numeric_or_symbolic(c, xk[i], yk[i]));
      if (acc == Tri::False) return acc;
    }
    return acc;
  }
  if (!scalar_tree(c.t, g) || !scalar_tree(c.t, p)) {
    if (has_inf(c.t, g) || has_inf(c.t, p)) throw Unsure{"infinity in an expression"};
    if (x.kind == NK::Rel || x.kind == NK::And || y.kind == NK::Rel || y.kind == NK::And) return Tri::False;
    throw Unsure{"non-scalar comparison"};
  }
  // 42/0, 1/0: sympy's zoo once evaluated (doit() or a - b). Not structurally equal to the other side
  // (tested before), so doit() == gives False, a Float's round() fails, and a - b is zoo or nan,
  // which neither evalf nor simplify makes 0
  if (is_zoo_product(c.t, g) || is_zoo_product(c.t, p)) return Tri::False;
  std::vector<std::string> syms;
  bool hf = false;
  collect_syms(c.t, g, &syms, &hf);
  collect_syms(c.t, p, &syms, &hf);
  if (syms.empty() && undef_call_vs_other(c.t, g, p)) return Tri::False;  // 1 vs \zeta(2)
  if (syms.empty() && depends_on_undef_calls(c, g, p)) return Tri::False;  // 1 vs \zeta(2) - 1
  bool gf, gi, gp, pf, pi, pp;
  bool ga = atomic_num(c.t, g, &gf, &gi, &gp);
  bool pa = atomic_num(c.t, p, &pf, &pi, &pp);
  // complex-mode symbols (and a mixed pair's distinct same-named ones) are evaluated at the same
  // real points: a difference there still shows the expressions differ, agreement proves nothing
  bool complex_syms = false;
  if (c.marked) {
    for (const std::string& v : syms) complex_syms = complex_syms || is_complex_sym(v);
  } else {
    complex_syms = c.t.complex && !syms.empty();
  }
  if (ga || pa) {
    if ((ga && gf) || (pa && pf)) {
      if (!syms.empty()) return Tri::False;  // rounding a symbolic expression fails -> not equal
      auto lit_digits = [&](int id) {
        const Node& n = c.t.at(id);
        const Node& m = n.kind == NK::Pct ? c.t.at(n.kids[0]) : n;
        return m.kind == NK::Num && m.isfloat ? m.float_digits : 0;
      };
      Val a = value(c, g), b = value(c, p);
      if (lit_digits(g) > 15 || lit_digits(p) > 15) {
        // a long literal's double may round differently from sympy's Float, but values this far
        // apart differ at 6 decimals either way
        cd d = a.z - b.z;
        bool fin = std::isfinite(a.z.real()) && std::isfinite(b.z.real()) && a.z.imag() == 0 && b.z.imag() == 0;
        if (fin && std::abs(d) > 1e-3 + 1e-9 * std::max(std::abs(a.z), std::abs(b.z))) return Tri::False;
        throw Unsure{"long float literal"};
      }
      Rational ra, rb;
      if (!round6(a, &ra) || !round6(b, &rb)) throw Unsure{"rounding"};
      return tri_of(ra == rb);
    }
    if (ga && gi && pa && pi) {
      const Node& xn = gp ? c.t.at(x.kids[0]) : x;
      const Node& yn = pp ? c.t.at(y.kids[0]) : y;
      return tri_of(xn.val == yn.val);
    }
    // doit() then structural equality; then simplify(a - b) == 0: equal values. With variables
    // on one side, simplify can still reach 0 (0*x*y, x - x + 3), so fall through to the
    // evaluation at points below.
    if (syms.empty()) {
      Tri r = values_equal(value(c, g), value(c, p));
      if (r == Tri::Unknown) throw Unsure{"close values"};
      return r;
    }
  }
  if (syms.empty()) {
    Tri r = values_equal(value(c, g), value(c, p));
    if (r == Tri::Unknown) throw Unsure{"close values"};
    return r;
  }
  // variables: evaluate at fixed pseudo-random points
  static const double pts[][4] = {{0.3781, -1.2917, 2.1183, 0.7349},
                                  {1.6421, 0.5573, -0.8861, 2.9077},
                                  {-0.6137, 1.9309, 0.2473, -1.4411},
                                  {2.4519, -0.3299, 1.3187, 0.5021}};
  int valid = 0;
  bool all_equal = true;
  c.ext_used = false;
  for (int k = 0; k < 4; ++k) {
    Env env;
    for (size_t i = 0; i < syms.size(); ++i) {
      // a complex-mode symbol (real=False) takes non-real values only
      double im = is_complex_sym(syms[i]) ? 0.6173 + 0.211 * (double)((i + (size_t)k) % 3) : 0.0;
      env[syms[i]] = cd(pts[k][i % 4] + 0.137 * (double)(i / 4), im);
    }
    cd a, b;
    c.allow_ext = true;
    try {
      a = ev(c, g, env);
      b = ev(c, p, env);
    } catch (Unsure&) {
      c.allow_ext = false;
      continue;
    } catch (...) {
      c.allow_ext = false;
      throw;
    }
    c.allow_ext = false;
    int r = cmp_tol(a, b);
    if (r < 0) continue;
    ++valid;
    if (r == 0) all_equal = false;
  }
  if (valid < 2) {
    if (undef_call_vs_other(c.t, g, p)) return Tri::False;
    if (differ_at_rational_points(c, g, p, syms)) return Tri::False;
    if (differ_at_integer_points(c, g, p, syms)) return Tri::False;
    // one side a constant too large for a double (4^{545} + 545^4), the other finite at the points:
    // they cannot be equal
    std::vector<std::string> gs, ps;
    bool ghf = false, phf = false;
    collect_syms(c.t, g, &gs, &ghf);
    collect_syms(c.t, p, &ps, &phf);
    if (gs.empty() != ps.empty()) {
      int k = gs.empty() ? g : p, o = gs.empty() ? p : g;
      Rational q;
      if (exact(c, k, &q) && !q.is_zero() && q.num.log10_abs() - q.den.log10_abs() > 300) {
        int finite = 0;
        for (int j = 0; j < 4; ++j) {
          Env env;
          for (size_t i = 0; i < syms.size(); ++i) env[syms[i]] = cd(pts[j][i % 4] + 0.137 * (double)(i / 4), 0);
          try {
            cd v = ev(c, o, env);
            if (std::isfinite(v.real()) && std::isfinite(v.imag()) && std::abs(v) < 1e250) ++finite;
          } catch (Unsure&) {
          }
        }
        if (finite >= 2) return Tri::False;
      }
    }
    throw Unsure{"could not evaluate"};
  }
  if (!all_equal) return Tri::False;
  if (complex_syms) throw Unsure{"complex symbols"};
  if (hf || c.ext_used) {
    // an exact proof (undefined functions have no form; Gamma-extended factorials do)
    if (same_normal_form(c.t, g, p)) return Tri::True;
    throw Unsure{"functions of variables agree numerically"};
  }
  return Tri::True;
}

// relations: same type and lhs - rhs equal, flipped, or proportional (same solutions)
Tri compare_relational(Ctx& c, int g, int p) {
  const Node& x = c.t.at(g);
  const Node& y = c.t.at(p);
  if (x.kind == NK::And && y.kind == NK::And) {
    if (x.kids.size() != y.kids.size()) return Tri::False;
    Tri acc = Tri::True;
    std::vector<int> xk = x.kids, yk = y.kids;
    for (size_t i = 0; i < xk.size(); ++i) {
      acc = tri_and(acc, compare_relational(c, xk[i], yk[i]));
      if (acc == Tri::False) return acc;
    }
    return acc;
  }
  if (x.kind != NK::Rel || y.kind != NK::Rel) return Tri::False;
  RelOp go = x.op, po = y.op;
  int dg = c.t.op(NK::Add, {x.kids[0], c.t.op(NK::Mul, {c.t.num(Rational(-1)), x.kids[1]})});
  int dp = c.t.op(NK::Add, {y.kids[0], c.t.op(NK::Mul, {c.t.num(Rational(-1)), y.kids[1]})});
  auto top_set = [&](int k) { return is_setlike(c.t.at(k).kind); };
  if (top_set(x.kids[0]) || top_set(x.kids[1]) || top_set(y.kids[0]) || top_set(y.kids[1])) {
    // x = {-1, 1} or (x, y) = (1, 2): sympy cannot subtract a set, tuple or interval, so the
    // reference's same-type, flipped and solve checks all raise (False); only its structural
    // equality, tested before, can give True. Sides that might match leave it undecided.
    auto maybe = [&](int a, int b) {
      try {
        return expr_eq(c, a, b) != Tri::False;
      } catch (Unsure&) {
        return true;
      }
    };
    bool same = go == po && maybe(x.kids[0], y.kids[0]) && maybe(x.kids[1], y.kids[1]);
    bool swapped = maybe(x.kids[0], y.kids[1]) && maybe(x.kids[1], y.kids[0]);
    // sides made of symbols, short number literals and finite sets / tuples of them: sympy's
    // structural equality is exactly ours (tested before, False), so nothing can give True
    std::function<bool(int, int)> literal = [&](int k, int d) {
      const Node& n = c.t.at(k);
      if (n.kind == NK::Sym) return true;
      if (n.kind == NK::Num) return !n.isfloat || n.float_digits <= 15;
      if (d == 0 && (n.kind == NK::FSet || n.kind == NK::Tuple)) {
        for (int e : n.kids)
          if (!literal(e, 1)) return false;
        return true;
      }
      return false;
    };
    bool literals = true;
    for (int k : {x.kids[0], x.kids[1], y.kids[0], y.kids[1]}) literals = literals && literal(k, 0);
    if (literals) return Tri::False;
    if (same || swapped) throw Unsure{"relation between non-scalars"};
    return Tri::False;
  }
  for (int k : {x.kids[0], x.kids[1], y.kids[0], y.kids[1]})
    if (!scalar_tree(c.t, k)) throw Unsure{"relation between non-scalars"};
  if (go == po) {
    Tri r = numeric_or_symbolic(c, dg, dp);
    if (r == Tri::True) return r;
  }
  auto inverse = [](RelOp o) {
    switch (o) {
      case RelOp::Lt: return RelOp::Gt;
      case RelOp::Gt: return RelOp::Lt;
      case RelOp::Le: return RelOp::Ge;
      case RelOp::Ge: return RelOp::Le;
      default: return o;
    }
  };
  if (go == RelOp::Ne) return Tri::False;  // no inverse relation: the reference gives up
  if (inverse(go) == po) {
    int mdp = c.t.op(NK::Mul, {c.t.num(Rational(-1)), dp});
    Tri r = numeric_or_symbolic(c, dg, mdp);
    if (r == Tri::True) return r;
  }
  // solving both sides: equal solution sets. Decide the proportional case (same solutions) and
  // the single-variable linear case; leave the rest to the fallback.
  // math-verify then solves both sides; that only succeeds (and can give True) for equations in
  // two or more variables (a single variable's solutions come back in a form it cannot compare)
  bool g_eq = go == RelOp::Eq, p_eq = po == RelOp::Eq;
  if (!g_eq || !p_eq) return Tri::False;
  std::vector<std::string> syms, gs, ps;
  bool hf = false;
  collect_syms(c.t, dg, &gs, &hf);
  collect_syms(c.t, dp, &ps, &hf);
  // f(x) = c (an undefined function of a symbol against a number): sympy's solve raises
  // NotImplementedError ("No algorithms are implemented"), and so does the reference's comparison
  auto undef_eq_number = [&](const Node& r) {
    if (r.op != RelOp::Eq) return false;
    for (int s = 0; s < 2; ++s) {
      const Node& f = c.t.at(r.kids[s]);
      Rational q;
      if (f.kind == NK::Func && f.name.rfind("fn:", 0) == 0 && f.kids.size() == 1 &&
          c.t.at(f.kids[0]).kind == NK::Sym && exact(c, r.kids[1 - s], &q))
        return true;
    }
    return false;
  };
  if (undef_eq_number(x) || undef_eq_number(y)) return Tri::False;
  if (gs.empty() || ps.empty()) throw Unsure{"solve"};
  if (gs.size() == 1 && ps.size() == 1) return Tri::False;
  // x = c (c a number): solve(.., {x}) returns the list [c] of values, not of dicts; against the
  // other side's solutions (dicts, or none) the reference's zip raises (.items() of a value, or
  // unequal lengths): False
  auto sym_eq_number = [&](const Node& r) {
    if (r.op != RelOp::Eq) return false;
    for (int s = 0; s < 2; ++s) {
      Rational q;
      if (c.t.at(r.kids[s]).kind == NK::Sym && exact(c, r.kids[1 - s], &q)) return true;
    }
    return false;
  };
  if ((gs.size() == 1 && sym_eq_number(x)) || (ps.size() == 1 && sym_eq_number(y))) return Tri::False;
  if (gs.size() == 1 || ps.size() == 1) throw Unsure{"solve"};
  syms = gs;
  for (auto& v : ps)
    if (std::find(syms.begin(), syms.end(), v) == syms.end()) syms.push_back(v);
  if (hf || c.t.complex) throw Unsure{"solve"};
  // ratio dg / dp at several points
  static const double pts[][4] = {{0.3781, -1.2917, 2.1183, 0.7349},
                                  {1.6421, 0.5573, -0.8861, 2.9077},
                                  {-0.6137, 1.9309, 0.2473, -1.4411}};
  double ratio = 0;
  bool prop = true;
  for (int k = 0; k < 3; ++k) {
    Env env;
    for (size_t i = 0; i < syms.size(); ++i) env[syms[i]] = cd(pts[k][i % 4] + 0.137 * (double)(i / 4), 0);
    cd a = ev(c, dg, env), b = ev(c, dp, env);
    if (std::abs(b) < 1e-9 || std::abs(a.imag()) > 1e-9 || std::abs(b.imag()) > 1e-9) throw Unsure{"solve"};
    double r = a.real() / b.real();
    if (k == 0) ratio = r;
    else if (std::abs(r - ratio) > 1e-9 * std::max(1.0, std::abs(ratio))) prop = false;
  }
  if (!prop && g_eq) {
    // two affine equations with different solution sets: not proportional -> different
    auto affine = [&](int d) {
      for (int k = 0; k < 2; ++k) {
        Env e1, e2, em;
        for (size_t i = 0; i < syms.size(); ++i) {
          double a = pts[k][i % 4] + 0.137 * (double)(i / 4), b = pts[k + 1][(i + 1) % 4] - 0.071 * (double)(i / 4);
          e1[syms[i]] = cd(a, 0);
          e2[syms[i]] = cd(b, 0);
          em[syms[i]] = cd(0.3 * a + 0.7 * b, 0);
        }
        cd f1 = ev(c, d, e1), f2 = ev(c, d, e2), fm = ev(c, d, em);
        if (cmp_tol(fm, 0.3 * f1 + 0.7 * f2) != 1) return false;
      }
      return true;
    };
    if (affine(dg) && affine(dp)) return Tri::False;
  }
  if (prop && std::abs(ratio) > 1e-12) {
    if (gs.size() != ps.size()) throw Unsure{"solve"};
    return Tri::True;
  }
  throw Unsure{"solve"};
}

// Lower bound on the free symbols of math-verify's unwrap_fcs(relation): the symbols that the
// value of some side depends on, with each undefined function call held fixed (unwrap_fcs makes a
// call a symbol, so the symbols in its arguments are gone). A symbol that sympy's evaluation
// cancels (x - x) changes no value and is not counted.
int free_symbols_lower_bound(Ctx& c, int rel) {
  std::vector<int> sides;
  std::vector<int> stack{rel};
  while (!stack.empty()) {
    int k = stack.back();
    stack.pop_back();
    const Node& n = c.t.at(k);
    if (n.kind == NK::And) {
      for (int j : n.kids) stack.push_back(j);
    } else {
      sides.push_back(n.kids[0]);
      sides.push_back(n.kids[1]);
    }
  }
  std::vector<std::string> syms;
  bool hf = false;
  for (int sd : sides) {
    if (!scalar_tree(c.t, sd)) return 0;
    collect_syms(c.t, sd, &syms, &hf);
  }
  static const double pts[] = {0.3781, -1.2917, 2.1183, 0.7349, 1.6421, 0.5573, -0.8861, 2.9077};
  auto values = [&](const Env& env, std::vector<cd>* out) {
    out->clear();
    c.allow_ext = c.fn_by_name = true;
    try {
      for (int sd : sides) out->push_back(ev(c, sd, env));
    } catch (Unsure&) {
      c.allow_ext = c.fn_by_name = false;
      return false;
    } catch (...) {
      c.allow_ext = c.fn_by_name = false;
      throw;
    }
    c.allow_ext = c.fn_by_name = false;
    return true;
  };
  int count = 0;
  for (size_t s = 0; s < syms.size(); ++s) {
    Env env;
    for (size_t i = 0; i < syms.size(); ++i) env[syms[i]] = cd(pts[i % 8] + 0.137 * (double)(i / 8), 0);
    std::vector<cd> v0, v1;
    if (!values(env, &v0)) continue;
    env[syms[s]] = cd(pts[(s + 3) % 8] + 0.291, 0);
    if (!values(env, &v1)) continue;
    for (size_t i = 0; i < v0.size(); ++i) {
      if (cmp_tol(v0[i], v1[i]) == 0) {
        ++count;
        break;
      }
    }
  }
  return count;
}

// Elements that cannot be one element of a sympy FiniteSet: math-verify's first test, a == b, would
// have made them equal (so a definite False of the comparison excludes it), or calls of different
// undefined functions.
bool surely_distinct(Ctx& c, int a, int b) {
  const Node& x = c.t.at(a);
  const Node& y = c.t.at(b);
  if (x.kind == NK::Func && y.kind == NK::Func && x.name.rfind("fn:", 0) == 0 && y.name.rfind("fn:", 0) == 0 &&
      x.name != y.name)
    return true;
  try {
    return expr_eq(c, a, b) == Tri::False;
  } catch (Unsure&) {
    return false;
  }
}

// A relation gold against a set: math-verify first tries unwrap_fcs(gold).as_set(), which raises
// for two or more free symbols; the gold then stays a relation and is compared as the set {gold}:
// with a set of two or more distinct non-relation elements (or the empty set) no element-wise
// comparison is reached and the symmetric difference is not empty: False.
Tri relation_vs_set(Ctx& c, int g, int p) {
  const Node& y = c.t.at(p);
  if (free_symbols_lower_bound(c, g) >= 2) {
    if (y.kind == NK::EmptySet) return Tri::False;
    if (y.kind == NK::FSet) {
      std::vector<int> el = y.kids;
      bool ok = el.size() >= 2 && (int)el.size() <= Limits::kMaxSetElems;
      for (int k : el) ok = ok && !is_relation(c.t, k) && (scalar_tree(c.t, k) || is_setlike(c.t.at(k).kind));
      for (size_t i = 0; ok && i < el.size(); ++i)
        for (size_t j = i + 1; ok && j < el.size(); ++j) ok = surely_distinct(c, el[i], el[j]);
      if (ok) return Tri::False;
    }
  }
  throw Unsure{"relation vs set"};
}

Tri expr_eq(Ctx& c, int g, int p) {
  DGuard guard(c.depth);
  bool gA = is_assignment(c.t, g), pA = is_assignment(c.t, p);
  bool gE = is_equation(c.t, g), pE = is_equation(c.t, p);
  if (gA && c.t.at(g).kind == NK::And)
    g = c.t.rel(RelOp::Eq, c.t.at(first_rel(c.t, g)).kids[0], c.t.at(last_rel(c.t, g)).kids[1]);
  if (pA && c.t.at(p).kind == NK::And)
    p = c.t.rel(RelOp::Eq, c.t.at(first_rel(c.t, p)).kids[0], c.t.at(last_rel(c.t, p)).kids[1]);
  if (pE && !gE) {
    p = c.t.at(last_rel(c.t, p)).kids[1];
  } else if (gA && !pE) {
    g = c.t.at(last_rel(c.t, g)).kids[1];
  }
  if (is_relation(c.t, g) && is_set_kind(c.t.at(p).kind)) return relation_vs_set(c, g, p);
  // a relation against a scalar expression is False whatever the symbols are (sympy cannot
  // subtract a relation): their identity does not matter there either
  bool rel_vs_scalar = (is_relation(c.t, g) && scalar_tree(c.t, p)) || (is_relation(c.t, p) && scalar_tree(c.t, g));
  if (c.mixed_complex && !rel_vs_scalar) {
    // symbols on one side only: their identity never matters; on both sides: undecided
    std::vector<std::string> gsyms, psyms;
    bool hf = false;
    collect_syms(c.t, g, &gsyms, &hf);
    collect_syms(c.t, p, &psyms, &hf);
    if (!gsyms.empty() && !psyms.empty()) throw Unsure{"complex symbols"};
  }
  if (struct_eq(c.t, g, p)) return Tri::True;
  bool gr = is_relation(c.t, g), pr = is_relation(c.t, p);
  if (gr && pr) return compare_relational(c, g, p);
  NK gk = c.t.at(g).kind, pk = c.t.at(p).kind;
  if (is_setlike(gk) || is_setlike(pk)) return compare_sets(c, g, p);
  if (gk == NK::Sym || pk == NK::Sym) return compare_symbols(c, g, p);
  if (gk == NK::Inf || gk == NK::NegInf || pk == NK::Inf || pk == NK::NegInf) {
    if ((gk == NK::Inf || gk == NK::NegInf) && (pk == NK::Inf || pk == NK::NegInf)) return tri_of(gk == pk);
    // an infinity vs a number literal: math-verify's numeric path compares two sympy Numbers
    // (oo == 3 is False, a Float's round() fails on oo) and simplify(3 - oo) = -oo is not zero
    if (gk == NK::Num || pk == NK::Num) return Tri::False;
    // an infinity vs plain algebra in real variables (2^n, 1/(n+1)), symbolic exponents included:
    // nothing to evaluate by doit(), and expr - oo never simplifies to 0 (a finite or zoo-valued
    // expr gives -oo, zoo or nan)
    int other = (gk == NK::Inf || gk == NK::NegInf) ? p : g;
    std::vector<std::string> syms;
    bool hf = false;
    collect_syms(c.t, other, &syms, &hf);
    if (!c.t.complex && !syms.empty() && plain_algebra(c.t, other)) return Tri::False;
    throw Unsure{"infinity"};
  }
  return numeric_or_symbolic(c, g, p);
}

}  // namespace

Tri answers_equal(const Tree& gold, const Tree& pred) {
  Ctx c;
  c.t.nodes.reserve(gold.nodes.size() + pred.nodes.size() + 64);
  size_t gstart = c.t.nodes.size();
  int g = c.t.import(gold, gold.root);
  c.t.import_bigops(gold);  // each side's sums right after it: the marking below goes by position
  size_t gops = c.t.bigops.size();
  size_t pstart = c.t.nodes.size();
  int p = c.t.import(pred, pred.root);
  c.t.import_bigops(pred);
  c.t.complex = gold.complex || pred.complex;
  c.marked = !gold.complex_mixed && !pred.complex_mixed;
  if (c.marked) {
    for (size_t i = gstart; i < c.t.nodes.size(); ++i) {
      Node& n = c.t.nodes[i];
      bool cplx = i < pstart ? gold.complex : pred.complex;
      if (n.kind == NK::Sym && cplx) n.name = std::string(1, kComplexMark) + n.name;
    }
    for (size_t i = 0; i < c.t.bigops.size(); ++i)  // a bound symbol is marked as its uses are
      if (i < gops ? gold.complex : pred.complex) c.t.bigops[i].var = std::string(1, kComplexMark) + c.t.bigops[i].var;
  } else {
    c.mixed_complex = gold.complex != pred.complex;
  }
  try {
    return expr_eq(c, g, p);
  } catch (std::domain_error&) {
    throw Unsure{"arithmetic domain error"};
  }
}

std::string tree_to_string(const Tree& t, int id) {
  if (id < 0) id = t.root;
  if (id < 0) return "<none>";
  const Node& n = t.at(id);
  auto kids = [&](const char* sep) {
    std::string s;
    for (size_t i = 0; i < n.kids.size(); ++i) s += (i ? sep : "") + tree_to_string(t, n.kids[i]);
    return s;
  };
  switch (n.kind) {
    case NK::Num: {
      std::string s = n.val.num.to_string();
      if (!n.val.den.is_one()) s += "/" + n.val.den.to_string();
      return n.isfloat ? "F(" + s + ")" : s;
    }
    case NK::Pct: return "Pct(" + kids(",") + ")";
    case NK::Sym: return n.name;
    case NK::Pi: return "pi";
    case NK::E: return "E";
    case NK::I: return "I";
    case NK::Inf: return "oo";
    case NK::NegInf: return "-oo";
    case NK::Add: return "Add(" + kids(",") + ")";
    case NK::Mul: return "Mul(" + kids(",") + ")";
    case NK::Pow: return "Pow(" + kids(",") + ")";
    case NK::Func: return n.name + "(" + kids(",") + ")";
    case NK::Rel: {
      static const char* ops[] = {"Eq", "Lt", "Le", "Gt", "Ge", "Ne"};
      return std::string(ops[(int)n.op]) + "(" + kids(",") + ")";
    }
    case NK::And: return "And(" + kids(",") + ")";
    case NK::FSet: return "{" + kids(",") + "}";
    case NK::Tuple: return "Tuple(" + kids(",") + ")";
    case NK::Interval:
      return std::string("Interval") + (n.lopen ? "(" : "[") + kids(",") + (n.ropen ? ")" : "]");
    case NK::Matrix: return "Matrix" + std::to_string(n.rows) + "x" + std::to_string(n.cols) + "(" + kids(",") + ")";
    case NK::EmptySet: return "EmptySet";
  }
  return "?";
}

}  // namespace paced
