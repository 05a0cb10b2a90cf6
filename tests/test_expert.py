"""paced_train.expert against a real OpenAI-compatible HTTP server on 127.0.0.1 with injected faults."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from paced_train import expert
from paced_train.config import ExpertConfig, config_from_dict
from paced_train.data import load_problems, read_jsonl

REPO = Path(__file__).resolve().parent.parent


class FakeAPI:
    """/v1/chat/completions answering ``\\boxed{gold}``; ``faults[pid]`` is consumed one per request:
    "429" (Retry-After 0.3), "500", "503", "malformed", "truncated", "stall", "wrong", "length", "think",
    "400", "401", "always500". Problem ids are read from the prompt ("[p3] ...")."""

    def __init__(self, golds, faults=None, delay=0.0, stall_s=2.5):
        self.golds, self.faults, self.delay, self.stall_s = golds, {k: list(v) for k, v in (faults or {}).items()}, delay, stall_s
        self.requests = defaultdict(list)  # pid -> [(time, fault)]
        self.auth = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes, headers=(), length=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a stall past its timeout)
                    self.close_connection = True

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                pid = re.search(r"\[(p\d+)\]", req["messages"][-1]["content"]).group(1)
                with api.lock:
                    queue = api.faults.get(pid, [])
                    fault = queue[0] if queue and queue[0] == "always500" else (queue.pop(0) if queue else None)
                    api.requests[pid].append((time.monotonic(), fault))
                    api.auth.append(self.headers.get("Authorization"))
                time.sleep(api.delay)
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "rate limited"}}', [("Retry-After", "0.3")])
                if fault in ("500", "503", "always500"):
                    return self._send(int(fault[-3:]), b'{"error": {"message": "overloaded"}}')
                if fault in ("400", "401"):
                    return self._send(int(fault), b'{"error": {"message": "no"}}')
                if fault == "stall":
                    time.sleep(api.stall_s)
                gold = api.golds[pid]
                text = {"wrong": f"So the answer is \\boxed{{{gold}1}}.", "length": "Let me think about this for a",
                        "think": f"<think>scratch work</think>Clean solution: \\boxed{{{gold}}}."}.get(
                    fault, f"Work for {pid}. The answer is \\boxed{{{gold}}}.")
                body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": req["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "length" if fault == "length" else "stop"}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
                if fault == "malformed":
                    return self._send(200, body[: len(body) // 2])          # complete response, broken JSON
                if fault == "truncated":
                    self.close_connection = True
                    return self._send(200, body[: len(body) // 2], length=len(body))  # connection drops mid-body
                return self._send(200, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()

    def count(self, pid, since=0.0):
        return sum(t >= since for t, _ in self.requests[pid])


def write_problems(path, n):
    golds = {f"p{i}": str(3 * i + 1) for i in range(n)}
    path.write_text("".join(json.dumps({"id": pid, "problem": f"[{pid}] What is {g} written in digits?",
                                        "answer": g}) + "\n" for pid, g in golds.items()))
    return golds


def cfg_for(api, **kw):
    return ExpertConfig(**{"base_url": api.url, "model": "expert-x", "concurrency": 4, "timeout": 1.2,
                           "max_retries": 3, **kw})


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(expert, "BACKOFF_BASE_S", 0.02)


def test_faults_are_retried_and_wrong_answers_set_aside(tmp_path):
    golds = write_problems(tmp_path / "p.jsonl", 11)
    faults = {"p0": ["429"], "p1": ["500", "503"], "p2": ["malformed"], "p3": ["truncated"], "p4": ["stall"],
              "p5": ["wrong"], "p6": ["length"], "p7": ["400"], "p8": ["always500"], "p9": ["think"]}
    out = tmp_path / "sol.jsonl"
    with FakeAPI(golds, faults) as api:
        s = expert.run_expert(cfg_for(api), tmp_path / "p.jsonl", out, progress=False, info=lambda m: None)
        side = expert.side_paths(out)
        # 429: the retry waited for the server's Retry-After (0.3 s), not the 0.02 s backoff
        (t429, _), (t_ok, _) = api.requests["p0"]
        assert t_ok - t429 >= 0.3
        assert [f for _, f in api.requests["p1"]] == ["500", "503", None]
        assert len(api.requests["p4"]) == 2 and len(api.requests["p8"]) == 4  # stall timed out; 1 + 3 retries
        assert s["verified"] == 7 and s["wrong"] == 1 and s["truncated"] == 1 and s["error"] == 1 and s["failed"] == 1
        got = {p.id: p for p in load_problems(out, require_solution=True)}
        want = {"p0", "p1", "p2", "p3", "p4", "p9", "p10"}
        assert set(got) == want and len(got) == 7
        assert got["p9"].solution == f"Clean solution: \\boxed{{{golds['p9']}}}."  # <think> block dropped
        rej = {r["id"]: r for r in read_jsonl(side["rejected"])}
        assert set(rej) == {"p5", "p6", "p7", "p8"}
        assert rej["p5"]["status"] == "wrong" and rej["p5"]["expert_answer"] == golds["p5"] + "1"
        assert rej["p6"]["status"] == "truncated" and rej["p7"]["status"] == "error" and rej["p8"]["status"] == "failed"
        assert s["prompt_tokens"] == 9 * 10 and s["completion_tokens"] == 9 * 5  # 9 replies with usage
        assert json.loads(side["summary"].read_text()) == s
        # run again: only the failed one is asked again (answered, wrong and refused ones are final)
        api.faults["p8"] = []
        t0 = time.monotonic()
        s2 = expert.run_expert(cfg_for(api), tmp_path / "p.jsonl", out, progress=False, info=lambda m: None)
        assert {pid: api.count(pid, t0) for pid in golds if api.count(pid, t0)} == {"p8": 1}
        assert s2["verified"] == 8 and s2["failed"] == 0 and s2["reused_from_journal"] == 10
        assert [p.id for p in load_problems(out)] == sorted(want | {"p8"}, key=lambda x: int(x[1:]))


def test_keep_unverified_and_settings_guard(tmp_path):
    golds = write_problems(tmp_path / "p.jsonl", 3)
    out = tmp_path / "sol.jsonl"
    with FakeAPI(golds, {"p1": ["wrong"]}) as api:
        expert.run_expert(cfg_for(api, keep_unverified=True), tmp_path / "p.jsonl", out, progress=False,
                          info=lambda m: None)
        rows = read_jsonl(out)
        assert [r["id"] for r in rows] == ["p0", "p1", "p2"] and rows[1]["verified"] is False
        assert read_jsonl(expert.side_paths(out)["rejected"]) == []  # kept instead of set aside
        with pytest.raises(ValueError, match="written with other settings"):
            expert.run_expert(cfg_for(api, model="another"), tmp_path / "p.jsonl", out, progress=False,
                              info=lambda m: None)


def test_torn_journal_line_is_cut_and_that_problem_asked_again(tmp_path):
    golds = write_problems(tmp_path / "p.jsonl", 3)
    out = tmp_path / "sol.jsonl"
    with FakeAPI(golds) as api:
        expert.run_expert(cfg_for(api), tmp_path / "p.jsonl", out, progress=False, info=lambda m: None)
        journal = expert.side_paths(out)["journal"]
        lines = journal.read_text().splitlines(keepends=True)
        journal.write_text("".join(lines[:-1]) + lines[-1][:25])  # killed while writing the last entry
        torn = json.loads(lines[-1])["id"]
        t0 = time.monotonic()
        expert.run_expert(cfg_for(api), tmp_path / "p.jsonl", out, progress=False, info=lambda m: None)
        assert {pid: api.count(pid, t0) for pid in golds} == {pid: int(pid == torn) for pid in golds}
        assert len(load_problems(out)) == 3 and all(json.loads(l) for l in journal.read_text().splitlines())


def test_bad_key_stops_the_run_without_printing_it(tmp_path):
    golds = write_problems(tmp_path / "p.jsonl", 2)
    with FakeAPI(golds, {"p0": ["401"], "p1": ["401"]}) as api:
        env = {**os.environ, "MY_KEY": "sk-test-secret-42"}
        r = subprocess.run([sys.executable, "-m", "paced_train.expert", "--input", str(tmp_path / "p.jsonl"),
                            "--output", str(tmp_path / "o.jsonl"), "--base-url", api.url, "--model", "m",
                            "--api-key-env", "MY_KEY", "--no-progress"], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=60)
        assert r.returncode == 2 and "check --base-url" in r.stderr and "$MY_KEY" in r.stderr
        assert "sk-test-secret-42" not in r.stderr + r.stdout
        assert api.auth[0] == "Bearer sk-test-secret-42"


def test_killed_run_resumes_without_asking_answered_problems(tmp_path):
    golds = write_problems(tmp_path / "p.jsonl", 16)
    faults = {"p2": ["429"], "p5": ["500"], "p7": ["wrong"], "p9": ["malformed"], "p12": ["wrong"], "p14": ["truncated"]}
    out = tmp_path / "sol.jsonl"
    journal = expert.side_paths(out)["journal"]
    cmd = [sys.executable, "-m", "paced_train.expert", "--input", str(tmp_path / "p.jsonl"), "--output", str(out),
           "--model", "expert-x", "--concurrency", "2", "--timeout", "5", "--no-progress"]
    with FakeAPI(golds, faults, delay=0.15) as api:
        proc = subprocess.Popen(cmd + ["--base-url", api.url], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 5):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        answered = {json.loads(l)["id"] for l in journal.read_text().splitlines()[1:] if l.endswith("}")}
        assert 4 <= len(answered) < 16 and not out.exists()
        t0 = time.monotonic()
        assert expert.main(cmd[3:] + ["--base-url", api.url]) == 0  # the same command, in this process
        assert all(api.count(pid, t0) == 0 for pid in answered)          # no finished request asked again
        assert all(api.count(pid, t0) >= 1 for pid in set(golds) - answered)  # the rest asked in the rerun
    rows = read_jsonl(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 14 and set(ids) == set(golds) - {"p7", "p12"}  # each verified exactly once
    assert {r["id"] for r in read_jsonl(expert.side_paths(out)["rejected"])} == {"p7", "p12"}
    entries = [json.loads(l) for l in journal.read_text().splitlines()[1:]]
    assert sorted(e["id"] for e in entries) == sorted(golds)                # journal: one entry per problem


def test_pipeline_stage_from_config(tmp_path):
    from paced_train.logging_utils import RunLogger
    from paced_train.schedule import Pipeline
    golds = write_problems(tmp_path / "p.jsonl", 4)
    with FakeAPI(golds, {"p3": ["wrong"]}) as api:
        cfg = config_from_dict({"data": {"train": str(tmp_path / "p.jsonl")}, "eval": {"enabled": False},
                                "reference": {"teacher_prompt_template": "{problem} Hint: {solution}"},
                                "expert": {"base_url": api.url, "model": "expert-x", "concurrency": 2}})
        logger = RunLogger(tmp_path / "run", tensorboard=False, progress_bars=False)
        with logger:
            pipe = Pipeline(cfg, tmp_path / "run", logger)
            pipe.setup_data()  # the run's data stage starts with the expert stage
            assert [p.id for p in pipe.problems] == ["p0", "p1", "p2"]  # p3's wrong solution set aside
            assert pipe.problems[1].solution == f"Work for p1. The answer is \\boxed{{{golds['p1']}}}."
            assert "Hint: Work for p0" in pipe.builder.teacher_text(pipe.problems[0])
            n = sum(len(v) for v in api.requests.values())
            path = expert.run_expert_stage(cfg.expert, cfg.data.train, tmp_path / "run" / "expert", logger)
            assert path == tmp_path / "run" / "expert" / "solutions.jsonl"
            assert sum(len(v) for v in api.requests.values()) == n  # all in the journal: nothing asked again
    with pytest.raises(ValueError, match="config key 'expert.model'"):
        config_from_dict({"data": {"train": "x.jsonl"}, "expert": {"base_url": "http://h/v1"}})


def test_retry_after_header_forms():
    import email.utils
    import types

    def exc(headers):
        return types.SimpleNamespace(response=types.SimpleNamespace(headers=headers))
    assert expert._retry_after(exc({"retry-after": "2.5"})) == 2.5
    assert expert._retry_after(exc({"retry-after-ms": "150", "retry-after": "9"})) == 0.15
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= expert._retry_after(exc({"retry-after": when})) <= 30
    assert expert._retry_after(exc({"retry-after": "soon"})) is None and expert._retry_after(exc({})) is None
