"""A run folder read into what the viewer page shows: the run's header and, per finished problem, its
candidates, vote groups, verdicts and search tree.

Only reads: results and samples of finished problems come through `RunFolder.results()` / `samples()`,
which need no lock and skip a problem whose lines are still being written, so a run in progress can be
viewed. Everything is plain JSON-able data; the page escapes it when it embeds it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.errors import UserError
from tts.runner import summarise
from tts.runs import RunFolder, read_config
from tts.view.trees import TreeView, step_search_view, tree_search_view

FolderKind = Literal["run", "study", "run+study"]
STUDY_FILES = ("scaling.json", "report.md")
SUMMARY_ANSWER_CHARS = 120
NO_ANSWER = "(no answer)"
STEP_DELIMITER = "\n\n"  # tts.step_search.STEP_SEPARATOR, the step-level searches' default


class VerdictView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer: str
    score: float | None
    passed: bool | None
    feedback: str = ""
    step_scores: list[float] | None = None


class CandidateView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    answer: str | None
    correct: bool | None = Field(description="the oracle's verdict")
    oracle_feedback: str = ""
    chosen: bool
    group: int
    tokens: int | None
    mean_logprob: float | None
    finish_reason: str | None
    verdicts: list[VerdictView]
    text: str
    info: dict[str, Any] = Field(default_factory=dict)


class GroupView(BaseModel):
    """Candidates with equivalent answers, as the strategy grouped them (else by the answer string)."""

    model_config = ConfigDict(extra="forbid")

    id: int
    answer: str | None
    count: int
    score: float | None = Field(None, description="the group's vote score where the strategy recorded one")
    members: list[int]
    correct: bool | None
    chosen: bool


class ProblemSummary(BaseModel):
    """A line of the problem list (the page parses only these until a problem is opened)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    answer: str | None
    correct: bool | None
    samples: int
    correct_samples: int
    tokens: int


class ProblemDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    answer: str | None
    correct: bool | None
    confidence: float | None
    chosen: int | None
    usage: dict[str, Any]
    groups: list[GroupView]
    grouping: str
    candidates: list[CandidateView]
    tree: TreeView | None
    info: dict[str, Any]


class RunData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    config: dict[str, Any]
    metrics: dict[str, Any] | None = Field(description="metrics.json as written (None: not yet)")
    live: dict[str, Any] = Field(description="accuracy and usage of the problems finished now")
    problems: list[ProblemSummary]
    details: list[ProblemDetail]


def folder_kind(path: Path) -> FolderKind:
    """What a folder holds: a run (config.json), a `tts scale` study (scaling.json or report.md), or both."""
    if not path.exists():
        raise UserError(f"folder not found: {path}")
    if not path.is_dir():
        raise UserError(f"{path} is a file; give a run folder or a `tts scale` output folder")
    run = (path / "config.json").is_file()
    study = any((path / name).is_file() for name in STUDY_FILES)
    if run and study:
        return "run+study"
    if run:
        return "run"
    if study:
        return "study"
    raise UserError(f"{path} is neither a run folder (no config.json) nor a `tts scale` output folder "
                    "(no scaling.json or report.md)")


def read_metrics(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; restore it or remove it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; restore it or remove it")
    return data


def _verdicts(sample: dict[str, Any]) -> list[VerdictView]:
    out = []
    for v in sample.get("selection") or []:
        score = v.get("score")
        out.append(VerdictView(scorer=str(v.get("verifier", "?")), score=float(score) if score is not None else None,
                               passed=v.get("passed"), feedback=str(v.get("feedback") or ""),
                               step_scores=v.get("step_scores")))
    return out


def groups_of(result: dict[str, Any], samples: list[dict[str, Any]]) -> tuple[list[GroupView], list[int], str]:
    """The vote groups and each candidate's group: as the strategy recorded them (`info["groups"]` and each
    candidate's `info["group"]`), else candidates with the same answer string together."""
    info = result.get("info") or {}
    recorded = info.get("groups")
    ids = [(s.get("info") or {}).get("group") for s in samples]
    if isinstance(recorded, list) and samples and all(isinstance(i, int) and 0 <= i < len(recorded) for i in ids):
        grouping = "as the strategy grouped them (the task's answer equivalence)"
        group_of = [i for i in ids if isinstance(i, int)]
        specs = [(g.get("answer"), g.get("score")) if isinstance(g, dict) else (None, None) for g in recorded]
    else:
        grouping = "by the recorded answer string (the strategy recorded no groups)"
        by_answer: dict[str | None, int] = {}
        group_of = [by_answer.setdefault(s.get("answer"), len(by_answer)) for s in samples]
        specs = [(answer, None) for answer in by_answer]
    members: dict[int, list[int]] = defaultdict(list)
    for ci, gid in enumerate(group_of):
        members[gid].append(ci)
    chosen = result.get("chosen")
    groups = []
    for gid, (answer, score) in enumerate(specs):
        m = members.get(gid, [])
        verdicts = {samples[i].get("correct") for i in m}
        groups.append(GroupView(id=gid, answer=answer, count=len(m), members=m,
                                score=float(score) if isinstance(score, int | float) else None,
                                correct=verdicts.pop() if len(verdicts) == 1 else None, chosen=chosen in m))
    groups.sort(key=lambda g: (-g.count, g.id))
    return groups, group_of, grouping


def _tree(config: dict[str, Any], result: dict[str, Any], samples: list[dict[str, Any]]) -> TreeView | None:
    info = result.get("info") or {}
    chosen = result.get("chosen")
    tree = tree_search_view(info, samples, chosen)
    if tree is not None:
        return tree
    delimiter = (config.get("strategy_options") or {}).get("delimiter") or STEP_DELIMITER
    return step_search_view(samples, str(delimiter), chosen)


def problem_detail(config: dict[str, Any], result: dict[str, Any], samples: list[dict[str, Any]]) -> ProblemDetail:
    groups, group_of, grouping = groups_of(result, samples)
    candidates = []
    for i, s in enumerate(samples):
        info = {k: v for k, v in (s.get("info") or {}).items() if k != "group"}
        candidates.append(CandidateView(
            index=i, answer=s.get("answer"), correct=s.get("correct"),
            oracle_feedback=str(s.get("oracle_feedback") or ""),
            chosen=bool(s.get("chosen")), group=group_of[i], tokens=s.get("completion_tokens"),
            mean_logprob=s.get("mean_logprob"), finish_reason=s.get("finish_reason"), verdicts=_verdicts(s),
            text=str(s.get("text") or ""), info=info))
    info = {k: v for k, v in (result.get("info") or {}).items() if k != "tree"}
    return ProblemDetail(id=str(result["problem_id"]), answer=result.get("answer"), correct=result.get("correct"),
                         confidence=result.get("confidence"), chosen=result.get("chosen"),
                         usage=result.get("usage") or {}, groups=groups, grouping=grouping, candidates=candidates,
                         tree=_tree(config, result, samples), info=info)


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= SUMMARY_ANSWER_CHARS:
        return text
    return text[: SUMMARY_ANSWER_CHARS - 1] + "…"


def read_run(path: Path) -> RunData:
    """Every finished problem of a run folder (lines of problems still being written are left out)."""
    run = RunFolder(path)
    config = read_config(run.config_path)
    if config is None:
        raise UserError(f"{path} is not a run folder (no config.json)")
    results = run.results()
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in run.samples():
        by_problem[str(s["problem_id"])].append(s)
    problems, details = [], []
    for r in results:
        pid = str(r["problem_id"])
        samples = sorted(by_problem.get(pid, []), key=lambda s: s["index"])
        problems.append(ProblemSummary(id=pid, answer=_short(r.get("answer")), correct=r.get("correct"),
                                       samples=len(samples), correct_samples=int(r.get("n_correct_samples") or 0),
                                       tokens=int((r.get("usage") or {}).get("completion_tokens") or 0)))
        details.append(problem_detail(config, r, samples))
    rows = [{**r, "usage": r.get("usage") or {}, "n_samples": int(r.get("n_samples") or 0),
             "n_correct_samples": int(r.get("n_correct_samples") or 0), "correct": bool(r.get("correct"))}
            for r in results]
    return RunData(path=str(path), config=config, metrics=read_metrics(run.metrics_path),
                   live=summarise(rows), problems=problems, details=details)
