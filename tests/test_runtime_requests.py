"""GenerationRequest: normalised and checked once, when built; requests_for spreads the batch API's
scalar-or-per-row options over one request per prompt. No model needed."""

from dataclasses import FrozenInstanceError, replace

import pytest

from adapters.runtime import BASE, GenerationRequest
from adapters.runtime.requests import requests_for


def test_a_request_is_normalised_when_built():
    r = GenerationRequest("hi", stop="\n", seed="7", max_new_tokens=3.0)
    assert r.stop == ("\n",) and r.seed == 7 and r.max_new_tokens == 3
    assert GenerationRequest("hi", stop=["", "x", None]).stop == ("x",)
    assert GenerationRequest("hi", stop=None).stop == ()
    # The limit of a vanishing temperature or top_p is greedy decoding.
    assert (GenerationRequest("hi", temperature=1e-7, top_p=0.5).temperature,
            GenerationRequest("hi", temperature=1e-7, top_p=0.5).top_p) == (0.0, 1.0)
    assert GenerationRequest("hi", temperature=0.7, top_p=1e-9).temperature == 0.0
    assert GenerationRequest("hi", prompt_ids=[1, 2]).prompt_ids == (1, 2)
    with pytest.raises(FrozenInstanceError):
        r.seed = 8
    assert replace(r, seed=8).seed == 8 and r.seed == 7


@pytest.mark.parametrize("options, message", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationRequest("hi", **options)


def test_requests_for_spreads_scalars_and_per_row_values():
    rows = requests_for(["a", "b"], ["x@1", BASE], max_new_tokens=[3, 4], temperature=0.0, top_p=1.0,
                        seed=None, stop=["\n", "."])
    assert [r.adapter for r in rows] == ["x@1", BASE] and [r.max_new_tokens for r in rows] == [3, 4]
    assert all(r.stop == ("\n", ".") for r in rows)  # a list of strings: the stops of every row
    rows = requests_for("a", None, stop=[["\n"]])
    assert len(rows) == 1 and rows[0].adapter is None and rows[0].stop == ("\n",)
    assert requests_for([], None, stop=None) == []
    with pytest.raises(ValueError, match="2 prompts but 1 adapters"):
        requests_for(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="seed: 3 values for 2 prompts"):
        requests_for(["a", "b"], None, seed=[1, 2, 3])
