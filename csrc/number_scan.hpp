// A direct matcher for the priority-300 number regex of the extractor (math-verify's number
// pattern, see ExprRegexes::number_re in extract.cpp). It yields exactly the matches, in the same
// order and with the same capture groups, as Regex::finditer of that pattern with the pf_anchor
// prefilter, but in one linear pass with no backtracking engine: on long responses this scan is
// run over every number in the text. tests/test_scoring.py checks the two against each other on
// random text (`_scorer.number_matches`).
#pragma once

#include <string>
#include <vector>

#include "regex.hpp"

namespace paced {

// capture-group indices of the regex whose matches are produced (so the result reads the same)
struct NumberGroups {
  int n = 0;  // number of groups, group 0 included
  int integer1 = -1, decimal1 = -1, integer2 = -1, decimal2 = -1, decimal3 = -1, integer3 = -1, percent = -1;
  static NumberGroups of(const Regex& re);
};

// `currency` holds the code points of the optional currency class, sorted.
void number_finditer(const std::string& s, size_t from, const NumberGroups& g, const std::vector<uint32_t>& currency,
                     std::vector<Regex::Match>* out);

// The extractor's priority-300 number matches of s: by this matcher, or (use_engine) by the
// backtracking regex engine on the same pattern (the reference the tests compare against).
std::vector<Regex::Match> number_plain_matches(const std::string& s, bool use_engine);

}  // namespace paced
