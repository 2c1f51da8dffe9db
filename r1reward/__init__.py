"""r1reward: R1-Reward (arXiv 2505.02835) as an importable package.

A generative multimodal reward model that reads an image, a question and two responses, writes an
analysis in ``<think>...</think>`` and a verdict ``<answer>1|2</answer>``, trained with
StableReinforce (Pre-Clip, Advantage Filter, consistency reward).
"""

__version__ = "0.1.0"
