"""Text for the activation store: where it comes from and how it becomes token contexts.

Three sources:
- GPT-2: a Hugging Face dataset, streamed (`DEFAULT_DATASET`), so nothing big is downloaded;
- the offline model: StoryWorld, the synthetic language it was trained on
  (`sae_course.storyworld.sample_texts`);
- a folder of your own `.txt` files.

Texts are tokenised, joined with the end-of-text token between documents, packed into
fixed-length contexts that each start with BOS, and shuffled deterministically by seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae_course.storyworld.contexts import STORIES_PER_ROUND, round_seed

# The corpus GPT-2 activations are harvested from by default: 10k documents of the Pile,
# a small parquet dataset that streams quickly. ("Skylion007/openwebtext", GPT-2's own
# training distribution, on which the public GPT-2 SAEs were trained, works too.)
DEFAULT_DATASET = "NeelNanda/pile-10k"
DEFAULT_TEXT_COLUMN = "text"
SOURCES = ("hf", "storyworld", "folder")


def hf_texts(
    dataset: str = DEFAULT_DATASET,
    split: str = "train",
    column: str = DEFAULT_TEXT_COLUMN,
    n_texts: int | None = None,
    seed: int | None = None,
    shuffle_buffer: int = 1_000,
) -> Iterator[str]:
    """Texts streamed from a Hugging Face dataset (needs the hub).

    With a `seed`, documents come in an order shuffled (within `shuffle_buffer` documents)
    by that seed, so different seeds see different documents first.
    """
    from datasets import load_dataset

    try:
        stream = load_dataset(dataset, split=split, streaming=True)
    except Exception as err:  # datasets raises many kinds; all mean "cannot get it here"
        raise RuntimeError(
            f"Could not stream the dataset {dataset!r} ({type(err).__name__}: {err}). Fix: "
            "connect to the internet, or use source='storyworld' (the offline model's "
            "language) or source='folder' with your own .txt files."
        ) from err
    if seed is not None:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    texts = (row[column] for row in stream)
    return islice(texts, n_texts) if n_texts is not None else texts


def storyworld_texts(n_texts: int, seed: int) -> list[str]:
    """`n_texts` StoryWorld stories, the same ones for the same seed."""
    from sae_course.storyworld import sample_texts

    return sample_texts(n_texts, seed)


def folder_texts(folder: str | Path) -> list[str]:
    """The contents of every `.txt` file in `folder` (sorted by name, searched recursively)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"The text folder {str(path)!r} does not exist. Fix: pass the path of a folder "
            "holding your .txt files."
        )
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(
            f"The text folder {str(path)!r} holds no non-empty .txt files. Fix: put some "
            "UTF-8 .txt files in it (any length; they are joined and packed into contexts)."
        )
    return texts


def default_source(model_name: str) -> str:
    """The text source that suits a model: Hugging Face data for GPT-2, else StoryWorld."""
    return "hf" if model_name == "gpt2" else "storyworld"


def auto_source(model_name: str, dataset: str = DEFAULT_DATASET) -> str:
    """`default_source`, except that GPT-2 without access to the dataset falls back to
    StoryWorld text (plain English GPT-2 can read), saying so."""
    source = default_source(model_name)
    if source != "hf":
        return source
    from sae_course.models import _hub_offline, gpt2_reachable

    why = None
    if _hub_offline() or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true", "TRUE"):
        why = "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    elif not gpt2_reachable():
        why = "the Hugging Face hub cannot be reached"
    else:
        try:
            next(iter(hf_texts(dataset, n_texts=1)))
        except (RuntimeError, StopIteration) as err:
            why = str(err)
    if why is None:
        return "hf"
    print(f"The dataset {dataset!r} cannot be streamed ({why}); using StoryWorld text instead.")
    return "storyworld"


def load_texts(
    source: str,
    n_texts: int,
    seed: int = 0,
    folder: str | Path | None = None,
    dataset: str = DEFAULT_DATASET,
) -> list[str]:
    """Up to `n_texts` texts from `source` ("hf", "storyworld" or "folder")."""
    if source == "hf":
        return list(hf_texts(dataset, n_texts=n_texts, seed=seed))
    if source == "storyworld":
        return storyworld_texts(n_texts, seed)
    if source == "folder":
        if folder is None:
            raise ValueError("source='folder' needs folder=<path of a folder of .txt files>.")
        return folder_texts(folder)[:n_texts]
    raise ValueError(f"Unknown text source {source!r}: choose one of {', '.join(SOURCES)}.")


def bos_id_of(tokenizer: Any) -> int:
    """The BOS token id (GPT-2 and StoryWorld use <|endoftext|> for BOS and separators)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = tokenizer.eos_token_id
    if bos is None:
        raise ValueError("The tokenizer has neither a BOS nor an EOS token; set one first.")
    return int(bos)


def tokenize_texts(texts: Iterable[str], tokenizer: Any) -> list[list[int]]:
    """Token ids of each text, without any special token added."""
    # verbose=False: a document longer than one context is normal here (it is packed next).
    return [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts]


def pack_contexts(token_lists: Iterable[list[int]], context_len: int, bos_id: int) -> Tensor:
    """Pack documents into [n, context_len] contexts, each starting with BOS.

    The documents are joined into one stream with `bos_id` (end of text) after each one;
    the stream is cut into pieces of `context_len - 1` tokens and BOS is put in front of each.
    The last, partial piece is dropped (no padding). An empty result has shape [0, context_len].
    """
    if context_len < 2:
        raise ValueError(f"context_len must be at least 2 (BOS plus a token), got {context_len}.")
    stream: list[int] = []
    for doc in token_lists:
        stream.extend(doc)
        stream.append(bos_id)
    body = context_len - 1
    n = len(stream) // body
    chunks = torch.tensor(stream[: n * body], dtype=torch.long).reshape(n, body)
    return torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), chunks], dim=1)


def shuffle_contexts(contexts: Tensor, seed: int) -> Tensor:
    """The contexts in a random order fixed by `seed`."""
    order = torch.randperm(len(contexts), generator=torch.Generator().manual_seed(seed))
    return contexts[order]


def make_contexts(
    texts: Iterable[str], tokenizer: Any, context_len: int, seed: int = 0, shuffle: bool = True
) -> Tensor:
    """Texts -> shuffled [n, context_len] token contexts, each starting with BOS."""
    contexts = pack_contexts(tokenize_texts(texts, tokenizer), context_len, bos_id_of(tokenizer))
    return shuffle_contexts(contexts, seed) if shuffle else contexts


def contexts_for_model(
    model: Any,
    n_contexts: int,
    context_len: int = 128,
    seed: int = 0,
    source: str | None = None,
    folder: str | Path | None = None,
    dataset: str = DEFAULT_DATASET,
) -> Tensor:
    """About `n_contexts` shuffled BOS-led contexts of the model's kind of text.

    `source` defaults to `auto_source`: Hugging Face data for GPT-2 (StoryWorld when the
    dataset cannot be streamed) and StoryWorld for the offline model. Texts are drawn until
    `n_contexts` contexts are filled (fewer only if a folder runs out).
    """
    from sae_course.models import model_name_of

    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and context_len > n_ctx:
        raise ValueError(
            f"context_len={context_len} is longer than the model's context ({n_ctx} tokens). "
            f"Fix: use context_len <= {n_ctx}."
        )
    source = source or auto_source(model_name_of(model), dataset)
    tokenizer = model.tokenizer
    bos = bos_id_of(tokenizer)
    if source == "folder":
        docs = tokenize_texts(load_texts("folder", 10**9, seed, folder=folder), tokenizer)
    else:
        docs = []
        n_tokens = 0
        need = n_contexts * (context_len - 1)
        batch = 64
        texts: Iterator[str] = (
            iter(hf_texts(dataset, seed=seed)) if source == "hf" else iter(())
        )
        round_ = 0
        while n_tokens < need:
            if source == "hf":
                chunk = list(islice(texts, batch))
            elif source == "storyworld":
                chunk = storyworld_texts(STORIES_PER_ROUND, round_seed(seed, round_))
            else:
                raise ValueError(
                    f"Unknown text source {source!r}: choose one of {', '.join(SOURCES)}."
                )
            if not chunk:
                break
            new = tokenize_texts(chunk, tokenizer)
            docs.extend(new)
            n_tokens += sum(len(d) + 1 for d in new)
            round_ += 1
    contexts = shuffle_contexts(pack_contexts(docs, context_len, bos), seed)
    return contexts[:n_contexts]
