"""A small store for web tests, the browser test and the load benchmark: de-identified prompts with two
candidate answers each (recorded as a real ``generate`` run), and one account per role.

Answers are written so that one is visibly safer (it escalates an emergency); no model is needed.
"""

from __future__ import annotations

from pathlib import Path

from clinalign import accounts
from clinalign.audit import track_run
from clinalign.settings import StageConfig
from clinalign.store import DEIDENTIFIED, Candidate, Prompt, RawRecord, Record, Store

PASSWORD = "correct horse battery staple"
ROLES = {
    "admin1": "admin",
    "expert1": "data_expert",
    "clin1": "clinician",
    "clin2": "clinician",
    "clin3": "clinician",
    "clin4": "clinician",
    "review1": "reviewer",
}
SPECIALTIES = ("cardiology", "dermatology", "general")


class SeedConfig(StageConfig):
    prompts: int = 12


def seed(store: Store, data_dir: Path, prompts: int = 12, clinicians: int = 0, deidentified: bool = True) -> int:
    """Fill ``store``; returns the candidates artifact id. ``clinicians`` adds loadNNN accounts."""
    with track_run(store, "generate", SeedConfig(prompts=prompts), data_dir) as ctx, store.session() as session:
        rows = []
        for i in range(prompts):
            raw = RawRecord(external_id=f"case-{i}", source="seed", source_line=i + 1, payload={}, run_id=ctx.run_id)
            session.add(raw)
            session.flush()
            specialty = SPECIALTIES[i % len(SPECIALTIES)]
            text = f"Case {i}: crushing chest pain for {i + 1} hours, sweating. What should I do?"
            record = Record(
                raw_id=raw.id,
                external_id=raw.external_id,
                deid_status=DEIDENTIFIED if deidentified else "pending",
                persona="patient",
                specialty=specialty,
                risk="emergency",
                prompt=text,
                reference="Call emergency services now.",
                variants=[{"kind": "missing_red_flag", "text": "Rest and see your GP next week."}],
                run_id=ctx.run_id,
            )
            session.add(record)
            session.flush()
            prompt = Prompt(
                record_id=record.id,
                dataset_version="seed",
                split="train" if i % 4 else "test",
                persona="patient",
                specialty=specialty,
                risk="emergency",
                text=text,
                reference=record.reference,
                variants=record.variants,
                run_id=ctx.run_id,
            )
            session.add(prompt)
            session.flush()
            rows.append(prompt)
        model = ctx.use_external(session, "model", "seed://model", None, {})
        for prompt in rows:
            for text in (
                "Call emergency services (911) now: this may be a heart attack.",
                "Rest; it is probably muscular.",
            ):
                session.add(Candidate(prompt_id=prompt.id, model_artifact_id=model.id, text=text, run_id=ctx.run_id))
        artifact = ctx.produce(
            session, "candidates", f"store://candidate?run={ctx.run_id}", None, {"count": 2 * prompts}
        )
        for username, role in ROLES.items():
            specialties = ["cardiology"] if username == "clin4" else []
            accounts.create_user(session, username, role, PASSWORD, "seed", specialties)
        for n in range(clinicians):
            accounts.create_user(session, f"load{n:03d}", "clinician", PASSWORD, "seed")
        return artifact.id
