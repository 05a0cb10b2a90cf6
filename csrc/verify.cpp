// verify(gold, response): both go through the same extraction; the verdict is True when the two
// parsed answers are equivalent or when their normalised answer strings are identical (as in
// math-verify, which compares every extracted form of the gold with every form of the response).
#include <string>

#include "core.hpp"
#include "textutil.hpp"

namespace paced {

namespace {
// Golds are written the way datasets write them ("\frac{1}{2}", "x=3", "(1, 2]"); a gold with
// no math delimiters is read as inline math, i.e. as "$gold$".
bool needs_wrap(const std::string& g) {
  return g.find('$') == std::string::npos && g.find("\\boxed") == std::string::npos &&
         g.find("\\fbox") == std::string::npos && g.find("\\(") == std::string::npos &&
         g.find("\\[") == std::string::npos;
}
}  // namespace

std::string gold_text(const std::string& gold) { return needs_wrap(gold) ? "$" + gold + "$" : gold; }

Tri compare_extracted(const Extracted& g, const Extracted& p) {
  if (g.has_str && p.has_str) {
    std::string a = strip(g.str), b = strip(p.str);
    if (!a.empty() && a == b) return Tri::True;
  }
  if (g.has_expr && p.has_expr) return answers_equal(g.expr, p.expr);
  return Tri::False;
}

namespace {
// One place that maps the scorer's exceptions to verdicts: undecidable -> Unknown (the Python
// side falls back to math-verify), over a work limit -> False with the limit flag.
template <class F>
Verdict guarded(F&& decide) {
  try {
    return Verdict{decide(), false};
  } catch (Unsure&) {
    return Verdict{Tri::Unknown, false};
  } catch (TooBig&) {
    return Verdict{Tri::False, true};
  } catch (LimitError&) {
    return Verdict{Tri::False, true};
  } catch (std::exception&) {
    return Verdict{Tri::Unknown, false};
  }
}
}  // namespace

Verdict verify_against(const Extracted& gold, const std::string& response) {
  return guarded([&] { return compare_extracted(gold, extract(response)); });
}

Verdict verify_one(const std::string& gold, const std::string& response) {
  return guarded([&] {
    Extracted g = extract(gold_text(gold));  // gold first, as before: its errors decide too
    return compare_extracted(g, extract(response));
  });
}

}  // namespace paced
