"""One rule tells a path from a ref: ``adapters.pathlike.looks_like_path`` in code and, for the
OpenAPI spec (fuzzers generate from it), the ``NOT_A_PATH`` pattern of the server's schemas. The
two must agree on every string, or the spec would promise what the server refuses."""

import random
import re

import pytest

from adapters.pathlike import looks_like_local_source, looks_like_path
from adapters.server.schemas import NOT_A_PATH

CASES = ["rt@1", "rt@prod", "ensemble:a@1+b@2", "/abs/dir", "./rel", "../up", "~/home", "C:\\x", "c:rel",
         "a\\b", "org/name", "x", "X", ".hidden", "name.with.dots", "sha256:abc", "a:b", "Ab:c", "é@1"]


@pytest.mark.parametrize("value", CASES)
def test_the_schema_pattern_and_the_function_agree(value):
    assert looks_like_path(value) == (re.fullmatch(NOT_A_PATH, value) is None)


def test_they_agree_on_random_strings_of_the_telling_characters():
    rng = random.Random(0)
    alphabet = "/\\.~:aZ9@+-_é "
    for _ in range(20000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        assert looks_like_path(value) == (re.fullmatch(NOT_A_PATH, value) is None), value


def test_hub_ids_and_data_files():
    assert not looks_like_path("org/name", hub_ids=True) and looks_like_path("org/name/extra", hub_ids=True)
    assert looks_like_local_source("reviews.csv") and looks_like_local_source("./data")
    assert not looks_like_local_source("rotten_tomatoes") and not looks_like_local_source("cornell/rotten_tomatoes")
