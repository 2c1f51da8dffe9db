"""The toy world and the tiny model, apart from the real path.

- :mod:`r1reward.toy.world`: the procedural multimodal preference task (``make_pairs``) and its
  teacher analyses;
- :mod:`r1reward.toy.checks`: reading a judge's toy analyses step by step, and the text-only
  baselines that must sit at chance;
- :mod:`r1reward.toy.judge`: the rule consistency judge (judge kind ``rule``);
- :mod:`r1reward.toy.teacher`: the noisy-oracle teacher of the cold-start curation (teacher kind
  ``toy``);
- :mod:`r1reward.toy.tiny_model`: the tiny Qwen2.5-VL folder (``build_tiny_model``);
- :mod:`r1reward.toy.pretrain`: its caption pretraining;
- :mod:`r1reward.toy.cli`: ``r1reward toy`` and ``r1reward build-tiny``.

Nothing that loads, trains, evaluates or serves a model imports this package: the data layer
reaches the toy world through the lazy source entry of :mod:`r1reward.data.sources`, the judge and
teacher factories through the lazy kinds of :data:`r1reward.judges.JUDGES` and
:data:`r1reward.curation.TEACHERS`, and the tiny model is built at the entry point
(:func:`r1reward.recipes.resolve_model_path`).
"""
