"""What only the book's chapters need, apart from the package people train and evaluate with.

- :mod:`r1reward.chapters.artifacts` -- the chapters' artifact cache: the tiny model, curated
  pairs, the cold-start SFT model and the scalar baseline of a profile, built on first use and
  keyed by the recipe sections they depend on (``artifacts/<profile>/``);
- :mod:`r1reward.chapters.experiments` -- the seeded RL grids of chapters 8, 9 and 11 (runs side
  by side in worker processes, held-out accuracy, the breakdowns the chapters plot);
- :mod:`r1reward.chapters.judge_use` -- chapter 12's best-of-N and GRPO-with-the-judge studies;
- :mod:`r1reward.chapters.plots` -- the book's offline plotly renderer and figure helpers.

The toy world (:mod:`r1reward.toy`) is reached from here, from the command line and from the
tests, never from the training, evaluation or serving code.
"""
