"""Pretrained weights from the Hugging Face Hub cache (issue 16).

These machines cannot reach the Hub, so each test builds a real local Hub cache in the layout
huggingface_hub reads (blobs named by content hash, snapshots/<commit>/<file> links, refs/main)
and goes through huggingface_hub itself, offline; timm reads the same cache as a check of it.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import FORWARD_TOL, add_to_hub_cache, rel_diff, run_cli, safetensors_bytes, timm_model

import swin_jax
import swin_torch_ref
from swin_jax import hub, pretrained
from swin_jax.checkpoint_io import read_state_dict
from swin_jax.configs import PRETRAINED, get_pretrained_config, list_pretrained

VIT_TAG = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # the smallest model with an ImageNet-1k head
SWIN = "swin_tiny_patch4_window7_224"


def timm_vit_state(seed: int, head_scale: float = 0.05) -> dict[str, np.ndarray]:
    """A timm vit_tiny state_dict at O(1) scale; the classifier is scaled down so the softmax
    spreads over many classes (a top-5 that is not one class and four ties at zero)."""
    model = swin_torch_ref.randomize_parameters(timm_model("vit_tiny_patch16_224"), seed)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    state["head.weight"] *= head_scale
    return state


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """An empty Hub cache and converted-params folder that huggingface_hub (offline) and
    swin_jax use for this module; `env` points a child process at them."""
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("hf_home")
    cache, converted = root / "hub", root / "swin_jax"
    cache.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        patch.setenv("SWIN_JAX_CACHE", str(converted))
        env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "SWIN_JAX_CACHE": str(converted)}
        yield SimpleNamespace(cache=cache, converted=converted, env=env)


@pytest.fixture(scope="module")
def vit_tag(hub_cache):
    """VIT_TAG in the cache as timm publishes it: model.safetensors and timm's config.json."""
    import timm.models._hub as timm_hub

    state = timm_vit_state(seed=1)
    config = hub_cache.cache.parent / "vit_config.json"
    timm_hub.save_config_for_hf(timm_model("vit_tiny_patch16_224"), config)
    add_to_hub_cache(hub_cache.cache, PRETRAINED[VIT_TAG].hf_hub_id,
                     {"model.safetensors": safetensors_bytes(state), "config.json": config.read_bytes()})
    return state


@pytest.fixture(scope="module")
def swin_params():
    from conftest import randomize_jax_params

    model = swin_jax.create_model(SWIN)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), swin_jax.param_shapes(model))  # no compiled init
    return model, randomize_jax_params(zeros, seed=2)


def assert_trees_equal(a, b) -> None:
    flat_a, flat_b = (dict(jax.tree_util.tree_flatten_with_path(t)[0]) for t in (a, b))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        assert np.array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key])), key


def no_partial_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.name.endswith((".tmp", ".incomplete"))]


# ----- the registry


def test_registry_is_timms_pretrained_configs():
    """Every tag timm publishes on the Hub for our architectures, with its repository, classes,
    input size, interpolation, crop, mean, std and label set; the default tag is timm's."""
    import timm.models._registry as registry
    from timm.data import infer_imagenet_subset

    theirs = {}
    for architecture in swin_jax.list_models():
        tags = registry._model_with_tags[architecture]
        theirs.update({t: registry.get_pretrained_cfg(t) for t in tags if registry.get_pretrained_cfg(t).hf_hub_id})
        assert get_pretrained_config(architecture).name == f"{architecture}.{timm_default_tag(architecture)}"
    assert list_pretrained() == list(theirs)  # the same tags, each architecture's in timm's order
    for name, cfg in theirs.items():
        ours = get_pretrained_config(name)
        assert ours.hf_hub_id == cfg.hf_hub_id
        assert ours.num_classes == cfg.num_classes
        assert tuple(swin_jax.get_config(ours.architecture).img_size) == tuple(cfg.input_size[1:])
        assert (ours.data.interpolation, ours.data.crop_pct) == (cfg.interpolation, cfg.crop_pct)
        assert cfg.crop_mode == "center"
        assert ours.data.mean == tuple(cfg.mean) and ours.data.std == tuple(cfg.std)
        assert ours.labels == infer_imagenet_subset(cfg.to_dict())
        assert ours.license == cfg.license
        assert swin_jax.get_data_config(name) == ours.data


def timm_default_tag(architecture: str) -> str:
    import timm.models._registry as registry

    return registry.get_pretrained_cfg(architecture).tag


def test_unknown_names_are_one_clear_error():
    with pytest.raises(ValueError, match=r"no pretrained weights 'swin_tiny_patch4_window7_224\.nope'.*ms_in1k"):
        get_pretrained_config("swin_tiny_patch4_window7_224.nope")
    with pytest.raises(ValueError, match=r"no pretrained weights 'vit_tiny_patch16_224\.dino'.*augreg_in21k"):
        swin_jax.load_pretrained("vit_tiny_patch16_224.dino")
    with pytest.raises(ValueError, match="unknown model 'swin_teeny"):
        get_pretrained_config("swin_teeny.ms_in1k")
    with pytest.raises(ValueError, match="ORG/REPO"):
        hub.parse_hub_name("hf-hub:just-a-name")
    assert hub.parse_hub_name("weights/model.pth") is None  # a file path is not a Hub name
    assert hub.parse_hub_name("hf-hub:org/repo/sub/w.pth@v1") == hub.HubWeights(
        "hf-hub:org/repo/sub/w.pth@v1", "org/repo", "sub/w.pth", "v1")


@pytest.mark.parametrize("label_set", ["imagenet-1k", "imagenet-12k", "imagenet-22k", "imagenet-21k-goog"])
def test_class_names_are_timms(label_set):
    from timm.data import ImageNetInfo

    from swin_jax.labels import class_names, synsets

    info = ImageNetInfo(label_set)
    assert synsets(label_set) == [info.index_to_label_name(i) for i in range(info.num_classes())]
    assert class_names(label_set) == [info.index_to_description(i) for i in range(info.num_classes())]


# ----- loading through the cache


def test_timm_tag_loads_exactly_and_converts_once(hub_cache, vit_tag, monkeypatch):
    """load_pretrained(tag) equals from_torch of the cached file bit for bit; the second load
    reads the converted params back; a new version of the file is converted anew. timm reads the
    same cache to the same tensors (the cache is the real thing)."""
    import timm

    from swin_jax.convert import from_torch

    arch = PRETRAINED[VIT_TAG].architecture
    file = hub.weights_file(hub.parse_hub_name(VIT_TAG))
    assert file.is_relative_to(hub_cache.cache)
    expected = from_torch(swin_jax.create_model(arch), read_state_dict(file), "timm")
    model, params = swin_jax.load_pretrained(VIT_TAG, progress=False)
    assert model.config.num_classes == 1000
    assert_trees_equal(params, expected)
    converted = list(hub_cache.converted.rglob("*.msgpack"))
    assert len(converted) == 1

    theirs = timm.create_model(VIT_TAG, pretrained=True).state_dict()  # offline, from our cache
    assert all(np.array_equal(theirs[k].numpy(), v) for k, v in vit_tag.items())

    calls = []
    import swin_jax.convert as convert_module

    real_from_torch = convert_module.from_torch
    monkeypatch.setattr(convert_module, "from_torch", lambda *a, **k: calls.append(a) or real_from_torch(*a, **k))
    _, again = swin_jax.load_pretrained(VIT_TAG, progress=False)
    assert calls == [] and list(hub_cache.converted.rglob("*.msgpack")) == converted
    assert_trees_equal(again, expected)

    # the repository gets a new commit with other weights: converted again, the old conversion goes
    new_state = timm_vit_state(seed=5)
    add_to_hub_cache(hub_cache.cache, PRETRAINED[VIT_TAG].hf_hub_id, {"model.safetensors": safetensors_bytes(new_state)})
    _, updated = swin_jax.load_pretrained(VIT_TAG, progress=False)
    assert len(calls) == 1
    assert_trees_equal(updated, real_from_torch(swin_jax.create_model(arch), new_state, "timm"))
    assert len(list(hub_cache.converted.rglob("*.msgpack"))) == 1
    assert no_partial_files(hub_cache.cache, hub_cache.converted) == []
    # restore the first version for the other tests
    add_to_hub_cache(hub_cache.cache, PRETRAINED[VIT_TAG].hf_hub_id,
                     {"model.safetensors": safetensors_bytes(vit_tag)})


def test_overrides_resize_and_new_head(hub_cache, vit_tag):
    """img_size resamples the position embedding as from_torch does; another class count gets a
    fresh head and keeps every other tensor; the conversion cache is per config."""
    from swin_jax.convert import from_torch

    model, params = swin_jax.load_pretrained(VIT_TAG, img_size=(160, 128), num_classes=7, seed=3, progress=False)
    assert model.config.img_size == (160, 128) and model.config.num_classes == 7
    source = swin_jax.create_model("vit_tiny_patch16_224", img_size=(160, 128))
    expected = from_torch(source, vit_tag, "timm")
    assert_trees_equal({k: v for k, v in params.items() if k != "head"},
                       {k: v for k, v in expected.items() if k != "head"})
    assert params["head"]["kernel"].shape == (192, 7)
    assert_trees_equal(params["head"], swin_jax.fit_head(model, expected, seed=3)["head"])
    _, headless = swin_jax.load_pretrained(VIT_TAG, num_classes=0, progress=False)
    assert "head" not in headless
    plain, remat = (pretrained.converted_path(swin_jax.resolve_pretrained(VIT_TAG), swin_jax.get_config(
        "vit_tiny_patch16_224", remat=r)) for r in ("none", "block"))
    assert plain == remat  # the same params, one conversion


@pytest.mark.parametrize("layout", ["hf", "torchvision", "timm_repo"])
def test_hub_repositories_of_each_layout(hub_cache, swin_params, layout, tmp_path):
    """hf-hub:ORG/REPO holding a transformers Swin (config.json + model.safetensors), a
    torchvision Swin (a .pth named in the name) or a timm repository (config.json naming the
    architecture and class count): loaded params equal from_torch of the file bit for bit."""
    import transformers

    from swin_jax.convert import from_torch, to_torch

    model, params = swin_params
    if layout == "hf":
        state = to_torch(model, params, "hf")
        config = transformers.SwinConfig(image_size=224, num_labels=1000).to_json_string()
        files = {"model.safetensors": safetensors_bytes(state), "config.json": config.encode()}
        name, arch = "hf-hub:test-org/swin-tiny-hf", SWIN
    elif layout == "torchvision":
        state = to_torch(model, params, "torchvision")
        buffer = io.BytesIO()
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, buffer)
        files = {"weights/swin_t.pth": buffer.getvalue()}
        name, arch = "hf-hub:test-org/swin-t-torchvision/weights/swin_t.pth", SWIN
    else:
        vit = swin_torch_ref.randomize_parameters(timm_model("vit_tiny_patch16_224", num_classes=10), 4)
        state = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
        import timm.models._hub as timm_hub

        timm_hub.save_config_for_hf(vit, tmp_path / "config.json")
        files = {"model.safetensors": safetensors_bytes(state), "config.json": (tmp_path / "config.json").read_bytes()}
        name, arch = "hf-hub:test-org/vit-tiny-10", "vit_tiny_patch16_224"
    add_to_hub_cache(hub_cache.cache, "/".join(name.split(":")[1].split("/")[:2]), files)
    resolved = swin_jax.resolve_pretrained(name)
    loaded_model, loaded = swin_jax.load_pretrained(name, progress=False)
    assert resolved.architecture == arch and loaded_model.config.num_classes == resolved.num_classes
    assert_trees_equal(loaded, from_torch(loaded_model, read_state_dict(resolved.path)))
    if layout == "timm_repo":
        assert resolved.num_classes == 10 and resolved.data == swin_jax.get_data_config("vit_tiny_patch16_224.augreg_in21k")
    else:
        assert_trees_equal(loaded, params)


# ----- what goes wrong


def test_offline_and_not_cached_names_what_to_fetch(hub_cache):
    def listing() -> list:
        return sorted(p for folder in (hub_cache.converted, hub_cache.cache) if folder.exists()
                      for p in folder.rglob("*"))

    before = listing()
    with pytest.raises(hub.WeightsNotCachedError) as err:
        swin_jax.load_pretrained("swin_tiny_patch4_window7_224.ms_in22k", progress=False)
    text = str(err.value)
    assert "timm/swin_tiny_patch4_window7_224.ms_in22k/model.safetensors" in text and "HF_HUB_OFFLINE" in text
    assert "hf download timm/swin_tiny_patch4_window7_224.ms_in22k model.safetensors" in text
    with pytest.raises(hub.WeightsNotCachedError, match="test-org/absent/w.pth"):
        swin_jax.load_pretrained("hf-hub:test-org/absent/w.pth", progress=False)
    with pytest.raises(hub.WeightsNotCachedError,
                       match="neither test-org/absent/model.safetensors nor test-org/absent/pytorch_model.bin"):
        swin_jax.load_pretrained("hf-hub:test-org/absent", progress=False)
    assert listing() == before  # nothing written to either cache


def test_corrupted_files(hub_cache, vit_tag):
    """A truncated file in the Hub cache: one error naming it and how to fetch it again, nothing
    written to the converted cache. A damaged converted file is converted again."""
    data = safetensors_bytes(vit_tag)
    add_to_hub_cache(hub_cache.cache, "test-org/truncated", {"model.safetensors": data[: len(data) // 2]})
    before = sorted(hub_cache.converted.rglob("*"))
    with pytest.raises(ValueError, match=r"truncated or corrupted.*test-org/truncated.*--force-download"):
        swin_jax.load_pretrained("hf-hub:test-org/truncated", architecture="vit_tiny_patch16_224", progress=False)
    data = safetensors_bytes(vit_tag)
    add_to_hub_cache(hub_cache.cache, "test-org/truncated-too", {"weights/w.safetensors": data[:1000]})
    with pytest.raises(ValueError, match=r"hf download test-org/truncated-too weights/w\.safetensors --force"):
        swin_jax.load_pretrained("hf-hub:test-org/truncated-too/weights/w.safetensors",
                                 architecture="vit_tiny_patch16_224", progress=False)
    assert sorted(hub_cache.converted.rglob("*")) == before

    model, good = swin_jax.load_pretrained(VIT_TAG, progress=False)
    cached = pretrained.converted_path(swin_jax.resolve_pretrained(VIT_TAG), model.config)
    cached.write_bytes(cached.read_bytes()[:1000])
    _, again = swin_jax.load_pretrained(VIT_TAG, progress=False)
    assert_trees_equal(again, good)
    assert cached.stat().st_size > 1000 and no_partial_files(hub_cache.converted) == []


# ----- everywhere a checkpoint is accepted


def test_names_work_where_checkpoints_do(hub_cache, vit_tag, tmp_path):
    """`swin-jax inspect`, `convert` and `parity --checkpoint`, and the trainer's `--init`, take
    pretrained weights' names and read them from the cache."""
    from swin_jax.parity import check_parity
    from train.config import TrainConfig
    from train.classification import image_preparation, initial_params

    result = run_cli("swin-jax", "inspect", VIT_TAG, env=hub_cache.env)
    assert result.returncode == 0, result.stderr
    assert "timm" in result.stdout and "vit_tiny_patch16_224" in result.stdout
    out = tmp_path / "vit.msgpack"
    result = run_cli("swin-jax", "convert", VIT_TAG, out, "--model", "vit_tiny_patch16_224", env=hub_cache.env)
    assert result.returncode == 0, result.stderr
    _, expected = swin_jax.load_pretrained(VIT_TAG, progress=False)
    assert_trees_equal(swin_jax.load_checkpoint(swin_jax.create_model("vit_tiny_patch16_224"), out), expected)

    assert image_preparation(TrainConfig(model="vit_small_patch16_224", init="vit_small_patch16_224.dino")).mean \
        == (0.485, 0.456, 0.406)  # DINO's weights were trained with ImageNet's mean, the model's default with 0.5
    assert image_preparation(TrainConfig(model="vit_small_patch16_224")).mean == (0.5, 0.5, 0.5)
    assert image_preparation(TrainConfig(model="vit_small_patch16_224", init="other.pth")).mean == (0.5, 0.5, 0.5)

    report = check_parity("vit_tiny_patch16_224", checkpoint=VIT_TAG, batch=1)
    assert report.passed and VIT_TAG in report.weights

    cfg = TrainConfig(model="vit_tiny_patch16_224", init=VIT_TAG)
    model = swin_jax.create_model("vit_tiny_patch16_224", num_classes=3)
    params = initial_params(cfg, model, log=lambda message: None)
    assert_trees_equal({k: v for k, v in params.items() if k != "head"},
                       {k: v for k, v in expected.items() if k != "head"})
    assert params["head"]["kernel"].shape == (192, 3)


# ----- predict


def write_test_image(path: Path, seed: int = 0, size=(333, 250)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([x / size[0], y / size[1], (x + y) / sum(size)], -1) * 200
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)
    return path


def test_predict_is_timms_top5(hub_cache, vit_tag, tmp_path):
    """`swin-jax predict`: the top-5 indices and probabilities (1e-5) of timm with the same weights
    and its resolve_data_config + create_transform; names from the shipped ImageNet-1k table."""
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    images = [write_test_image(tmp_path / f"img{i}.jpg", seed=i, size=s) for i, s in enumerate([(333, 250), (200, 300)])]
    result = run_cli("swin-jax", "predict", *images, "--model", VIT_TAG, "--json", env=hub_cache.env)
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)

    model = timm_model(VIT_TAG)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in vit_tag.items()})
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
        probs = model(batch).softmax(-1).numpy()
    info = ImageNetInfo("imagenet-1k")
    for entry, p in zip(ours, probs, strict=True):
        top = np.argsort(-p)[:5]
        assert [c["index"] for c in entry["top"]] == top.tolist()
        assert np.allclose([c["probability"] for c in entry["top"]], p[top], rtol=0, atol=1e-5)
        assert [c["name"] for c in entry["top"]] == [info.index_to_description(i) for i in top]
        assert p[top[0]] < 0.9  # a spread distribution: the order of all five is tested

    text = run_cli("swin-jax", "predict", images[0], "--model", VIT_TAG, "--top", "3", env=hub_cache.env)
    assert text.returncode == 0 and ImageNetInfo("imagenet-1k").index_to_description(int(np.argmax(probs[0]))) in text.stdout

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    result = run_cli("swin-jax", "predict", images[0], bad, "--model", VIT_TAG, env=hub_cache.env)
    assert result.returncode == 2 and f"cannot read image {bad}" in result.stderr
    assert "Traceback" not in result.stderr


def test_distilled_deit_tag_loads_and_refits_both_heads(hub_cache):
    """A DeiT distilled tag from the cache equals timm's model on the same file; another class
    count gets fresh `head` and `head_dist` and keeps the distillation token."""
    name = "deit_tiny_distilled_patch16_224.fb_in1k"
    theirs = swin_torch_ref.randomize_parameters(timm_model("deit_tiny_distilled_patch16_224"), seed=4)
    state = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    add_to_hub_cache(hub_cache.cache, PRETRAINED[name].hf_hub_id, {"model.safetensors": safetensors_bytes(state)})
    model, params = swin_jax.load_pretrained(name, progress=False)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = theirs(images).numpy()
    ours = model.apply({"params": params}, jnp.asarray(images.permute(0, 2, 3, 1).numpy()))
    assert rel_diff(expected, ours) <= FORWARD_TOL
    refit, params10 = swin_jax.load_pretrained(name, num_classes=10, progress=False)
    assert params10["head"]["kernel"].shape == params10["head_dist"]["kernel"].shape == (192, 10)
    assert np.array_equal(params10["dist_token"], params["dist_token"])
    assert not np.array_equal(params10["head"]["kernel"], params10["head_dist"]["kernel"])  # two fresh draws
