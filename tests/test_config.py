"""Config resolution and validation: parents, profiles, hardware presets, strict schema, the seed's settings in
`full`, stable hashing, and no torch import on the way."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cinelora.config import (CONFIGS_ROOT, INSTRUMENT_KINDS, PROFILES, ConfigError, config_diff, config_hash,
                             load_config, profile_choices)

ROOT = Path(__file__).resolve().parents[1]
LORA_R8 = ROOT / "experiments" / "lora_r8" / "config.yaml"
EXPERIMENTS = sorted(ROOT.glob("experiments/*/config.yaml"))


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(LORA_R8.read_text())
    mutate(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_experiment_config_loads_in_every_profile(path: Path, profile: str):
    kind = yaml.safe_load(path.read_text()).get("kind")
    if profile == "full" and (kind in INSTRUMENT_KINDS or kind == "search"):
        with pytest.raises(ConfigError, match="published weights take its place|the seed's settings are the recipe"):
            load_config(path, profile)  # nothing to build or choose at full
        return
    cfg = load_config(path, profile)
    assert cfg.name == path.parent.name and cfg.profile == profile


def test_full_profile_carries_the_seed_settings():
    cfg = load_config(LORA_R8, "full")
    assert (cfg.lora.rank, cfg.lora.alpha) == (8, 16.0)
    assert cfg.train.betas == [0.9, 0.999] and cfg.train.weight_decay == 0.01
    assert cfg.train.lr == 3e-5 and cfg.train.lr_schedule == "cosine" and cfg.train.warmup_frac == 0.05
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.steps) == (1, 4, 4000)
    assert cfg.train.mixed_precision == "bf16" and cfg.speed.checkpointing == "full"
    assert (cfg.data.height, cfg.data.width, cfg.data.num_frames) == (720, 1280, 81)
    assert all(t.startswith("attn2.") for t in cfg.lora.targets)  # cross-attention, as the source paper
    assert "contradicts" in LORA_R8.read_text()  # the seed's "effective batch 2" is called out


def test_unknown_key_is_rejected_with_file_key_and_expectation(tmp_path: Path):
    path = _write(tmp_path, lambda r: r["train"].update(learning_rate=1e-4))
    with pytest.raises(ConfigError) as err:
        load_config(path, "smoke")
    assert err.value.key == "train.learning_rate"
    assert str(path) in str(err.value) and "known keys" in str(err.value)


def test_wrong_type_is_rejected(tmp_path: Path):
    path = _write(tmp_path, lambda r: r["lora"].update(rank="eight"))
    with pytest.raises(ConfigError, match=r"lora\.rank.*'eight'.*int"):
        load_config(path, "full")


def test_out_of_range_and_bad_frame_count_are_rejected(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(_write(tmp_path, lambda r: r["train"].update(lr=-1.0)), "full")
    with pytest.raises(ConfigError, match=r"data\.num_frames.*4k\+1"):
        load_config(_write(tmp_path, lambda r: r["data"].update(num_frames=80)), "full")
    with pytest.raises(ConfigError, match=r"speed\.uncheckpointed_blocks.*>= 0"):
        load_config(_write(tmp_path, lambda r: r["speed"].update(uncheckpointed_blocks=-1)), "smoke")
    with pytest.raises(ConfigError, match=r"speed\.keep_attention_blocks.*checkpointing='full'"):
        load_config(_write(tmp_path, lambda r: r["speed"].update(checkpointing="none")), "full")  # 40 kept blocks
    with pytest.raises(ConfigError, match=r"speed\.fp8_base.*attention_backend 'fa4'"):
        load_config(_write(tmp_path, lambda r: r["speed"].update(fp8_base=True)), "full")  # full: fa4
    with pytest.raises(ConfigError, match=r"speed\.fp8_base.*keep_ffn_blocks"):
        load_config(_write(tmp_path, lambda r: r["speed"].update(keep_ffn_blocks=2, fp8_base=True)), "smoke")
    with pytest.raises(ConfigError, match=r"lora\.targets.*attention layers only"):
        load_config(_write(tmp_path, lambda r: (r["speed"].update(keep_ffn_blocks=2),
                                                r["lora"].update(targets=["attn1.to_q", "ffn.net.2"]))), "smoke")
    with pytest.raises(ConfigError, match=r"speed\.attention_backend.*fa5"):
        load_config(_write(tmp_path, lambda r: r["speed"].update(attention_backend="fa5")), "smoke")


def test_missing_key_is_rejected(tmp_path: Path):
    path = _write(tmp_path, lambda r: r["train"].pop("grad_accum"))
    with pytest.raises(ConfigError, match=r"train\.grad_accum.*complete"):
        load_config(path, "full")


def test_profile_may_not_change_the_algorithm(tmp_path: Path):
    path = _write(tmp_path, lambda r: r.update(profiles={"smoke": {"lora.rank": 4}}))
    with pytest.raises(ConfigError, match=r"profiles\.smoke\.lora\.rank"):
        load_config(path, "smoke")
    for profile in ("smoke", "proxy"):  # the shared profile files keep to the same whitelist
        load_config(LORA_R8, profile)
        assert (CONFIGS_ROOT / "profiles" / f"{profile}.yaml").is_file()


def test_profiles_differ_only_in_whitelisted_keys():
    full, smoke = load_config(LORA_R8, "full"), load_config(LORA_R8, "smoke")
    changed = set(config_diff(full, smoke))
    assert "profile" in changed and not any(k.startswith(("lora.", "seed")) for k in changed)
    assert "train.lr" not in changed and "train.grad_accum" not in changed


def test_hash_is_stable_and_sensitive(tmp_path: Path):
    a, b = load_config(LORA_R8, "smoke"), load_config(LORA_R8, "smoke")
    assert config_hash(a) == config_hash(b)
    c = load_config(_write(tmp_path, lambda r: r.update(seed=1)), "smoke")
    assert config_hash(c) != config_hash(a)


def test_unknown_profile_is_rejected():
    with pytest.raises(ConfigError, match="profile"):
        load_config(LORA_R8, "huge")


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if yaml.safe_load(p.read_text()).get("parent")],
                         ids=lambda p: p.parent.name)
@pytest.mark.parametrize("profile", PROFILES)
def test_ablation_differs_from_its_parent_exactly_in_the_keys_its_file_sets(path: Path, profile: str):
    cfg = load_config(path, profile)
    parent_path = ROOT / "experiments" / cfg.parent / "config.yaml"
    parent = load_config(parent_path, profile)
    changed = set(config_diff(parent, cfg)) - {"name", "parent", "varies"}
    assert changed <= set(cfg.varies)
    # a key set to its parent's value would be in varies and fail here, unless the parent's value is one the
    # profile chose (CHOSEN_KEYS): an ablation states its own value of those, which may equal the choice
    assert set(cfg.varies) - changed <= set(profile_choices(parent_path, profile)) - {"train.steps"}


def _family(tmp_path: Path, child: dict) -> Path:
    """experiments/lora_r8 (a copy) and experiments/child/config.yaml = `child` under tmp_path."""
    (tmp_path / "lora_r8").mkdir()
    (tmp_path / "lora_r8" / "config.yaml").write_text(LORA_R8.read_text())
    (tmp_path / "child").mkdir()
    path = tmp_path / "child" / "config.yaml"
    path.write_text(yaml.safe_dump(child))
    return path


def test_a_child_holds_only_its_changes_and_they_are_its_varies(tmp_path: Path):
    path = _family(tmp_path, {"name": "child", "parent": "lora_r8", "lora": {"rank": 4},
                              "eval": {"domains": {"photos": "data/photos/test"}},
                              "profiles": {"smoke": {"train.steps": 2}}})
    cfg, parent = load_config(path, "smoke"), load_config(LORA_R8, "smoke")
    assert cfg.varies == ["eval.domains", "lora.rank"] and cfg.parent == "lora_r8"
    assert cfg.lora.rank == 4 and cfg.lora.alpha == parent.lora.alpha  # a section merges key by key
    assert load_config(path, "full").eval.domains == {"photos": "data/photos/test"}  # a mapping: replaced whole
    assert cfg.train.steps == 2 and load_config(path, "proxy").train.steps == load_config(LORA_R8, "proxy").train.steps


@pytest.mark.parametrize("child, key", [
    ({"name": "child", "parent": "lora_r8", "varies": ["lora.rank"]}, "varies"),  # derived, never written
    ({"name": "child", "parent": "missing"}, "parent"),
    ({"name": "child", "parent": "child"}, "parent"),  # a cycle
    ({"name": "child", "parent": "lora_r8", "lora": {"rnak": 4}}, "lora.rnak"),
    ({"name": "child", "parent": "lora_r8", "kind": "metric"}, "kind"),
    ({"parent": "lora_r8"}, "name"),
])
def test_a_bad_child_is_rejected_naming_the_key(tmp_path: Path, child: dict, key: str):
    with pytest.raises(ConfigError) as err:
        load_config(_family(tmp_path, child), "smoke")
    assert err.value.key == key


def test_profile_placeholder_names_the_profile():
    for profile in PROFILES:
        cfg = load_config(ROOT / "experiments" / "robust_lpips_r8" / "config.yaml", profile)
        assert cfg.perceptual.heads == cfg.eval.rlpips_heads == f"results/rlpips_metric/{profile}/heads_rlpips.safetensors"
        assert "{profile}" not in str(cfg)


def test_hardware_presets_set_the_full_profiles_speed_levers_only():
    default, h200 = load_config(LORA_R8, "full"), load_config(LORA_R8, "full", hardware="h200-141gb")
    assert default.hardware == "h100-80gb" and default.speed.offload_blocks == 40 and default.speed.keep_ffn_blocks == 0
    assert h200.hardware == "h200-141gb" and h200.speed.keep_ffn_blocks == 40
    assert set(config_diff(default, h200)) == {"hardware", "speed.keep_ffn_blocks"}
    assert load_config(LORA_R8, "smoke").speed == type(default.speed)()  # smoke and proxy run the plain step
    with pytest.raises(ConfigError, match="presets apply to --profile full"):
        load_config(LORA_R8, "smoke", hardware="h200-141gb")
    with pytest.raises(ConfigError, match=r"one of the presets \['h100-80gb', 'h200-141gb'\]"):
        load_config(LORA_R8, "full", hardware="a100-40gb")


def test_resolving_a_config_imports_no_torch():
    code = ("import sys; from cinelora.config import load_config; "
            "[load_config(p, 'full' if 'proxy_' not in p else 'proxy') for p in sys.argv[1:]]; "
            "sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, EXPERIMENTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "cinelora.config imported torch"


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda r: r["train"].update(max_grad_norm=-1.0), "train.max_grad_norm", "> 0"),  # silent gradient ascent
    (lambda r: r["train"].update(num_workers=-1), "train.num_workers", ">= 0"),
    (lambda r: r["train"].update(lr=float("inf")), "train.lr", "a finite number"),
    (lambda r: r["train"].update(lr=1e30), "train.lr", "a learning rate in (0, 1]"),
    (lambda r: r["train"].update(early_stop_patience=-3), "train.early_stop_patience", ">= 0"),
    (lambda r: r["train"].update(early_stop_min_delta=-1.0), "train.early_stop_min_delta", ">= 0"),
    (lambda r: r["eval"].update(guidance_scale=-5.0), "eval.guidance_scale", ">= 1"),
    (lambda r: r.update(seed=-1), "seed", ">= 0"),
    (lambda r: r["world"].update(enabled=True, splits={"train": 0, "val": 2, "test": 2}), "world.splits", "'train'"),
    (lambda r: r["world"].update(enabled=True, domains=["studio", "mars"]), "world.domains", "domains among"),
    (lambda r: r["lora"].update(targets=["attn2.to_q", "attn3.to_k"]), "lora.targets", "linear layers"),
])
def test_values_that_would_run_wrong_are_rejected_before_any_work(tmp_path, mutate, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, mutate), "full")
    assert err.value.key == key and expected in err.value.expected


def test_a_key_given_twice_is_rejected_and_a_float_needs_no_dot(tmp_path):
    text = LORA_R8.read_text()
    twice = tmp_path / "twice" / "config.yaml"
    twice.parent.mkdir()
    twice.write_text(text.replace("  lr: 3.0e-5", "  lr: 3.0e-5\n  lr: 1.0e-3"))
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("  lr: 3.0e-5")) + 1
    with pytest.raises(ConfigError, match=rf"duplicate key .{{1,3}}lr.*line {line}\b"):
        load_config(twice, "smoke")
    plain = tmp_path / "plain" / "config.yaml"
    plain.parent.mkdir()
    plain.write_text(text.replace("  lr: 3.0e-5", "  lr: 3e-5"))
    assert load_config(plain, "smoke").train.lr == 3e-5


def test_a_config_that_is_not_utf8_names_its_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(LORA_R8.read_bytes().replace(b"seed: 0", b"seed: 0 # \xff"))
    with pytest.raises(ConfigError, match=rf"{path}.*UTF-8"):
        load_config(path, "smoke")


def test_the_known_linear_layers_are_those_of_diffusers_wan_transformer():
    import re

    import torch

    from cinelora import models
    from cinelora.config import WAN_LINEAR_LAYERS

    transformer = models.build_transformer("smoke", torch.float32, "cpu", seed=0)
    found = {re.sub(r"^blocks\.\d+\.", "", n) for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    assert found == set(WAN_LINEAR_LAYERS)
