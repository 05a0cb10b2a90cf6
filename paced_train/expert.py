"""Expert solutions from a frontier model behind an OpenAI-compatible chat-completions API.

    python -m paced_train.expert --input problems.jsonl --output solutions.jsonl \\
        --base-url https://api.example.com/v1 --model NAME [--concurrency 16] [--timeout 600] \\
        [--api-key-env OPENAI_API_KEY] [--max-tokens 8192] [--temperature 0] [--template F] \\
        [--keep-unverified]

The paper's first step (section 3.2): every training problem gets a solution from an expert model,
which the reference stage puts in the teacher's context (``{solution}`` in
``reference.teacher_prompt_template``). Works against vLLM's and SGLang's servers and hosted APIs,
through the ``openai`` client (its own retries off: ours cover malformed bodies too).

* Requests: at most ``--concurrency`` in flight, each with a ``--timeout``; 429 waits for the server's
  ``Retry-After`` (else exponential backoff with jitter); 5xx, 408/409, timeouts, connection errors,
  truncated and malformed bodies are retried up to ``--max-retries`` times. 401/403/404 (bad key,
  model or URL) stop the run at once; another 4xx (e.g. a prompt over the context) is that problem's
  final answer, recorded as an error.
* Crash-safe: every finished request is appended (flushed and fsync'd) to ``<out>.journal.jsonl``
  before anything else happens; a run started again reads it and asks only for the rest. Requests
  that failed after all retries are not journaled, so the next run asks for them again.
* Verification: each solution's final answer is checked against the gold with our scorer
  (``paced_kernels.scoring``). Verified solutions go to OUT (``load_problems(..., require_solution=True)``
  loads it); wrong, truncated (``finish_reason=length``) and refused ones go to
  ``<out>.rejected.jsonl`` with the expert's answer; ``--keep-unverified`` keeps the wrong and
  truncated ones in OUT instead (``"verified": false``). A problem's own ``solution`` field, if any,
  is replaced.
* ``<out>.summary.json`` (written last) has the counts and the token usage totals. The API key is read
  from the environment variable named by ``--api-key-env`` and never printed.

The template (``--template F``, a text file) is the user message; ``{problem}`` is replaced by the
problem text (no other braces are special, so LaTeX needs no escaping).
"""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .data import Problem, load_problems, write_jsonl

__all__ = ["DEFAULT_TEMPLATE", "Journal", "ExpertAbort", "run_expert", "run_expert_stage", "side_paths", "main"]

DEFAULT_TEMPLATE = ("{problem}\n\nSolve the problem step by step. Put the final answer in \\boxed{}.")
BACKOFF_BASE_S = 0.5       # first wait without a Retry-After; doubles per try, with jitter
MAX_BACKOFF_S = 60.0       # longest wait between two tries without a Retry-After
MAX_RETRY_AFTER_S = 600.0  # a server's Retry-After is honoured up to this
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


class ExpertAbort(ValueError):
    """A failure no retry fixes (bad API key, unknown model, wrong URL): the run stops."""


def side_paths(output: Path) -> dict[str, Path]:
    """The files written next to OUT: journal, rejected, summary."""
    output = Path(output)
    stem = output.name[:-len(output.suffix)] if output.suffix else output.name
    return {k: output.with_name(f"{stem}.{k}.{ext}") for k, ext in
            (("journal", "jsonl"), ("rejected", "jsonl"), ("summary", "json"))}


# ===================================================================== journal
class Journal:
    """Append-only JSONL of finished requests. Line 1 holds the settings that shape an answer; a run with
    other settings refuses the file. A half-written last line (a kill mid-write) is cut off on open."""

    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                raw = raw[:raw.rfind(b"\n") + 1]  # drop the torn line, then append after it
                with open(self.path, "r+b") as f:
                    f.truncate(len(raw))
            lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip()]
            if lines:
                head = json.loads(lines[0]).get("settings")
                if head != settings:
                    raise ValueError(f"{self.path} was written with other settings ({head}); now {settings}. "
                                     f"Delete it (answers are lost) or write to another --output")
                for ln in lines[1:]:
                    e = json.loads(ln)
                    self.entries[e["id"]] = e
        self._f = open(self.path, "a", encoding="utf-8")
        if self.path.stat().st_size == 0:
            self._write({"settings": settings})

    def _write(self, rec: dict) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def add(self, entry: dict) -> None:
        self._write(entry)
        self.entries[entry["id"]] = entry

    def close(self) -> None:
        self._f.close()


# ===================================================================== one request
@dataclass
class _Reply:
    text: str
    finish_reason: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    tries: int


def _retry_after(exc) -> Optional[float]:
    """Seconds from a response's Retry-After / retry-after-ms header (seconds or an HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(float(v), 0.0)
    except ValueError:
        try:
            return max(email.utils.parsedate_to_datetime(v).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


class _Refused(Exception):
    """The server answered a 4xx that no retry changes: this problem's final outcome."""


def _ask(client, cfg, messages: list[dict], stop: threading.Event) -> _Reply:
    """One chat completion with our retry policy (see the module doc)."""
    import openai
    last: Optional[str] = None
    for attempt in range(cfg.max_retries + 1):
        if stop.is_set():
            raise ExpertAbort("stopped")
        wait_s: Optional[float] = None
        try:
            r = client.chat.completions.create(model=cfg.model, messages=messages, max_tokens=cfg.max_tokens,
                                               temperature=cfg.temperature, timeout=cfg.timeout)
            choice = (r.choices or [None])[0]
            text = getattr(getattr(choice, "message", None), "content", None)
            if not isinstance(text, str):
                raise ValueError("no choices[0].message.content in the response")
            u = r.usage
            return _Reply(text, choice.finish_reason, int(getattr(u, "prompt_tokens", 0) or 0),
                          int(getattr(u, "completion_tokens", 0) or 0), attempt + 1)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
            raise ExpertAbort(f"the API refused the request ({type(e).__name__}, HTTP {e.status_code}): check "
                              f"--base-url {cfg.base_url!r}, --model {cfg.model!r} and the key in "
                              f"${cfg.api_key_env}") from None
        except openai.APIStatusError as e:
            if e.status_code == 429:
                wait_s = _retry_after(e)
            elif not (e.status_code >= 500 or e.status_code in (408, 409)):
                raise _Refused(f"HTTP {e.status_code}: {str(e)[:300]}") from None
            last = f"HTTP {e.status_code}"
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            last = type(e).__name__
        except (ValueError, TypeError, AttributeError, openai.APIResponseValidationError) as e:  # malformed body
            last = f"malformed response ({type(e).__name__}: {str(e)[:120]})"
        if attempt == cfg.max_retries:
            break
        if wait_s is None:
            wait_s = min(MAX_BACKOFF_S, BACKOFF_BASE_S * 2 ** attempt) * (0.5 + 0.5 * random.random())
        stop.wait(min(wait_s, MAX_RETRY_AFTER_S))
    raise RuntimeError(f"no answer after {cfg.max_retries + 1} tries (last: {last})")


# ===================================================================== the stage
def _settings(cfg, template: str) -> dict:
    """What shapes an answer (the endpoint's URL does not: a moved server keeps the journal valid)."""
    return {"model": cfg.model, "max_tokens": cfg.max_tokens, "temperature": cfg.temperature,
            "system_prompt": cfg.system_prompt, "strip_thinking": cfg.strip_thinking,
            "template_sha256": hashlib.sha256(template.encode()).hexdigest()[:16]}


def _load_template(cfg) -> str:
    if cfg.template is None:
        return DEFAULT_TEMPLATE
    path = Path(cfg.template)
    if not path.is_file():
        raise ValueError(f"expert template file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if "{problem}" not in text:
        raise ValueError(f"expert template {path} has no {{problem}} placeholder")
    return text


def _default_verify(gold: str, text: str) -> tuple[bool, Optional[str]]:
    from paced_kernels import scoring
    return bool(scoring.verify_batch([gold], [text], num_threads=1)[0]), scoring.extract_answer(text)


def _problem_hash(p: Problem) -> str:
    return hashlib.sha256(f"{p.problem}\0{p.answer}".encode()).hexdigest()[:16]


def run_expert(cfg, input_path, output_path, *, limit: Optional[int] = None, info: Callable[[str], None] = None,
               progress: bool = True, verify: Optional[Callable] = None, client=None,
               require_all: bool = False) -> dict:
    """Ask for the missing solutions, verify them, write OUT + side files; returns the summary.

    ``cfg`` is a ``paced_train.config.ExpertConfig``. Raises ExpertAbort on a non-retryable API failure
    (the journal keeps what was answered); with ``require_all``, ValueError when requests failed after
    all retries, before the summary (the stage's done marker) is written."""
    from .logging_utils import progress_bar
    info = info or (lambda m: print(m, file=sys.stderr, flush=True))
    verify = verify or _default_verify
    output_path = Path(output_path)
    side = side_paths(output_path)
    template = _load_template(cfg)
    problems = load_problems(input_path, limit=limit)
    journal = Journal(side["journal"], _settings(cfg, template))
    todo = [p for p in problems
            if journal.entries.get(p.id, {}).get("problem_sha256") != _problem_hash(p)]
    reused = len(problems) - len(todo)
    info(f"expert: {len(problems)} problems, {reused} answered in {side['journal']}, {len(todo)} to ask "
         f"{cfg.model} at {cfg.base_url}")
    if client is None and todo:
        import openai
        key = os.environ.get(cfg.api_key_env)
        if not key:
            info(f"expert: ${cfg.api_key_env} is not set; sending no API key (fine for a local vLLM/SGLang server)")
        client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "EMPTY", max_retries=0, timeout=cfg.timeout)

    def messages(p: Problem) -> list[dict]:
        m = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        return m + [{"role": "user", "content": template.replace("{problem}", p.problem)}]

    stop = threading.Event()

    def work(p: Problem) -> dict:
        base = {"id": p.id, "problem_sha256": _problem_hash(p)}
        try:
            reply = _ask(client, cfg, messages(p), stop)
        except _Refused as e:
            return {**base, "status": "error", "error": str(e)}
        except ExpertAbort:
            raise
        except RuntimeError as e:
            return {**base, "status": "failed", "error": str(e)}
        text = _THINK.sub("", reply.text, count=1) if cfg.strip_thinking else reply.text
        try:
            ok, got = verify(p.answer, text)
        except Exception as e:  # noqa: BLE001 - a scorer failure sets this solution aside, never ends the run
            ok, got = False, f"<scorer error: {type(e).__name__}: {e}>"
        status = "truncated" if reply.finish_reason == "length" else ("verified" if ok else "wrong")
        return {**base, "status": status, "solution": text, "expert_answer": got,
                "finish_reason": reply.finish_reason, "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens, "tries": reply.tries}

    failed: dict[str, dict] = {}
    verified = tokens = 0  # this run's, for the progress bar
    bar = progress_bar(total=len(todo), desc="expert solutions", unit="problem", enabled=progress and bool(todo))
    abort: Optional[BaseException] = None
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="expert")
    try:
        pending = {pool.submit(work, p) for p in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    entry = fut.result()
                except ExpertAbort as e:
                    abort = abort or e
                    stop.set()
                    continue
                if entry["status"] == "failed":
                    failed[entry["id"]] = entry
                else:
                    journal.add(entry)  # durable before it counts
                bar.update(1)
                verified += entry["status"] == "verified"
                tokens += entry.get("prompt_tokens", 0) + entry.get("completion_tokens", 0)
                bar.set_postfix(verified=verified, failed=len(failed), tokens=tokens)
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        journal.close()
    if abort is not None:
        raise abort
    return _write_outputs(cfg, problems, journal.entries, failed, output_path, side, reused, info, require_all)


def _write_outputs(cfg, problems, entries: dict, failed: dict, output_path: Path, side: dict, reused: int,
                   info, require_all: bool) -> dict:
    kept, rejected = [], []
    counts = {"verified": 0, "wrong": 0, "truncated": 0, "error": 0}
    tokens = {"prompt_tokens": 0, "completion_tokens": 0}
    for p in problems:
        e = entries.get(p.id)
        if e is None or e.get("problem_sha256") != _problem_hash(p):
            if p.id in failed:
                rejected.append({"id": p.id, "problem": p.problem, "answer": p.answer, "status": "failed",
                                 "error": failed[p.id]["error"]})
            continue
        counts[e["status"]] += 1
        for k in tokens:
            tokens[k] += int(e.get(k, 0) or 0)
        rec = {"id": p.id, "problem": p.problem, "answer": p.answer}
        if e["status"] == "verified":
            kept.append({**rec, "solution": e["solution"]})
            continue
        if cfg.keep_unverified and e.get("solution"):
            kept.append({**rec, "solution": e["solution"], "verified": False})
        else:
            rejected.append({**rec, "status": e["status"], "expert_answer": e.get("expert_answer"),
                             "solution": e.get("solution"), "error": e.get("error")})
    if not kept:
        raise ValueError(f"expert: no solution to write ({counts['verified']} verified of {len(problems)}; "
                         f"rejected ones are in {side['rejected']})" if entries else
                         "expert: no problem was answered")
    write_jsonl(output_path, kept)
    write_jsonl(side["rejected"], rejected)
    summary = {"n_problems": len(problems), "reused_from_journal": reused, **counts, "failed": len(failed),
               "kept": len(kept), "keep_unverified": cfg.keep_unverified, **tokens,
               "total_tokens": tokens["prompt_tokens"] + tokens["completion_tokens"], "model": cfg.model,
               "output": str(output_path), "rejected_file": str(side["rejected"])}
    if require_all and failed:
        raise ValueError(f"expert: {len(failed)} requests failed after {cfg.max_retries} retries (see "
                         f"{side['rejected']}); run again to ask for them (answers are kept)")
    tmp = side["summary"].with_name(side["summary"].name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(side["summary"])
    info(f"expert: {counts['verified']} verified, {counts['wrong']} wrong, {counts['truncated']} truncated, "
         f"{counts['error']} refused, {len(failed)} failed after retries -> {len(kept)} solutions in "
         f"{output_path}; set aside in {side['rejected']}; tokens {tokens['prompt_tokens']} prompt + "
         f"{tokens['completion_tokens']} completion")
    return summary


def run_expert_stage(cfg, problems_path, out_dir: Path, logger) -> Path:
    """The pipeline's expert stage (``expert:`` config section); returns the solutions file.

    Every run goes through ``run_expert``: problems already in the journal are not asked again, so a
    finished stage costs no request and a killed one resumes. ``expert.output`` puts the files outside
    the run directory, to share them between runs. Rank 0 asks; the others wait for its marker (an API
    stage can outlast a collective's timeout, so no barrier while it runs)."""
    from .logging_utils import is_main_process
    from .parallel import barrier, decided_by_rank0
    out = Path(cfg.output) if cfg.output else Path(out_dir) / "solutions.jsonl"
    marker = out.with_name(out.name + ".done")
    token = decided_by_rank0(lambda: f"{os.getpid()}-{time.time()}", "expert")
    if is_main_process():
        s = run_expert(cfg, problems_path, out, info=logger.info, progress=logger.progress_bars,
                       require_all=True)  # failed requests: an error, the next run asks for them again
        logger.log({k: v for k, v in s.items() if isinstance(v, (int, float))}, step=0, stage="expert")
        marker.write_text(token)
    else:
        while not (marker.exists() and marker.read_text() == token):
            time.sleep(2.0)
    barrier()
    return out


# ===================================================================== command line
def main(argv: Optional[list[str]] = None) -> int:
    from .config import ExpertConfig, validate_expert_config
    p = argparse.ArgumentParser(prog="python -m paced_train.expert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ExpertConfig()
    p.add_argument("--input", required=True, help="problems (id, problem, answer) as JSONL/Parquet")
    p.add_argument("--output", required=True, help="verified solutions, JSONL")
    p.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="requests in flight")
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=d.max_retries)
    p.add_argument("--api-key-env", default=d.api_key_env, help="environment variable holding the API key")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--template", default=None, help="user-message template file with {problem}")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--keep-thinking", action="store_true", help="keep a leading <think>...</think> block")
    p.add_argument("--keep-unverified", action="store_true", help="keep wrong/truncated solutions in OUT too")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = ExpertConfig(base_url=a.base_url, model=a.model, api_key_env=a.api_key_env, concurrency=a.concurrency,
                       timeout=a.timeout, max_retries=a.max_retries, max_tokens=a.max_tokens,
                       temperature=a.temperature, template=a.template, system_prompt=a.system_prompt,
                       keep_unverified=a.keep_unverified, strip_thinking=not a.keep_thinking)
    try:
        validate_expert_config(cfg, prefix="--")
        s = run_expert(cfg, a.input, a.output, limit=a.limit, progress=not a.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(s), flush=True)
    if s["failed"]:
        print(f"error: {s['failed']} requests failed after retries; run the same command again to ask for "
              f"them (answered problems are not asked again)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
