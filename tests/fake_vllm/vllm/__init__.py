"""A stand-in for vLLM in the tests (CPU, no CUDA): the offline ``LLM`` API on a Hugging Face model.

It behaves like the real engine in the ways the pipeline depends on:

* ``LLM(model=dir, tokenizer=None, ...)`` loads the tokenizer from ``tokenizer or model`` at
  construction, so a model folder without tokenizer files fails there with an ``OSError``, as
  vLLM's ``get_tokenizer`` does under transformers 4 (transformers 5's ``AutoTokenizer`` would
  quietly build an empty tokenizer from ``config.json`` alone, so the files are checked first);
* ``distributed_executor_backend="external_launcher"`` needs the environment torchrun sets
  (vLLM's ``ExecutorWithExternalLauncher`` reads ``os.environ["RANK"]`` / ``["LOCAL_RANK"]`` and
  initialises ``env://``, which needs MASTER_ADDR / MASTER_PORT / WORLD_SIZE) and fails without it
  with a ``KeyError``;
* ``vllm.distributed.parallel_state.cleanup_dist_env_and_memory()`` destroys torch's default
  process group, as vLLM's ``destroy_distributed_environment()`` does.

``generate(prompts, sampling_params)`` takes token prompts (``{"prompt_token_ids": [...]}``) or
strings and one ``SamplingParams`` or one per prompt (lengths must match), and returns one
``RequestOutput`` per prompt with ``n`` ``CompletionOutput``s: ``token_ids`` (the generated ids; a
stop or EOS token that ended the response is its last id, as in vLLM's ``check_stop``, which
inspects the already appended token), ``text``, ``finish_reason`` ("stop" | "length") and
``stop_reason`` (the matched id from ``stop_token_ids``; None for the model's EOS or a length cap).
A request with a ``seed`` samples the same whatever else is in the batch. Unknown ``LLM``
arguments raise a ``TypeError`` (vLLM's ``EngineArgs`` is a dataclass).

Test hook (no vLLM counterpart): ``PACED_FAKE_VLLM_CRASH=load`` makes ``LLM(...)`` raise, and
``PACED_FAKE_VLLM_CRASH=generate`` makes ``generate`` kill the process (exit code 17), as an
engine dying of a CUDA error would.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from .outputs import CompletionOutput, RequestOutput
from .sampling_params import SamplingParams

__version__ = "0.0.0+paced.fake"
__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]

_LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
# EngineArgs fields a config may pass through rollout.vllm_kwargs (accepted and ignored here)
_ENGINE_ARGS = {"swap_space", "cpu_offload_gb", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
                "disable_log_stats", "quantization", "revision", "tokenizer_revision", "tokenizer_mode",
                "skip_tokenizer_init", "enable_chunked_prefill", "kv_cache_dtype", "enable_sleep_mode",
                "compilation_config", "hf_overrides", "pipeline_parallel_size", "max_seq_len_to_capture"}
_DTYPES = {"auto": "float32", "float32": "float32", "float": "float32", "bfloat16": "bfloat16",
           "float16": "float16", "half": "float16"}


class LLM:
    def __init__(self, model: str, *, tokenizer: Optional[str] = None, tensor_parallel_size: int = 1,
                 dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.9,
                 max_model_len: Optional[int] = None, enforce_eager: bool = False,
                 trust_remote_code: bool = False, distributed_executor_backend: Optional[str] = None,
                 **kwargs):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        unknown = sorted(set(kwargs) - _ENGINE_ARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {unknown}")
        if os.environ.get("PACED_FAKE_VLLM_CRASH") == "load":
            raise RuntimeError("fake vLLM: PACED_FAKE_VLLM_CRASH=load")
        if distributed_executor_backend == "external_launcher":
            missing = [v for v in _LAUNCHER_ENV if v not in os.environ]
            if missing:
                raise KeyError(f"external_launcher executor needs torchrun's environment; missing {missing}")
        elif distributed_executor_backend not in (None, "mp", "uni", "ray"):
            raise ValueError(f"unknown distributed_executor_backend {distributed_executor_backend!r}")
        if tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        tok_path = tokenizer or model
        if os.path.isdir(tok_path) and not any(os.path.isfile(os.path.join(tok_path, f)) for f in _TOKENIZER_FILES):
            raise OSError(f"Can't load tokenizer for '{tok_path}': the folder has none of {list(_TOKENIZER_FILES)}")
        self.tokenizer = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, _DTYPES[dtype]),
                                                          trust_remote_code=trust_remote_code).eval()
        self.max_model_len = max_model_len or int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.seed = seed
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_token_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, /, sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
                 *, use_tqdm: bool = True, **kwargs) -> list[RequestOutput]:
        if os.environ.get("PACED_FAKE_VLLM_CRASH") == "generate":
            print("fake vLLM: PACED_FAKE_VLLM_CRASH=generate, the engine dies", flush=True)
            os._exit(17)
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, sampling_params)):
            ids = list(p["prompt_token_ids"]) if isinstance(p, dict) else \
                self.tokenizer(p, add_special_tokens=True)["input_ids"]
            outs.append(RequestOutput(request_id=str(i), prompt=p if isinstance(p, str) else None,
                                      prompt_token_ids=ids, prompt_logprobs=None,
                                      outputs=self._complete(ids, sp), finished=True))
        return outs

    def _complete(self, prompt_ids: list[int], sp: SamplingParams) -> list[CompletionOutput]:
        import torch
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(f"The prompt (length {len(prompt_ids)}) is longer than the maximum model length "
                             f"of {self.max_model_len}.")
        budget = min(sp.max_tokens, self.max_model_len - len(prompt_ids))
        stops = set(sp.stop_token_ids or ())
        enders = stops | {self.eos_token_id}
        sample = sp.temperature > 0
        kw = dict(do_sample=sample, max_new_tokens=budget, num_return_sequences=sp.n, num_beams=1,
                  eos_token_id=sorted(enders), pad_token_id=self.eos_token_id)
        if sample:
            kw.update(temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k if sp.top_k > 0 else 0)
        x = torch.tensor([prompt_ids])
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(sp.seed if sp.seed is not None else self.seed)
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kw)
        result = []
        for j, row in enumerate(out[:, len(prompt_ids):].tolist()):
            ids, reason, stop_reason = [], "length", None
            for t in row:
                ids.append(int(t))
                if t == self.eos_token_id:
                    reason = "stop"
                    break
                if t in stops:
                    reason, stop_reason = "stop", int(t)
                    break
            text = self.tokenizer.decode(ids, skip_special_tokens=sp.skip_special_tokens)
            result.append(CompletionOutput(index=j, text=text, token_ids=ids, cumulative_logprob=None,
                                           logprobs=None, finish_reason=reason, stop_reason=stop_reason))
        return result
