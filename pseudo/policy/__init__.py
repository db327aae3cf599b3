"""Policies as data: models of ``policies/*.yaml``, loading, and compilation to decisions."""

from pseudo.policy.compiled import CompiledPolicy, Decision
from pseudo.policy.loader import PolicyError, load_policy, shipped_policy_names
from pseudo.policy.model import Action

__all__ = [
    "Action",
    "CompiledPolicy",
    "Decision",
    "PolicyError",
    "load_policy",
    "shipped_policy_names",
]
