"""Trainable answer-letter rows: the one part of the token embeddings that training moves.

The option logits are the last hidden state times the answer letters' rows of the LM head.
Those rows are token embeddings (tied to the input side in small models), frozen with the
rest of the 151,936-row table, so from random weights they are random vectors of norm ≈ 0.16:
they bound the logit gaps (a tiny model stays under-confident) and fix the class directions.
Training a dense gradient over the whole table costs twice a step, so the letters get a small
delta instead, (classes, hidden), added where the rows are used:

- output side: ``logits(option k) = h · (row_k + delta_k)`` (``option_logits`` and the LM head
  hook, so the explanation loss sees the same letters);
- input side (tied tables only: there the prompt's letters read the same rows): a forward hook
  adds ``delta`` to the embedding of every option-letter token.

``merge`` writes the delta into the table and removes the hooks: the saved checkpoint is an
ordinary one, and inference computes exactly what training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _core(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class OptionRows:
    """A (rows, hidden) delta on the answer letters' embedding rows (and on words', if given), installed by hooks.

    The explanation's words meet the same bound as the letters: from frozen random rows their logits
    cannot stand out of the 151,936-token table (the explanation loss stayed ≈ 10 nats, near the
    uniform 11.9), so the words learnt only their prior. Their rows train too when ``word_ids`` is given."""

    def __init__(self, model: Any, option_ids: Sequence[int], word_ids: Sequence[int] = ()) -> None:
        """``word_ids``: further rows to train the same way (the explanation's words), after the letters."""
        import torch

        core = _core(model)
        self.model = core
        self.letters = len(option_ids)
        option_set = set(option_ids)
        self.rows = list(option_ids) + [i for i in dict.fromkeys(word_ids) if i not in option_set]
        head = core.get_output_embeddings()
        embed = core.get_input_embeddings()
        self.tied = head.weight.data_ptr() == embed.weight.data_ptr()
        device, dtype = head.weight.device, head.weight.dtype
        self.delta = torch.nn.Parameter(torch.zeros(len(self.rows), head.weight.shape[1], device=device, dtype=dtype))
        # token id -> 1 + its option index (0: not an option letter), to find the letters in a prompt
        self._lookup = torch.zeros(head.weight.shape[0], dtype=torch.long, device=device)
        self._lookup[torch.tensor(self.rows, device=device)] = torch.arange(1, len(self.rows) + 1, device=device)
        self._hooks = [head.register_forward_hook(self._add_to_logits)]
        if self.tied:
            self._hooks.append(embed.register_forward_hook(self._add_to_embeddings))

    def head_rows(self) -> Any:
        """The letters' rows as training and (after ``merge``) inference use them."""
        letters = self.rows[: self.letters]
        return self.model.get_output_embeddings().weight[letters] + self.delta[: self.letters]

    def _padded(self) -> Any:
        import torch

        return torch.cat([self.delta.new_zeros(1, self.delta.shape[1]), self.delta])

    def _add_to_embeddings(self, _module: Any, args: tuple, output: Any) -> Any:
        return output + self._padded().to(output.dtype)[self._lookup[args[0]]]

    def _add_to_logits(self, _module: Any, args: tuple, output: Any) -> Any:
        hidden = args[0]
        extra = hidden @ self.delta.to(hidden.dtype).T
        return output.index_add(-1, self._lookup.new_tensor(self.rows), extra.to(output.dtype))

    def merge(self) -> None:
        """Delta into the table (both sides when tied, the head only otherwise); hooks off."""
        import torch

        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        with torch.no_grad():
            self.model.get_output_embeddings().weight[self.rows] += self.delta.to(
                self.model.get_output_embeddings().weight.dtype
            )
            self.delta.zero_()
