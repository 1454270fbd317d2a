"""Bad input never costs the user a file: no command writes over one of its own inputs (a link to
it counts), and a training run never mixes with or replaces another's without being told to."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import swin_jax
from conftest import PROGRAMS, ROOT, run_cli
from swin_jax import cli
from swin_jax.arguments import same_file
from train.loop import main as train_main

VIT = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory) -> Path:
    model = swin_jax.create_model(VIT, img_size=32, depth=1, num_classes=3)
    return swin_jax.save_checkpoint(model, swin_jax.init_params(model, 0), tmp_path_factory.mktemp("vit") / "ck.safetensors")


def _links(folder: Path, target: Path) -> dict[str, Path]:
    """The same file under three names: itself, a symbolic link, a hard link."""
    folder.mkdir(exist_ok=True)
    (folder / "symlink.safetensors").symlink_to(target)
    os.link(target, folder / "hardlink.safetensors")
    return {"itself": target, "symlink": folder / "symlink.safetensors", "hardlink": folder / "hardlink.safetensors"}


def _error_line(status: int, out: str, err: str) -> str:
    lines = [line for line in (out + err).splitlines() if "error:" in line]
    assert status == 2 and len(lines) == 1 and "Traceback" not in out + err, out + err
    return lines[0]


def test_same_file_sees_links(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    for name, path in _links(tmp_path / "links", a).items():
        assert same_file(path, a), name
    assert not same_file(tmp_path / "new", a) and same_file(tmp_path / "new", tmp_path / "." / "new")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert not same_file(loop, a)  # a symlink loop leads to no file


@pytest.mark.parametrize("name", ["itself", "symlink", "hardlink"])
def test_no_command_writes_over_its_input(vit_file, tmp_path, capsys, name):
    """`validate --predictions` and `convert OUTPUT` onto the checkpoint they read: refused before
    any work, the checkpoint unchanged, no temp file left."""
    target = tmp_path / "ck.safetensors"
    target.write_bytes(vit_file.read_bytes())
    before = target.read_bytes()
    output = _links(tmp_path / "links", target)[name]
    data = tmp_path / "data" / "a"
    data.mkdir(parents=True)
    commands = {
        "validate": ["validate", VIT, "--checkpoint", target, "--data", tmp_path / "data", "--predictions", output],
        "convert": ["convert", target, output, "--model", VIT],
    }
    for command, argv in commands.items():
        status = cli.main([str(a) for a in argv])
        out = capsys.readouterr()
        line = _error_line(status, out.out, out.err)
        assert "is the same file as" in line and "refusing to write over an input" in line, line
        assert target.read_bytes() == before, command
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == [], leftovers


def _train(capsys, out: Path, *extra) -> tuple[int, str, str]:
    status = train_main(["--preset", "digits", "--out-dir", str(out), *map(str, extra)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_run_folder_of_another_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "120").mkdir(parents=True)
    (out / "metrics.csv").write_text("earlier run\n")
    line = _error_line(*_train(capsys, out))
    assert "already holds a run's checkpoints (steps 120)" in line and "--resume" in line and "--overwrite" in line
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["checkpoints", "checkpoints/120",
                                                                             "metrics.csv"]
    assert (out / "metrics.csv").read_text() == "earlier run\n"
    line = _error_line(*_train(capsys, out, "--resume", "--overwrite"))
    assert "pass one of them" in line


def test_resume_without_a_checkpoint_is_refused_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    line = _error_line(*_train(capsys, out, "--resume"))
    assert "holds no checkpoint to resume from" in line and not out.exists()


def test_the_export_never_writes_over_the_init_file(tmp_path, capsys, vit_file):
    out = tmp_path / "run"
    out.mkdir()
    init = out / "model.safetensors"
    init.write_bytes(vit_file.read_bytes())
    line = _error_line(*_train(capsys, out, "--init", init, "--model", VIT))
    assert "is the same file as --init" in line and init.read_bytes() == vit_file.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


def test_overwrite_replaces_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "999").mkdir(parents=True)
    result = run_cli("train", "--preset", "digits", "--out-dir", out, "--overwrite", "--max-steps", 2,
                     "--ckpt-every", 2, "--no-export")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


OUT_OF_RANGE = [  # (command line, the flag the one error line names)
    (["parity", VIT, "--batch", "0"], "--batch"),
    (["parity", VIT, "--tolerance", "nan"], "--tolerance"),
    (["parity", VIT, "--tolerance", "-1e-5"], "--tolerance"),
    (["parity", VIT, "--img-size", "0", "0"], "--img-size"),
    (["convert", "a.pth", "b.msgpack", "--model", VIT, "--window-size", "0"], "--window-size"),
    (["convert", "a.pth", "b.msgpack", "--model", VIT, "--img-size", "32", "abc"], "--img-size"),
    (["predict", "x.png", "--model", VIT, "--top", "-3"], "--top"),
    (["predict", "x.png", "--model", VIT, "--batch", "0"], "--batch"),
    (["bench", VIT, "--batch", "0"], "--batch"),
    (["bench", VIT, "--repeats", "0"], "--repeats"),
    (["bench", "--input", "--workers", "-1"], "--workers"),
    (["validate", VIT, "--checkpoint", "c.pth", "--data", "d", "--batch-size", "0"], "--batch-size"),
    (["validate", VIT, "--checkpoint", "c.pth", "--data", "d", "--crop-pct", "nan"], "--crop-pct"),
    (["validate", VIT, "--checkpoint", "c.pth", "--data", "d", "--workers", "-1"], "--workers"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--accum-steps", "0"], "--accum-steps"),
    (["train", "--ema-decay", "2"], "--ema-decay"),
    (["train", "--keep", "0"], "--keep"),
    (["train", "--workers", "-1"], "--workers"),
    (["train", "--num-processes", "0"], "--num-processes"),
    (["train", "--val-split", "1.5"], "--val-split"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--img-size", "0", "0"], "--img-size"),
    (["train", "--model-arg", "embed_dim"], "--model-arg"),
]


@pytest.mark.parametrize("argv,flag", OUT_OF_RANGE, ids=[" ".join(a[:1] + a[-2:]) for a, _ in OUT_OF_RANGE])
def test_out_of_range_arguments_are_one_line_naming_the_flag(argv, flag, capsys):
    """Refused by the flag's type before anything is read, loaded or compiled: exit 2, one line."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, err
    assert f"argument {flag}" in lines[0] and lines[0].startswith("swin-jax "), lines[0]


@pytest.fixture(scope="module")
def swin_b_file(tmp_path_factory) -> Path:
    """A Swin-B-sized timm checkpoint (88M parameters, 350 MB)."""
    from safetensors.torch import save_file

    import swin_torch_ref

    path = tmp_path_factory.mktemp("swin_b") / "swin_b.safetensors"
    state = swin_torch_ref.create_model("swin_base_patch4_window7_224").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_convert_leaves_nothing_behind(swin_b_file, tmp_path, signum, status, word):
    """Ctrl-C or SIGTERM while `convert` writes its output: one line, exit 130 / 143, no output
    and no temporary file left (the signal is sent once the temporary file exists)."""
    out = tmp_path / "out" / "swin_b.msgpack"
    out.parent.mkdir()
    # A shell starts background jobs (`make test &`, nohup) with SIGINT ignored, and Python keeps
    # it ignored: the command would rightly never see Ctrl-C. The signal's default is restored
    # in the child, as a terminal's foreground job has it.
    proc = subprocess.Popen([*PROGRAMS["swin-jax"], "convert", str(swin_b_file), str(out), "--model",
                             "swin_base_patch4_window7_224"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(out.parent.glob(".*.tmp")):
        time.sleep(0.002)
    assert proc.poll() is None, proc.stdout.read()  # still writing
    proc.send_signal(signum)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == status, text
    assert f"swin-jax convert: {word}" in text and "Traceback" not in text, text
    assert list(out.parent.iterdir()) == []  # neither the output nor its temporary file


@pytest.mark.parametrize("extra,message", [
    (["--data", "/nonexistent/images"], "data directory not found"),
    (["--model", "swin_tinny"], "unknown model 'swin_tinny'"),
    (["--init", "/nonexistent/ck.pth"], "checkpoint file not found"),
    (["--batch-size", "5000"], "make no batch of 5000"),
])
def test_a_refused_run_creates_no_folder(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    line = _error_line(*_train(capsys, out, *extra))
    assert message in line and not out.exists(), line


@pytest.mark.parametrize("address,message", [
    ("notahost:99999", "port 99999 is out of range (1-65535)"),
    ("no-such-host.invalid:1234", "the host name 'no-such-host.invalid' does not resolve"),
    ("localhost", "--coordinator wants HOST:PORT"),
])
def test_a_bad_coordinator_is_one_line_not_a_hang(tmp_path, capsys, address, message):
    out = tmp_path / "run"
    line = _error_line(*_train(capsys, out, "--coordinator", address, "--num-processes", 2, "--process-id", 0))
    assert message in line and not out.exists(), line


def test_a_process_id_beyond_the_count_is_refused(tmp_path, capsys):
    line = _error_line(*_train(capsys, tmp_path / "run", "--coordinator", "127.0.0.1:1234", "--num-processes", 2,
                               "--process-id", 2))
    assert "--process-id 2 is not below --num-processes 2" in line


@pytest.mark.parametrize("workers", [1, 2])
def test_validate_leaks_no_shared_memory(tmp_path, workers):
    """Batches built in worker processes live in shared memory; none may outlive the run (Python's
    resource tracker warns of leaked segments at exit)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(70):  # 140 images: three batches of 64 at 224 x 224, the last one short
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    model = swin_jax.create_model(VIT, depth=1, num_classes=2)
    checkpoint = swin_jax.save_checkpoint(model, swin_jax.init_params(model, 0), tmp_path / "ck.safetensors")
    result = run_cli("swin-jax", "validate", VIT, "--checkpoint", checkpoint, "--data", tmp_path / "data",
                     "--model-arg", "depth=1", "--workers", workers)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "top-1" in result.stdout and "leaked" not in result.stderr and "Warning" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, vit_file) -> dict[str, Path]:
    """Checkpoint files that are wrong in one way each, and things that are not files."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("bad_files")
    good = load_file(str(vit_file))
    torch.save({}, folder / "empty.pth")
    torch.save({"a.b": torch.ones(1)}, folder / "odd.pth")
    np.savez(folder / "empty.npz")
    torch.save({k: (v * 100).to(torch.int8) for k, v in good.items()}, folder / "int8.pth")
    torch.save({**good, "head.weight": torch.tensor(1.0)}, folder / "scalar_head.pth")
    torch.save({k: v for k, v in good.items() if not k.startswith("patch_embed")}, folder / "partial.pth")
    (folder / "loop.pth").symlink_to(folder / "loop.pth")
    (folder / "dangling.pth").symlink_to(folder / "nowhere.pth")
    (folder / "folder.pth").mkdir()
    swin = swin_jax.create_model("swin_tiny_patch4_window7_224", embed_dim=24, depths=(1, 1), num_heads=(1, 2),
                                 patch_size=2, window_size=4, img_size=32, num_classes=3)
    swin_jax.save_checkpoint(swin, swin_jax.init_params(swin, 0), folder / "swin.safetensors")
    (folder / "a_file").write_text("not a folder")
    (folder / "data" / "a").mkdir(parents=True)
    return {p.name: p for p in folder.iterdir()} | {"/dev/null": Path("/dev/null")}


BAD_FILES = [  # (command line with {name} for a bad file, what the one line says)
    (["inspect", "{empty.pth}"], "holds no tensors (an empty dict)"),
    (["inspect", "{empty.npz}"], "holds no tensors"),
    (["convert", "{int8.pth}", "{out}", "--model", VIT], "weight tensor(s) of a dtype that cannot hold weights: "),
    (["inspect", "{scalar_head.pth}"], "the checkpoint's classifier head.weight has shape (), not (classes, features)"),
    (["convert", "{scalar_head.pth}", "{out}", "--model", VIT], "head.weight has shape ()"),
    (["inspect", "{partial.pth}"], "are not a whole model: it has no patch_embed.proj.weight"),
    (["inspect", "{loop.pth}"], "is a symbolic link loop"),
    (["inspect", "{dangling.pth}"], "which does not exist"),
    (["inspect", "{folder.pth}"], "is a folder, not a file"),
    (["inspect", "{/dev/null}"], "is not a regular file"),
    (["validate", VIT, "--checkpoint", "{swin.safetensors}", "--data", "{data}"],
     "holds a Swin Transformer V1 (swin family, timm layout), but vit_tiny_patch16_224 is a Vision Transformer"),
    (["validate", "nosuchmodel", "--checkpoint", "{swin.safetensors}", "--data", "{data}"], "unknown model 'nosuchmodel'"),
    (["convert", "{swin.safetensors}", "{out_npz}", "--model", "swin_tiny_patch4_window7_224", "--in-layout", "hf"],
     "checkpoint does not match the SwinTransformer model (hf layout)"),
    (["convert", "{odd.pth}", "{out_npz}", "--model", VIT, "--layout", "hf"],  # --layout names the output's
     "cannot tell the checkpoint's layout from its 1 keys (a.b); name it (--layout; convert's --in-layout"),
    (["train", "--data", "{a_file}"], "is a file, not an ImageFolder directory"),
    (["bench", VIT, "--json", "{folder.pth}"], "--json {folder.pth} is a folder; name a file to write"),
    (["predict", "{a_file}", "--model", VIT], "cannot read image {a_file}"),
    (["parity", VIT, "--checkpoint", "{empty.pth}"], "holds no tensors (an empty dict)"),
    (["convert", "{swin.safetensors}", "{out}", "--model", "swin_tiny_patch4_window7_224", "--img-size", "100000",
      "100000"], "--img-size 100000 100000 makes 625,000,000 tokens, whose arrays need about 447.0 GiB"),
    (["convert", "{swin.safetensors}", "{a_file}/x.msgpack", "--model", "swin_tiny_patch4_window7_224"],
     "is a file, so no folder can be made there"),
    (["validate", VIT, "--checkpoint", "{swin.safetensors}", "--data", "{data}", "--predictions", "{folder.pth}"],
     "--predictions {folder.pth} is a folder"),
]


@pytest.mark.parametrize("argv,message", BAD_FILES, ids=[f"{a[0]} {a[-1] if '{' in a[-1] else a[1]}" for a, _ in BAD_FILES])
def test_bad_files_are_one_line(bad_files, tmp_path, capsys, argv, message):
    names = {**{k: str(v) for k, v in bad_files.items()}, "out": str(tmp_path / "out.msgpack"),
             "out_npz": str(tmp_path / "out.npz")}
    argv = [re.sub(r"\{([^}]+)\}", lambda m: names[m[1]], a) for a in argv]
    if argv[0] == "train":
        argv += ["--out-dir", str(tmp_path / "run")]
    before = {p: p.read_bytes() for p in bad_files.values() if p.is_file() and not p.is_symlink()
              and p.parent != Path("/dev")}
    status = cli.main(argv)
    out = capsys.readouterr()
    line = _error_line(status, out.out, out.err)
    assert re.sub(r"\{([^}]+)\}", lambda m: names[m[1]], message) in line, line
    assert list(tmp_path.iterdir()) == []  # no output, no temp file, no run folder
    assert {p: p.read_bytes() for p in before} == before  # every input as it was


def test_nonfinite_weights_are_named(tmp_path, capsys, vit_file):
    import torch
    from safetensors.torch import load_file

    state = load_file(str(vit_file))
    state["blocks.0.mlp.fc2.bias"][3] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    model = swin_jax.create_model(VIT, img_size=32, depth=1, num_classes=3)
    with pytest.warns(UserWarning, match=r"1 weight tensor\(s\) hold NaN or inf: blocks.0.mlp.fc2.bias \(1 of 192\)"):
        swin_jax.load_checkpoint(model, path)


def test_an_unwritable_conversion_cache_is_a_warning(tmp_path, monkeypatch, vit_file):
    """SWIN_JAX_CACHE is only a cache: where it cannot be written, the weights load all the same."""
    from huggingface_hub import constants

    from conftest import add_to_hub_cache
    from swin_jax.pretrained import CacheWarning

    (tmp_path / "a_file").write_text("x")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SWIN_JAX_CACHE", str(tmp_path / "a_file" / "cache"))
    add_to_hub_cache(tmp_path / "hub", "someone/vit", {"model.safetensors": vit_file.read_bytes()})
    with pytest.warns(CacheWarning, match="going on without the cache"):
        model, params = swin_jax.load_pretrained("hf-hub:someone/vit", architecture=VIT, progress=False,
                                                 img_size=(32, 32), depth=1)
    expected = swin_jax.load_checkpoint(model, vit_file)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True))


def test_a_damaged_checkpoint_on_resume_is_one_line(tmp_path):
    out = tmp_path / "run"
    first = run_cli("train", "--preset", "digits", "--out-dir", out, "--max-steps", 2, "--ckpt-every", 2, "--no-export")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    for chunk in (out / "checkpoints" / "2" / "state" / "d").iterdir():
        chunk.write_bytes(np.random.default_rng(0).bytes(100))
    resumed = run_cli("train", "--preset", "digits", "--out-dir", out, "--max-steps", 4, "--ckpt-every", 2,
                      "--no-export", "--resume")
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 2 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"swin-jax train: error: cannot resume from {out}"), errors


@pytest.mark.slow
def test_sigterm_during_training_keeps_the_last_checkpoint(tmp_path):
    """A preemption: SIGTERM mid-run exits 143 naming the last good checkpoint, and --resume
    continues from it."""
    out = tmp_path / "run"
    proc = run_cli("train", "--preset", "digits", "--out-dir", out, "--max-steps", 400, "--ckpt-every", 2,
                   "--no-export", "--workers", 0, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (out / "checkpoints" / "4").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, text[-3000:]
    stopped = [line for line in text.splitlines() if line.startswith("stopped by SIGTERM at step ")]
    assert len(stopped) == 1 and "the last good checkpoint is step " in stopped[0], text[-3000:]
    last = int(stopped[0].split("the last good checkpoint is step ")[1].split()[0])
    assert last >= 4 and (out / "checkpoints" / str(last)).is_dir()
    assert "swin-jax train: terminated (SIGTERM)" in text and "Traceback" not in text
    resumed = run_cli("train", "--preset", "digits", "--out-dir", out, "--max-steps", last + 2, "--ckpt-every", 2,
                      "--no-export", "--workers", 0, "--resume")
    assert resumed.returncode == 0 and f"resumed from step {last}" in resumed.stdout, resumed.stdout[-2000:]


@pytest.mark.parametrize("index,message", [
    (0, "process 0 of 2: 0 of the other 1 processes joined at {address} within 1 s (--init-timeout); missing: 1"),
    (1, "process 1 of 2: no coordinator (process 0) answered at {address} within 1 s (--init-timeout)"),
])
def test_peers_that_never_come_are_one_line_after_the_timeout(tmp_path, capsys, index, message):
    """jax's own wait for the peers ends in a C++ abort: ours ends in one line, after --init-timeout."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    start = time.monotonic()
    line = _error_line(*_train(capsys, tmp_path / "run", "--coordinator", address, "--num-processes", 2,
                               "--process-id", index, "--init-timeout", 1))
    assert message.format(address=address) in line and time.monotonic() - start < 30, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option,message", [("embed_dim=abc", "option embed_dim='abc' wants a whole number"),
                                            ("no_such_option=1", "has no option(s) ['no_such_option']"),
                                            ("depths=abc", "depths='abc', num_heads=(3, 6)"),
                                            ("patch_size=0", "patch_size=0, window_size=4 is no valid config")])
def test_a_model_option_of_the_wrong_kind_is_one_line(tmp_path, capsys, option, message):
    line = _error_line(*_train(capsys, tmp_path / "run", "--model-arg", option))
    assert message in line and not (tmp_path / "run").exists(), line


def test_overwrite_keeps_the_earlier_run_when_the_new_one_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "120").mkdir(parents=True)
    line = _error_line(*_train(capsys, out, "--overwrite", "--model", "swin_tinny"))
    assert "unknown model 'swin_tinny'" in line and (out / "checkpoints" / "120").is_dir()


def test_an_out_dir_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    line = _error_line(*_train(capsys, tmp_path / "a_file" / "run"))
    assert "a_file is a file, so no folder can be made there" in line
    line = _error_line(*_train(capsys, tmp_path / "a_file"))
    assert "--out-dir" in line and "is a file; name a folder" in line


def test_the_rendezvous_refuses_a_peer_with_another_count():
    import socket
    import threading

    from swin_jax.arguments import InputError, rendezvous

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    errors = {}

    def coordinator():
        try:
            rendezvous(address, 2, 0, timeout=20)
        except InputError as err:
            errors["0"] = str(err)

    thread = threading.Thread(target=coordinator)
    thread.start()
    with pytest.raises(InputError, match="process 0 at .* refused it: --num-processes 3 there, 2 here"):
        rendezvous(address, 3, 1, timeout=20)
    thread.join(30)
    assert errors["0"].endswith("a process joined at " + address + " with --num-processes 3 there, 2 here")
