import pytest

from ganimator.config import ConfigError, load_config, stage_levels, stage_noise_scales


def test_bare_and_qualified_keys_set_the_same_field():
    assert load_config(["lambda_rec=20"]).optim.lambda_rec == 20.0
    assert load_config(["optim.lambda_rec=20"]).optim.lambda_rec == 20.0
    cfg = load_config(["npz_filename=a.npz", "train_data_iter=2000", "stage_noise_amp_scale=[1,0.5,0.5,1]"])
    assert cfg.data.npz_filename == "a.npz" and cfg.scheduling.train_data_iter == 2000
    assert list(cfg.model.stage_noise_amp_scale) == [1.0, 0.5, 0.5, 1.0]


def test_defaults_are_the_originals():
    cfg = load_config()
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lambda_rec, cfg.optim.lambda_gp) == (1e-4, 1e-4, 50.0, 1.0)
    assert (cfg.optim.lambda_consistency, cfg.optim.critic_steps, cfg.scheduling.train_data_iter) == (5.0, 5, 15000)
    assert cfg.model.skeleton_aware and cfg.model.neighbour_distance == 2 and cfg.model.group_size == 2
    assert stage_levels(cfg.model, 7) == [[0, 1], [2, 3], [4, 5], [6]]


def test_stages_follow_the_pyramid():
    """Groups of group_size levels for any pyramid, as the original; explicit stages must fit it."""
    model = load_config().model
    assert stage_levels(model, 14) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13]]
    assert stage_levels(load_config(["group_size=3"]).model, 8) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert stage_noise_scales(load_config(["stage_noise_amp_scale=[2,1,1,1]"]).model, 7) == [2.0] + [1.0] * 6
    assert stage_noise_scales(model, 3) == [1.0, 1.0, 1.0]  # the default's fourth 1 fits a shorter pyramid
    with pytest.raises(ConfigError, match="'model.stage_noise_amp_scale' has 4 values for 3 stages"):
        stage_noise_scales(load_config(["stage_noise_amp_scale=[1,1,1,2]"]).model, 3)
    explicit = load_config(["stages=[[0],[1,2,3],[4,5,6]]"]).model
    assert stage_levels(explicit, 7) == [[0], [1, 2, 3], [4, 5, 6]]
    with pytest.raises(ConfigError, match="'model.stages' covers 7 levels but clip.npz has 8"):
        stage_levels(explicit, 8, "clip.npz")
    with pytest.raises(ConfigError, match="has 3 values for 2 stages"):  # explicit stages: checked at once
        load_config(["stages=[[0,1],[2]]", "stage_noise_amp_scale=[1,2,3]"])


@pytest.mark.parametrize("override, message", [
    ("lamda_rec=3", r"unknown config key 'lamda_rec' \(did you mean 'lambda_rec'"),
    ("lambda_rec=abc", "config key 'optim.lambda_rec'"),
    ("critic_steps=1.5", "config key 'optim.critic_steps'"),
    ("model.lambda_rec=3", "lambda_rec"),
    ("group_size=0", "'model.group_size' must be positive"),
    ("stages=[[0,1],[3]]", "must cover levels 0..N-1"),
    ("lr_g=0", "'optim.lr_g' must be positive"),
    ("kernel_size=4", "must be odd"),
    ("noise_amp_scale=-1", "'model.noise_amp_scale' must not be negative"),
    ("nonsense", "is not key=value"),
    ("stages=[[0,1],[],[2,3],[4,5],[6]]", "must cover levels 0..N-1"),
    ("hidden_channels=[128,0,256]", "'model.hidden_channels.1' must be positive"),
    ("neighbour_distance=-1", "'model.neighbour_distance' must not be negative"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([override])


def test_yaml_file_uses_the_seeds_sections(tmp_path):
    (tmp_path / "run.yaml").write_text("optim:\n  lambda_gp: 2.0\nscheduling:\n  validate_every: 7\n")
    cfg = load_config([f"config={tmp_path / 'run.yaml'}", "validate_every=9"])
    assert cfg.optim.lambda_gp == 2.0 and cfg.scheduling.validate_every == 9
    (tmp_path / "broken.yaml").write_text("optim: [\n")
    with pytest.raises(ConfigError, match="broken.yaml' is not valid YAML"):
        load_config([f"config={tmp_path / 'broken.yaml'}"])
    (tmp_path / "bad.yaml").write_text("optim:\n  lambda_gpp: 2.0\n")
    with pytest.raises(ConfigError, match="lambda_gpp"):
        load_config([f"config={tmp_path / 'bad.yaml'}"])


def test_a_preset_is_a_shipped_config_file_that_overrides_can_change():
    fast = load_config(["npz_filename=x.npz", "preset=fast"])
    assert fast.scheduling.budget_minutes > 0 and fast.optim.critic_steps < 5  # what makes it fast
    mine = load_config(["npz_filename=x.npz", "preset=fast", "budget_minutes=60"])
    assert mine.scheduling.budget_minutes == 60 and mine.optim.lr_g == fast.optim.lr_g
    with pytest.raises(ConfigError, match="unknown preset 'quick'; the presets are fast"):
        load_config(["npz_filename=x.npz", "preset=quick"])
