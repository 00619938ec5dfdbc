"""The mixture file: how many samples to draw from each sampling configuration (docs/allocate.md).

`tts allocate` writes it (the allocation it found on a training split), the `mixture` strategy reads it
(`tts eval -s mixture -o mixture=PATH -n TOTAL`). It lives in the core so the study and the strategy
share one schema without the core importing a plugin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tts import perturb as perturb_mod
from tts.errors import UserError


class MixtureComponent(BaseModel):
    """One sampling configuration and its share of the budget."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, description="names the component; recorded in each candidate's info")
    n: int = Field(ge=1, description="samples drawn from this configuration per problem")
    temperature: float = Field(ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    perturb: perturb_mod.PerturbSpec = Field(None, description="prompt perturbation spec (tts.perturb), None: the "
                                             "plain prompt")
    model: str | None = Field(None, description="the model the configuration's pool was drawn with (None: the "
                              "built-in default); every component of one mixture needs the same")
    run: str | None = Field(None, description="the run folder the configuration was studied from (provenance)")


class MixtureFile(BaseModel):
    """A mixture of sampling configurations; its total n is the strategy's budget."""

    model_config = ConfigDict(extra="forbid")

    components: list[MixtureComponent] = Field(min_length=1)
    task: str | None = Field(None, description="the task the allocation was found on (provenance)")
    note: str | None = None

    @model_validator(mode="after")
    def _distinct_labels(self) -> MixtureFile:
        labels = [c.label for c in self.components]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"component label {twice[0]!r} appears twice")
        return self

    @property
    def total(self) -> int:
        return sum(c.n for c in self.components)

    def models(self) -> list[str | None]:
        """The distinct models the components need, in order of first use."""
        return list(dict.fromkeys(c.model for c in self.components))


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    return f"{where}: {e['msg']}" if where else str(e["msg"])


def parse_mixture(data: Any, source: str = "the mixture") -> MixtureFile:
    """A mixture from parsed JSON; a one-line UserError naming `source` when it is not one."""
    try:
        return MixtureFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source} is not a mixture file: {_first_error(exc)}") from None


def load_mixture(path: str | Path) -> MixtureFile:
    """Read and validate a mixture file; every problem is a one-line UserError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"mixture file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc))
        raise UserError(f"cannot read the mixture file {path}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_mixture(data, str(path))
