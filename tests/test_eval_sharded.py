"""Sharded evaluation under torchrun (gloo, 2 CPU ranks) with the real MiniLM: the same numbers as one
process on the shipped MIRACL-yo subset and a synthetic 20,000-passage corpus; a killed rank resumes
with only the unfinished shards encoded again; a corrupt and a half-written shard are redone; the
``--estimate`` plan of all 18 full MIRACL corpora, offline; the shard files' checks on their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.config import RunConfig
from workbench.eval.sharded import Shard, ShardStore, content_digest, owned, plan_shards, shard_rows, torchrun_argv
from workbench.eval.stage import run_eval
from workbench.languages import load_registry
from workbench.run import Run
from workbench.tables import EVAL_PER_QUERY, EVAL_RESULTS
from workbench.testing.corpora import write_synthetic_beir

from cli_support import workbench
from conftest import REPO

YO_SUBSET = REPO / "examples" / "data" / "miracl-yo"
KEY = ["system", "model", "task", "dataset", "language", "split", "metric"]
YO_ARGS = ("--model", "minilm", "--task", "miracl", "-l", "yo", "--data-dir", str(YO_SUBSET))


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WORKBENCH_PROGRESS_EVERY_S="2",
               HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def _torchrun(run_dir: Path, *args: str, ranks: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
            "-m", "workbench.cli", "eval", str(run_dir), *args]


def _single(run_dir: Path, **section: object) -> Run:
    """The reference: today's one-process evaluation (mteb's own search) in this process."""
    run = Run.create(run_dir)
    run_eval(run, RunConfig.model_validate({"run": {"name": "ref"}, "eval": section}), load_registry())
    return run


def _shard_folder(run_dir: Path) -> Path:
    (folder,) = [p for p in (run_dir / "eval" / "embeddings").glob("*/shards/*/*") if p.is_dir()]
    return folder


def _markers(folder: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in folder.glob("corpus-*.json")}


def _trec(path: Path) -> dict[str, list[tuple[str, float]]]:
    ranking: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, _, doc, _, score, _ = line.split()
        ranking.setdefault(qid, []).append((doc, float(score)))
    return ranking


def assert_same_results(reference: Path, sharded: Path) -> None:
    """results.parquet identical, every per-query score within 1e-6, and each query's top 100 the
    same documents in the same order except where two scores tie within float noise (1e-5)."""
    ref, got = (Run.open(p) for p in (reference, sharded))
    a = ref.read_table("eval", "results", EVAL_RESULTS).drop("created_at").sort(KEY)
    b = got.read_table("eval", "results", EVAL_RESULTS).drop("created_at").sort(KEY)
    assert a.height > 0 and a.to_dicts() == b.to_dicts()
    pa = ref.read_table("eval", "per_query", EVAL_PER_QUERY)
    pb = got.read_table("eval", "per_query", EVAL_PER_QUERY)
    joined = pa.join(pb, on=[*KEY, "query_id"], how="full", coalesce=True)
    assert joined.height == pa.height == pb.height
    assert (joined["score"] - joined["score_right"]).abs().max() <= 1e-6
    for metric in ("ndcg_at_10", "recall_at_100"):
        means = [t.filter(pl.col("metric") == metric)["score"].mean() for t in (pa, pb)]
        assert abs(means[0] - means[1]) <= 1e-6 * 100, metric  # percent
    (trec_a,) = (reference / "eval" / "runs").rglob("*.trec")
    trec_b = sharded / "eval" / "runs" / trec_a.relative_to(reference / "eval" / "runs")
    ra, rb = _trec(trec_a), _trec(trec_b)
    assert ra.keys() == rb.keys()
    for qid in ra:
        assert len(ra[qid]) == len(rb[qid])
        for (doc_a, score_a), (doc_b, score_b) in zip(ra[qid], rb[qid], strict=True):
            assert abs(score_a - score_b) <= 1e-5, (qid, doc_a, doc_b)
            if doc_a != doc_b:  # a swap is allowed only between documents whose scores tie
                tied = {d for d, s in ra[qid] if abs(s - score_a) <= 1e-5}
                assert doc_b in tied, (qid, doc_a, doc_b)


# -- the shipped MIRACL-yo subset: 2 ranks through `workbench eval --launcher torchrun` ----------------
@pytest.fixture(scope="module")
def yo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("yo")
    section = {"model": "minilm", "task": "miracl", "languages": ["yo"], "data_dir": str(YO_SUBSET)}
    _single(root / "single", **section)
    sharded = root / "sharded"
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "eval", str(sharded), "--create", *YO_ARGS,
                           "--launcher", "torchrun", "--gpus", "2"], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "single", sharded, done


@pytest.mark.slow
def test_two_ranks_give_the_single_process_numbers_on_the_yo_subset(yo_runs) -> None:
    single, sharded, done = yo_runs
    assert_same_results(single, sharded)
    folder = _shard_folder(sharded)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["world"] == 2 and summary["corpus_shards"] == 12  # 3,000 passages, 256 rows a shard
    assert summary["encoded"] == 12 and summary["reused"] == 0
    markers = [json.loads(p.read_text()) for p in folder.glob("corpus-*.json")]
    assert {m["rank"] for m in markers} == {0, 1} and len(markers) == 12  # each rank wrote its own half
    assert all(m["dtype"] == "float16" for m in markers) and sum(m["rows"] for m in markers) == 3000
    vectors = np.load(folder / "corpus-000000.npy")
    assert vectors.dtype == np.float16 and vectors.shape == (256, 384)
    assert np.load(folder / "queries-000000.npy").dtype == np.float32
    # rank 0's progress line: passages/s and an ETA for the whole job
    assert "passages/s on 2 ranks, ETA" in done.stderr


@pytest.mark.slow
def test_a_corrupt_and_a_half_written_shard_are_redone(yo_runs) -> None:
    single, sharded, _ = yo_runs
    folder = _shard_folder(sharded)
    before = _markers(folder)
    data = bytearray((folder / "corpus-000003.npy").read_bytes())
    data[-7] ^= 0xFF  # one flipped byte in the vectors
    (folder / "corpus-000003.npy").write_bytes(bytes(data))
    (folder / "corpus-000008.json").unlink()  # vectors on disk, no done marker: killed while writing
    (folder / ".corpus-000009.npy.999.tmp").write_bytes(b"half")  # a temp file left by a killed writer
    (sharded / "eval" / "results.parquet").unlink()  # so the stage runs again
    done = subprocess.run(_torchrun(sharded, *YO_ARGS), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["redone"] == ["corpus-000003", "corpus-000008"]
    assert summary["encoded"] == 2 and summary["reused"] == 10
    after = _markers(folder)
    assert {n for n in after if after[n] != before.get(n)} == {"corpus-000003", "corpus-000008"}
    # the reason is in the stage log of the rank that owned the shard (stderr carries the summary line)
    logged = "".join(p.read_text(encoding="utf-8") for p in (sharded / "logs").glob("eval*.log"))
    assert "corpus-000003: corrupt (checksum mismatch)" in logged
    assert "2 of them redone: corpus-000003 corpus-000008" in done.stderr
    assert_same_results(single, sharded)


# -- a synthetic 20,000-passage corpus: kill a rank, resume ---------------------------------------------------
# 20,000 passages (64 shards of 313); WORKBENCH_TEST_SYNTHETIC_PASSAGES makes it smaller for a quick check
SYNTHETIC_PASSAGES = int(os.environ.get("WORKBENCH_TEST_SYNTHETIC_PASSAGES", "20000"))


@pytest.mark.slow
def test_a_killed_rank_resumes_with_only_the_unfinished_shards(tmp_path: Path) -> None:
    data = write_synthetic_beir(tmp_path / "synthetic", passages=SYNTHETIC_PASSAGES, queries=200)
    shards = len(plan_shards(SYNTHETIC_PASSAGES, "corpus", shard_rows(SYNTHETIC_PASSAGES)))
    enough = max(2, shards // 8)  # kill once this many shards are finished
    single = _single(tmp_path / "single", model="minilm", task="beir", data_dir=str(data)).root
    sharded = tmp_path / "sharded"
    args = ("--model", "minilm", "--task", "beir", "--data-dir", str(data))
    command = _torchrun(sharded, "--create", *args)
    job = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and job.poll() is None:
        found = [p for p in (sharded / "eval" / "embeddings").glob("*/shards/*/*") if p.is_dir()]
        if found and len(list(found[0].glob("corpus-*.json"))) >= enough:
            folder = found[0]
            break
        time.sleep(0.2)
    assert folder is not None, "no shard finished in time"
    victim = json.loads((folder / "progress" / "rank-1.json").read_text())["pid"]
    os.kill(victim, signal.SIGKILL)  # rank 1 dies mid-encoding; torchrun stops rank 0
    _, stderr = job.communicate()
    assert job.returncode != 0
    # rank 0's one line: which rank, which shard, and the command that resumes
    line = next(x for x in stderr.splitlines() if "rank 0/2" in x)
    assert "at corpus shard corpus-" in line and "resume: torchrun --nproc_per_node 2 -m workbench.cli eval" in line
    finished = _markers(folder)
    assert enough <= len(finished) < shards
    done = subprocess.run(_torchrun(sharded, *args), env=_env(), capture_output=True, text=True)  # the same command
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["corpus_shards"] == shards == (64 if SYNTHETIC_PASSAGES == 20_000 else shards)
    assert summary["reused"] == len(finished) and summary["encoded"] == shards - len(finished)
    after = _markers(folder)
    assert all(after[name] == marker for name, marker in finished.items())  # finished shards never rewritten
    assert len(after) == shards
    assert_same_results(single, sharded)


# -- the base under another folder's contract (base@trained-contract) ----------------------------------------------
@pytest.mark.slow
def test_two_ranks_under_another_folders_contract_give_the_single_process_rows(tmp_path: Path) -> None:
    """Every rank runs the base weights under the trained export's contract (a follower builds the same encoder,
    or the fingerprints differ), and the sharded rows carry the same condition columns as one process's."""
    import shutil

    from workbench.encoder import QUERY_TEMPLATE, EncoderSpec, minilm_path, write_spec

    trained = tmp_path / "trained"  # an export's contract: the instruction template and 32 tokens
    shutil.copytree(minilm_path(), trained)
    write_spec(trained, EncoderSpec(path="", format="sentence-transformers", pooling="mean", max_length=32,
                                    query_template=QUERY_TEMPLATE), trained_on="test", seed=13)
    data = write_synthetic_beir(tmp_path / "synthetic", passages=600, queries=40)
    single = _single(tmp_path / "single", model="minilm", contract_from=str(trained), task="beir",
                     data_dir=str(data)).root
    sharded = tmp_path / "sharded"
    done = subprocess.run(_torchrun(sharded, "--create", "--model", "minilm", "--contract-from", str(trained),
                                    "--task", "beir", "--data-dir", str(data)), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(single, sharded)
    rows = Run.open(sharded).read_table("eval", "results", EVAL_RESULTS)
    assert set(rows["max_length"]) == {32} and set(rows["contract_from"]) == {str(trained)}
    assert set(rows["system"]) == {"minilm@trained-contract"} and rows["benchmark"].null_count() == 0
    assert json.loads((_shard_folder(sharded) / "summary.json").read_text())["world"] == 2


# -- fast checks ------------------------------------------------------------------------------------------------
def test_shards_do_not_depend_on_the_number_of_ranks() -> None:
    for n in (0, 1, 255, 3000, 20_000, 49_043, 32_893_221):
        rows = shard_rows(n)
        shards = plan_shards(n, "corpus", rows)
        assert sum(s.rows for s in shards) == n and all(0 < s.rows <= rows for s in shards)
        assert rows <= 100_000 and (n <= 256 * 64 or len(shards) >= 64 or rows == 100_000)
        for world in (1, 2, 3, 8):
            parts = [owned(shards, r, world) for r in range(world)]
            names = [s.name for part in parts for s in part]
            assert sorted(names) == sorted(s.name for s in shards) and len(set(names)) == len(names)


def test_shard_store_detects_unfinished_stale_and_corrupt_shards(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    shard = Shard("corpus", 0, 0, 3)
    digest = content_digest("model", "", ["a", "b", "c"])
    assert digest != content_digest("model", "", ["a", "b", "d"]) != content_digest("other", "", ["a", "b", "c"])
    assert content_digest("m", "", ["ab", "c"]) != content_digest("m", "", ["a", "bc"])  # length-prefixed
    assert store.check_vectors(shard, digest) == "not encoded yet"
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    store.write_vectors(shard, vectors, digest, "float16", rank=0)
    assert store.check_vectors(shard, digest) is None
    assert np.allclose(store.read_vectors(shard), vectors, atol=1e-3) and store.read_vectors(shard).dtype == np.float16
    assert store.check_vectors(shard, content_digest("model", "", ["x", "b", "c"])).startswith("stale")
    data = bytearray(store.vectors_path(shard).read_bytes())
    data[-1] ^= 1
    store.vectors_path(shard).write_bytes(bytes(data))
    assert store.check_vectors(shard, digest).startswith("corrupt")
    store.marker_path(shard).unlink()
    assert store.check_vectors(shard, digest).startswith("unfinished")
    scores, rows = np.array([[0.9, 0.5]], np.float32), np.array([[2, 0]], np.int32)
    store.write_topk(shard, scores, rows, digest, "q", 2)
    assert store.check_topk(shard, digest, "q", 2) and not store.check_topk(shard, digest, "other queries", 2)
    assert not store.check_topk(shard, digest, "q", 3)


def test_launcher_runs_the_same_eval_under_torchrun() -> None:
    argv = ["eval", "runs/x", "--launcher", "torchrun", "--gpus=2", "--model", "minilm", "--gpus", "2", "-l", "yo"]
    command = torchrun_argv(argv, 2)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert command[6:] == ["workbench.cli", "eval", "runs/x", "--model", "minilm", "-l", "yo"]


def test_estimate_prints_all_18_full_miracl_corpora_offline(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = workbench(capsys, "eval", str(tmp_path / "plan"), "--estimate", "--task", "miracl", "--full",
                               "--gpus", "8")
    assert code in (0, 2), err  # 2: this disk is too small for 106M 4096-dim vectors (one line says so)
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and len(line.split()[0]) == 2 and line.split()[0].isalpha()}
    assert set(rows) == set("ar bn de en es fa fi fr hi id ja ko ru sw te th yo zh".split())
    assert rows["en"][1] == "32,893,221" and rows["yo"][1] == "49,043"
    total = next(line.split() for line in out.splitlines() if line.split()[:1] == ["all"])
    assert total[1] == "106,332,152"
    # 106M x 4096 x 2 bytes of fp16 vectors, plus the top-k files
    assert 810 < float(total[4].replace(",", "")) < 830 and total[5] == "GiB"
    assert "ASSUMED" in out and not (tmp_path / "plan").exists()  # writes nothing
    if code == 2:
        assert err.count("\n") == 1 and "GiB are free" in err


def test_estimate_refuses_a_run_that_does_not_fit_the_disk(tmp_path: Path, capsys, monkeypatch) -> None:
    import shutil

    from workbench.eval import estimate

    real = shutil.disk_usage
    args = ("eval", str(tmp_path), "--estimate", "--model", "minilm", "--task", "miracl", "-l", "yo",
            "--data-dir", str(YO_SUBSET))
    monkeypatch.setattr(estimate.shutil, "disk_usage", lambda p: real(p)._replace(free=50 << 20))  # 50 MiB free
    code, out, err = workbench(capsys, *args)
    assert code == 0, err  # 3,000 x 384 x 2 bytes: about 2 MiB, fits
    yo = next(line.split() for line in out.splitlines() if line.split()[:1] == ["yo"])
    assert yo[1] == "3,000" and "the model's tokenizer on a sample" in out
    monkeypatch.setattr(estimate.shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))  # 1 MiB
    code, out, err = workbench(capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "need" in err and "GiB are free" in err
