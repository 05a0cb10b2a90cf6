// Python bindings: paced_kernels._scorer. The batch entry points copy the strings out of Python
// objects, release the GIL and score on a pool of std::threads.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core.hpp"
#include "number_scan.hpp"

namespace py = pybind11;

namespace paced {
std::string gold_text(const std::string& gold);
Tri compare_extracted(const Extracted& g, const Extracted& p);
}  // namespace paced

namespace {

using namespace paced;

// UTF-8 bytes of a str (lone surrogates replaced) or the raw bytes of a bytes object
std::string to_bytes(PyObject* o) {
  if (PyUnicode_Check(o)) {
    Py_ssize_t n;
    const char* p = PyUnicode_AsUTF8AndSize(o, &n);
    if (p) return std::string(p, (size_t)n);
    PyErr_Clear();
    PyObject* b = PyUnicode_AsEncodedString(o, "utf-8", "replace");
    if (!b) throw py::error_already_set();
    std::string s(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return s;
  }
  if (PyBytes_Check(o)) return std::string(PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
  if (o == Py_None) throw py::type_error("expected str, got None");
  throw py::type_error(std::string("expected str, got ") + Py_TYPE(o)->tp_name);
}

std::vector<std::string> to_strings(const py::sequence& seq, const char* what) {
  std::vector<std::string> out;
  out.reserve((size_t)py::len(seq));
  for (size_t i = 0; i < (size_t)py::len(seq); ++i) {
    py::object item = seq[i];
    try {
      out.push_back(to_bytes(item.ptr()));
    } catch (py::type_error& e) {
      throw py::type_error(std::string(what) + "[" + std::to_string(i) + "]: " + e.what());
    }
  }
  return out;
}

int resolve_threads(py::object num_threads, size_t work) {
  int n;
  if (num_threads.is_none()) {
    n = (int)std::thread::hardware_concurrency();
    if (n <= 0) n = 1;
  } else {
    n = num_threads.cast<int>();
    if (n < 1) throw py::value_error("num_threads must be >= 1 (or None for all cores)");
  }
  return (int)std::max<size_t>(1, std::min<size_t>((size_t)n, (work + 15) / 16));
}

template <class F>
void parallel_for(size_t n, int threads, F&& f) {
  if (threads <= 1 || n < 2) {
    for (size_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto worker = [&]() {
    while (true) {
      size_t a = next.fetch_add(16);
      if (a >= n) break;
      size_t b = std::min(n, a + 16);
      for (size_t i = a; i < b; ++i) f(i);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& th : pool) th.join();
}

// codes: 0 false, 1 true, 2 undecided (fallback), 3 false by a work limit
uint8_t code_of(const Verdict& v) {
  if (v.limit) return 3;
  return v.tri == Tri::True ? 1 : v.tri == Tri::False ? 0 : 2;
}

struct GoldCache {
  bool ok = false;
  Verdict err{Tri::Unknown, false};
  Extracted ex;
};

// A gold the C++ side cannot read, resolved once by math-verify in Python: its parsed answer as
// LaTeX (a number) and its string form; either may be absent.
struct ResolvedGold {
  bool has_expr = false, has_str = false;
  std::string expr, str;
};
using Resolved = std::unordered_map<std::string, ResolvedGold>;

GoldCache extract_gold(const std::string& gold, const Resolved* resolved) {
  GoldCache g;
  if (resolved) {
    auto it = resolved->find(gold);
    if (it != resolved->end()) {
      const ResolvedGold& r = it->second;
      try {
        g.ex.has_str = r.has_str;
        g.ex.str = r.str;
        if (r.has_expr) {
          Tree t;
          if (parse_latex(r.expr, &t) != ParseStatus::Ok) throw Unsure{"resolved gold does not parse"};
          g.ex.has_expr = true;
          g.ex.expr = std::move(t);
          g.ex.expr_str = r.expr;
        }
        g.ok = true;
      } catch (...) {
        g.ok = false;
        g.err = Verdict{Tri::Unknown, false};
      }
      return g;
    }
  }
  try {
    g.ex = extract(gold_text(gold));
    g.ok = true;
  } catch (Unsure&) {
    g.err = Verdict{Tri::Unknown, false};
  } catch (TooBig&) {
    g.err = Verdict{Tri::False, true};
  } catch (LimitError&) {
    g.err = Verdict{Tri::False, true};
  } catch (std::exception&) {
    g.err = Verdict{Tri::Unknown, false};
  }
  return g;
}

Verdict verify_with_gold(const GoldCache& g, const std::string& response) {
  if (!g.ok) return g.err;
  return verify_against(g.ex, response);
}

// golds[gold_index[i]] vs responses[i]
Resolved to_resolved(py::object obj) {
  Resolved out;
  if (obj.is_none()) return out;
  py::dict d = obj.cast<py::dict>();
  for (auto item : d) {
    std::string key = to_bytes(item.first.ptr());
    py::tuple v = py::reinterpret_borrow<py::object>(item.second).cast<py::tuple>();
    if (v.size() != 2) throw py::value_error("resolved golds: values must be (expr_latex | None, str | None)");
    ResolvedGold r;
    if (!v[0].is_none()) {
      r.has_expr = true;
      r.expr = to_bytes(v[0].ptr());
    }
    if (!v[1].is_none()) {
      r.has_str = true;
      r.str = to_bytes(v[1].ptr());
    }
    out.emplace(std::move(key), std::move(r));
  }
  return out;
}

py::array_t<uint8_t> score(const std::vector<std::string>& golds, const std::vector<std::string>& responses,
                           const std::vector<size_t>& gold_index, int threads, const Resolved* resolved = nullptr) {
  std::vector<uint8_t> codes(responses.size(), 2);
  {
    py::gil_scoped_release release;
    // each distinct gold is extracted once (verify_codes gets one gold per pair, mostly repeats)
    std::unordered_map<std::string_view, size_t> first;
    std::vector<size_t> slot(golds.size());
    std::vector<size_t> distinct;
    for (size_t i = 0; i < golds.size(); ++i) {
      auto [it, fresh] = first.emplace(std::string_view(golds[i]), distinct.size());
      if (fresh) distinct.push_back(i);
      slot[i] = it->second;
    }
    std::vector<GoldCache> gc(distinct.size());
    parallel_for(distinct.size(), threads, [&](size_t k) { gc[k] = extract_gold(golds[distinct[k]], resolved); });
    parallel_for(responses.size(), threads,
                 [&](size_t i) { codes[i] = code_of(verify_with_gold(gc[slot[gold_index[i]]], responses[i])); });
  }
  py::array_t<uint8_t> out(codes.size());
  std::copy(codes.begin(), codes.end(), out.mutable_data());
  return out;
}

}  // namespace

PYBIND11_MODULE(_scorer, m) {
  m.doc() = "Paced's C++ math-answer scorer (see paced_kernels.scoring)";

  m.def(
      "verify_codes",
      [](py::sequence golds, py::sequence responses, py::object num_threads, py::object resolved_golds) {
        if (py::len(golds) != py::len(responses))
          throw py::value_error("golds and responses must have the same length, got " +
                                std::to_string(py::len(golds)) + " and " + std::to_string(py::len(responses)));
        auto g = to_strings(golds, "golds");
        auto r = to_strings(responses, "responses");
        std::vector<size_t> idx(r.size());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
        Resolved res = to_resolved(resolved_golds);
        return score(g, r, idx, resolve_threads(num_threads, r.size()), res.empty() ? nullptr : &res);
      },
      py::arg("golds"), py::arg("responses"), py::arg("num_threads") = py::none(),
      py::arg("resolved_golds") = py::none(),
      "Verdict codes per pair: 0 false, 1 true, 2 undecided, 3 false by a work limit.");

  m.def(
      "pass_rate_codes",
      [](py::sequence golds, py::sequence responses, py::object num_threads, py::object resolved_golds) {
        if (py::len(golds) != py::len(responses))
          throw py::value_error("golds and responses must have the same length (one list of responses per gold), got " +
                                std::to_string(py::len(golds)) + " and " + std::to_string(py::len(responses)));
        auto g = to_strings(golds, "golds");
        std::vector<std::string> flat;
        std::vector<size_t> idx;
        std::vector<size_t> counts;
        for (size_t i = 0; i < g.size(); ++i) {
          py::object item = responses[i];
          if (PyUnicode_Check(item.ptr()) || PyBytes_Check(item.ptr()))
            throw py::type_error("responses[" + std::to_string(i) + "] must be a sequence of str, got a single string");
          py::sequence rs = item.cast<py::sequence>();
          auto v = to_strings(rs, ("responses[" + std::to_string(i) + "]").c_str());
          counts.push_back(v.size());
          for (auto& s : v) {
            flat.push_back(std::move(s));
            idx.push_back(i);
          }
        }
        Resolved res = to_resolved(resolved_golds);
        auto codes = score(g, flat, idx, resolve_threads(num_threads, flat.size()), res.empty() ? nullptr : &res);
        return py::make_tuple(codes, counts);
      },
      py::arg("golds"), py::arg("responses"), py::arg("num_threads") = py::none(),
      py::arg("resolved_golds") = py::none(),
      "(flat verdict codes, responses per gold) for a list of response lists per gold.");

  m.def(
      "gold_codes",
      [](py::sequence golds) {
        auto g = to_strings(golds, "golds");
        std::vector<uint8_t> codes(g.size());
        {
          py::gil_scoped_release release;
          for (size_t i = 0; i < g.size(); ++i) {
            GoldCache c = extract_gold(g[i], nullptr);
            codes[i] = c.ok ? 0 : code_of(c.err);
          }
        }
        py::array_t<uint8_t> out(codes.size());
        std::copy(codes.begin(), codes.end(), out.mutable_data());
        return out;
      },
      py::arg("golds"), "Per gold: 0 read by the C++ side, 2 undecided (needs math-verify), 3 over a work limit.");

  m.def(
      "extract_answer",
      [](py::object response) -> py::tuple {
        std::string s = to_bytes(response.ptr());
        int status = 0;  // 0 none, 1 parsed, 2 string only, 3 undecided
        std::string out;
        {
          py::gil_scoped_release release;
          try {
            Extracted e = extract(s);
            if (e.has_expr) {
              status = 1;
              out = e.has_str ? e.str : tree_to_string(e.expr);
              out = e.expr_str.empty() ? out : e.expr_str;
            } else if (e.has_str) {
              status = 2;
              out = e.str;
            }
          } catch (Unsure&) {
            status = 3;
          } catch (TooBig&) {
            status = 0;
          } catch (std::exception&) {
            status = 3;
          }
        }
        return py::make_tuple(status, py::bytes(out));
      },
      py::arg("response"));

  m.def(
      "debug",
      [](py::object gold, py::object response) {
        std::string g = to_bytes(gold.ptr()), r = to_bytes(response.ptr());
        py::dict d;
        auto one = [&](const std::string& text, const char* key) {
          try {
            Extracted e = extract(text);
            d[(std::string(key) + "_expr").c_str()] = e.has_expr ? tree_to_string(e.expr) : std::string("<none>");
            d[(std::string(key) + "_str").c_str()] = e.has_str ? e.str : std::string("<none>");
          } catch (Unsure& u) {
            d[(std::string(key) + "_unsure").c_str()] = std::string(u.why);
            d[(std::string(key) + "_candidate").c_str()] = last_candidate();
          } catch (TooBig& t) {
            d[(std::string(key) + "_toobig").c_str()] = std::string(t.why);
          }
        };
        one(gold_text(g), "gold");
        one(r, "pred");
        try {
          Extracted a = extract(gold_text(g)), b = extract(r);
          Tri t = compare_extracted(a, b);
          d["verdict"] = (int)t;
        } catch (Unsure& u) {
          d["verdict_unsure"] = std::string(u.why);
        } catch (TooBig& t) {
          d["verdict_toobig"] = std::string(t.why);
        }
        return d;
      },
      py::arg("gold"), py::arg("response"), "Debug view of one comparison (internal).");

  m.def(
      "number_matches",
      [](py::object text, bool use_engine) {
        std::string s = to_bytes(text.ptr());
        std::vector<Regex::Match> ms;
        {
          py::gil_scoped_release release;
          ms = number_plain_matches(s, use_engine);
        }
        py::list out;
        for (auto& m : ms) {
          py::list groups;
          for (auto& g : m.groups) groups.append(py::make_tuple(g.first, g.second));
          out.append(py::make_tuple(m.start, m.end, groups));
        }
        return out;
      },
      py::arg("text"), py::arg("use_engine") = false,
      "The extractor's number matches (byte offsets and capture groups): its direct matcher, or the regex "
      "engine on the same pattern (internal, for tests).");

  m.def(
      "normalize",
      [](py::object s, int mode) { return py::bytes(normalize_latex(to_bytes(s.ptr()), mode)); },
      py::arg("latex"), py::arg("boxed_mode") = 2, "math-verify-style LaTeX normalisation (internal).");
}
