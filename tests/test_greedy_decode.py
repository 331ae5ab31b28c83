"""The shared decode loop: forced ids first, per-row stops, the token bound."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from inspector.backends.base import greedy_decode
from inspector.token_trie import TokenTrie

STOP = 99
VOCABULARY = 100


def one_hot(tokens: list[int]) -> np.ndarray:
    """Next-token logits (rows, VOCABULARY) whose greedy choice per row is ``tokens``."""
    logits = np.zeros((len(tokens), VOCABULARY), dtype=np.float32)
    logits[np.arange(len(tokens)), tokens] = 1.0
    return logits


def scripted(scripts: list[list[int]], forced: int):
    """A fake model: after the ``forced`` prefix, row r answers scripts[r] in order, then STOP forever."""
    fed: list[list[int]] = []

    def answer(k: int) -> np.ndarray:
        return one_hot([script[k] if 0 <= k < len(script) else STOP for script in scripts])

    def feed(tokens: np.ndarray) -> np.ndarray:
        fed.append(tokens.tolist())
        return answer(len(fed) - forced)

    return feed, lambda: answer(0), fed


@given(
    scripts=st.lists(st.lists(st.integers(0, 50), max_size=8), min_size=1, max_size=4),
    limit=st.integers(0, 10),
    forced=st.lists(st.integers(0, 50), max_size=3),
)
def test_rows_stop_at_stop_id_or_limit(scripts, limit, forced) -> None:
    feed, first, fed = scripted(scripts, len(forced))
    out = greedy_decode(feed, first, len(scripts), forced, limit, [STOP])
    assert out == [script[:limit] for script in scripts]
    assert fed[: len(forced)] == [[token] * len(scripts) for token in forced]


def test_forced_ids_skip_the_first_choice() -> None:
    calls = []
    out = greedy_decode(lambda t: one_hot([7]), lambda: calls.append(1) or one_hot([1]), 1, [5], 2, [STOP])
    assert out == [[7, 7]] and calls == []


def test_torch_backend_rows_decode_as_generate_does_with_their_own_stops(varied_loaded, inspection) -> None:
    """The shared loop on the real model: two tiles in one batch, each equal to transformers' generate().

    The model's greedy decode varies (so parity means something), and a stop id taken from
    the first tile's own continuation must end that row there while the other runs on.
    """
    import torch

    from inspector.backends.torch import TorchBackend
    from inspector.prompting import build_prompt
    from inspector.vision import grid_thw_array, patchify

    tokens = 10
    tiles = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    pixel_values, grid = patchify(tiles, min_pixels=0)
    backend = TorchBackend(varied_loaded)
    prompt = build_prompt(varied_loaded.tokenizer, inspection, grid[1] * grid[2] // 4)
    forced = [prompt.option_ids[1], *prompt.explanation_ids]

    def reference(row: int, stops: list[int]) -> list[int]:
        full = torch.from_numpy(np.concatenate([prompt.input_ids, forced])[None])
        with torch.inference_mode():
            out = varied_loaded.model.generate(
                input_ids=full,
                pixel_values=torch.from_numpy(pixel_values[row]),
                image_grid_thw=torch.from_numpy(grid_thw_array(1, grid)),
                mm_token_type_ids=(full == prompt.image_token_id).int(),
                max_new_tokens=tokens,
                do_sample=False,
                eos_token_id=stops or None,
                pad_token_id=prompt.stop_ids[0],
            )
        new = out[0, full.shape[1] :].tolist()
        return new[: new.index(stops[0])] if stops and stops[0] in new else new

    free = [reference(0, []), reference(1, [])]
    assert all(len(set(row)) >= 3 for row in free), free  # not degenerate
    stop = free[0][4]  # the first tile says this token 5th: with it as a stop, that row ends after 4
    assert stop not in free[1]
    expected = [reference(0, [stop]), reference(1, [stop])]
    assert len(expected[0]) == free[0].index(stop) and expected[1] == free[1]

    ids = np.broadcast_to(prompt.input_ids, (2, prompt.length))
    _, state = backend.prefill(ids, backend.encode(pixel_values, grid), prompt.option_ids)
    assert backend.generate(state, [0, 1], forced, tokens, [stop]) == expected


@given(
    sequences=st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=5), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    limit=st.integers(1, 10),
)
def test_an_allowed_decode_writes_one_of_the_sequences_whatever_the_logits(sequences, seed, limit) -> None:
    """With a trie, every row writes a prefix of an allowed sequence (a whole one within the bound), and
    each step is the best-scored allowed id: the model's preference among the allowed ids decides."""
    allowed = TokenTrie.of([[*s, STOP] for s in sequences])
    rng = np.random.default_rng(seed)
    rows = 3
    scores: list[np.ndarray] = []

    def feed(tokens: np.ndarray) -> np.ndarray:
        scores.append(rng.normal(size=(rows, VOCABULARY)).astype(np.float32))
        return scores[-1]

    out = greedy_decode(feed, lambda: feed(np.zeros(rows)), rows, [], limit, [STOP], allowed)
    whole = {tuple(s) for s in sequences}
    for row, tokens in enumerate(out):
        assert len(tokens) == limit or tuple(tokens) in whole
        for step, token in enumerate(tokens):
            options = allowed.allowed(tokens[:step])
            assert token == max(options, key=lambda t: scores[step][row, t])


def test_a_trie_refuses_nothing_it_was_given_and_nothing_else() -> None:
    trie = TokenTrie.of([[1, 2, STOP], [1, 3, STOP], [4, STOP]])
    assert trie.allowed([]) == (1, 4) and trie.allowed([1]) == (2, 3) and trie.allowed([1, 2]) == (STOP,)
    assert trie.allowed([2]) == () and trie.allowed([1, 2, STOP]) == ()
