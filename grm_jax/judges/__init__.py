"""The GRM's rules run by a judge: examples -> k shuffled prompts -> sampled judgements -> score arrays.

`grm_jax.grm` holds the paper's rules as pure functions (no jax); this package runs them: `judge` samples
judgements from a model (`sampling.generate`) with one `Sampling` of settings, `synthetic_critic.critic_judge`
is the rule-based judge of the built-in synthetic data with the same contract, `trajectories` turns a sampled
judgement into training data, `meta_rm` scores judgements with a trained meta RM, `token_prob` reads a judge
template's choice probabilities, and `choose_best` breaks voting ties with a PRNG key.
"""

from grm_jax.judges.choice import choose_best
from grm_jax.judges.model_judge import Judgements, judge
from grm_jax.judges.settings import Sampling

__all__ = ["Judgements", "Sampling", "choose_best", "judge"]
