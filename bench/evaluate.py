"""Benchmark: clinalign's multiple-choice scoring against EleutherAI's lm-evaluation-harness, on the same
model and the same items, in one run.

    .venv/bin/python bench/evaluate.py [--benchmark medqa] [--items 100] [--batch-size 16] [--repeats 3]

Needs lm-eval, which clinalign itself does not: install it as ``requirements/bench-evaluate.txt`` says.

Model: the embedded default, SmolLM2-135M-Instruct, from the Hugging Face folder that the model name
``smollm2`` stands for (``bundled.folder()``), loaded once by each side on the device ``lm.load`` picks
(the CPU when there is no GPU). Items: the first ``--items`` of one of the ``mcq`` suite's benchmarks,
read by ``mcq.load`` from ``../shared/data``.

* clinalign: ``mcq.by_likelihood``, the ``mcq`` suite's scoring: each option's mean log-probability per
  token as the assistant's reply to the question (``lm.answer_logprobs``), the highest chosen.
* lm-eval: ``simple_evaluate`` on an ``HFLM`` of the same folder with the same batch size, over a task
  written to a temporary folder (``dataset_path: json``, no few-shot). It renders the question through
  the same chat template (``apply_chat_template``), and each option carries the template's end of turn,
  which clinalign scores with the option, so both score the same tokens but one: lm-eval moves the
  prompt's trailing newline into every option, so its log-likelihoods also hold that token (the same
  for each option of an item, near-certain). Its ``acc`` ranks by the sum of log-probabilities and
  ``acc_norm`` by the sum per character (the end of turn's characters included); clinalign ranks by the
  mean per token.

Each side scores a few items before it is timed; the timed passes alternate between the two, so that a
busy spell on a shared machine hits both, and the best pass counts. Two times each: *scoring*
(clinalign's ``by_likelihood``; lm-eval's ``loglikelihood`` over all requests: both tokenise and run the
model) and *end to end* (from the benchmark file to an accuracy: ``mcq.load`` then ``by_likelihood``;
the whole ``simple_evaluate``, without its bootstrap of standard errors). Prints items/s for each,
clinalign's over lm-eval's (the target: at least 1), and the accuracies on the same items, with
lm-eval's own log-likelihoods ranked by clinalign's rule and how often that picks clinalign's option.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from clinalign import bundled, lm  # noqa: E402
from clinalign.evaluate import mcq  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TASK = "clinalign_bench"


def turn_end(tokenizer) -> str:
    """What the chat template writes after an assistant's reply (SmolLM2: ``<|im_end|>`` and a newline)."""
    user = [{"role": "user", "content": "Q"}]
    prefix = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": "A"}], tokenize=False)
    assert full.startswith(prefix + "A"), "the chat template does not append the reply to the prompt"
    return full[len(prefix) + 1 :]


def write_task(folder: Path, items: list[dict], end: str) -> None:
    """The items as JSONL, and an lm-eval task over them in the same folder."""
    data = folder / "items.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for item in items:
            options = [option + end for option in item["options"]]
            out.write(json.dumps({"question": item["question"], "choices": options, "answer": item["answer"]}) + "\n")
    task = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "datasets")},
        "test_split": "test",
        "output_type": "multiple_choice",
        # Field names are taken as they are (a Jinja template would be rendered first).
        "doc_to_text": "question",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": metric, "aggregation": "mean", "higher_is_better": True} for metric in ("acc", "acc_norm")
        ],
    }
    (folder / f"{TASK}.yaml").write_text(json.dumps(task, indent=2), encoding="utf-8")  # JSON is YAML


def lm_eval_pass(model, tasks, limit: int | None) -> tuple[dict, float, float]:
    """One ``simple_evaluate``: its results, the seconds spent in ``model.loglikelihood``, and in all."""
    from lm_eval import simple_evaluate

    scoring, spent = model.loglikelihood, [0.0]

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return scoring(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    model.loglikelihood = timed  # on the instance, for this pass only
    started = time.perf_counter()
    try:
        results = simple_evaluate(
            model=model, tasks=[TASK], task_manager=tasks, apply_chat_template=True, limit=limit, bootstrap_iters=0
        )
    finally:
        del model.loglikelihood
    return results, spent[0], time.perf_counter() - started


def per_token_choices(results: dict, tokenizer) -> list[int]:
    """lm-eval's log-likelihoods ranked by clinalign's rule: the mean over the option's tokens as clinalign
    counts them (lm-eval's sum also holds the prompt's final newline, near-certain and the same for each
    option of an item)."""

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    chosen = {}
    for sample in results["samples"][TASK]:
        means = [
            ll / (tokens(context + option) - tokens(context))
            for (context, option), ((ll, _greedy),) in zip(sample["arguments"], sample["resps"], strict=True)
        ]
        chosen[sample["doc_id"]] = max(range(len(means)), key=means.__getitem__)
    return [chosen[i] for i in range(len(chosen))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", choices=sorted(mcq.BENCHMARKS), default="medqa")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="for both (the mcq suite's default)")
    parser.add_argument("--warmup", type=int, default=4, help="items each scores before it is timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes each, alternating; the best counts")
    args = parser.parse_args()
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise SystemExit(
            "lm_eval is not installed; this benchmark needs it (clinalign does not): install it into .venv "
            "as requirements/bench-evaluate.txt says, pinned so that no package already there changes"
        ) from None
    import torch

    path = str(bundled.folder())
    ours = lm.load(path)
    # On lm.load's device (the GPU when there is one, else the CPU), with the mcq suite's batch size.
    theirs = HFLM(pretrained=path, device=str(ours.model.device), batch_size=args.batch_size)
    items = mcq.load(args.benchmark, SHARED, args.items)
    ours_passes, theirs_passes = [], []
    with tempfile.TemporaryDirectory() as folder:
        write_task(Path(folder), items, turn_end(ours.tokenizer))
        tasks = TaskManager(include_path=folder)
        mcq.by_likelihood(ours, items[: args.warmup], args.batch_size)
        lm_eval_pass(theirs, tasks, args.warmup)
        for _ in range(args.repeats):
            started = time.perf_counter()
            items = mcq.load(args.benchmark, SHARED, args.items)  # again: end to end starts from the file
            loaded = time.perf_counter()
            chosen = mcq.by_likelihood(ours, items, args.batch_size)
            ours_passes.append((time.perf_counter() - loaded, time.perf_counter() - started))
            results, scoring, total = lm_eval_pass(theirs, tasks, None)
            theirs_passes.append((scoring, total))

    n = len(items)
    print(f"model     {bundled.SMOLLM2.title} {path}")
    print(f"runs on   clinalign {ours.model.dtype}, {ours.model.device}; lm-eval {theirs.model.dtype}, {theirs.device}")
    print(f"versions  torch {torch.__version__} ({torch.get_num_threads()} CPU threads), lm-eval {lm_eval.__version__}")
    options = sum(len(item["options"]) for item in items)
    print(f"items     {args.benchmark}: {n} ({options} options), batch size {args.batch_size}, best of {args.repeats}")
    print(f"\n{'':22} {'scoring s':>9} {'items/s':>8} {'end-to-end s':>12} {'items/s':>8}   scoring items/s by pass")
    for name, passes in (("clinalign (mcq suite)", ours_passes), ("lm-eval (HFLM)", theirs_passes)):
        scoring, total = min(p[0] for p in passes), min(p[1] for p in passes)
        each = " ".join(f"{n / p[0]:.2f}" for p in passes)
        print(f"{name:22} {scoring:9.2f} {n / scoring:8.2f} {total:12.2f} {n / total:8.2f}   {each}")
    ratios = [min(p[k] for p in theirs_passes) / min(p[k] for p in ours_passes) for k in (0, 1)]
    print(f"{'clinalign / lm-eval':22} {'':9} {ratios[0]:7.2f}x {'':12} {ratios[1]:7.2f}x")

    right = sum(c == item["answer"] for c, item in zip(chosen, items, strict=True))
    ranked = per_token_choices(results, ours.tokenizer)
    ranked_right = sum(c == item["answer"] for c, item in zip(ranked, items, strict=True))
    same = sum(a == b for a, b in zip(chosen, ranked, strict=True))
    found = results["results"][TASK]
    print(f"\naccuracy  clinalign: mean log-prob per token          {right / n:.3f} ({right}/{n})")
    print(f"          lm-eval acc: sum of log-probs               {found['acc,none']:.3f}")
    print(f"          lm-eval acc_norm: sum per character         {found['acc_norm,none']:.3f}")
    print(
        f"          lm-eval's log-probs, mean per token         {ranked_right / n:.3f} ({ranked_right}/{n}), "
        f"the same option as clinalign on {same}/{n} items"
    )


if __name__ == "__main__":
    main()
