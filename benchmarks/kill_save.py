"""Kill a process while it overwrites a saved SAE, and check that loading never mixes two SAEs.

A child process saves two TopK SAEs of the same shape into one folder, alternately, without
end; the parent kills it with SIGKILL at a random moment, loads the folder and checks that
cfg.json and the weights come from the same SAE (each SAE's b_dec is filled with its own tag,
which its cfg.extra also records). Run: `python benchmarks/kill_save.py [kills]`; it also runs
a control that saves the two files one after the other, as `SAE.save` did before.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sae_course.files import save_safetensors_atomic, stale_folders, write_json_atomic
from sae_course.sae import CONFIG_FILE, SAE, WEIGHTS_FILE, SAEConfig


def tagged_sae(tag: int, d_in: int = 64, d_sae: int = 4096) -> SAE:
    """A TopK SAE whose b_dec is all `tag` and whose cfg.extra["tag"] says so."""
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=8,
                        extra={"tag": tag, "hook_name": "blocks.0.hook_resid_pre"}), seed=tag)
    with torch.no_grad():
        sae.b_dec.fill_(float(tag))
    return sae


def _save_pair_file_by_file(sae: SAE, folder: Path) -> None:
    """The control: each file atomic, the pair not (how SAE.save worked before)."""
    save_safetensors_atomic(sae.weights(), folder / WEIGHTS_FILE)
    write_json_atomic(folder / CONFIG_FILE, sae.saelens_config())


def _save_forever(folder: str, ready: Any, whole: bool) -> None:
    saes = [tagged_sae(1), tagged_sae(2)]
    ready.set()
    i = 0
    while True:
        if whole:
            saes[i % 2].save(folder)
        else:
            _save_pair_file_by_file(saes[i % 2], Path(folder))
        i += 1


def run(kills: int = 40, seed: int = 0, whole: bool = True) -> dict[str, int]:
    """Kill the saving process `kills` times; count loads that mixed two SAEs or failed.

    `whole=False` runs the control, saving file by file, to show that the check catches a
    save that is not atomic as a whole."""
    rng = random.Random(seed)
    ctx = mp.get_context("forkserver")  # fork from a clean process, not a threaded one
    ctx.set_forkserver_preload(["torch", "sae_course.sae"])
    counts = {"kills": 0, "mixed": 0, "failed_loads": 0, "stale_left": 0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sae"
        tagged_sae(1).save(folder)
        for _ in range(kills):
            ready = ctx.Event()
            child = ctx.Process(target=_save_forever, args=(str(folder), ready, whole), daemon=True)
            child.start()
            if not ready.wait(timeout=120):
                child.kill()
                raise RuntimeError("the saving process did not start within 120 s")
            time.sleep(rng.random() * 0.05)  # a few saves, then a kill at a random moment
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            counts["kills"] += 1
            counts["stale_left"] += len(stale_folders(folder))
            try:
                sae = SAE.load(folder)
            except Exception as err:  # noqa: BLE001 - every failure to load is counted
                print(f"load failed: {type(err).__name__}: {err}", file=sys.stderr)
                counts["failed_loads"] += 1
                continue
            if float(sae.b_dec.detach()[0]) != sae.cfg.extra["tag"]:
                counts["mixed"] += 1
    return counts


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    print("SAE.save:", json.dumps(run(n)))
    print("control, file by file:", json.dumps(run(n, whole=False)))
