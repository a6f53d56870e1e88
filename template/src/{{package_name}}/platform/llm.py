"""The chat model's old address: it lives in platform/core/llm.py since the layout of 2026-12.

Kept on purpose. `tests/test_graph.py` is the team's file (`copier update` never rewrites it), and the one
that services rendered before the move hold imports EchoChatModel from here; this keeps it working.
"""

from __future__ import annotations

from .core.llm import EchoChatModel, build_chat_model

__all__ = ["EchoChatModel", "build_chat_model"]
