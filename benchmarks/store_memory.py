"""Peak memory of the activation store against its `buffer_mb` setting.

Runs the store on the offline model (hook blocks.0.hook_resid_pre: the forward pass stops after
the embeddings, so the buffer dominates) through several refills, sampling the process's
resident memory every millisecond, and reports the peak above the level before iterating, in
MB and as a multiple of buffer_mb. Run: `python benchmarks/store_memory.py [buffer_mb]`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import torch

from sae_course.activations import ActivationStore
from sae_course.models import load_model

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(buffer_mb: float = 64.0, refills: int = 4, batch_size: int = 4096,
            model_batch_size: int = 16) -> dict:
    """Iterate a store through `refills` buffer fills; the peak RSS above the start."""
    torch.set_num_threads(1)
    model = load_model("offline", device="cpu")
    d = model.cfg.d_model
    tokens = int(buffer_mb * 2**20 / (4 * d)) * refills
    context_len = 128
    g = torch.Generator().manual_seed(0)
    contexts = torch.randint(1, model.cfg.d_vocab, (tokens // (context_len - 1) + 1, context_len),
                             generator=g)
    contexts[:, 0] = model.tokenizer.bos_token_id or 0
    store = ActivationStore(model, contexts, "blocks.0.hook_resid_pre", batch_size=batch_size,
                            buffer_mb=buffer_mb, model_batch_size=model_batch_size,
                            progress=False)
    peak, running = [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    base = _rss()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    n = 0
    for batch in store:
        n += len(batch)
        del batch
    running[0] = False
    thread.join()
    extra_mb = (max(peak[0], _rss()) - base) / 2**20
    return {"buffer_mb": buffer_mb, "model_batch_size": model_batch_size, "tokens_served": n,
            "peak_above_start_mb": round(extra_mb, 1), "ratio": round(extra_mb / buffer_mb, 2)}


if __name__ == "__main__":
    print(json.dumps(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 64.0)))
