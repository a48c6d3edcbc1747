"""A --config file that does not load is one line naming the file and the cause (exit 2); every
path-valued config field that defaults to None or "" is settable from the command line."""

import os
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_dict, config_flags

from lr2vq_jax.train.config_file import ConfigLoadError, load_config
from tests.support import train_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # collectable from any folder

BAD = {
  "cfg.yaml": ("model: resnet18\nlr: 0.1\n", "is not a Python file"),
  "syntax.py": ("def get_config(:\n  pass\n", "is not valid Python (line 1): SyntaxError"),
  "imports.py": ("import no_such_module_x\n", "ModuleNotFoundError: No module named"),
  "no_get.py": ("x = 1\n", "defines no get_config() function"),
  "raises.py": (
    "def get_config():\n  raise RuntimeError('boom')\n",
    "get_config() raised RuntimeError: boom (line 2)",
  ),
  "returns_dict.py": ("def get_config():\n  return {}\n", "returned dict, not an ml_collections"),
  "returns_none.py": ("def get_config():\n  pass\n", "returned NoneType, not an ml_collections"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_file_is_one_clear_error(tmp_path, name):
  text, cause = BAD[name]
  path = tmp_path / name
  path.write_text(text)
  with pytest.raises(ConfigLoadError) as err:
    load_config(str(path))
  message = str(err.value)
  assert str(path) in message and cause in message and "\n" not in message


def test_missing_config_file_and_bad_argument(tmp_path):
  with pytest.raises(ConfigLoadError, match="does not exist"):
    load_config(str(tmp_path / "nope.py"))
  with pytest.raises(ConfigLoadError, match=r"get_config\('bogus'\) raised ValueError"):
    load_config(f"{CONFIGS}/default.py:bogus")


@pytest.mark.parametrize("name", ["syntax.py", "returns_dict.py"])
def test_train_with_bad_config_exits_2_with_one_line(tmp_path, name):
  text, cause = BAD[name]
  path = tmp_path / name
  path.write_text(text)
  out = train_cli.run(train_cli.train_cmd(tmp_path / "run", config=str(path)))
  assert out.returncode == 2, out.stderr
  lines = [ln for ln in out.stderr.splitlines() if ln.startswith(("lr2vq", "hint", "Traceback"))]
  assert len(lines) == 2 and str(path) in lines[0] and cause in lines[0], out.stderr
  assert lines[1].startswith("hint: --config takes FILE.py[:arg]")
  assert not (tmp_path / "run").exists()


PATH_FIELDS = ("data_dir", "manual_dir", "init_from", "teacher")


def _leaves(cfg, prefix=""):
  for key, value in cfg.items(preserve_field_references=True):
    if isinstance(value, config_dict.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.py")))
def test_every_path_field_is_overridable_from_the_command_line(name, tmp_path):
  spec = str(CONFIGS / name)
  config = load_config(spec)
  fields = [name for name, _ in _leaves(config) if name.rsplit(".", 1)[-1] in PATH_FIELDS]
  assert any(f.endswith("data_dir") for f in fields)
  for name, value in _leaves(config):  # a None default cannot be overridden unless typed
    raw = value.get() if isinstance(value, config_dict.FieldReference) else value
    if raw is None:
      assert isinstance(value, config_dict.FieldReference) and value.get_type() is str, name
  overrides = {f: str(tmp_path / f.replace(".", "_")) for f in fields}
  argv = ["prog", f"--config={spec}", *(f"--config.{f}={v}" for f, v in overrides.items())]
  fv = flags.FlagValues()  # the parsing of lr2vq_jax.main's flags, on this argv
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  for f, v in overrides.items():
    node = fv.config
    for part in f.split("."):
      node = node[part]
    assert node == v, f
  assert os.fspath(fv.config.data.data_dir) == overrides["data.data_dir"]
