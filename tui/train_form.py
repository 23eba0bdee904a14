"""The Train form: the key fields of a training config, filled from a resolved config, showing
only the fields that matter for the chosen task and method."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Checkbox, Label, Select, Static

from adapters_tui.train_config import FIELDS, FieldSpec, get, overrides, parse, to_text, visible_keys
from adapters_tui.widgets import TextField


def _field_id(key: str) -> str:
    return "field-" + key.replace(".", "-").replace("_", "-")


class ConfigForm(VerticalScroll):
    """Holds the config being edited (``source`` path and its ``resolved`` mapping)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.source = None
        self.resolved: dict | None = None
        self.retrain_ref: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Pick a config on the left, or press n on a version in the Store.", style="dim"),
                     id="form-source")
        for spec in FIELDS:
            with Horizontal(classes="form-row", id=_field_id(spec.key) + "-row"):
                yield Label(spec.label, classes="form-label")
                if spec.kind == "choice":
                    yield Select([(o, o) for o in spec.options], allow_blank=False, id=_field_id(spec.key),
                                 compact=True)
                else:
                    kind = {"int": "integer", "optional-int": "integer", "float": "number"}.get(spec.kind, "text")
                    placeholder = "none" if spec.kind == "optional-int" else ""
                    yield TextField(type=kind, placeholder=placeholder, id=_field_id(spec.key))
        with Horizontal(classes="form-row", id="field-init-from-row"):
            yield Label("", classes="form-label")
            yield Checkbox("continue from the stored weights", id="field-init-from", compact=True)
        with Horizontal(id="form-buttons"):
            yield Button("Launch", variant="primary", id="launch", compact=True)

    def on_mount(self) -> None:
        # A form whose mount is handled while the app is closing has already lost its children.
        if not self.query("#field-init-from-row"):
            return
        self.query_one("#field-init-from-row").display = False
        self._apply_visibility()

    def show_guidance(self, text: Text, fields: bool = True) -> None:
        """What the form says before a config is picked; ``fields`` False hides the empty fields
        (there is nothing to fill them from)."""
        self.query_one("#form-source", Static).update(text)
        self.query_one("#form-buttons").display = fields
        if fields:
            self._apply_visibility()
        else:
            for row in self.query(".form-row"):
                row.display = False

    def load(self, source, resolved: dict, retrain_ref: str | None = None) -> None:
        """Fill the form from a resolved config (``retrain_ref``: it came from that stored version)."""
        self.source, self.resolved, self.retrain_ref = source, resolved, retrain_ref
        self.query_one("#form-buttons").display = True
        self.query_one("#form-source", Static).update(Text.assemble(("config: ", "dim"), self.origin))
        for spec in FIELDS:
            value = get(resolved, spec.key)
            widget = self.query_one("#" + _field_id(spec.key))
            if isinstance(widget, Select):
                with widget.prevent(Select.Changed):
                    widget.value = value if value in spec.options else spec.options[0]
            else:
                widget.value = to_text(value)
        init_row = self.query_one("#field-init-from-row")
        init_row.display = retrain_ref is not None
        checkbox = self.query_one("#field-init-from", Checkbox)
        checkbox.value = False
        checkbox.label = f"continue from {retrain_ref}'s weights" if retrain_ref else ""
        self._apply_visibility()

    @property
    def origin(self) -> str:
        """Where the form's config came from, as the form names it."""
        return f"retrain {self.retrain_ref}" if self.retrain_ref else str(getattr(self.source, "name", self.source))

    def edited(self) -> bool:
        """Whether a field differs from the config it was filled from (an entry that does not
        parse is an edit too)."""
        if self.resolved is None:
            return False
        try:
            values = self.values()
        except ValueError:
            return True
        return bool(overrides(self.resolved, values)) or self.continue_from_weights

    def _choice(self, key: str) -> str:
        return str(self.query_one("#" + _field_id(key), Select).value)

    def _apply_visibility(self) -> None:
        shown = visible_keys(self._choice("task"), self._choice("method"))
        for spec in FIELDS:
            self.query_one("#" + _field_id(spec.key) + "-row").display = spec.key in shown

    @on(Select.Changed)
    def _choice_changed(self, event: Select.Changed) -> None:
        self._apply_visibility()

    def values(self) -> dict[str, Any]:
        """The visible fields as config values; ValueError for an entry that does not parse."""
        shown = visible_keys(self._choice("task"), self._choice("method"))
        out: dict[str, Any] = {}
        for spec in FIELDS:
            if spec.key not in shown:
                continue
            out[spec.key] = self._value(spec)
        if not out.get("name"):
            raise ValueError("the adapter needs a name")
        return out

    def _value(self, spec: FieldSpec) -> Any:
        widget = self.query_one("#" + _field_id(spec.key))
        if isinstance(widget, Select):
            return str(widget.value)
        return parse(spec, widget.value)

    def set_value(self, key: str, value: Any) -> None:
        """Set one field (for scripted use: the command palette and tests)."""
        widget = self.query_one("#" + _field_id(key))
        widget.value = value if isinstance(widget, Select) else to_text(value)

    @property
    def continue_from_weights(self) -> bool:
        return self.retrain_ref is not None and self.query_one("#field-init-from", Checkbox).value
