"""What the playground talks to: an in-process ``adapters.Engine`` or a running ``adapters serve``
over HTTP. Both offer the same small interface, called from worker threads only (building an
engine imports torch; HTTP calls block). Refs are passed through untouched, so whatever ref
grammar the engine or server understands works here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from adapters.runtime import BASE, READY
from adapters_store.errors import HintedError


@dataclass
class Resident:
    """One adapter the runtime holds (or is loading, or failed to load)."""

    ref: str
    state: str
    task: str | None = None
    method: str | None = None
    bytes: int = 0
    labels: list[str] = field(default_factory=list)
    error: str | None = None
    version: str | None = None


class RemoteError(HintedError):
    """An error answer from an ``adapters serve`` server."""


class EngineBackend:
    """An engine in this process: one resident base, adapters loaded from the store."""

    kind = "engine"

    def __init__(self, base: str, quant: str = "4bit", device: str = "auto", store_root=None):
        import adapters
        from adapters.runtime import store_resolver

        self.engine = adapters.Engine(base, quant=quant, device=device,
                                      resolver=store_resolver(store_root, allow_paths=True))
        self.label = f"engine · {self.engine.base.id} · {quant} · {self.engine.device}"

    def adapters(self) -> list[Resident]:
        out = []
        for info in self.engine.adapters():
            for ref in info.refs or [info.ref]:
                out.append(Resident(ref, info.state, info.task, info.method, info.bytes or 0,
                                    list(info.labels or []), info.error))
        return out

    def load(self, ref: str) -> Resident:
        info = self.engine.load(ref)
        return Resident(ref, info.state, info.task, info.method, info.bytes or 0, list(info.labels or []))

    def unload(self, ref: str) -> None:
        self.engine.unload(ref)

    def task_of(self, ref: str) -> str:
        if ref == BASE:
            return "causal-lm" if self.engine.is_decoder else "encoder"
        return self.load(ref).task or "causal-lm"

    def classify(self, ref: str, text: str) -> dict:
        return self.engine.classify([text], adapter=ref)[0]

    def stream(self, ref: str, prompt: str, max_tokens: int) -> Iterator[str]:
        adapter = None if ref == BASE else ref
        yield from self.engine.stream(prompt, adapter=adapter, max_new_tokens=max_tokens)

    def close(self) -> None:
        self.engine = None


STATUS_HINTS = {
    401: "pass the server's API key (ADAPTERS_API_KEY)",
    404: "check the ref with `adapters list`; the server loads adapters by store ref",
    409: "the adapter was trained on another base; serve it from a server on that base",
    422: "check the input and the server's limits",
    503: "the server is overloaded; try again in a moment",
}


class HttpBackend:
    """A running ``adapters serve`` reached over HTTP (OpenAI-compatible API plus admin routes)."""

    kind = "server"

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        try:
            health = self._json("GET", "/health")
        except httpx.HTTPError as exc:
            self.client.close()
            raise RemoteError(f"cannot reach {self.url}: {exc}",
                              "start one with `adapters serve --base NAME`, or check the URL") from None
        self.base_name = health.get("base", "?")
        self.label = f"server · {self.url} · {self.base_name}"
        self._tasks: dict[str, str] = {}

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.client.request(method, path, json=body)
        if response.status_code >= 400:
            raise self._error(response.status_code, response.text)
        return response.json()

    def _error(self, status: int, text: str) -> RemoteError:
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text.strip()[:300] or "no details"
        return RemoteError(f"server answered {status}: {message}", STATUS_HINTS.get(status))

    def adapters(self) -> list[Resident]:
        out = []
        for card in self._json("GET", "/v1/models").get("data", []):
            if card.get("parent") is None:  # the base model's own card
                continue
            out.append(Resident(card["id"], card.get("state") or READY, card.get("task"), card.get("method"),
                                int(card.get("bytes") or 0), list(card.get("labels") or []),
                                version=card.get("version")))
        return out

    def load(self, ref: str) -> Resident:
        status = self._json("POST", "/v1/adapters/load", {"adapter": ref})
        if status.get("task"):
            self._tasks[ref] = status["task"]
        return Resident(ref, status.get("state") or READY, status.get("task"), status.get("method"),
                        int(status.get("bytes") or 0), list(status.get("labels") or []),
                        version=status.get("version"))

    def unload(self, ref: str) -> None:
        self._json("POST", "/v1/adapters/unload", {"adapter": ref})
        self._tasks.pop(ref, None)

    def task_of(self, ref: str) -> str:
        if ref in (BASE, self.base_name):
            return "causal-lm"
        if ref not in self._tasks:
            self.load(ref)
        return self._tasks.get(ref, "causal-lm")

    def classify(self, ref: str, text: str) -> dict:
        answer = self._json("POST", "/v1/classify", {"model": ref, "input": text})
        row = answer["data"][0]
        return {"label": row["label"], "probabilities": row["probabilities"]}

    def stream(self, ref: str, prompt: str, max_tokens: int) -> Iterator[str]:
        body = {"model": ref, "messages": [{"role": "user", "content": prompt}], "stream": True,
                "max_tokens": max_tokens, "temperature": 0}
        with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                raise self._error(response.status_code, response.read().decode("utf-8", "replace"))
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RemoteError(chunk["error"].get("message", "stream error"), None)
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece

    def close(self) -> None:
        self.client.close()
