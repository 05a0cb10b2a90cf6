// Small arbitrary-precision integers and exact rationals for answer comparison.
//
// Base 1e9 limbs, little endian, with a hard size cap (kMaxLimbs) so that no input can make an
// operation take unbounded time or memory: exceeding the cap throws LimitError, which the scorer
// turns into a bounded "resource limit" verdict.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace paced {

struct LimitError : std::runtime_error {
  explicit LimitError(const char* what) : std::runtime_error(what) {}
};

class BigInt {
 public:
  static constexpr uint32_t kBase = 1000000000u;
  static constexpr size_t kMaxLimbs = 400;  // ~3600 decimal digits

  BigInt() = default;
  BigInt(int64_t v) {  // NOLINT(google-explicit-constructor)
    neg_ = v < 0;
    uint64_t u = neg_ ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    while (u) {
      d_.push_back((uint32_t)(u % kBase));
      u /= kBase;
    }
  }

  // Parses an optional '-' followed by decimal digits. Returns false on anything else.
  static bool from_string(const std::string& s, BigInt* out) {
    size_t i = 0;
    bool neg = false;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i >= s.size()) return false;
    for (size_t j = i; j < s.size(); ++j)
      if (s[j] < '0' || s[j] > '9') return false;
    while (i + 1 < s.size() && s[i] == '0') ++i;
    size_t ndig = s.size() - i;
    if (ndig > kMaxLimbs * 9) throw LimitError("integer literal too long");
    BigInt r;
    for (size_t end = s.size(); end > i;) {
      size_t start = end >= i + 9 ? end - 9 : i;
      uint32_t limb = 0;
      for (size_t j = start; j < end; ++j) limb = limb * 10 + (uint32_t)(s[j] - '0');
      r.d_.push_back(limb);
      end = start;
    }
    r.trim();
    r.neg_ = neg && !r.is_zero();
    *out = r;
    return true;
  }

  bool is_zero() const { return d_.empty(); }
  bool is_neg() const { return neg_; }
  bool is_one() const { return !neg_ && d_.size() == 1 && d_[0] == 1; }
  // |value| when it has at most two limbs (< 1e18, so it also fits an int64): the fast path of
  // gcd / Rational::make, which run on almost every comparison
  bool small_abs(uint64_t* out) const {
    if (d_.size() > 2) return false;
    *out = d_.empty() ? 0 : d_.size() == 1 ? d_[0] : (uint64_t)d_[1] * kBase + d_[0];
    return true;
  }
  size_t limbs() const { return d_.size(); }

  std::string to_string() const {
    if (d_.empty()) return "0";
    std::string s = neg_ ? "-" : "";
    s += std::to_string(d_.back());
    char buf[16];
    for (size_t i = d_.size() - 1; i-- > 0;) {
      snprintf(buf, sizeof buf, "%09u", d_[i]);
      s += buf;
    }
    return s;
  }

  double to_double() const {
    double r = 0;
    for (size_t i = d_.size(); i-- > 0;) r = r * kBase + d_[i];
    return neg_ ? -r : r;
  }
  // log10 of |x| (x != 0), accurate enough for magnitude decisions
  double log10_abs() const {
    if (d_.empty()) return -INFINITY;
    size_t n = d_.size();
    double top = d_[n - 1];
    if (n >= 2) top += d_[n - 2] / 1e9;
    if (n >= 3) top += d_[n - 3] / 1e18;
    return std::log10(top) + 9.0 * (double)(n - 1);
  }
  bool fits_int64() const { return d_.size() <= 2 || (d_.size() == 3 && d_[2] < 9); }
  int64_t to_int64() const {  // only valid when fits_int64()
    int64_t r = 0;
    for (size_t i = d_.size(); i-- > 0;) r = r * kBase + d_[i];
    return neg_ ? -r : r;
  }

  BigInt operator-() const {
    BigInt r = *this;
    if (!r.is_zero()) r.neg_ = !r.neg_;
    return r;
  }
  BigInt abs() const {
    BigInt r = *this;
    r.neg_ = false;
    return r;
  }

  static int cmp_abs(const BigInt& a, const BigInt& b) {
    if (a.d_.size() != b.d_.size()) return a.d_.size() < b.d_.size() ? -1 : 1;
    for (size_t i = a.d_.size(); i-- > 0;)
      if (a.d_[i] != b.d_[i]) return a.d_[i] < b.d_[i] ? -1 : 1;
    return 0;
  }
  static int cmp(const BigInt& a, const BigInt& b) {
    if (a.neg_ != b.neg_) return a.neg_ ? -1 : 1;
    int c = cmp_abs(a, b);
    return a.neg_ ? -c : c;
  }
  bool operator==(const BigInt& o) const { return neg_ == o.neg_ && d_ == o.d_; }
  bool operator!=(const BigInt& o) const { return !(*this == o); }
  bool operator<(const BigInt& o) const { return cmp(*this, o) < 0; }

  friend BigInt operator+(const BigInt& a, const BigInt& b) {
    if (a.neg_ == b.neg_) {
      BigInt r = add_abs(a, b);
      r.neg_ = a.neg_ && !r.is_zero();
      return r;
    }
    int c = cmp_abs(a, b);
    if (c == 0) return BigInt();
    BigInt r = c > 0 ? sub_abs(a, b) : sub_abs(b, a);
    r.neg_ = c > 0 ? a.neg_ : b.neg_;
    return r;
  }
  friend BigInt operator-(const BigInt& a, const BigInt& b) { return a + (-b); }
  friend BigInt operator*(const BigInt& a, const BigInt& b) {
    if (a.is_zero() || b.is_zero()) return BigInt();
    if (a.d_.size() + b.d_.size() > kMaxLimbs + 1) throw LimitError("integer too large");
    std::vector<uint64_t> t(a.d_.size() + b.d_.size() + 1, 0);
    for (size_t i = 0; i < a.d_.size(); ++i) {
      uint64_t carry = 0;
      for (size_t j = 0; j < b.d_.size(); ++j) {
        uint64_t cur = t[i + j] + (uint64_t)a.d_[i] * b.d_[j] + carry;
        t[i + j] = cur % kBase;
        carry = cur / kBase;
      }
      size_t k = i + b.d_.size();
      while (carry) {
        uint64_t cur = t[k] + carry;
        t[k] = cur % kBase;
        carry = cur / kBase;
        ++k;
      }
    }
    BigInt r;
    r.d_.assign(t.begin(), t.end());
    r.trim();
    r.neg_ = a.neg_ != b.neg_;
    if (r.d_.size() > kMaxLimbs) throw LimitError("integer too large");
    return r;
  }

  // Truncating division (like C): a = q*b + r with |r| < |b|, sign(r) = sign(a).
  static void divmod(const BigInt& a, const BigInt& b, BigInt* q, BigInt* r) {
    if (b.is_zero()) throw std::domain_error("division by zero");
    if (cmp_abs(a, b) < 0) {
      if (q) *q = BigInt();
      if (r) *r = a;
      return;
    }
    BigInt quot, rem;
    if (b.d_.size() == 1) {
      uint64_t rr = 0;
      quot.d_.resize(a.d_.size());
      for (size_t i = a.d_.size(); i-- > 0;) {
        uint64_t cur = a.d_[i] + rr * kBase;
        quot.d_[i] = (uint32_t)(cur / b.d_[0]);
        rr = cur % b.d_[0];
      }
      quot.trim();
      if (rr) rem.d_.push_back((uint32_t)rr);
    } else {
      // schoolbook long division, one base-1e9 digit at a time with binary search on the digit
      BigInt bb = b.abs();
      for (size_t i = a.d_.size(); i-- > 0;) {
        rem.d_.insert(rem.d_.begin(), a.d_[i]);
        rem.trim();
        uint32_t lo = 0, hi = kBase - 1;
        // estimate from leading limbs to narrow the search
        if (rem.d_.size() >= bb.d_.size()) {
          double num = rem.to_double_top(bb.d_.size());
          double den = bb.to_double_top(bb.d_.size());
          double est = num / den;
          if (est < 0) est = 0;
          uint64_t e = (uint64_t)est;
          lo = e > 2 ? (uint32_t)std::min<uint64_t>(e - 2, kBase - 1) : 0;
          hi = (uint32_t)std::min<uint64_t>(e + 2, kBase - 1);
          if (lo > hi) lo = 0;
        } else {
          lo = hi = 0;
        }
        uint32_t digit = 0;
        while (lo <= hi) {
          uint32_t mid = lo + (hi - lo) / 2;
          BigInt prod = bb * BigInt((int64_t)mid);
          if (cmp_abs(prod, rem) <= 0) {
            digit = mid;
            lo = mid + 1;
          } else {
            if (mid == 0) break;
            hi = mid - 1;
          }
        }
        if (digit) rem = sub_abs(rem, bb * BigInt((int64_t)digit));
        quot.d_.insert(quot.d_.begin(), digit);
      }
      quot.trim();
      rem.trim();
    }
    quot.neg_ = (a.neg_ != b.neg_) && !quot.is_zero();
    rem.neg_ = a.neg_ && !rem.is_zero();
    if (q) *q = quot;
    if (r) *r = rem;
  }

  static BigInt gcd(BigInt a, BigInt b) {
    uint64_t x, y;
    if (a.small_abs(&x) && b.small_abs(&y)) {
      while (y) {
        uint64_t t = x % y;
        x = y;
        y = t;
      }
      return BigInt((int64_t)x);
    }
    a.neg_ = b.neg_ = false;
    int guard = 0;
    while (!b.is_zero()) {
      BigInt r;
      divmod(a, b, nullptr, &r);
      a = std::move(b);
      b = std::move(r);
      if (++guard > 100000) throw LimitError("gcd did not converge");
    }
    return a;
  }

  static BigInt pow10(int k) {
    if (k < 0 || (size_t)k > kMaxLimbs * 9) throw LimitError("power of ten too large");
    BigInt r;
    r.d_.assign((size_t)k / 9, 0);
    uint32_t top = 1;
    for (int i = 0; i < k % 9; ++i) top *= 10;
    r.d_.push_back(top);
    return r;
  }

  // base^e by squaring; throws LimitError if the result would exceed the cap
  static BigInt pow(const BigInt& base, uint64_t e) {
    if (e == 0) return BigInt(1);
    if (base.is_zero()) return BigInt();
    if (base.d_.size() == 1 && base.d_[0] == 1) return (base.neg_ && (e & 1)) ? BigInt(-1) : BigInt(1);
    double digits = base.log10_abs() * (double)e;
    if (digits > (double)kMaxLimbs * 9 - 9) throw LimitError("power too large");
    BigInt result(1), b = base;
    while (e) {
      if (e & 1) result = result * b;
      e >>= 1;
      if (e) b = b * b;
    }
    return result;
  }

  bool is_even() const { return d_.empty() || (d_[0] % 2 == 0); }

 private:
  bool neg_ = false;
  std::vector<uint32_t> d_;

  void trim() {
    while (!d_.empty() && d_.back() == 0) d_.pop_back();
    if (d_.empty()) neg_ = false;
  }
  double to_double_top(size_t nl) const {  // value / kBase^(nl-1), using top 3 limbs
    double r = 0;
    size_t n = d_.size();
    for (size_t i = n; i-- > 0 && n - i <= 3;) r = r * kBase + d_[i];
    // r currently holds top min(3,n) limbs; scale to units of kBase^(nl-1)
    size_t used = std::min<size_t>(3, n);
    long shift = (long)(n - used) - (long)(nl - 1);
    return r * std::pow((double)kBase, (double)shift);
  }
  static BigInt add_abs(const BigInt& a, const BigInt& b) {
    BigInt r;
    size_t n = std::max(a.d_.size(), b.d_.size());
    if (n + 1 > kMaxLimbs + 1) throw LimitError("integer too large");
    r.d_.resize(n + 1, 0);
    uint64_t carry = 0;
    for (size_t i = 0; i < n; ++i) {
      uint64_t cur = carry;
      if (i < a.d_.size()) cur += a.d_[i];
      if (i < b.d_.size()) cur += b.d_[i];
      r.d_[i] = (uint32_t)(cur % kBase);
      carry = cur / kBase;
    }
    r.d_[n] = (uint32_t)carry;
    r.trim();
    return r;
  }
  static BigInt sub_abs(const BigInt& a, const BigInt& b) {  // |a| >= |b|
    BigInt r;
    r.d_.resize(a.d_.size(), 0);
    int64_t borrow = 0;
    for (size_t i = 0; i < a.d_.size(); ++i) {
      int64_t cur = (int64_t)a.d_[i] - borrow - (i < b.d_.size() ? (int64_t)b.d_[i] : 0);
      borrow = cur < 0;
      if (cur < 0) cur += kBase;
      r.d_[i] = (uint32_t)cur;
    }
    r.trim();
    return r;
  }
};

// Exact rational num/den, den > 0, gcd(num, den) = 1.
struct Rational {
  BigInt num{0};
  BigInt den{1};

  Rational() = default;
  Rational(const BigInt& n) : num(n), den(1) {}  // NOLINT(google-explicit-constructor)
  Rational(int64_t n) : num(n), den(1) {}        // NOLINT(google-explicit-constructor)
  static Rational make(BigInt n, BigInt d) {
    if (d.is_zero()) throw std::domain_error("zero denominator");
    if (d.is_neg()) {
      n = -n;
      d = -d;
    }
    uint64_t an, ad;
    if (n.small_abs(&an) && d.small_abs(&ad)) {  // both below 1e18: plain integer arithmetic
      uint64_t x = an, y = ad;
      while (y) {
        uint64_t t = x % y;
        x = y;
        y = t;
      }
      Rational r;
      if (x > 1) {
        int64_t q = (int64_t)(an / x);
        r.num = BigInt(n.is_neg() ? -q : q);
        r.den = BigInt((int64_t)(ad / x));
      } else {
        r.num = std::move(n);
        r.den = std::move(d);
      }
      return r;
    }
    BigInt g = BigInt::gcd(n, d);
    Rational r;
    if (!g.is_one() && !g.is_zero()) {
      BigInt::divmod(n, g, &r.num, nullptr);
      BigInt::divmod(d, g, &r.den, nullptr);
    } else {
      r.num = n;
      r.den = d;
    }
    return r;
  }
  bool is_integer() const { return den.is_one(); }
  bool is_zero() const { return num.is_zero(); }
  bool is_neg() const { return num.is_neg(); }
  double to_double() const {
    double ln = num.is_zero() ? 0 : num.log10_abs(), ld = den.log10_abs();
    if (ln > 300 || ld > 300) return (num.is_neg() ? -1.0 : 1.0) * std::pow(10.0, ln - ld);
    return num.to_double() / den.to_double();
  }
  bool operator==(const Rational& o) const { return num == o.num && den == o.den; }
  bool operator!=(const Rational& o) const { return !(*this == o); }
  friend Rational operator+(const Rational& a, const Rational& b) {
    return make(a.num * b.den + b.num * a.den, a.den * b.den);
  }
  friend Rational operator-(const Rational& a, const Rational& b) {
    return make(a.num * b.den - b.num * a.den, a.den * b.den);
  }
  friend Rational operator*(const Rational& a, const Rational& b) { return make(a.num * b.num, a.den * b.den); }
  friend Rational operator/(const Rational& a, const Rational& b) {
    if (b.is_zero()) throw std::domain_error("division by zero");
    return make(a.num * b.den, a.den * b.num);
  }
  Rational operator-() const {
    Rational r = *this;
    r.num = -r.num;
    return r;
  }
  static int cmp(const Rational& a, const Rational& b) { return BigInt::cmp(a.num * b.den, b.num * a.den); }
};

}  // namespace paced
