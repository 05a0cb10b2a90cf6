"""The math-verify fallback pool: bounded from any thread, reused, killed-and-replaced workers,
verdicts equal to math-verify's (run in the main thread with its own timeouts, the reference)."""
import threading
import time

import pytest

from paced_kernels import scoring, scoring_pool
from paced_kernels.scoring_pool import FallbackConfig, FallbackPool

# undecided in C++ and endless for math-verify without a timeout (sympy expands the power)
HANG = "So the answer is $\\boxed{(x+1)^{100000}}$."
# undecided in C++ (\log_e, \lfloor of a symbol, ...), quick for math-verify
NORMAL = [("\\ln 2", "\\boxed{\\log_e 2}"), ("2", "\\boxed{\\log_e e^2}"), ("3", "\\boxed{\\log_e 3}"),
          ("\\ln 3", "\\boxed{\\log_e 3}")]
DEADLINE = 3.0


def _in_thread(fn):
    box = {}

    def run():
        t = time.monotonic()
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = e
        box["seconds"] = time.monotonic() - t

    th = threading.Thread(target=run)
    th.start()
    th.join(120)
    assert not th.is_alive(), "the call did not return"
    if "error" in box:
        raise box["error"]
    return box["value"], box["seconds"]


@pytest.fixture
def pool():
    p = FallbackPool(FallbackConfig(workers=2, deadline_s=DEADLINE))
    yield p
    p.shutdown()


@pytest.fixture
def short_deadline():
    old = scoring_pool._config
    scoring.configure_fallback(workers=2, deadline_s=DEADLINE)
    yield
    scoring.configure_fallback(old)


def test_cpp_leaves_the_test_pairs_undecided():
    codes = scoring._ext().verify_codes(["1"] + [g for g, _ in NORMAL], [HANG] + [r for _, r in NORMAL])
    assert list(codes) == [2] * (1 + len(NORMAL))


def test_deadline_from_a_worker_thread_kills_and_replaces(pool):
    pool.run([("sleep", (0,))] * 2)  # start both workers
    started = pool.counters["started"]
    tasks = [("verdict", ("1", HANG, 5)), ("sleep", (60,)), ("verdict", ("1", "$1$", 5))]
    out, seconds = _in_thread(lambda: pool.run(tasks))
    assert out == [("timeout", None), ("timeout", None), ("ok", True)]
    # two tasks past their deadline on two workers, then one quick task on a fresh worker
    assert seconds < 2 * DEADLINE + 30
    assert pool.counters["killed"] == 2 and pool.counters["started"] == started + 2
    assert pool.alive_workers() == 2


def test_pool_is_reused_across_calls(pool):
    pool.run([("verdict", ("1", "$1$", 5))] * 4)
    started = pool.counters["started"]
    for _ in range(3):
        assert pool.run([("verdict", ("2", "$2$", 5)), ("verdict", ("2", "$3$", 5))]) == [("ok", True), ("ok", False)]
    assert pool.counters["started"] == started <= 2


def test_task_error_is_reported(pool):
    (status, msg), = pool.run([("sleep", ("not a number",))])
    assert status == "error" and "TypeError" in msg


def test_verdicts_equal_math_verify_from_a_thread(short_deadline):
    golds, resps = [g for g, _ in NORMAL], [r for _, r in NORMAL]
    ref = [scoring.math_verify_verdict(g, r, timeout=5) for g, r in NORMAL]  # main thread, signals work
    assert True in ref and False in ref
    (got, stats), _ = _in_thread(lambda: (scoring.verify_batch(golds, resps), scoring.last_stats()))
    assert got == ref
    assert stats["fallback_used"] == len(NORMAL) and stats["fallback_true"] == sum(ref)
    assert stats["fallback_timeout"] == 0


def test_several_threads_at_once_are_bounded_with_their_own_stats(short_deadline):
    golds = ["1"] + [g for g, _ in NORMAL]
    resps = [HANG] + [r for _, r in NORMAL]
    ref = [False] + [scoring.math_verify_verdict(g, r, timeout=5) for g, r in NORMAL]
    results = [None] * 3

    def call(k):
        n = k + 2  # different sizes, so each thread's stats are its own
        got = scoring.verify_batch(golds[:n], resps[:n], num_threads=1)
        results[k] = (got, scoring.last_stats())

    t = time.monotonic()
    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(180)
    assert not any(th.is_alive() for th in threads)
    # 3 timeouts (DEADLINE each) plus 9 quick pairs, on 2 workers, with replacements
    assert time.monotonic() - t < 3 * DEADLINE + 60
    for k, (got, s) in enumerate(results):
        n = k + 2
        assert got == ref[:n]
        assert s["n"] == n and s["unknown"] == n and s["fallback_used"] == n
        assert s["fallback_timeout"] == 1 and s["fallback_true"] == sum(ref[:n])


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="deadline_s"):
        FallbackConfig(deadline_s=0)
    with pytest.raises(ValueError, match="workers"):
        FallbackConfig(workers=-1)
    with pytest.raises(ValueError, match="mv_timeout_s"):
        FallbackConfig(mv_timeout_s=0)
    with pytest.raises(TypeError):
        scoring.configure_fallback(no_such_key=1)


def test_shut_down_pool_refuses_work():
    p = FallbackPool(FallbackConfig(workers=1))
    p.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        p.run([("sleep", (0,))])


def _score_in_daemon(q):
    try:
        scoring.verify("\\ln 2", "\\boxed{\\log_e 2}")
        q.put("no error")
    except scoring_pool.WorkerStartError as e:
        q.put(str(e))


def test_daemonic_caller_gets_a_clear_error():
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_score_in_daemon, args=(q,), daemon=True)
    p.start()
    msg = q.get(timeout=120)
    p.join(30)
    assert "daemonic" in msg and "fallback=False" in msg


def test_adversarial_batch_from_a_worker_thread(short_deadline):
    from test_scoring import ADVERSARIAL

    resps = ADVERSARIAL + [HANG]
    golds = ["5"] * len(resps)
    codes = scoring._ext().verify_codes(golds, resps)
    sent = [i for i, c in enumerate(codes) if c == 2 and len(resps[i]) <= scoring.FALLBACK_MAX_CHARS]
    long_ = sum(1 for i, c in enumerate(codes) if c == 2 and len(resps[i]) > scoring.FALLBACK_MAX_CHARS)
    assert len(sent) >= 3 and long_ >= 1
    ref = {i: scoring.math_verify_verdict(golds[i], resps[i], timeout=5) for i in sent if resps[i] != HANG}
    (got, s), seconds = _in_thread(lambda: (scoring.verify_batch(golds, resps), scoring.last_stats()))
    assert all(got[i] == v for i, v in ref.items())
    assert got[-1] is False and all(got[i] == bool(codes[i] == 1) for i in range(len(resps)) if codes[i] != 2)
    assert s["fallback_used"] == len(sent) and s["fallback_skipped_long"] == long_
    assert s["fallback_timeout"] >= 1 and s["limit"] == int((codes == 3).sum())
    assert seconds < len(sent) * DEADLINE + 60
