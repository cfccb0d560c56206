"""The collection's outputs, from the stage records of every process, in key order:

    DIR/sft.jsonl   SFT records (ledex_jax.data.records): codegen from correct initial
                    solutions; refine and explain_refine from every verified refinement
    DIR/rl.jsonl    one record per wrong solution: its feedback, the verified refinements and
                    explanations (the references of LeDex's rewards) and the failed ones
    DIR/stats.json  counts per dataset (the paper's Table 1) and token usage
    DIR/tfds/       the SFT records as the TFDS dataset "ledex_sft" (config.export.tfds)

Everything here is a function of the records, so the files are the same byte for byte whatever
the number of processes or interruptions; timings live apart, in throughput-<process>.json.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ledex_jax.collect import store
from ledex_jax.data.records import validate_record

COLUMNS = ("problems", "samples", "no_code", "unique", "correct", "wrong", "errors", "wrong_refined",
           "answers", "unparsable", "correct_refinements")


def _group(records: dict, depth: int) -> dict[str, list[dict]]:
    """Records by the first `depth` parts of their key, each group in key order."""
    out: dict[str, list[dict]] = {}
    for key in sorted(records):
        out.setdefault("/".join(key.split("/")[:depth]), []).append(records[key])
    return out


def build(collection) -> tuple[list[dict], list[dict], dict]:
    """(sft records, rl records, stats) of a finished collection."""
    from ledex_jax.collect.pipeline import pkey

    wd = collection.workdir
    samples, executed, taught, verified = (store.read_stage(wd, s) for s in ("sample", "execute", "teach", "verify"))
    _check_finished(collection, samples, executed, taught, verified)
    answers_of = _group(taught, 2)
    sft, rl = [], []
    zero = dict.fromkeys(COLUMNS, 0)
    table: dict[str, dict[str, int]] = {}
    tokens = {"sample": [0, 0], "teacher": [0, 0]}
    for i, p in enumerate(collection.problems):
        row = table.setdefault(p.dataset, dict(zero))
        row["problems"] += 1
        for j in range(collection.cfg.sample.n):
            s = samples[f"{pkey(i)}/s{j:03d}"]
            row["samples"] += 1
            row["no_code"] += s["code"] is None
            tokens["sample"][0] += s.get("prompt_tokens", 0)
            tokens["sample"][1] += s.get("completion_tokens", 0)
        k = 0
        while (sol := executed.get(f"{pkey(i)}/u{k:03d}")) is not None:
            k += 1
            row["unique"] += 1
            uid = f"{p.source}/u{k - 1:03d}"
            if sol["error"]:
                row["errors"] += 1
                continue
            if sol["passed"]:
                row["correct"] += 1
                sft.append(_sft(f"{uid}/codegen", p, "codegen", code=sol["code"]))
                continue
            row["wrong"] += 1
            fixes, failed = [], []
            for ans in answers_of.get(sol["key"], []):
                ver = verified[ans["key"]]
                row["answers"] += 1
                row["unparsable"] += bool(ans["error"])
                tokens["teacher"][0] += ans.get("prompt_tokens", 0)
                tokens["teacher"][1] += ans.get("completion_tokens", 0)
                tid = f"{uid}/t{ans['key'].rsplit('/t', 1)[1]}"
                if ver["passed"]:
                    fixes.append({"id": tid, "code": ans["code"], "explanation": ans["explanation"]})
                    for fmt in ("refine", "explain_refine"):
                        sft.append(_sft(f"{tid}/{fmt}", p, fmt, code=ans["code"], wrong=sol,
                                        explanation=ans["explanation"] if fmt == "explain_refine" else ""))
                else:
                    failed.append({"id": tid, "code": ans["code"], "explanation": ans["explanation"],
                                   "text": ans["text"] if ans["error"] else "", "error": ans["error"],
                                   "feedback": ver["feedback"], "fraction_passed": ver["fraction_passed"]})
            row["correct_refinements"] += len(fixes)
            row["wrong_refined"] += bool(fixes)
            rl.append({"id": uid, "source": p.source, "dataset": p.dataset, "task_id": p.problem.task_id,
                       "problem": p.text, "wrong_code": sol["code"], "feedback": sol["feedback"],
                       "fraction_passed": sol["fraction_passed"], "refinements": fixes, "failed": failed,
                       "reference": p.problem.reference})
    total = dict(zero)
    for row in table.values():
        for c in COLUMNS:
            total[c] += row[c]
    for row in list(table.values()) + [total]:
        row["rate"] = round(100.0 * row["wrong_refined"] / row["wrong"], 2) if row["wrong"] else 0.0
    stats = {"datasets": table, "total": total, "sft_records": len(sft), "rl_records": len(rl),
             "sft_by_format": {f: sum(r["format"] == f for r in sft) for f in ("codegen", "refine", "explain_refine")},
             "tokens": {k: {"prompt": v[0], "completion": v[1]} for k, v in tokens.items()},
             "teacher": collection.cfg.teacher.kind, "model": collection.cfg.model.checkpoint}
    return sft, rl, stats


def _check_finished(collection, samples: dict, executed: dict, taught: dict, verified: dict) -> None:
    """Every stage holds every record the config calls for (in all processes' parts)."""
    from ledex_jax.collect.pipeline import CollectionError

    chunks = collection.chunks
    for stage, have, want in (
            ("sample", samples, lambda: [k for c in chunks for k in collection.sample_keys(c)]),
            ("execute", executed, lambda: [u[0] for c in chunks for u in collection.unique_solutions(c, samples)]),
            ("teach", taught, lambda: [k for c in chunks for k in collection.teach_keys(c, executed)]),
            ("verify", verified, lambda: list(taught))):
        missing = [k for k in want() if k not in have]
        if missing:
            raise CollectionError(f"the collection in {collection.workdir} is not finished: stage {stage} lacks "
                                  f"{len(missing)} records (first: {missing[0]}); run --stage all (on every "
                                  "process) first")


def _sft(rid: str, p, fmt: str, code: str, wrong: dict | None = None, explanation: str = "") -> dict:
    rec = {"id": rid, "problem": p.text, "wrong_code": wrong["code"] if wrong else "",
           "feedback": wrong["feedback"] if wrong else "", "explanation": explanation, "refined_code": code,
           "format": fmt, "source": p.source}
    validate_record(rec, rid)
    return rec


def table_text(stats: dict) -> str:
    """The paper's Table 1: unique / correct / wrong / wrong with >= 1 correct refinement / rate."""
    head = ("dataset", "problems", "unique", "correct", "wrong", "refined", "rate %")
    rows = [(name, r["problems"], r["unique"], r["correct"], r["wrong"], r["wrong_refined"], f"{r['rate']:.2f}")
            for name, r in list(stats["datasets"].items()) + [("total", stats["total"])]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, sort_keys=True).encode() + b"\n" for r in rows)


def export_collection(collection) -> dict:
    wd: Path = collection.workdir
    sft, rl, stats = build(collection)
    store.write_atomic(wd / "sft.jsonl", _jsonl(sft))
    store.write_atomic(wd / "rl.jsonl", _jsonl(rl))
    store.write_atomic(wd / "stats.json", json.dumps(stats, indent=1, sort_keys=True).encode() + b"\n")
    if collection.cfg.export.tfds and sft:
        _write_tfds(wd)
    print(table_text(stats))
    print(f"wrote {len(sft)} SFT records to {wd / 'sft.jsonl'}, {len(rl)} RL records to {wd / 'rl.jsonl'}, "
          f"counts to {wd / 'stats.json'}")
    return stats


def _write_tfds(wd: Path) -> None:
    """DIR/tfds: the SFT records as TFDS "ledex_sft" (split train), prepared afresh each export."""
    from ledex_jax.data.tfds_sft import prepare_sft_tfds

    source, target = wd / "tfds_source", wd / "tfds"
    for d in (source, target):
        shutil.rmtree(d, ignore_errors=True)
    source.mkdir()
    shutil.copyfile(wd / "sft.jsonl", source / "train.jsonl")
    prepare_sft_tfds(source, target)
    shutil.rmtree(source)
    print(f"TFDS dataset ledex_sft:1.0.0 under {target} (data_cfg.source='tfds', tfds_data_dir={target})")
