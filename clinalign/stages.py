"""The stage table: every stage of the loop, once, and ``run_stage`` that runs any of them.

Reads: nothing (a table).  Writes: through ``run_stage``, a ``Run`` and whatever the stage writes.

The CLI (its commands), the demo (its order), the web app (campaigns, exports), the audit trail (which
command makes a kind of artifact), the tests and the architecture test all read this table; adding a
stage is one row here, its module, its command and its config folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel


@dataclass(frozen=True)
class Stage:
    name: str
    """``Run.stage`` and the audit trail's word for it."""

    module: str
    """Where its ``Config`` and entry function live."""

    command: tuple[str, ...]
    """``clinalign`` words that run it (``("train", "sft")`` is ``clinalign train sft``)."""

    configs: str
    """Folder of its shipped YAML configs, relative to the repository."""

    reads: tuple[str, ...]
    """Artifact kinds it takes as inputs (by explicit id, or from the loop it continues)."""

    writes: tuple[str, ...]
    """Artifact kinds it produces."""

    summary: str
    """One line: the command's help."""

    entry: str = "run"
    """Its function in ``module``: ``entry(ctx, config, **extra) -> metrics``."""

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


STAGES: tuple[Stage, ...] = (
    Stage(
        "scenarios",
        "clinalign.scenarios",
        ("scenarios",),
        "configs/scenarios",
        (),
        ("scenario_cases",),
        "Expand scenario templates into cases for ingest, in counterfactual groups, with the coverage matrix.",
    ),
    Stage(
        "ingest",
        "clinalign.ingest",
        ("ingest",),
        "configs/ingest",
        ("source_file",),
        ("raw_records",),
        "Validate and store cases in quarantine (they may hold PHI).",
    ),
    Stage(
        "deidentify",
        "clinalign.deidentify",
        ("deidentify",),
        "configs/deidentify",
        ("raw_records",),
        ("records",),
        "De-identify the loop's quarantined cases (all 18 Safe Harbor identifiers).",
    ),
    Stage(
        "deidentify.file",
        "clinalign.deidentify",
        ("deidentify",),
        "configs/deidentify",
        ("source_file",),
        ("deidentified_file",),
        "De-identify a JSONL file (--in/--out): the file is not stored, the run is audited.",
        entry="run_file",
    ),
    Stage(
        "curate",
        "clinalign.curate",
        ("curate",),
        "configs/curate",
        ("records",),
        ("prompt_set",),
        "Deduplicate, filter and split de-identified records into a versioned prompt set.",
    ),
    Stage(
        "train.sft",
        "clinalign.train.sft",
        ("train", "sft"),
        "configs/train/sft",
        ("prompt_set", "model", "external_model"),
        ("model",),
        "Supervised fine-tuning (TRL SFTTrainer, LoRA) of SmolLM2 or any chat model on reference answers.",
    ),
    Stage(
        "generate",
        "clinalign.generate",
        ("generate",),
        "configs/generate",
        ("prompt_set", "model", "external_model"),
        ("candidates",),
        "Sample candidate answers for every prompt.",
    ),
    Stage(
        "annotate",
        "clinalign.annotate.panel",
        ("annotate",),
        "configs/annotate",
        ("candidates",),
        ("campaign", "judgements"),
        "Judge candidate pairs with the SIMULATED clinician panel, through the clinicians' own queue.",
    ),
    Stage(
        "annotate.campaign",
        "clinalign.annotate.campaigns",
        ("annotate", "campaign"),
        "configs/annotate/campaign",
        ("candidates",),
        ("campaign", "authored_answers"),
        "Create a clinician campaign from candidate answers.",
        entry="create_campaign",
    ),
    Stage(
        "annotate.ai",
        "clinalign.annotate.ai_judge",
        ("annotate", "ai"),
        "configs/annotate/ai",
        ("judgements", "model", "external_model"),
        ("ai_judgements",),
        "RLAIF: an AI judge (OpenAI-compatible endpoint or local model) rates a campaign's pairs, "
        "kept apart from clinicians; its agreement with them is measured.",
    ),
    Stage(
        "annotate.prioritise",
        "clinalign.annotate.active",
        ("annotate", "prioritise"),
        "configs/annotate/prioritise",
        ("campaign", "reward_model"),
        (),
        "Order a campaign's queue by reward-model uncertainty and clinician disagreement.",
        entry="prioritise",
    ),
    Stage(
        "preferences",
        "clinalign.preferences",
        ("preferences",),
        "configs/preferences",
        ("campaign", "judgements"),
        ("preference_dataset",),
        "Measure agreement, take the consensus and export preference pairs, KTO, SFT and a flat table.",
    ),
    Stage(
        "train.reward",
        "clinalign.train.reward",
        ("train", "reward"),
        "configs/train/reward",
        ("preference_dataset", "model", "external_model"),
        ("reward_model",),
        "The multi-axis clinical reward model (a head per axis, safety-gated aggregate, ensemble).",
    ),
    Stage(
        "train.dpo",
        "clinalign.train.dpo",
        ("train", "dpo"),
        "configs/train/dpo",
        ("preference_dataset", "model", "external_model"),
        ("model",),
        "Direct preference optimisation with LoRA (TRL DPOTrainer + PEFT).",
    ),
    Stage(
        "train.ppo",
        "clinalign.train.ppo",
        ("train", "ppo"),
        "configs/train/ppo",
        ("prompt_set", "reward_model", "model", "external_model"),
        ("model",),
        "PPO with a KL penalty to the reference, on the clinical reward model plus the rule penalties.",
    ),
    Stage(
        "train.grpo",
        "clinalign.train.grpo",
        ("train", "grpo"),
        "configs/train/grpo",
        ("prompt_set", "reward_model", "model", "external_model"),
        ("model",),
        "GRPO or RLOO (TRL) on the reward model's per-axis callables and the guardrail rules, KL beta > 0.",
    ),
    Stage(
        "evaluate",
        "clinalign.evaluate",
        ("evaluate",),
        "configs/evaluate",
        ("prompt_set", "model", "external_model", "reward_model"),
        ("eval_report",),
        "Compare a policy with its baseline on the held-out split: safety first, then accuracy.",
    ),
    Stage(
        "release",
        "clinalign.release",
        ("promote",),
        "configs/release",
        ("eval_report",),
        ("release",),
        "Promote an evaluated model to the served release, refused if any safety metric regressed beyond its margin.",
        entry="promote",
    ),
    Stage(
        "release.rollback",
        "clinalign.release.rollback",
        ("rollback",),
        "configs/release/rollback",
        (),
        ("release",),
        "Serve an earlier release again.",
    ),
    Stage(
        "monitor",
        "clinalign.monitor",
        ("monitor",),
        "configs/monitor",
        ("prompt_set",),
        ("monitor_report",),
        "Measure safety in use over a window of served answers: trip, unsafe, escalation and override "
        "rates, fairness gaps, and drift of incoming prompts.",
    ),
    Stage(
        "feedback",
        "clinalign.feedback",
        ("feedback",),
        "configs/feedback",
        (),
        ("feedback_cases",),
        "Turn clinicians' flags on served answers into cases for the next round (ingest's format).",
    ),
    Stage(
        "report",
        "clinalign.report",
        ("report",),
        "configs/report",
        ("eval_report",),
        ("report", "model_card"),
        "Write the self-contained HTML report of an evaluation (figures, plots, lineage) and the model card "
        "(Hugging Face layout, HTML, CHAI fields) from one canonical record.",
    ),
)

BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}

# The loop in the order ``clinalign demo`` runs it.
LOOP: tuple[str, ...] = (
    "ingest",
    "deidentify",
    "curate",
    "train.sft",
    "generate",
    "annotate",
    "preferences",
    "train.reward",
    "train.dpo",
    "evaluate",
    "report",
)


def made_by(kind: str) -> str | None:
    """The command that makes ``kind`` (the first stage in the table that writes it), for errors that
    tell a user what to run."""
    return next((" ".join(s.command) for s in STAGES if kind in s.writes), None)


@dataclass
class Result:
    run_id: int
    metrics: dict


def run_stage(
    name: str,
    store,
    data_dir: Path,
    config: BaseModel | Mapping | None = None,
    *,
    config_path: Path | None = None,
    overrides: list[str] = (),
    loop: int | None = None,
    resume_from: Path | None = None,
    **extra,
) -> Result:
    """Run one stage: build its ``Config`` (an instance, a mapping, or a YAML file plus ``key=value``
    overrides), record the run with ``track_run`` in ``loop`` (default: the loop of its inputs), call
    its entry function, and return the run id and its figures. A trainer continues from ``resume_from``
    (a checkpoint folder) when given."""
    from clinalign.audit import track_run
    from clinalign.settings import load_config

    stage = BY_NAME[name]
    module = stage.load()
    if isinstance(config, BaseModel):
        if config_path is not None or overrides:
            raise TypeError("a built config takes no file or overrides: pass a mapping to merge them")
        built = config
    elif isinstance(config, Mapping):
        built = load_config(module.Config, config_path, list(overrides), base=dict(config))
    else:
        built = load_config(module.Config, config_path, list(overrides))
    with track_run(store, name, built, data_dir, loop_id=loop, resume_from=resume_from) as ctx:
        metrics = getattr(module, stage.entry)(ctx, built, **extra)
    return Result(ctx.run_id, metrics)
