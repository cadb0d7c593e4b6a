"""Benchmark: tokens/s and peak memory of the training stages (SFT, reward, DPO, PPO, GRPO) on one model
and one set of data, with plain TRL in the same run as the baseline of the TRL-based stages.

    .venv/bin/python bench/train.py [--tiny] [--sft-steps 4] [--dpo-steps 3] [--ppo-steps 2]
                                    [--ppo-batch 8] [--grpo-steps 2] [--repeats 1] [--stages sft,dpo,...]
                                    [--trl bf16=false ...]

The data is prepared once: a workspace runs the loop's stages up to ``train.reward`` (ingest, deidentify,
curate, generate, annotate, preferences, train.reward) on the bundled scenarios, with candidates sampled
from the benchmarked model itself (``train.sft`` is what is measured, so it is not part of the
preparation). Every measured run then starts from that same model folder (SmolLM2-135M-Instruct, or the
tests' tiny random model with ``--tiny``): SFT on the prompt set's reference answers, DPO on the exported
preference dataset, PPO and GRPO on the prompt set's training prompts and the prepared reward model.

Each measured run is its own subprocess with a fresh datasets cache (TRL's DPO caches the tokenised data
and the precomputed reference log-probabilities by fingerprint: a second run would otherwise skip work
the first one did). Peak memory is the subprocess's own ``VmHWM`` (``ru_maxrss`` is carried over from the
parent by fork and exec, so it would read the preparation's peak), and on CUDA also
``torch.cuda.max_memory_allocated``.

* clinalign: ``stages.run_stage`` on the workspace's store, with ``max_steps`` (or ``steps``) fixed and
  checkpoints off (``save_every: 0``), everything else the stage's defaults;
* plain TRL (SFT, DPO, GRPO): ``SFTTrainer`` / ``DPOTrainer`` / ``GRPOTrainer`` built here from the same
  model folder, the same rows (SFT: the prompt set's scrubbed reference answers, as ``train/sft.py``
  builds them; DPO: the exported ``train.parquet``/``test.parquet``; GRPO: ``common.rl_prompts``), the
  same TRL config values (``common.trl_values`` of the stage's ``TRL_DEFAULTS``), the
  same LoRA (``common.peft_config``) and, for GRPO, the same reward callables; doing the same work: load,
  train, save the merged model (DPO: also the adapter, and ``evaluate()`` on the held-out pairs, as the
  stage does). The TRL config and LoRA config each trainer actually used are compared after the runs, and
  any field that differs is printed.

The reward stage and PPO are not TRL-based (the clinical reward model is trained by clinalign on frozen
MiniLM features; PPO is clinalign's own class): they are measured as clinalign only.

How tokens are counted (the same way for both engines of a stage):

* SFT, DPO: TRL's own ``num_tokens`` (the last logged value): the non-padding tokens (attention mask) of
  every training batch, prompt plus completion; for DPO the chosen and the rejected sequence each count.
  The DPO reference pass and the evaluation are work both engines do but are not counted as tokens.
* GRPO: TRL's ``num_tokens`` (``state.num_input_tokens_seen``): every sampled completion's tokens plus its
  prompt's tokens (each of the ``num_generations`` copies of a prompt counts).
* PPO: every sampled answer's tokens (up to and including the first stop token) plus its prompt's
  tokens, summed from the attention mask each ``PPO.rollout`` returns: the same measure as GRPO's.
* reward: MiniLM tokens of every distinct text embedded (truncated at 256, as ``embed.embed`` does), per
  call of ``reward_model.features``; the head training on the features adds time but no tokens.

Times: "run" is the whole measured call (``run_stage`` for clinalign; load, train, save for TRL), after
the libraries are imported and the store is opened; "loop" is the training loop alone: TRL's
``train_runtime`` (``trainer.train()``), the sum of ``PPO.step`` calls, or embedding plus head training
for the reward model. Tokens/s divide the tokens by each. With ``--repeats`` N each run is repeated
(engines alternating) and the fastest is kept (contention only ever slows a run down).

Targets (reported, never assumed): clinalign's overhead on the same work at most 5% of plain TRL's time
per token (whole run); PPO's tokens/s in the training loop not below TRL GRPO's.

Precision: both engines get ``common.trl_values``, so on a CPU both train without activation
checkpointing and in bf16 only where the CPU computes bf16 natively (``common.native_bf16``); ``--trl
bf16=false`` (or ``true``) sets it for both. PPO is given the same precision (its own default is fp32,
for exact resumption). The report prints what the TRL runs used.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MARK = "BENCH-RESULT "
OVERHEAD_TARGET = 0.05
TRL_STAGES = ("sft", "dpo", "grpo")
ORDER = ("sft", "reward", "dpo", "ppo", "grpo")
# Fields of a TRL config that name the run's own folder, so differ between any two runs.
OWN_PATHS = {"output_dir", "logging_dir", "run_name"}


# --- preparation (parent) ---------------------------------------------------------------------------


def prepare(workspace: Path, base: str, tiny: bool) -> dict:
    """The loop's stages up to ``train.reward`` on ``base``; returns where the measured runs find their
    inputs, and writes the plain-TRL baselines' rows beside the store."""
    from clinalign import phi
    from clinalign.ingest import BUNDLED_SCENARIOS
    from clinalign.stages import run_stage
    from clinalign.store import Artifact, Store, prompts
    from clinalign.train import common
    from tests.tiny_model import TINY_LOOP

    store = Store.open(f"sqlite:///{(workspace / 'clinalign.db').resolve()}")
    # Small on purpose: DPO computes its reference log-probabilities for every pair (and evaluates the
    # held-out ones) whatever its step count, so the pair count sets much of its time.
    sizes = {
        "ingest": {"path": str(BUNDLED_SCENARIOS)},
        "generate": {"model": base, "prompts_per_split": 8, "n_candidates": 2, "max_new_tokens": 48},
        "annotate": {"pairs_per_prompt": 1},
        "train.reward": TINY_LOOP["train.reward"] if tiny else {},
    }
    for stage in ("ingest", "deidentify", "curate", "generate", "annotate", "preferences", "train.reward"):
        started = time.perf_counter()
        run_stage(stage, store, workspace, sizes.get(stage, {}))
        print(f"  prepared {stage:<13} {time.perf_counter() - started:6.1f} s", flush=True)

    def newest(session, kind: str) -> Artifact:
        return session.query(Artifact).filter_by(kind=kind).order_by(Artifact.id.desc()).first()

    with store.session() as session:
        prompt_set, dataset = newest(session, "prompt_set"), newest(session, "preference_dataset")
        rm = newest(session, "reward_model")
        # SFT's rows exactly as train/sft.py builds them (the residual PHI scan included).
        sft_rows = [
            {
                "prompt": [{"role": "user", "content": phi.scrub(p.text)[0]}],
                "completion": [{"role": "assistant", "content": phi.scrub(p.reference)[0]}],
            }
            for p in prompts(session, prompt_set.sha256, "train")
            if p.reference
        ]
        rl_rows = common.rl_prompts(session, prompt_set)
        inputs = {"prompt_set": prompt_set.id, "dataset": dataset.id, "reward_model": rm.id}
        inputs.update(dataset_dir=dataset.uri, reward_dir=rm.uri, reward_config=sizes["train.reward"])
    rows = workspace / "bench-rows"
    rows.mkdir()
    (rows / "sft.json").write_text(json.dumps(sft_rows))
    (rows / "rl.json").write_text(json.dumps(rl_rows))
    inputs["rows"] = str(rows)
    return inputs


# --- one measured run (child) -----------------------------------------------------------------------


def overrides(spec: dict) -> dict:
    """The ``trl:`` mapping of a measured run, handed to both engines alike: the step count and ``--trl``."""
    return {"max_steps": spec["steps"], **spec["trl"]}


def described(trainer) -> dict:
    """The TRL and LoRA config a trainer runs with, as plain JSON, for the engines' comparison."""
    peft = getattr(trainer.model, "peft_config", {}).get("default")
    plain = json.loads(json.dumps(trainer.args.to_dict(), default=str))
    lora = json.loads(json.dumps(peft.to_dict(), default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    return {"args": {k: v for k, v in plain.items() if k not in OWN_PATHS}, "lora": lora}


def trl_figures(trainer) -> dict:
    history = trainer.state.log_history
    tokens = [e["num_tokens"] for e in history if "num_tokens" in e]
    runtime = next(e["train_runtime"] for e in reversed(history) if "train_runtime" in e)
    return {"tokens": int(tokens[-1]) if tokens else None, "loop_s": runtime, "steps": trainer.state.global_step}


def plain_model(base: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(base), tokenizer


def save_merged(model, tokenizer, folder: Path) -> None:
    model.merge_and_unload().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def trl_sft(spec: dict, out: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from clinalign.train import common, sft

    started = time.perf_counter()
    rows = json.loads((Path(spec["rows"]) / "sft.json").read_text())
    model, tokenizer = plain_model(spec["base"])
    args = SFTConfig(**common.trl_values(out, sft.TRL_DEFAULTS, overrides(spec)))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=common.peft_config(model, common.LoraSettings()),
    )
    trainer.train()
    save_merged(trainer.model, tokenizer, out / "model")
    return {"run_s": time.perf_counter() - started, **trl_figures(trainer), **described(trainer)}


def trl_dpo(spec: dict, out: Path) -> dict:
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from clinalign.train import common, dpo

    started = time.perf_counter()
    folder = Path(spec["dataset_dir"])
    files = {s: str(folder / f"{s}.parquet") for s in ("train", "test") if (folder / f"{s}.parquet").exists()}
    splits = load_dataset("parquet", data_files=files)
    columns = ["prompt", "chosen", "rejected"]
    train = splits["train"].select_columns(columns)
    test = splits["test"].select_columns(columns) if "test" in splits else None
    model, tokenizer = plain_model(spec["base"])
    rpo = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, dpo.Config().sft_weight]}
    args = DPOConfig(**common.trl_values(out, {**dpo.TRL_DEFAULTS, **rpo}, overrides(spec)))
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        peft_config=common.peft_config(model, common.LoraSettings()),
    )
    trainer.train()
    if test is not None and len(test):
        trainer.evaluate()
    trainer.save_model(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))
    save_merged(trainer.model, tokenizer, out / "model")
    return {"run_s": time.perf_counter() - started, **trl_figures(trainer), **described(trainer)}


def trl_grpo(spec: dict, out: Path) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from clinalign.train import common, grpo

    started = time.perf_counter()
    rows = json.loads((Path(spec["rows"]) / "rl.json").read_text())
    functions, weights = grpo.reward_functions(spec["reward_dir"], grpo.Config().reward_weights)
    values = {**grpo.TRL_DEFAULTS, "use_vllm": False, "reward_weights": weights}
    args = GRPOConfig(**common.trl_values(out, values, overrides(spec)))
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": text}], "risk": risk} for text, risk in rows])
    model, tokenizer = plain_model(spec["base"])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=functions,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=common.peft_config(model, common.LoraSettings()),
    )
    trainer.train()
    save_merged(trainer.model, tokenizer, out / "model")
    return {"run_s": time.perf_counter() - started, **trl_figures(trainer), **described(trainer)}


def clinalign_trl_stage(spec: dict, store, workspace: Path) -> dict:
    """SFT, DPO or GRPO through ``run_stage``; the trainer is caught on its way into ``common.train``."""
    from clinalign.stages import run_stage
    from clinalign.train import common

    caught = {}
    train = common.train

    def catching(trainer, *args, **kwargs):
        caught["trainer"] = trainer
        return train(trainer, *args, **kwargs)

    common.train = catching
    config = {"base": spec["base"], "save_every": 0, "trl": overrides(spec)}
    if spec["stage"] == "dpo":
        config["dataset"] = spec["dataset"]
    else:
        config["prompt_set"] = spec["prompt_set"]
    if spec["stage"] == "grpo":
        config["reward_model"] = spec["reward_model"]
    started = time.perf_counter()
    run_stage(f"train.{spec['stage']}", store, workspace, config)
    run_s = time.perf_counter() - started
    trainer = caught["trainer"]
    return {"run_s": run_s, **trl_figures(trainer), **described(trainer)}


def clinalign_ppo(spec: dict, store, workspace: Path) -> dict:
    from clinalign.stages import run_stage
    from clinalign.train import ppo_algorithm

    seen = {"tokens": 0, "loop_s": 0.0}
    rollout, step = ppo_algorithm.PPO.rollout, ppo_algorithm.PPO.step

    def counting_rollout(self, *args, **kwargs):
        out = rollout(self, *args, **kwargs)
        seen["tokens"] += int(out[1].sum())  # the attention mask: prompt tokens and answer tokens
        return out

    def timed_step(self, *args, **kwargs):
        started = time.perf_counter()
        record = step(self, *args, **kwargs)
        seen["loop_s"] += time.perf_counter() - started
        return record

    ppo_algorithm.PPO.rollout, ppo_algorithm.PPO.step = counting_rollout, timed_step
    from clinalign.train import common

    # the TRL stages' precision (PPO's own default is fp32, for exact resumption)
    bf16 = spec["trl"].get("bf16", common.trl_values(Path(spec["out"]), {}, {}).get("bf16", False))
    config = {"base": spec["base"], "steps": spec["steps"], "batch_size": spec["batch"], "save_every": 0, "bf16": bf16}
    config.update(prompt_set=spec["prompt_set"], reward_model=spec["reward_model"])
    started = time.perf_counter()
    run_stage("train.ppo", store, workspace, config)
    return {"run_s": time.perf_counter() - started, "steps": spec["steps"], **seen}


def clinalign_reward(spec: dict, store, workspace: Path) -> dict:
    from clinalign import embed, reward_model
    from clinalign.stages import run_stage
    from clinalign.train import reward

    texts: list[str] = []
    seen = {"loop_s": 0.0}
    features, train = reward_model.features, reward._train

    def timed_features(encoder, prompts, answers, cache=None):
        texts.extend(dict.fromkeys([*prompts, *answers]))  # what one call embeds (no cache in training)
        seen["encoder"] = encoder
        started = time.perf_counter()
        x = features(encoder, prompts, answers, cache)
        seen["loop_s"] += time.perf_counter() - started
        return x

    def timed_train(*args, **kwargs):
        started = time.perf_counter()
        out = train(*args, **kwargs)
        seen["loop_s"] += time.perf_counter() - started
        return out

    reward_model.features, reward._train = timed_features, timed_train
    config = {**spec["reward_config"], "dataset": spec["dataset"]}
    if "save_every" in reward.Config.model_fields:  # checkpoints off, as in the other measured runs
        config["save_every"] = 0
    started = time.perf_counter()
    run_stage("train.reward", store, workspace, config)
    run_s = time.perf_counter() - started
    tokenizer = embed._encoder(seen.pop("encoder"))[0]
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    steps = reward.Config(**spec["reward_config"]).steps
    return {"run_s": run_s, "tokens": tokens, "steps": steps, **seen}


def peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux, ``VmHWM``: ``ru_maxrss`` survives fork and exec, so
    a child started from a large parent (this benchmark, after preparing the data) would report the
    parent's peak whenever its own is lower."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux (bytes on macOS)


def child(spec_path: Path) -> None:
    import torch
    import transformers  # noqa: F401  (imported before the clock starts, in both engines alike)
    import trl  # noqa: F401

    spec = json.loads(spec_path.read_text())
    out = Path(spec["out"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if spec["engine"] == "trl":
        result = {"sft": trl_sft, "dpo": trl_dpo, "grpo": trl_grpo}[spec["stage"]](spec, out)
    else:
        from clinalign.store import Store

        workspace = Path(spec["workspace"])
        store = Store.open(f"sqlite:///{(workspace / 'clinalign.db').resolve()}")
        measure = {"ppo": clinalign_ppo, "reward": clinalign_reward}.get(spec["stage"], clinalign_trl_stage)
        result = measure(spec, store, workspace)
    result["rss_mib"] = peak_rss_mib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime  # from the process's start, imports included
    if torch.cuda.is_available():
        result["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(MARK + json.dumps(result), flush=True)


# --- the parent: runs, table, targets ---------------------------------------------------------------


def measure(spec: dict, folder: Path) -> dict:
    """One run in its own process, with its own datasets cache; its figures."""
    folder.mkdir(parents=True)
    spec = {**spec, "out": str(folder / "out")}
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "datasets-cache"), "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(folder / "spec.json")], env=env, capture_output=True, text=True
    )
    process_s = time.perf_counter() - started
    (folder / "log.txt").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    found = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode or not found:
        raise SystemExit(f"{spec['stage']} ({spec['engine']}) failed:\n{done.stderr[-4000:]}")
    return {**json.loads(found[-1][len(MARK) :]), "process_s": process_s}


def rate(tokens, seconds) -> float | None:
    return tokens / seconds if tokens and seconds else None


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{prefix}{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny random model (a quick smoke run)")
    parser.add_argument("--sft-steps", type=int, default=4)
    parser.add_argument("--dpo-steps", type=int, default=3)
    parser.add_argument("--ppo-steps", type=int, default=2)
    parser.add_argument("--ppo-batch", type=int, default=8, help="prompts per PPO step")
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument(
        "--trl",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TRL config field for SFT, DPO and GRPO, both engines alike (e.g. bf16=false); repeatable",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per stage and engine; the fastest is kept")
    parser.add_argument("--stages", default=",".join(ORDER), help=f"a subset of {','.join(ORDER)}")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    chosen = [s for s in ORDER if s in args.stages.split(",")]
    trl = {}
    for item in args.trl:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--trl expects KEY=VALUE, got {item!r}")
        trl[key.strip()] = yaml.safe_load(value)  # as the CLI's --set reads values
    steps = {"sft": args.sft_steps, "dpo": args.dpo_steps, "ppo": args.ppo_steps, "grpo": args.grpo_steps}
    began = time.perf_counter()
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"on {device}, torch {torch.__version__} using {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.tiny:
            from tests.tiny_model import build_tiny

            base = str(build_tiny(tmp / "tiny"))
        else:
            from clinalign import bundled

            base = str(bundled.folder())
        workspace = tmp / "workspace"
        workspace.mkdir()
        print(f"model {'tiny random (tests)' if args.tiny else 'SmolLM2-135M-Instruct'}: {base}")
        print(f"TRL overrides (both engines): {trl or 'none, the stages as shipped'}")
        started = time.perf_counter()
        inputs = prepare(workspace, base, args.tiny)
        print(f"data prepared in {time.perf_counter() - started:.1f} s", flush=True)
        shared = {**inputs, "base": base, "workspace": str(workspace), "batch": args.ppo_batch, "trl": trl}
        results: dict[tuple[str, str], list[dict]] = {}
        number = 0
        for repeat in range(args.repeats):
            for stage in chosen:
                engines = ["trl", "clinalign"] if stage in TRL_STAGES else ["clinalign"]
                for engine in engines if repeat % 2 == 0 else engines[::-1]:
                    number += 1
                    spec = {**shared, "stage": stage, "engine": engine, "steps": steps.get(stage)}
                    figures = measure(spec, tmp / "runs" / f"{number:02d}-{stage}-{engine}")
                    results.setdefault((stage, engine), []).append(figures)
                    print(
                        f"  measured {stage:<6} {engine:<9} run {figures['run_s']:6.1f} s "
                        f"(process {figures['process_s']:.1f} s, CPU {figures['cpu_s']:.1f} s)",
                        flush=True,
                    )
    best = {key: min(runs, key=lambda r: r["run_s"]) for key, runs in results.items()}
    report(best, args.repeats)
    print(f"total wall time {time.perf_counter() - began:.1f} s")


def report(best: dict, repeats: int) -> None:
    cuda = any("cuda_mib" in r for r in best.values())
    head = f"{'stage':<7} {'engine':<10} {'steps':>5} {'tokens':>8} {'run s':>7} {'loop s':>7}"
    head += f" {'tok/s run':>10} {'tok/s loop':>10} {'peak RSS MiB':>12}" + (f" {'CUDA MiB':>9}" if cuda else "")
    print()
    print(f"(fastest of {repeats} run(s) per stage and engine)" if repeats > 1 else "(one run per stage and engine)")
    print(head)
    print("-" * len(head))
    for stage in ORDER:
        for engine in ("clinalign", "trl"):
            r = best.get((stage, engine))
            if r is None:
                continue
            run, loop = rate(r["tokens"], r["run_s"]), rate(r["tokens"], r["loop_s"])
            line = f"{stage:<7} {'plain TRL' if engine == 'trl' else engine:<10} {r['steps']:>5} {r['tokens'] or 0:>8}"
            line += (
                f" {r['run_s']:>7.1f} {r['loop_s']:>7.1f} {run or 0:>10.1f} {loop or 0:>10.1f} {r['rss_mib']:>12.0f}"
            )
            print(line + (f" {r.get('cuda_mib', 0):>9.0f}" if cuda else ""))
    print("(reward and ppo: clinalign only, not TRL-based; reward tokens are MiniLM tokens embedded)")
    print()
    for stage in TRL_STAGES:
        ours, theirs = best.get((stage, "clinalign")), best.get((stage, "trl"))
        if not ours or not theirs:
            continue
        if ours["tokens"] != theirs["tokens"]:
            print(f"{stage}: the engines processed different token counts ({ours['tokens']} vs {theirs['tokens']})")
        differ = differences(ours["args"], theirs["args"], "trl.") + differences(ours["lora"], theirs["lora"], "lora.")
        for field in differ:
            print(f"{stage}: config differs (clinalign vs plain TRL) {field}")
        used = {k: theirs["args"].get(k) for k in ("bf16", "fp16", "gradient_checkpointing")}
        print(f"{stage:<5} ran with {', '.join(f'{k}={v}' for k, v in used.items())} (both engines)")
        overhead = rate(theirs["tokens"], theirs["run_s"]) / rate(ours["tokens"], ours["run_s"]) - 1
        loop = rate(theirs["tokens"], theirs["loop_s"]) / rate(ours["tokens"], ours["loop_s"]) - 1
        verdict = "met" if overhead <= OVERHEAD_TARGET else "not met"
        print(
            f"{stage:<5} clinalign overhead vs plain TRL: {overhead * 100:+6.1f}% whole run "
            f"({loop * 100:+.1f}% training loop); target <= {OVERHEAD_TARGET:.0%}: {verdict}"
        )
    ppo, grpo = best.get(("ppo", "clinalign")), best.get(("grpo", "trl"))
    if ppo and grpo:
        ours, theirs = rate(ppo["tokens"], ppo["loop_s"]), rate(grpo["tokens"], grpo["loop_s"])
        verdict = "met" if ours >= theirs else "not met"
        print(
            f"ppo   {ours:.1f} tok/s vs TRL GRPO {theirs:.1f} tok/s in the training loop "
            f"({rate(ppo['tokens'], ppo['run_s']):.1f} vs {rate(grpo['tokens'], grpo['run_s']):.1f} whole run); "
            f"target PPO >= GRPO: {verdict}"
        )


if __name__ == "__main__":
    main()
