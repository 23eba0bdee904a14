"""Ensembles at serve time: one ref that stands for several adapters whose predictions are averaged.

    ensemble:a@1+b@2              equal weights
    ensemble:a@1*0.7+b@2*0.3      weights (finite, > 0, normalised to sum 1)

Wherever a ref is accepted (``Engine.classify``/``generate``/``stream``, the HTTP ``model`` field,
the Python API), an ensemble ref is expanded into one row per member *inside the same mixed batch*,
so an ensemble of k adapters costs k rows of one forward pass, not k passes. Then:

- classification: the members' class probabilities are averaged (by label name) with the weights;
- generation: at every step the members' next-token distributions are averaged, one token is picked
  (greedy) or sampled from that mixture, and every member row is fed that same token; so the
  ensemble decodes like one model whose next-token distribution is the weighted mixture.

Member refs use the ordinary grammar (name, name@3, name@alias, sha256:<hex>), which has no '+' or
'*', so the split is unambiguous; ``__base__`` names the bare base (a generation member only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adapters.errors import UsageError
from adapters.runtime.cache import BASE, READY, AdapterInfo
from adapters.tasks import TASKS

PREFIX = "ensemble:"


class EnsembleError(UsageError, ValueError):
    """An ensemble ref that does not parse, or members that cannot be averaged together."""


@dataclass(frozen=True)
class Ensemble:
    ref: str
    members: tuple[str, ...]
    weights: tuple[float, ...]  # normalised: they sum to 1


def is_ensemble(ref) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def ensemble_ref(members: list[str], weights: list[float] | None = None) -> str:
    """The ref for ``members`` (with ``weights``, when given), e.g. for a UI that builds one."""
    if weights is None:
        return PREFIX + "+".join(members)
    return PREFIX + "+".join(f"{m}*{w:g}" for m, w in zip(members, weights, strict=True))


def parse(ref: str) -> Ensemble:
    """``ensemble:a@1*0.7+b@2*0.3`` -> Ensemble(members=("a@1", "b@2"), weights=(0.7, 0.3))."""
    hint = "write ensemble:a@1+b@2, or with weights ensemble:a@1*0.7+b@2*0.3"
    body = ref[len(PREFIX):] if is_ensemble(ref) else ref
    parts = [p.strip() for p in body.split("+")]
    if not body.strip() or any(not p for p in parts):
        raise EnsembleError(f"invalid ensemble ref {ref!r}: an empty member", hint)
    members, weights = [], []
    for part in parts:
        member, star, weight = part.rpartition("*") if "*" in part else (part, "", "")
        member = member.strip()
        try:
            w = float(weight) if star else 1.0
        except ValueError:
            raise EnsembleError(f"invalid ensemble ref {ref!r}: weight {weight!r} of {member!r} is not a number",
                                hint) from None
        if not member or is_ensemble(member):
            raise EnsembleError(f"invalid ensemble ref {ref!r}: members are adapter refs (no nesting)", hint)
        if not math.isfinite(w) or w <= 0:
            raise EnsembleError(f"invalid ensemble ref {ref!r}: weights are finite numbers > 0, got {weight!r}",
                                "an ensemble averages its members; leave a member out rather than weigh it 0")
        members.append(member)
        weights.append(w)
    total = sum(weights)
    if not math.isfinite(total):  # 1e308 + 1e308: every normalised weight would be 0
        raise EnsembleError(f"invalid ensemble ref {ref!r}: the weights sum to more than a float can hold",
                            "only their ratios matter: write ensemble:a*0.7+b*0.3")
    normalised = tuple(w / total for w in weights)
    if not all(normalised):  # 1e-320 next to 1: the small weight underflows to 0
        raise EnsembleError(f"invalid ensemble ref {ref!r}: a weight is too small next to the others to count",
                            "leave that member out, or give weights of similar size")
    return Ensemble(ref, tuple(members), normalised)


class RowPlan:
    """The caller's rows -> the rows the model runs: an ensemble row becomes one row per member.

    ``adapters`` are the model rows' adapters; ``spread`` copies per-row values (texts, prompts,
    next tokens) to the model rows; the ``combine_*`` methods fold model rows back into the
    caller's rows. A plan without ensembles is the identity."""

    def __init__(self, adapters: list):
        self.adapters: list = []
        self.groups: list[list[tuple[int, float]]] = []  # per caller row: (model row, weight)
        self.ensembles: dict[int, Ensemble] = {}
        for i, ref in enumerate(adapters):
            if is_ensemble(ref):
                ensemble = parse(ref)
                self.ensembles[i] = ensemble
                start = len(self.adapters)
                self.adapters += [None if m == BASE else m for m in ensemble.members]
                self.groups.append([(start + k, w) for k, w in enumerate(ensemble.weights)])
            else:
                self.groups.append([(len(self.adapters), 1.0)])
                self.adapters.append(ref)

    @property
    def trivial(self) -> bool:
        return not self.ensembles

    def spread(self, values: list | None) -> list | None:
        if values is None:
            return None
        return [values[i] for i, group in enumerate(self.groups) for _ in group]

    def combine_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[model rows, V] -> [caller rows, V]. An ensemble row's logits are the log of its
        members' weighted mixture of softmax distributions: softmax of them gives the mixture back,
        so greedy picks, temperature, top-p and logprobs all apply to the mixture as to one model."""
        if self.trivial:
            return logits
        rows = []
        for i, group in enumerate(self.groups):
            if i not in self.ensembles:
                rows.append(logits[group[0][0]].float())
                continue
            index = torch.tensor([r for r, _ in group], device=logits.device)
            weights = torch.tensor([w for _, w in group], device=logits.device, dtype=torch.float32)
            probs = torch.softmax(logits[index].float(), dim=-1)
            rows.append(torch.log((weights[:, None] * probs).sum(0)))
        return torch.stack(rows)

    def combine_classifications(self, results: list[dict]) -> list[dict]:
        """Per caller row ``{"label", "probabilities"}``: an ensemble row's probabilities are the
        weighted mean of its members' (matched by label name), its label their argmax."""
        out = []
        for i, group in enumerate(self.groups):
            if i not in self.ensembles:
                out.append(results[group[0][0]])
                continue
            members = [results[r] for r, _ in group]
            labels = list(members[0]["probabilities"])
            for k, m in enumerate(members[1:], 1):
                if set(m["probabilities"]) != set(labels):
                    raise EnsembleError(
                        f"ensemble members {self.ensembles[i].members[0]!r} and {self.ensembles[i].members[k]!r} "
                        f"have different labels ({labels} vs {list(m['probabilities'])})",
                        "an ensemble averages probabilities per label; use members of one label set")
            mean = {lab: sum(w * results[r]["probabilities"][lab] for r, w in group) for lab in labels}
            out.append({"label": max(labels, key=lambda lab: mean[lab]), "probabilities": mean})
        return out


def ensemble_info(engine, ensemble: Ensemble):
    """Load every member and describe the ensemble as one READY adapter (what ``Engine.load``
    returns for an ensemble ref); members of different tasks or label sets are refused here."""
    infos = [(m, engine.load(m)) for m in ensemble.members if m != BASE]
    if not infos:
        raise EnsembleError(f"ensemble {ensemble.ref!r} has no adapter member", "name at least one adapter")
    task = infos[0][1].task
    if BASE in ensemble.members and not TASKS[task].generative:
        raise EnsembleError(f"ensemble {ensemble.ref!r}: the bare base has no classifier head",
                            "use __base__ in generation ensembles only")
    first_ref, first = infos[0]
    for ref, info in infos[1:]:
        if info.task != task:
            raise EnsembleError(f"ensemble {ensemble.ref!r} mixes a {task} adapter ({first_ref}) and a "
                                f"{info.task} adapter ({ref})", "ensemble adapters of one task")
        if set(info.labels or []) != set(first.labels or []):
            raise EnsembleError(f"ensemble {ensemble.ref!r}: {first_ref} has labels {first.labels}, {ref} has "
                                f"{info.labels}", "an ensemble averages probabilities per label; use members "
                                "of one label set")
    return AdapterInfo(ref=ensemble.ref, state=READY, name=None, task=task, method="ensemble",
                       labels=first.labels, bytes=sum(info.bytes for _, info in infos),
                       refs=[ensemble.ref])
