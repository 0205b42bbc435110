"""Benchmark specs: the digits spec equals the separate commands it replaces; bad specs get one sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_attack_cli import cli

from robustbench_rpc.errors import UserError
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.spec import load_spec
from robustbench_rpc.spec.run import validate

SPECS = Path(__file__).resolve().parents[1] / "specs"
CKPT = SPECS.parent / "robustbench_rpc" / "assets" / "checkpoints"


def small_digits_spec(tmp_path: Path) -> Path:
    """The shipped digits spec with fewer samples (same models, suites, attacks, seeds)."""
    text = (SPECS / "digits.toml").read_text()
    text = text.replace("limit = 100", "limit = 10").replace("limit = 64", "limit = 6").replace("limit = 16",
                                                                                                "limit = 3")
    text = text.replace('"../robustbench_rpc/assets/checkpoints/', f'"{CKPT}/')
    path = tmp_path / "digits.toml"
    path.write_text(text)
    return path


def separate_commands(model: str, checkpoint: str, out: str) -> list[list[str]]:
    m = ["-m", model, "-c", checkpoint, "--out", out, "-q"]
    return [["evaluate", *m, "--suite", "digits,digits-c", "--corruptions", "gaussian_noise,fog",
             "--severities", "1,5", "--limit", "10", "--seeds", "0,1"],
            ["attack", *m, "--attack", "pgd,fgsm", "--eps", "1/255:4/255", "--option", "pgd.steps=10",
             "--dataset", "digits", "--limit", "6", "--seeds", "0,1"],
            ["attack", *m, "--attack", "spsa", "--eps", "4/255", "--option", "samples=16", "--option", "steps=5",
             "--dataset", "digits", "--limit", "3", "--seeds", "0,1"]]


def test_digits_spec_equals_the_separate_commands(tmp_path, capsys):
    spec_path = small_digits_spec(tmp_path)
    code, printed, err = cli(capsys, "run", str(spec_path), "--out", str(tmp_path / "spec"), "-q")
    assert code == 0, err
    assert "[9/9]" in printed
    spec_cells = {s.key(): (r, m) for s, r, m in ResultsStore(tmp_path / "spec").iter_cells()}
    separate: dict[str, object] = {}
    variants = [("symvit_digits_patch8_32", "symvit"), ("rpc_symvit_digits_patch8_32", "rpc_symvit"),
                ("rpc_symvit_digits_patch8_32", "symvit")]
    for i, (model, ckpt) in enumerate(variants):
        for argv in separate_commands(model, str(CKPT / f"{ckpt}_digits.safetensors"), str(tmp_path / f"m{i}")):
            code, _, err = cli(capsys, *argv)
            assert code == 0, err
        separate.update({s.key(): r for s, r, _ in ResultsStore(tmp_path / f"m{i}").iter_cells()})
    assert set(spec_cells) == set(separate) and len(separate) == 3 * (1 + 4 * 2 + 12 + 2)
    for key, (records, meta) in spec_cells.items():
        assert records.equals(separate[key]), key
        spec_info = meta["provenance"]["spec"]
        assert spec_info["name"] == "digits" and len(spec_info["sha256"]) == 64
    # the outputs: tables in Markdown and LaTeX, the report
    tables = tmp_path / "spec" / "tables"
    rows = [line.split("|")[1].strip() for line in (tables / "paper-attacks.md").read_text().splitlines()[2:5]]
    assert rows[0] == "SymViT"  # spec order; the two RPC rows are told apart by their weights
    assert all(r.startswith("RPC-SymViT (4 iter/layer 1), weights ") for r in rows[1:])
    assert "± " in (tables / "paper-attacks.md").read_text()  # PGD over two seeds
    assert "Threat model pixel" in (tables / "attacks.tex").read_text()
    assert (tmp_path / "spec" / "report.md").is_file()
    # compare pairs the models' cells seed by seed (per-seed records)
    from robustbench_rpc.results.compare import compare

    frame = compare(tmp_path / "spec", resamples=20)
    pgd = frame[(frame["name"] == "pgd") & ((frame["eps"] - 4 / 255).abs() < 1e-9)]
    assert sorted(json.loads(v)["seed"] for v in pgd["variant"]) == [0, 0, 1, 1]  # 2 models x 2 seeds
    # a second run resumes: nothing is recomputed
    code, printed, _ = cli(capsys, "run", str(spec_path), "--out", str(tmp_path / "spec"), "-q")
    assert code == 0 and printed.count("0 cell(s) computed") == 9


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


MODEL = f'[[models]]\nmodel = "rpc_symvit_digits_patch8_32"\ncheckpoint = "{CKPT}/rpc_symvit_digits.safetensors"\n'
ATTACK = '[[attacks]]\nattack = "pgd"\neps = "4/255"\ndataset = "digits"\n'


@pytest.mark.parametrize(("text", "message"), [
    ("[run]\nbatch_size = 8\nseedz = 1\n" + MODEL + ATTACK,
     "Unknown key 'seedz' (did you mean 'seed', 'seeds'?) at run.seedz in bad.toml (line 3); expected one of: device,"),
    (MODEL + "[[attacks]]\nattack = \"pgd\"\neps = \"4/255\"\nstep = 3\n",
     "Unknown key 'step' at attacks[0].step in bad.toml (line 7); expected one of: attack, protocol, eps,"),
    ("[run]\nbatch_size = \"8\"\n" + MODEL + ATTACK,
     "run.batch_size in bad.toml (line 2) must be an integer, got '8'."),
    (MODEL + ATTACK.replace('eps = "4/255"', 'eps = "4/255"\nnorm = "L1"'),
     "The attack at attacks[0].eps in bad.toml (line 6): Attack 'pgd' does not support the L1 norm"),
    (MODEL + ATTACK.replace('"pgd"', '"sld"').replace('"4/255"', '"4/255"\nnorm = "Linf"'),
     "The attack at attacks[0].eps in bad.toml (line 6): Attack 'sld' does not support the Linf norm; it "
     "supports L1."),
    (MODEL + ATTACK.replace('"4/255"', '"8"'),
     "The attack at attacks[0].eps in bad.toml (line 6): eps '8' is above 1, but Linf budgets are in pixel units"),
    (MODEL + "[[attacks]]\nattack = \"pgd\"\n", "Missing key 'eps' at attacks[0] in bad.toml (line 4)"),
    ("[[models]]\nmodel = \"no_such_model\"\n" + ATTACK,
     "The model at models[0].model in bad.toml (line 2) does not load: Unknown model 'no_such_model'"),
    (MODEL + "grid = { rpc_iterz = [1, 2] }\n" + ATTACK,
     "The grid over rpc_iterz at models[0].grid in bad.toml (line 4) gives rpc_symvit_digits_patch8_32 options "
     "it does not take: "),
    ("[[models]]\nmodel = \"symvit_digits_patch8_32\"\ngrid = { rpc_iters = [1, 2] }\n" + ATTACK,
     "The grid over rpc_iters at models[0].grid in bad.toml (line 3) gives symvit_digits_patch8_32 options it "
     "does not take: symvit_digits_patch8_32 uses plain symmetric attention and takes no rpc_iters"),
    (MODEL + "grid = { rpc_iters = [] }\n" + ATTACK,
     "models[0].rpc_iters in bad.toml (line 4) (a grid) must be a non-empty list, got []."),
    (MODEL + ATTACK + "[outputz]\n", "Unknown key 'outputz' (did you mean 'outputs'?) at outputz in bad.toml (line 8)"),
    ("[run\n", "Cannot read spec"),
    (MODEL + '[[attacks]]\nprotocol = "paper"\neps = "4/255"\n',
     "attacks[0].eps in bad.toml (line 6) is set by the protocol; drop it"),
])
def test_bad_specs_get_one_sentence_with_key_and_line(tmp_path, text, message):
    with pytest.raises(UserError) as info:
        validate(load_spec(write(tmp_path, text)))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_grid_expands_to_variants_with_labels(tmp_path):
    spec = load_spec(write(tmp_path, MODEL + 'label = "RPC ({rpc_iters} iter, {rpc_layers})"\n'
                           'grid = { rpc_iters = [2, 4], rpc_layers = ["first", "all"] }\n' + ATTACK))
    assert [v.label for v in spec.models] == ["RPC (2 iter, first)", "RPC (2 iter, all)", "RPC (4 iter, first)",
                                              "RPC (4 iter, all)"]
    assert spec.models[3].options == {"rpc_iters": 4, "rpc_layers": "all"}
    assert len(validate(spec)) == 4  # one attack call per variant


def test_cli_run_errors(tmp_path, capsys):
    code, _, err = cli(capsys, "run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o"))
    assert code != 0 and "Spec file" in err and "does not exist" in err and "Traceback" not in err
    path = write(tmp_path, MODEL + ATTACK)
    code, _, err = cli(capsys, "run", str(path))
    assert code != 0 and "run needs --out DIR" in err


def test_shipped_paper_spec_is_valid():
    spec = load_spec(SPECS / "paper-tiny.toml")
    labels = [(v.model, v.options.get("rpc_iters"), v.options.get("rpc_layers")) for v in spec.models]
    assert labels == [("symvit_tiny_patch16_224", None, None), ("rpc_symvit_tiny_patch16_224", 4, "first"),
                      ("rpc_symvit_tiny_patch16_224", 5, "first"), ("rpc_symvit_tiny_patch16_224", 6, "first"),
                      ("rpc_symvit_tiny_patch16_224", 2, "all")]
    assert [a["protocol"] for a in spec.attacks] == ["paper", "paper-pixel"]
    assert len(validate(spec, load_models=False)) == 5 * 3
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)


def test_spec_run_killed_at_random_moments_and_resumed_gives_the_same_records(tmp_path, capsys):
    import os
    import random
    import subprocess
    import sys
    import time

    spec_path = write(tmp_path, '[run]\nseeds = [0, 1]\nbatch_size = 4\n[evaluate]\nsuite = ["digits", "digits-c"]\n'
                      'corruptions = "gaussian_noise"\nseverities = "1,3"\nlimit = 12\n[[models]]\n'
                      f'model = "symvit_digits_patch8_32"\ncheckpoint = "{CKPT}/symvit_digits.safetensors"\n'
                      '[[attacks]]\nattack = ["pgd", "fgsm"]\neps = "2/255,4/255"\noptions = { "pgd.steps" = 3 }\n'
                      'dataset = "digits"\nlimit = 8\n[outputs]\nreport = false\nplots = false\n')
    code, _, err = cli(capsys, "run", str(spec_path), "--out", str(tmp_path / "ref"), "-q")
    assert code == 0, err
    reference = {s.key(): r for s, r, _ in ResultsStore(tmp_path / "ref").iter_cells()}
    env = {**os.environ, "PYTHONPATH": str(SPECS.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "robustbench_rpc", "run", str(spec_path), "--out", str(tmp_path / "killed"), "-q"]
    rng = random.Random(19)
    cells = tmp_path / "killed" / "cells"
    for _ in range(3):  # kill after the next finished cell, at a random moment within the following cell's work
        before = len(list(cells.glob("*.parquet"))) if cells.is_dir() else 0
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if cells.is_dir() and len(list(cells.glob("*.parquet"))) > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        process.kill()
        process.wait()
    code, _, err = cli(capsys, "run", str(spec_path), "--out", str(tmp_path / "killed"), "-q")
    assert code == 0, err
    resumed = {s.key(): r for s, r, _ in ResultsStore(tmp_path / "killed").iter_cells()}
    assert set(resumed) == set(reference) and len(reference) == 1 + 2 * 2 + 4 + 2  # corruptions x seeds
    for key, records in reference.items():
        assert resumed[key].equals(records), key


def test_dry_run_prints_the_plan_with_an_estimate(capsys):
    code, printed, err = cli(capsys, "run", str(SPECS / "digits.toml"), "--dry-run")
    assert code == 0, err
    lines = printed.splitlines()
    assert lines[0].startswith("Plan of ") and "(digits, sha256 " in lines[0]
    assert sum("attack pgd,fgsm eps 1/255:4/255" in line and " 12 " in line for line in lines) == 3
    assert re.search(r"^9 call\(s\), 69 cell\(s\), 5100 image evaluation\(s\), estimated [0-9.]+ (s|min|h) "
                     r"\(from a throughput probe on this machine\)$", lines[-1])
