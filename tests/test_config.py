"""Config validation: strict schema, profile whitelist, the seed's settings in `full`, stable hashing."""
from pathlib import Path

import pytest
import yaml

from cinelora.config import PROFILES, ConfigError, config_diff, config_hash, load_config

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
    cfg = load_config(path, profile)
    assert cfg.name == path.parent.name and cfg.profile == profile


def test_full_profile_carries_the_seed_settings():
    cfg = load_config(LORA_R8, "full")
    assert (cfg.lora.rank, cfg.lora.alpha) == (8, 16.0)
    assert cfg.train.betas == [0.9, 0.999] and cfg.train.weight_decay == 0.01
    assert cfg.train.lr == 3e-5 and cfg.train.lr_schedule == "cosine" and cfg.train.warmup_frac == 0.05
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.steps) == (1, 4, 4000)
    assert cfg.train.mixed_precision == "bf16" and cfg.train.gradient_checkpointing
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
    with pytest.raises(ConfigError, match=r"train\.uncheckpointed_blocks.*>= 0"):
        load_config(_write(tmp_path, lambda r: r["train"].update(uncheckpointed_blocks=-1)), "full")
    with pytest.raises(ConfigError, match=r"train\.keep_attention_blocks.*gradient_checkpointing"):
        load_config(_write(tmp_path, lambda r: r["train"].update(gradient_checkpointing=False)), "full")
    with pytest.raises(ConfigError, match=r"train\.keep_ffn_blocks.*gradient_checkpointing"):
        load_config(_write(tmp_path, lambda r: r["train"].update(gradient_checkpointing=False, keep_attention_blocks=0,
                                                                   offload_blocks=0, keep_ffn_blocks=2)), "full")
    with pytest.raises(ConfigError, match=r"'train'.*fp8_base with attention_backend 'fa4'"):
        load_config(_write(tmp_path, lambda r: r["train"].update(fp8_base=True)), "full")  # full: fa4
    with pytest.raises(ConfigError, match=r"'train'.*keep_ffn_blocks.*fp8_base"):
        load_config(_write(tmp_path, lambda r: r["train"].update(keep_ffn_blocks=2, fp8_base=True,
                                                                   attention_backend="native")), "full")
    with pytest.raises(ConfigError, match=r"lora\.targets.*attention layers only"):
        load_config(_write(tmp_path, lambda r: (r["train"].update(keep_ffn_blocks=2),
                                                r["lora"].update(targets=["attn1.to_q", "ffn.net.2"]))), "full")


def test_missing_key_is_rejected(tmp_path: Path):
    path = _write(tmp_path, lambda r: r["train"].pop("grad_accum"))
    with pytest.raises(ConfigError, match=r"train\.grad_accum.*complete"):
        load_config(path, "full")


def test_profile_may_not_change_the_algorithm(tmp_path: Path):
    path = _write(tmp_path, lambda r: r["profiles"]["smoke"].update({"lora.rank": 4}))
    with pytest.raises(ConfigError, match=r"profiles\.smoke\.lora\.rank"):
        load_config(path, "smoke")


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


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if yaml.safe_load(p.read_text())["parent"]],
                         ids=lambda p: p.parent.name)
@pytest.mark.parametrize("profile", PROFILES)
def test_ablation_differs_from_its_parent_exactly_in_the_keys_it_declares(path: Path, profile: str):
    cfg = load_config(path, profile)
    parent = load_config(ROOT / "experiments" / cfg.parent / "config.yaml", profile)
    changed = set(config_diff(parent, cfg)) - {"name", "parent", "varies"}
    assert changed == set(cfg.varies)
