"""Sequence-model planners and policies; `load_agent` turns any checkpoint into an agent."""

from seqrl.planners.registry import choose_agent, load_agent

__all__ = ["choose_agent", "load_agent"]
