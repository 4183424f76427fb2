"""Staged recipe runs: each stage declares its inputs, outputs and config, and is skipped when
its outputs exist and were made from the same inputs and config (a stamp file records both).
A stage whose outputs all lie in the data dir keeps its stamp there (<data_dir>/.stages), so every experiment
on that data shares it; the others keep theirs in the experiment's (<exp_dir>/.stages).

A recipe is a folder with `recipe.py` defining `SCHEMA` (its config dataclass) and
`stages(cfg) -> list[Stage]`, and `conf/<size>.yaml` configs. A recipe with a `conf/float32.yaml` runs it by
default on hosts that train in float32 (an AVX2 CPU without CUDA), where the default size would overrun its budget,
and on hosts whose measured bf16 step is slower than the recipe's `SLOW_STEP_SECONDS`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .atomic import write_text_atomic
from .config import ConfigError, load_config

log = logging.getLogger("asr.recipe")
# the size a recipe may ship for hosts that train in float32 (`default_size`)
FLOAT32_SIZE = "float32"


@dataclass
class Stage:
    name: str
    run: Callable[[], None]
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    config: Any = None  # the parts of the config that change this stage's outputs


def insert_before(stages: list[Stage], name: str, *new: Stage) -> list[Stage]:
    """`stages` with `new` inserted before the stage called `name` (a recipe adding its own stages to the shared
    ones without counting positions)."""
    at = next((i for i, st in enumerate(stages) if st.name == name), None)
    if at is None:
        raise ValueError(f"no stage {name!r} among {[st.name for st in stages]}")
    return stages[:at] + list(new) + stages[at:]


def _fingerprint(path: Path) -> str:
    if not path.exists():
        return f"{path}:missing"
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return f"{path}:dir:{len(files)}:{sum(p.stat().st_size for p in files)}"
    if path.stat().st_size < 64 * 2**20:
        return f"{path}:{hashlib.sha1(path.read_bytes()).hexdigest()}"
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def stage_stamp(stage: Stage) -> str:
    """Hash of a stage's config and the contents of its inputs."""
    h = hashlib.sha1(json.dumps(stage.config, sort_keys=True, default=str).encode())
    for p in stage.inputs:
        h.update(_fingerprint(Path(p)).encode())
    return h.hexdigest()


def load_recipe(recipe_dir: str | Path) -> ModuleType:
    recipe_dir = Path(recipe_dir)
    path = recipe_dir / "recipe.py"
    if not path.exists():
        raise FileNotFoundError(f"{recipe_dir} is not a recipe folder (no recipe.py)")
    name = f"asr_recipe_{recipe_dir.resolve().name}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def trains_in_float32() -> bool:
    """Whether train.amp=auto trains in float32 on this host's default device: no CUDA device and no oneDNN bf16
    kernels (an AVX2 CPU, where a step takes 2-2.5x as long)."""
    import torch

    from .inference import resolve_device
    from .training import autocast_dtype

    return autocast_dtype("auto", resolve_device("auto"))[0] == torch.float32


def default_size(recipe_dir: str | Path, float32_host: bool | None = None, step_seconds: float | None = None) -> str:
    """The size a run gets without size=...: where the recipe has one, FLOAT32_SIZE (conf/float32.yaml, sized for
    its time budget on a float32 host) on a host that trains in float32, or whose bf16 training step of the default
    size takes longer than the recipe's `SLOW_STEP_SECONDS` (measured here, `asr.step_timing`, unless given: a CPU
    with half-width bf16 units trains it at half the speed); else 'default'. Says why in the log."""
    recipe_dir = Path(recipe_dir)
    if not (recipe_dir / "conf" / f"{FLOAT32_SIZE}.yaml").exists():
        return "default"
    if float32_host is None:
        float32_host = trains_in_float32()
    if float32_host:
        log.info(f"size {FLOAT32_SIZE}: this host trains in float32 (no CUDA device, no oneDNN bf16 kernels), so "
                 f"conf/{FLOAT32_SIZE}.yaml; size=default overrides")
        return FLOAT32_SIZE
    module = load_recipe(recipe_dir)
    limit = getattr(module, "SLOW_STEP_SECONDS", None)
    if limit is None:
        return "default"
    if step_seconds is None:
        step_seconds = _default_step_seconds(recipe_dir, module.SCHEMA)
    if step_seconds is None or step_seconds <= limit:
        return "default"
    log.info(f"size {FLOAT32_SIZE}: a bf16 training step of the default size took {1000 * step_seconds:.0f} ms on "
             f"this host (the recipe's limit {1000 * limit:.0f} ms: its training would overrun its time), so "
             f"conf/{FLOAT32_SIZE}.yaml; size=default overrides")
    return FLOAT32_SIZE


def _default_step_seconds(recipe_dir: Path, schema: type) -> float | None:
    """A bf16 CPU training step of the recipe's default size (None on a CUDA host)."""
    import torch

    from .inference import resolve_device
    from .step_timing import median_step_seconds

    if resolve_device("auto").type != "cpu":
        return None
    cfg = load_config(recipe_dir / "conf" / "default.yaml", [], schema=schema)
    return median_step_seconds(cfg, torch.bfloat16)


def recipe_config(recipe_dir: str | Path, overrides: list[str]) -> Any:
    """The recipe's config: conf/<size>.yaml (size=... picks it, else `default_size`) plus overrides."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("size=")]
    size = chosen[-1] if chosen else default_size(recipe_dir)
    module = load_recipe(recipe_dir)  # after default_size's: the config's schema is the module sys.modules holds
    conf = Path(recipe_dir) / "conf" / f"{size}.yaml"
    if not conf.exists():
        sizes = sorted(p.stem for p in (Path(recipe_dir) / "conf").glob("*.yaml"))
        raise ConfigError(f"recipe {recipe_dir} has no size {size!r}; available: {', '.join(sizes)}")
    return load_config(conf, overrides, schema=module.SCHEMA)


def _select(stages: list[Stage], which: str | None, default: int) -> int:
    if which is None:
        return default
    names = [s.name for s in stages]
    if which.isdigit() and 1 <= int(which) <= len(stages):
        return int(which) - 1
    if which in names:
        return names.index(which)
    raise ConfigError(f"unknown stage {which!r}; stages: {', '.join(f'{i + 1}:{n}' for i, n in enumerate(names))}")


def _stamp_dir(stage: Stage, state_dir: Path, data_dir: Path | None) -> Path:
    """Where a stage's stamp lives: with its data when every output is in `data_dir`, else in `state_dir`."""
    if data_dir is not None and stage.outputs and all(Path(o).resolve().is_relative_to(data_dir.resolve())
                                                      for o in stage.outputs):
        return data_dir / ".stages"
    return state_dir


def run_stages(stages: list[Stage], state_dir: Path, stage: str | None = None, stop_stage: str | None = None,
               force: bool = False, data_dir: Path | None = None) -> None:
    """Run the selected stages in order, skipping those already up to date. Stamps live in `state_dir`, or in
    `data_dir`/.stages for a stage that writes only there (another experiment on the same data skips it)."""
    first, last = _select(stages, stage, 0), _select(stages, stop_stage, len(stages) - 1)
    for i, st in enumerate(stages[first: last + 1], first + 1):
        stamp_file = _stamp_dir(st, state_dir, data_dir) / f"{st.name}.stamp"
        stamp = stage_stamp(st)
        up_to_date = (not force and stamp_file.exists() and stamp_file.read_text() == stamp
                      and all(Path(o).exists() for o in st.outputs))
        if up_to_date:
            log.info(f"stage {i} {st.name}: up to date, skipped")
            continue
        log.info(f"stage {i} {st.name}: running")
        t0 = time.time()
        stamp_file.unlink(missing_ok=True)
        st.run()
        missing = [str(o) for o in st.outputs if not Path(o).exists()]
        if missing:
            raise RuntimeError(f"stage {st.name} finished without its outputs: {', '.join(missing)}")
        write_text_atomic(stamp_file, stage_stamp(st))
        log.info(f"stage {i} {st.name}: done in {time.time() - t0:.0f}s")


def run_recipe(recipe_dir: str | Path, overrides: list[str], stage: str | None = None,
               stop_stage: str | None = None, force: bool = False) -> Any:
    """Load the recipe, resolve its config and run its stages; returns the config."""
    module = load_recipe(recipe_dir)
    cfg = recipe_config(recipe_dir, overrides)
    stages = module.stages(cfg)
    run_stages(stages, Path(cfg.exp_dir) / ".stages", stage, stop_stage, force, data_dir=Path(cfg.data_dir))
    return cfg
