"""Agreement with math-verify on a generated corpus of (gold, response) pairs.

`make_corpus` builds rollout-like responses (reasoning text, then a final answer in one of the
formats models use) for answers of every kind the scorer covers, each with equivalent and
non-equivalent renderings. The benchmark (benchmarks/scoring_throughput.py) reuses it.
"""
from __future__ import annotations

import random

import pytest

# (gold, [equivalent renderings], [different renderings])
ANSWERS = [
    ("12", ["12", "12.0", "\\frac{24}{2}", "12 \\text{ cm}", "x = 12", "12.000"], ["13", "1.2", "-12", "12.01"]),
    ("\\frac{1}{2}", ["0.5", "1/2", "\\dfrac12", "\\frac{2}{4}", "50\\%", "\\tfrac{1}{2}"], ["0.49", "2", "\\frac{1}{3}"]),
    ("-\\frac{3}{4}", ["-0.75", "\\frac{-3}{4}", "-\\dfrac{3}{4}"], ["\\frac{3}{4}", "-0.74", "0.75"]),
    ("3\\sqrt{2}", ["\\sqrt{18}", "3 \\sqrt 2", "\\sqrt{2} \\cdot 3", "4.242641"], ["2\\sqrt{3}", "4.24", "\\sqrt{17}"]),
    ("\\frac{\\sqrt{3}}{2}", ["\\frac{1}{2}\\sqrt{3}", "\\sqrt{3}/2", "0.866025"], ["\\frac{\\sqrt{2}}{2}", "0.87"]),
    ("2\\pi", ["2 \\pi", "\\pi \\cdot 2", "6.283185"], ["\\pi", "6.28", "4\\pi"]),
    ("10\\%", ["10", "10\\%", "0.1", "\\frac{1}{10}"], ["11\\%", "0.11", "1"]),
    ("1000000", ["1,000,000", "10^6", "1000000", "1{,}000{,}000"], ["100000", "10^5"]),
    ("(1, 2]", ["(1,2]", "\\left(1, 2\\right]"], ["(1,2)", "[1,2]", "(1,3]"]),
    ("[-1, 3)", ["[-1,3)"], ["(-1,3)", "[-1,3]"]),
    ("(0, \\infty)", ["(0,\\infty)", "\\left(0, \\infty\\right)"], ["[0,\\infty)", "(1,\\infty)"]),
    ("\\{1, 2, 3\\}", ["\\{3,2,1\\}", "\\{1,2,3\\}", "1, 2, 3", "3, 1, 2"], ["\\{1,2\\}", "\\{1,2,4\\}"]),
    ("(1, 2, 3)", ["(1,2,3)", "(1, 2, 3)"], ["(3,2,1)", "(1,2)"]),
    ("x = 3", ["3", "x=3", "x = \\frac{6}{2}"], ["4", "x=4", "y = 4"]),
    ("y = 2x + 1", ["y=2x+1", "y = 1 + 2x"], ["y = 2x - 1", "y=x+1"]),
    ("x^2 + 2x + 1", ["(x+1)^2", "x^2+2x+1", "1 + 2x + x^2"], ["(x-1)^2", "x^2+1"]),
    ("\\frac{x+1}{x-1}", ["\\frac{x+1}{x-1}", "(x+1)/(x-1)"], ["\\frac{x-1}{x+1}"]),
    ("\\pm 2", ["\\pm 2", "2, -2", "-2, 2"], ["2", "-2, 3"]),
    ("1 \\pm \\sqrt{2}", ["1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}"], ["1+\\sqrt{2}"]),
    ("1.5 \\times 10^{3}", ["1500", "1.5 \\times 10^3", "1500.0"], ["150", "15000"]),
    ("e^{2}", ["e^2", "\\exp(2)", "e \\cdot e"], ["2e", "e^3"]),
    ("90^\\circ", ["90", "90^{\\circ}", "90^\\circ"], ["45", "180"]),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", ["\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"],
     ["\\begin{pmatrix}2\\\\1\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}"]),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", ["\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"],
     ["\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}"]),
    ("\\text{Yes}", ["\\text{Yes}", "Yes", "\\text{yes}"], ["\\text{No}", "No"]),
    ("123456789012345678901234567890", ["123456789012345678901234567890"], ["123456789012345678901234567891"]),
    ("\\frac{22}{7}", ["\\frac{44}{14}", "3\\frac{1}{7}", "3.142857"], ["3.14", "\\pi"]),
    ("\\sqrt[3]{2}", ["2^{1/3}", "\\sqrt[3]{2}", "2^{\\frac{1}{3}}"], ["\\sqrt{2}", "2^{1/2}"]),
    ("\\ln 2", ["\\ln(2)", "\\log_e 2", "0.693147"], ["\\log 2", "\\ln 3"]),
    ("5", ["5", "\\boxed{5}", "5.", "five is 5"], ["6"]),
    ("0.25", ["\\frac{1}{4}", "25\\%", ".25", "0.250"], ["0.26", "\\frac{1}{5}"]),
    ("6.02 \\times 10^{23}", ["6.02 \\times 10^{23}", "6.02\\times10^{23}"], ["6.02 \\times 10^{22}"]),
    ("a^2 - b^2", ["(a-b)(a+b)", "(a+b)(a-b)", "a^2-b^2"], ["(a-b)^2", "a^2+b^2"]),
    ("\\frac{n(n+1)}{2}", ["\\frac{n^2+n}{2}", "\\frac{1}{2}n(n+1)"], ["\\frac{n(n-1)}{2}", "n^2"]),
    ("x > 3", ["x>3", "3 < x"], ["x < 3", "x \\geq 3"]),
    ("2 \\leq x \\leq 5", ["2 \\le x \\le 5"], ["2 < x < 5"]),
    ("-7", ["-7", "- 7", "-7.0"], ["7", "-6"]),
    ("0", ["0", "0.0", "-0"], ["1", "0.001"]),
]

FILLER = [
    "Let me work through this step by step.",
    "First, we set up the equation $a + b = 10$ and note that $a, b > 0$.",
    "Substituting $x = 2$ gives $f(2) = 4 + 3 = 7$, which we use below.",
    "We compute the discriminant: $\\Delta = b^2 - 4ac = 9 - 8 = 1$.",
    "There are 3 cases to consider, and in each case the count is at most 12.",
    "Hence $\\frac{a}{b} = \\frac{3}{5}$ in the first case.",
    "Combining the results from steps 1 and 2:",
    "Therefore, after simplifying, we obtain the result.",
]

TEMPLATES = [
    "{r}\n\nThus the answer is $\\boxed{{{a}}}$.",
    "{r}\n\nThe final answer is $\\boxed{{{a}}}$.",
    "{r}\nSo we get \\[\\boxed{{{a}}}\\]",
    "{r}\n\n**Final Answer**\n\\[ \\boxed{{{a}}} \\]",
    "{r}\n\nFinal Answer: The final answer is ${a}$. I hope it is correct.",
    "{r}\nAnswer: ${a}$",
    "{r}\nTherefore the answer is \\({a}\\).",
    "{r}\nThe final answer is $\\boxed{{{a}}}$.\nWe double-check: the result holds for all cases.",
    "{r}\n\\boxed{{{a}}}",
    "{r}\nSo the result is ${a}$.",
]


def make_corpus(n: int = 2400, seed: int = 0) -> list[tuple[str, str]]:
    """n (gold, response) pairs, about half of them correct."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        gold, same, diff = rng.choice(ANSWERS)
        ans = rng.choice(same) if (rng.random() < 0.55 or not diff) else rng.choice(diff)
        k = rng.randint(0, 4)
        reasoning = " ".join(rng.choice(FILLER) for _ in range(k))
        tmpl = rng.choice(TEMPLATES)
        if ans.startswith("\\boxed") and "boxed" in tmpl:
            tmpl = "{r}\nSo the answer is ${a}$."
        resp = tmpl.format(r=reasoning, a=ans)
        gold_form = rng.choice([gold, gold, f"${gold}$", f"\\boxed{{{gold}}}"])
        out.append((gold_form, resp))
    # plain-text answers (no LaTeX), as in many chat-model outputs
    for i in range(n // 10):
        g = rng.randint(0, 2000)
        v = g if rng.random() < 0.5 else g + rng.randint(1, 9)
        resp = rng.choice([f"The total is {v}.", f"So there are {v:,} ways.", f"Answer: {v}",
                           f"We get {v} in the end, after checking 3 cases.", f"The result equals {v}"])
        out.append((str(g), resp))
    return out


def test_corpus_agreement_with_math_verify():
    from paced_kernels import scoring

    corpus = make_corpus(2400, seed=1234)
    assert len(corpus) >= 2000
    golds = [g for g, _ in corpus]
    resps = [r for _, r in corpus]
    ours_cpp = scoring.verify_batch(golds, resps, fallback=False)
    stats_cpp = scoring.last_stats()
    ours = scoring.verify_batch(golds, resps, fallback=True)
    stats = scoring.last_stats()
    ref = [scoring.math_verify_verdict(g, r, timeout=5) for g, r in corpus]
    n = len(corpus)
    agree = sum(a == b for a, b in zip(ours, ref)) / n
    decided_idx = [i for i in range(n)]  # C++-only verdicts treat unknown as False
    agree_cpp = sum(ours_cpp[i] == ref[i] for i in decided_idx) / n
    print(f"\ncorpus: {n} pairs, agreement {agree:.4f} (C++ only: {agree_cpp:.4f}), "
          f"undecided in C++: {stats['unknown']} ({stats['unknown'] / n:.2%}), stats {stats}")
    assert stats_cpp["unknown"] == stats["unknown"]
    assert sum(ref) > 0.3 * n and sum(ref) < 0.8 * n  # the corpus has both verdicts
    assert agree >= 0.99
    assert stats["unknown"] / n <= 0.05
