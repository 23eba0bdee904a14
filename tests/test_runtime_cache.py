"""The resident set: LRU by count and bytes, refusal of other bases' adapters, unknown refs, and
hot swaps under concurrent threads that must never hand a row another adapter's output."""

from __future__ import annotations

import json
import threading
import warnings

import pytest

from adapters.errors import BaseMismatchError, UsageError
from adapters.runtime import FAILED, READY, CacheFullError, Engine, UnknownAdapterError

from support.runtime import PROMPTS, perturb


@pytest.fixture(scope="module")
def variants(gen_adapters, tmp_path_factory):
    """Four LoRA adapters of equal size and different weights (so different content names)."""
    root = tmp_path_factory.mktemp("variants")
    return [str(perturb(gen_adapters["A"], root / f"v{i}", seed=50 + i)) for i in range(4)]


def _names(engine):
    return [i.ref for i in engine.adapters() if i.state == READY]


def test_lru_evicts_least_recently_used_by_count(tiny_llama, variants):
    engine = Engine(str(tiny_llama), quant="none", device="cpu", max_adapters=2)
    model = engine.model
    engine.load(variants[0])
    engine.load(variants[1])
    engine.generate(["hi"], [variants[0]], max_new_tokens=1)  # v0 becomes the most recent
    engine.load(variants[2])
    assert sorted(_names(engine)) == sorted([variants[0], variants[2]])
    # Using an evicted adapter loads it again (hot swap) on the same resident base.
    engine.generate(["hi"], [variants[1]], max_new_tokens=1)
    assert sorted(_names(engine)) == sorted([variants[1], variants[2]])
    assert engine.model is model
    assert engine.lora.names == {i.name for i in engine.adapters()}  # evicted LoRA matrices are freed


def test_lru_evicts_by_bytes(tiny_llama, variants):
    nbytes = Engine(str(tiny_llama), quant="none", device="cpu").load(variants[0]).bytes
    engine = Engine(str(tiny_llama), quant="none", device="cpu", max_bytes=int(2.5 * nbytes))
    for v in variants[:3]:
        info = engine.load(v)
        assert info.state == READY and info.bytes == nbytes and info.method == "lora"
    assert _names(engine) == variants[1:3]
    small = Engine(str(tiny_llama), quant="none", device="cpu", max_bytes=nbytes // 2)
    with pytest.raises(CacheFullError):
        small.load(variants[0])


def test_same_content_under_two_refs_is_resident_once(tiny_llama, variants):
    resolver = {"chat@1": variants[0], "chat@prod": variants[0], "other": variants[1]}.__getitem__
    engine = Engine(str(tiny_llama), quant="none", device="cpu", resolver=resolver, preload=["chat@1"])
    info = engine.load("chat@prod")
    assert info.refs == ["chat@1", "chat@prod"] and info.name.startswith("a_")
    assert len(engine.adapters()) == 1
    engine.unload("chat@prod")
    assert engine.adapters() == []
    with pytest.raises(UnknownAdapterError):
        engine.load("nope")  # the resolver's KeyError becomes UnknownAdapterError
    with pytest.raises(UnknownAdapterError):
        engine.unload("other")  # never loaded


def test_unknown_ref_is_a_usage_error(tiny_llama, tmp_path):
    engine = Engine(str(tiny_llama), quant="none", device="cpu")
    for ref in ("no-such-adapter", str(tmp_path)):
        with pytest.raises(UnknownAdapterError) as err:
            engine.load(ref)
        assert isinstance(err.value, UsageError) and isinstance(err.value, LookupError)
    with pytest.raises(UnknownAdapterError):
        engine.generate(["hi"], ["no-such-adapter"])


def test_adapter_of_another_base_is_refused(tiny_llama, gen_adapters, tmp_path):
    wrong = tmp_path / "wrong"
    import shutil

    shutil.copytree(gen_adapters["A"], wrong)
    meta = json.loads((wrong / "adapter_manager.json").read_text())
    meta["base"]["fingerprint"] = "sha256:" + "0" * 64
    (wrong / "adapter_manager.json").write_text(json.dumps(meta))
    engine = Engine(str(tiny_llama), quant="none", device="cpu")
    with pytest.raises(BaseMismatchError):
        engine.load(str(wrong))
    (info,) = engine.adapters()
    assert info.state == FAILED and "other weights" in info.error
    assert not engine.lora.names and not engine.lora.layers  # nothing was put in place


def test_internal_names_do_not_trip_peft_prefix_warnings(tiny_llama, gen_adapters):
    engine = Engine(str(tiny_llama), quant="none", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for key in ("A", "B", "P"):
            engine.load(str(gen_adapters[key]))
    assert not [w for w in caught if "prefix" in str(w.message) and "contained" in str(w.message)]


def test_concurrent_hot_swaps_never_mix_adapters(tiny_llama, variants, gen_adapters):
    """Threads each verify their own adapter's known output while a small cache (2 slots for 4
    adapters) keeps evicting and reloading adapters under them."""
    refs = variants[:3] + [str(gen_adapters["P"]), None]
    engine = Engine(str(tiny_llama), quant="none", device="cpu", max_adapters=2)
    def fingerprint(result):  # tokens and log-probabilities: different for every adapter
        return result.token_ids, result.logprobs

    def same(a, b):
        return a[0] == b[0] and max(abs(x - y) for x, y in zip(a[1], b[1])) < 1e-5

    expected = {ref: fingerprint(engine.generate([PROMPTS[0]], [ref], max_new_tokens=4, logprobs=True)[0])
                for ref in refs}
    assert not any(same(expected[a], expected[b]) for a in refs for b in refs if a != b)  # distinguishable
    installs = []
    install = engine._install
    engine._install = lambda files, matrices: installs.append(files.name) or install(files, matrices)
    errors: list[str] = []

    def worker(k: int):
        try:
            for j in range(4):
                mine = refs[(k + j) % len(refs)]
                other = refs[(k + j + 1) % len(refs)]
                if j % 2:
                    got = engine.generate([PROMPTS[0], PROMPTS[0]], [mine, other], max_new_tokens=4, logprobs=True)
                    pairs = [(mine, fingerprint(got[0])), (other, fingerprint(got[1]))]
                else:
                    text = "".join(engine.stream(PROMPTS[0], mine, max_new_tokens=4))
                    got = engine.generate([PROMPTS[0]], [mine], max_new_tokens=4, logprobs=True)
                    assert text == got[0].text
                    pairs = [(mine, fingerprint(got[0]))]
                for ref, tokens in pairs:
                    if not same(tokens, expected[ref]):
                        errors.append(f"{ref}: {tokens} != {expected[ref]}")
        except Exception as exc:  # noqa: BLE001 - collect for the main thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(installs) > 4  # adapters really were evicted and loaded again under the threads
    assert len([i for i in engine.adapters() if i.state == READY]) <= 2
    assert all(e.pins == 0 for e in engine._cache.entries.values())
