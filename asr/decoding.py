"""CTC decoding: greedy best path (batched)."""
from __future__ import annotations

import torch

from .text import CharVocabulary


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path token ids per utterance: argmax per frame, repeats collapsed, blanks dropped."""
    best = log_probs.argmax(dim=-1)  # (N, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    keep &= torch.arange(best.shape[1], device=best.device)[None, :] < lengths[:, None].to(best.device)
    best, keep = best.cpu(), keep.cpu()
    return [best[i][keep[i]].tolist() for i in range(best.shape[0])]


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: CharVocabulary) -> list[str]:
    """Greedy transcripts of a batch of log-probs (N, T, C)."""
    return [vocab.decode(ids) for ids in greedy_ids(log_probs, lengths, vocab.blank)]
