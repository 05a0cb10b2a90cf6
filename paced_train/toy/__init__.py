"""The embedded toy world: generated arithmetic problems, a character tokenizer and tiny shipped
Qwen3 student/teacher models, so that ``python -m paced_train.run`` shows Paced working on a CPU.

- :mod:`paced_train.toy.world` -- the problems (``write_toy_dataset``), multiple-choice set;
- :mod:`paced_train.toy.tokenizer` -- the character-level tokenizer and chat template;
- :mod:`paced_train.toy.pretrain` -- ``python -m paced_train.toy.pretrain`` builds the assets;
- :mod:`paced_train.toy.assets` -- ``resolve_path("toy://student")`` and friends.
"""
