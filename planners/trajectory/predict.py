"""Open-loop Trajectory Transformer predictions: the model rolled forward on the actions an episode actually took.

The real context (the planner's last `max_context_transitions` transitions, tokens as the planner makes them)
and the observation at step t come first; then for each of h steps the real action's tokens go in and the
model's most likely token (argmax, as the planner's k_obs=1) is taken for the reward, the value and each
observation dimension. The predictions are those tokens' bin midpoints. No random stream is drawn from.
"""

import numpy as np
import torch
from seqrl.planners.trajectory.decoding import FullWindowDecoder
from seqrl.planners.trajectory.planner import VALUE_PLACEHOLDER, TrajectoryPlanner


@torch.inference_mode()
def open_loop(
    planner: TrajectoryPlanner, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted observations (h, obs_dim) of steps t+1..t+h and rewards (h,) of steps t..t+h-1 (`Agent.predict`)."""
    obs_dim, act_dim, transition_dim = planner.observation_dim, planner.action_dim, planner.transition_dim
    t, h = len(rewards), len(actions) - len(rewards)
    first = max(0, t - planner.planner_settings.max_context_transitions)
    past = np.concatenate(  # (t - first, transition_dim) the real transitions the planner's context would hold
        [observations[first:t], actions[first:t], rewards[first:t, None], np.full((t - first, 1), VALUE_PLACEHOLDER)],
        axis=1,
    )
    discretizer = planner.discretizer
    sequence = torch.cat([discretizer.discretize(past).flatten(), planner.observation_bins.discretize(observations[t])])
    action_tokens = discretizer.select(slice(obs_dim, obs_dim + act_dim)).discretize(actions[t:])  # (h, act_dim)
    decoder = FullWindowDecoder(planner.model, planner.max_tokens)
    sequence = sequence[None]  # (1, length)
    for step in range(h):
        sequence = torch.cat([sequence, action_tokens[step][None]], dim=1)
        for _ in range(2 + obs_dim):  # reward, value, then the next observation
            token = decoder.logits(sequence)[:, :-1].argmax(-1, keepdim=True)  # (1, 1), never the stop token
            sequence = torch.cat([sequence, token], dim=1)
    # from the observation at t on: h transitions (observation, action, reward, value), then the last observation
    tail = sequence[0, sequence.shape[1] - h * transition_dim - obs_dim :]
    transitions = discretizer.reconstruct(tail[: h * transition_dim].view(h, transition_dim)).cpu().numpy()
    last = planner.observation_bins.reconstruct(tail[h * transition_dim :]).cpu().numpy()
    predicted_observations = np.concatenate([transitions[1:, :obs_dim], last[None]])  # (h, obs_dim)
    return predicted_observations, transitions[:, obs_dim + act_dim]
