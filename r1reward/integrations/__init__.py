"""Adapters that let RL trainers use the judge as their reward.

- :mod:`r1reward.integrations.trl` -- ``JudgeReward`` / ``AsyncJudgeReward``, reward functions
  for TRL's ``GRPOTrainer`` (local model or ``r1reward serve`` over HTTP; group ranking or
  pointwise against a reference);
- :mod:`r1reward.integrations.openrlhf` -- OpenRLHF's remote reward protocol (``POST
  /get_reward``, answered by ``r1reward serve``) and a ``reward_func`` file hook;
- :mod:`r1reward.integrations.verl` -- a verl ``custom_reward_function`` file and its launch
  snippet.

Over HTTP they all speak through :class:`r1reward.serve.client.RewardClient`, the service's own
client (API key, errors with the server's message, sync and async).

The scores themselves (verdict distribution, both orders, Bradley-Terry) are
:mod:`r1reward.verdicts`. Submodules are imported on use, so importing this package is cheap.
"""
