"""The ``models`` commands and the CLI's error handling, as a user sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from clirun import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
SYMVIT_CKPT = FIXTURES / "symvit" / "symvit_parity_checkpoint.pth"



def test_models_list_json_has_both_families(capsys):
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["symvit_tiny_patch16_224"]["params"] == 5272744
    assert rows["rpc_symvit_tiny_patch16_224"]["attention"] == "rpc"
    assert rows["fan_tiny_12_p16_224"]["family"] == "fan"
    assert rows["rpc_fan_tiny_12_p16_224"]["attention"] == "rpc"


def test_models_info_reports_checkpoint_and_rpc(capsys):
    code, out, _ = run_cli(capsys, "models", "info", "rpc_symvit_tiny_patch16_224", "--checkpoint", str(SYMVIT_CKPT),
                           "--rpc-layers", "all", "--rpc-iters", "2", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["checkpoint_sha256"] == "b79c75133b3620381bc2fae937e6108e05e54595f5c4cc9c755731eece73ed58"
    assert info["rpc"] == "PAP n=2 lambda=4 in blocks [0, 1, 2] (code threshold)"
    assert info["architecture"] == {"embed_dim": 72, "depth": 3, "num_classes": 10, "num_features": 72,
                                    "num_heads": 3, "patch_size": [16, 16]}
    assert info["num_params"] == 231202
    assert info["key_compatibility"].startswith("all keys")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["models", "info", "symvit_tny"], "Unknown model 'symvit_tny' (did you mean 'symvit_tiny_patch16_224'"),
        (["models", "info", "rpc_symvit_tiny_patch16_224", "--rpc-iters", "0"], "rpc_iters must be an integer >= 1"),
        (["models", "info", "rpc_symvit_tiny_patch16_224", "--rpc-lambda", "0"], "rpc_lambda must be > 0"),
        (["models", "info", "rpc_symvit_tiny_patch16_224", "--rpc-layers", "12"], "index 12 is out of range"),
        (["models", "info", "symvit_tiny_patch16_224", "--rpc-iters", "2"], "use rpc_symvit_tiny_patch16_224"),
        (["models", "info", "symvit_tiny_patch16_224", "-c", "/nonexistent.pth"], "does not exist"),
        (["models", "info", "fan_tiny_12_p16_224", "-c", str(SYMVIT_CKPT)], "looks like a symvit checkpoint"),
        (["models", "info", "symvit_tiny_patch16_224", "-c", str(SYMVIT_CKPT), "--num-classes", "1000"],
         "10-class head but 1000 classes"),
    ],
)
def test_bad_input_is_one_sentence_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("Error: ") and err.count("\n") == 1


def test_checkpoint_needing_trust_is_refused_then_loads_with_trust(tmp_path, capsys):
    import torch

    state = torch.load(SYMVIT_CKPT, weights_only=False, map_location="cpu")
    state["extra"] = Fraction(1, 3)  # an arbitrary pickled object: needs trust to unpickle
    path = tmp_path / "needs_trust.pth"
    torch.save(state, path)
    code, _, err = run_cli(capsys, "models", "info", "symvit_tiny_patch16_224", "-c", str(path))
    assert code == 2 and "--trust-checkpoint" in err
    code, out, _ = run_cli(capsys, "models", "info", "symvit_tiny_patch16_224", "-c", str(path),
                           "--trust-checkpoint", "--json")
    assert code == 0 and json.loads(out)["num_params"] == 231202


def test_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    code, _, err = run_cli(capsys, "models", "info", "symvit_tiny_patch16_224", "-c", str(path))
    assert code == 2 and "is not a PyTorch checkpoint" in err


def test_help_does_not_import_torch():
    code = ("import sys; from robustbench_rpc.cli.app import app; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'pandas' not in sys.modules, 'pandas imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "robustbench_rpc", "models", "info", "nope_model"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: Unknown model 'nope_model'")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["evaluate", "--suite", "digits"], ["evaluate", "-m", "x", "--bogus"],
                                  ["evaluate", "-m", "x", "--batch-size", "abc"], ["nosuchcmd"]])
def test_usage_errors_exit_2_without_traceback(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err and ("Usage" in err or "No such command" in err)
