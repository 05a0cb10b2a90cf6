"""Multiple-choice prompts have their own chat-template options (eval.mc_*), independent of data.*."""
from _train_tiny import build_tokenizer
from paced_train.config import DataConfig, EvalConfig, config_from_dict
from paced_train.data import MCQuestion, PromptBuilder
from paced_train.evaluate import _mc_items

# a template whose output shows which kwargs it saw (as Qwen3's enable_thinking changes its prompt)
TEMPLATE = ("{%- if enable_thinking is defined and enable_thinking is false -%}N:{%- else -%}T:{%- endif -%}"
            "{{- messages[-1]['content'] -}}")


def test_mc_chat_template_options_override_the_data_section():
    tok = build_tokenizer()
    tok.chat_template = TEMPLATE
    builder = PromptBuilder(tok, DataConfig(chat_template_kwargs={"enable_thinking": True}))
    q = MCQuestion("q", "Largest of 1 and 4?", ("1", "4"), 1)

    def prompt_ids(cfg):
        items = _mc_items([q], builder, tok, cfg)
        assert len(items) == 2 and items[0][1] == items[1][1]
        return items[0][1]

    text = "Largest of 1 and 4?"
    assert prompt_ids(EvalConfig()) == tok("T:" + text, add_special_tokens=False)["input_ids"]  # inherits data.*
    assert prompt_ids(EvalConfig(mc_chat_template_kwargs={"enable_thinking": False})) == \
        tok("N:" + text, add_special_tokens=False)["input_ids"]
    assert prompt_ids(EvalConfig(mc_use_chat_template=False)) == tok(text)["input_ids"]  # raw text
    assert builder.text(text) == tok("T:" + text, add_special_tokens=False)["input_ids"]  # generation unchanged


def test_mc_chat_template_options_in_a_config():
    cfg = config_from_dict({"data": {"train": "x.jsonl", "chat_template_kwargs": {"enable_thinking": True}},
                            "eval": {"mc_chat_template_kwargs": {"enable_thinking": False}}})
    assert cfg.eval.mc_chat_template_kwargs == {"enable_thinking": False} and cfg.eval.mc_use_chat_template is None
