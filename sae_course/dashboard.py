"""The feature dashboard of Part 05: everything about one SAE latent in one widget.

    dash = feature_dashboard(model, sae, acts, contexts, scores)   # shows it in Jupyter

Pick a latent by index, by a StoryWorld label (the latent with the best F1 for it, when
`scores` is given) or by a token (the latent whose decoder logit lens ranks that token
highest). For the chosen latent it shows:

- its firing density (log10, beside every live latent's) and its activation histogram;
- its logit lens: the tokens its decoder direction promotes and suppresses;
- its top examples and examples from several activation quantiles, the activating tokens
  shaded (`features.example_html`);
- the ground truth: the labels it predicts best, with precision, recall and F1 (`scores`);
- your own text run through the model and the SAE, its activation on each token;
- on GPT-2's `gpt2-small-res-jb`, a link to the latent's Neuronpedia page.

Everything but your own text comes from the precomputed `acts` (`features.latent_activations`),
so changing the latent redraws at once. The widget only displays: a bad request (a latent that
does not exist, a token not in the vocabulary, empty text) becomes a message in the widget.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.figure import Figure
from torch import Tensor

from sae_course.activations import harvest
from sae_course.features import (
    Example,
    LatentActivations,
    LogitLens,
    _readable,
    decoder_logits,
    example_html,
    quantile_bands,
    quantile_examples,
    top_examples,
)
from sae_course.pretrained import GPT2_D_SAE, GPT2_RELEASE, NEURONPEDIA_URL
from sae_course.sae import SAE
from sae_course.scorecard import LabelScores
from sae_course.text import bos_id_of, tokenize_texts

N_TOP = 8
"""Top examples shown."""
N_BANDS, PER_BAND = 4, 2
"""Quantile bands of the activation distribution and examples shown from each."""
N_LENS = 8
"""Tokens shown at each end of the logit lens."""
N_LABELS = 5
"""Best labels shown in the ground-truth panel."""
WINDOW = (12, 4)
"""Tokens before and after the focus token of an example."""
SHORTLIST = 128
"""Token search on a big SAE x vocabulary: the latents ranked exactly (by the token's logit)."""
EXACT_SEARCH_MAX = 20_000_000
"""Token search ranks every live latent exactly when d_sae x d_vocab is at most this."""
MAX_OWN_TOKENS = 256
"""Own text is cut to this many tokens (or the model's context, if shorter)."""
NO_LABEL = "(choose a label)"
DULL_LABELS = ("special",)
"""Labels whose best latent is not shown first (StoryWorld's document separator)."""


# --------------------------------------------------------------------------- pure helpers


def neuronpedia_url(sae: SAE, latent: int) -> str | None:
    """The latent's Neuronpedia page for a `gpt2-small-res-jb` SAE, else None.

    The SAE counts as `gpt2-small-res-jb` when its `cfg.extra["release"]` says so, or when it
    is a GPT-2 SAE (`model_name == "gpt2"`) with no release recorded and that release's width;
    an SAE you trained on GPT-2 yourself has other latents, so it gets no link.
    """
    extra = sae.cfg.extra
    release = extra.get("release")
    if release is not None and release != GPT2_RELEASE:
        return None
    if release is None and (extra.get("model_name") != "gpt2" or sae.cfg.d_sae != GPT2_D_SAE):
        return None
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", str(extra.get("hook_name", "")))
    if match is None:
        return None
    return NEURONPEDIA_URL.format(layer=int(match.group(1)), index=int(latent))


def best_latent_for_label(scores: LabelScores, label: str, live: Tensor | None = None) -> int:
    """The latent with the highest F1 for `label` (among `live` latents when given)."""
    if label not in scores.names:
        raise ValueError(f"Unknown label {label!r}: the scores cover {len(scores.names)} labels, "
                         f"e.g. {', '.join(scores.names[:4])}.")
    f1 = scores.f1[:, scores.names.index(label)].clone()
    if live is not None and bool(live.any()):
        f1[~live] = -1.0
    return int(f1.argmax())


def token_ids_for(tokenizer: Any, text: str) -> list[int]:
    """The single-token readings of what a learner typed: the text as typed and with a
    leading space (GPT-2's tokens for words inside a sentence), deduplicated."""
    found: list[int] = []
    for variant in (text, " " + text.lstrip(" ")):
        ids = tokenize_texts([variant], tokenizer)[0]
        if len(ids) == 1 and ids[0] not in found:
            found.append(ids[0])
    return found


@torch.no_grad()
def latent_for_token(W_dec: Tensor, W_U: Tensor, token: int, live: Tensor | None = None
                     ) -> tuple[int, int, float]:
    """(latent, rank, logit): the latent whose logit lens (W_dec[i] @ W_U) ranks `token`
    highest (rank 0 = its top token), ties to the larger logit; among `live` latents when
    any. On a big SAE x vocabulary only the `SHORTLIST` latents with the largest logit for
    the token are ranked."""
    candidates = torch.arange(W_dec.shape[0])
    if live is not None and bool(live.any()):
        candidates = candidates[live]
    if len(candidates) * W_U.shape[1] > EXACT_SEARCH_MAX:
        direct = W_dec[candidates].float() @ W_U[:, token].float()
        candidates = candidates[direct.topk(min(SHORTLIST, len(candidates))).indices]
    best: tuple[int, float, int] | None = None  # (rank, -logit, latent): smallest wins
    for chunk in candidates.split(max(1, EXACT_SEARCH_MAX // W_U.shape[1])):
        logits = W_dec[chunk].float() @ W_U.float()
        own = logits[:, token]
        ranks = (logits > own[:, None]).sum(1)
        key = ranks.double() * 1e6 - own.double()  # rank first, then the larger logit
        j = int(key.argmin())
        cand = (int(ranks[j]), -float(own[j]), int(chunk[j]))
        best = cand if best is None or cand < best else best
    assert best is not None
    return best[2], best[0], -best[1]


def dashboard_figure(acts: LatentActivations, latent: int, density: Tensor | None = None
                     ) -> Figure:
    """Two panels: the firing density (log10) of every live latent with this one marked, and
    the histogram of this latent's non-zero activations. (One filled outline per histogram
    and fixed margins: a figure draws in a few tens of milliseconds.)"""
    density = acts.density() if density is None else density
    _, values = acts.column(latent)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.2, 2.3))
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.22, top=0.87, wspace=0.12)
    live = density[density > 0]
    if len(live):
        counts, edges = torch.histogram(live.log10().double(), bins=40)
        ax1.stairs(counts.numpy(), edges.numpy(), fill=True, color="0.78")
    d = float(density[latent])
    if d > 0:
        ax1.axvline(math.log10(d), color="tab:orange", lw=2)
    ax1.set_title(f"firing density (log10): {math.log10(d):.2f}" if d > 0
                  else "firing density: never fires", fontsize=9)
    ax1.set_xlabel("log10 fraction of tokens (grey: all live latents)", fontsize=8)
    ax1.set_yticks([])
    if len(values):
        counts, edges = torch.histogram(values.double(), bins=40)
        ax2.stairs(counts.numpy(), edges.numpy(), fill=True, color="tab:orange")
    ax2.set_title(f"activations where it fires ({len(values):,} tokens)", fontsize=9)
    ax2.set_xlabel("activation", fontsize=8)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
    return fig


def _table(rows: list[list[str]], header: list[str], title: str) -> str:
    head = "".join(f"<th style='text-align:left;padding:0 8px 0 0'>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px 0 0'>{c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return (f"<div style='font-size:12px'><b>{title}</b><table style='border-collapse:collapse'>"
            f"<tr>{head}</tr>{body}</table></div>")


def _token(text: str) -> str:
    """A token for a table cell: escaped, spaces visible."""
    return ("<code style='background:#f2f2f2'>" + html.escape(text).replace(" ", "&nbsp;")
            + "</code>")


def _message(text: str, kind: str = "info") -> str:
    colour = {"info": "#1f4e79", "warn": "#8a5300", "error": "#a01010"}[kind]
    return f"<div style='color:{colour};font-size:13px;margin:2px 0'>{text}</div>"


# --------------------------------------------------------------------------- the widget


class FeatureDashboard:
    """Everything about one latent of `sae` (see the module docstring).

    model: the model the SAE reads (for the logit lens, token names and your own text);
    acts: `latent_activations(model, sae, contexts)`; contexts: the `LabelledContexts` the
    activations came from (marks whether each example's token carries the latent's best
    label); scores: `label_scores(acts, ...)` for the label picker and the ground-truth panel.
    """

    def __init__(self, model: Any, sae: SAE, acts: LatentActivations, contexts: Any = None,
                 scores: LabelScores | None = None, latent: int | None = None) -> None:
        import ipywidgets as widgets

        if acts.d_sae != sae.cfg.d_sae:
            raise ValueError(f"acts cover {acts.d_sae} latents but the SAE has "
                             f"{sae.cfg.d_sae}: pass latent_activations(model, sae, contexts) "
                             "of this SAE.")
        if scores is not None and scores.f1.shape[0] != sae.cfg.d_sae:
            raise ValueError(f"scores cover {scores.f1.shape[0]} latents but the SAE has "
                             f"{sae.cfg.d_sae}: pass label_scores(acts, ...) of this SAE.")
        if contexts is not None and tuple(contexts.tokens.shape) != tuple(acts.tokens.shape):
            raise ValueError("contexts and acts cover different tokens: pass the contexts the "
                             "activations were computed on.")
        self.model, self.sae, self.acts = model, sae, acts
        self.contexts, self.scores = contexts, scores
        self.tokenizer = model.tokenizer
        self.hook_name = sae.cfg.extra.get("hook_name")
        self.density = acts.density()
        self.live = acts.firing_counts() > 0
        self.W_dec = sae.W_dec.detach().float().cpu()
        self.W_U = model.W_U.detach().float().cpu()
        self._labels: Tensor | None = None  # [n_tokens, n_labels] bool, built on first use
        self._own: tuple[list[int], Tensor] | None = None  # own text's tokens and latents
        self._syncing = False
        self.latent: int | None = None

        first = self.default_latent() if latent is None else int(latent)
        self.index_box = widgets.IntText(
            value=first, description="latent", continuous_update=False,
            layout=widgets.Layout(width="170px"))
        label_options: list[Any] = [(NO_LABEL, NO_LABEL)]
        if scores is not None:
            f1, _ = scores.f1.max(dim=0)
            label_options += [(f"{n} (F1 {float(f):.2f})", n)
                              for n, f in zip(scores.names, f1, strict=True)]
        self.label_box = widgets.Dropdown(
            options=label_options, value=NO_LABEL, description="best for",
            disabled=scores is None,
            tooltip="the latent with the best F1 for a label" if scores is not None
            else "pass scores=label_scores(...) to pick latents by label",
            layout=widgets.Layout(width="300px"))
        self.token_box = widgets.Text(
            value="", placeholder="a token, e.g. cat", description="logit lens",
            continuous_update=False, layout=widgets.Layout(width="260px"))
        self.status = widgets.HTML()
        self.plots = widgets.Output(layout=widgets.Layout(width="720px"))
        self.lens_html = widgets.HTML(layout=widgets.Layout(min_width="220px"))
        self.truth_html = widgets.HTML(layout=widgets.Layout(min_width="260px"))
        self.top_html = widgets.HTML()
        self.quantile_html = widgets.HTML()
        self.own_text = widgets.Textarea(
            value="", placeholder="Type your own text and press 'run on my text'.",
            description="your text", layout=widgets.Layout(width="640px", height="52px"))
        self.own_button = widgets.Button(description="run on my text", button_style="info",
                                         layout=widgets.Layout(width="140px"))
        self.own_html = widgets.HTML()

        self.index_box.observe(self._on_index, names="value")
        self.label_box.observe(self._on_label, names="value")
        self.token_box.observe(self._on_token, names="value")
        self.own_button.on_click(self._on_own)
        self.widget = widgets.VBox([
            widgets.HBox([self.index_box, self.label_box, self.token_box]),
            self.status,
            widgets.HBox([self.plots, self.lens_html, self.truth_html],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start")),
            self.top_html,
            self.quantile_html,
            widgets.HBox([self.own_text, self.own_button],
                         layout=widgets.Layout(margin="12px 0 0 0")),
            self.own_html,
        ])

    # ---- choosing a latent ----------------------------------------------------------------
    def default_latent(self) -> int:
        """The latent shown first: the one with the best F1 for any label but `DULL_LABELS`
        (with `scores`), else the first that fires."""
        if self.scores is not None:
            f1 = self.scores.f1.clone()
            boring = [j for j, n in enumerate(self.scores.names) if n in DULL_LABELS]
            if len(boring) < f1.shape[1]:
                f1[:, boring] = -1.0
            best = f1.max(dim=1).values
            best[~self.live] = -2.0
            return int(best.argmax())
        return int(self.live.int().argmax())

    def show(self, latent: int) -> None:
        """Show `latent` (redrawing every panel in place); a latent that does not exist
        gets a message instead."""
        self._syncing = True
        try:
            self.index_box.value = int(latent)
        finally:
            self._syncing = False
        self._draw(int(latent))

    def _on_index(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._reset_pickers(keep=None)
            self._draw(int(change["new"]))

    def _on_label(self, change: dict[str, Any]) -> None:
        label = change["new"]
        if self._syncing or label == NO_LABEL or self.scores is None:
            return
        self._reset_pickers(keep="label")
        self.show(best_latent_for_label(self.scores, label, self.live))
        j = self.scores.names.index(label)
        self._note(f"Latent {self.latent} is the best single latent for <b>{html.escape(label)}"
                   f"</b>: F1 {float(self.scores.f1[self.latent, j]):.2f}.")

    def _on_token(self, change: dict[str, Any]) -> None:
        text = change["new"]
        if self._syncing or not text.strip():
            return
        self.find_token(text)

    def find_token(self, text: str) -> int | None:
        """Show the latent whose logit lens ranks the token `text` highest; returns it (None,
        with a message, when `text` is not one token of the vocabulary)."""
        ids = token_ids_for(self.tokenizer, text)
        if not ids:
            pieces = [self.tokenizer.decode([t]) for t in tokenize_texts([text], self.tokenizer)[0]]
            shown = ", ".join(_token(p) for p in pieces) or "nothing"
            self._note(f"{_token(text)} is not one token of this model's vocabulary (it "
                       f"splits into {shown}): type a single token, as the logit-lens table "
                       "writes them.", "warn")
            return None
        found = [(latent_for_token(self.W_dec, self.W_U, t, self.live), t) for t in ids]
        (latent, rank, logit), token = min(found, key=lambda f: (f[0][1], -f[0][2]))
        self._reset_pickers(keep="token")
        self.show(latent)
        place = "its top token" if rank == 0 else f"number {rank + 1} of its tokens"
        self._note(f"Latent {latent}'s logit lens ranks {_token(self.tokenizer.decode([token]))}"
                   f" highest of all live latents: {place} (logit {logit:+.2f}).")
        return latent

    def _reset_pickers(self, keep: str | None) -> None:
        """Clear the pickers other than `keep`, so none shows a stale choice."""
        self._syncing = True
        try:
            if keep != "label" and self.scores is not None:
                self.label_box.value = NO_LABEL
            if keep != "token":
                self.token_box.value = ""
        finally:
            self._syncing = False

    def _note(self, text: str, kind: str = "info") -> None:
        self.status.value = self._header() + _message(text, kind)

    # ---- drawing --------------------------------------------------------------------------
    def _header(self) -> str:
        if self.latent is None:
            return ""
        i = self.latent
        parts = [f"<b>Latent {i}</b> of {self.acts.d_sae}",
                 f"fires on {int(self.acts.firing_counts()[i]):,} of "
                 f"{self.acts.n_counted:,} tokens ({float(self.density[i]):.3%})"]
        url = neuronpedia_url(self.sae, i)
        if url:
            parts.append(f"<a href='{url}' target='_blank' rel='noopener' "
                         "style='color:#0645ad;text-decoration:underline'>"
                         "its Neuronpedia page</a>")
        return "<div style='font-size:13px'>" + " · ".join(parts) + "</div>"

    def _show_figure(self, fig: Figure) -> None:
        """Replace what the plot area shows with `fig` as a PNG, then close the figure
        (the same in Jupyter, Colab and a plain Python process: no figure piles up)."""
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
        finally:
            plt.close(fig)
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.plots.outputs = ({"output_type": "display_data", "metadata": {},
                               "data": {"image/png": png,
                                        "text/plain": f"<Figure: latent {self.latent}>"}},)

    def _clear_panels(self) -> None:
        self.plots.outputs = ()
        for w in (self.lens_html, self.truth_html, self.top_html, self.quantile_html):
            w.value = ""

    def _draw(self, latent: int) -> None:
        d_sae = self.acts.d_sae
        if not 0 <= latent < d_sae:
            self.latent = None
            self._clear_panels()
            self.own_html.value = ""
            self.status.value = _message(
                f"There is no latent {latent}: this SAE has latents 0 to {d_sae - 1}. Type "
                "an index in that range.", "error")
            return
        self.latent = latent
        self.lens_html.value = self._lens_html(latent)
        if not bool(self.live[latent]):
            self._clear_panels()
            self.lens_html.value = self._lens_html(latent)
            self.status.value = self._header() + _message(
                f"Latent {latent} is dead here: it never fires on the {self.acts.n_counted:,} "
                "tokens of these contexts, so it has no examples, histogram or labels to show. "
                "Its logit lens (what it would write) is below; your own text may still make "
                "it fire.", "warn")
        else:
            self.status.value = self._header()
            fig = dashboard_figure(self.acts, latent, self.density)
            self._show_figure(fig)
            self.truth_html.value = self._truth_html(latent)
            self.top_html.value = self._top_html(latent)
            self.quantile_html.value = self._quantile_html(latent)
        self.own_html.value = self._own_html() if self._own is not None else ""

    def logit_lens(self, latent: int, k: int = N_LENS) -> LogitLens:
        """`features.logit_lens` from the dashboard's CPU copies of W_dec and W_U."""
        logits = decoder_logits(self.W_dec, self.W_U, latent)
        top, bottom = logits.topk(k), (-logits).topk(k)
        def names(ids: list[int]) -> list[str]:  # ids the tokenizer lacks read as #id
            found = self.tokenizer.convert_ids_to_tokens(ids)
            return _readable([f"#{i}" if t is None else t for i, t in zip(ids, found,
                                                                          strict=True)])

        return LogitLens(latent, names(top.indices.tolist()), top.values.tolist(),
                         names(bottom.indices.tolist()), (-bottom.values).tolist())

    def _lens_html(self, latent: int) -> str:
        lens = self.logit_lens(latent)
        rows = [[_token(t), f"{v:+.2f}", _token(b), f"{w:+.2f}"]
                for t, v, b, w in zip(lens.top_tokens, lens.top_values, lens.bottom_tokens,
                                      lens.bottom_values, strict=True)]
        return _table(rows, ["promotes", "", "suppresses", ""], "Logit lens (W_dec[i] @ W_U)")

    def _label_matrix(self) -> Tensor | None:
        if self.contexts is None or self.scores is None:
            return None
        if self._labels is None:
            from sae_course.scorecard import counted_features

            self._labels = counted_features(self.contexts, self.scores.names)
        return self._labels

    def _best_label(self, latent: int) -> int | None:
        if self.scores is None:
            return None
        return int(self.scores.f1[latent].argmax())

    def _truth_html(self, latent: int) -> str:
        if self.scores is None:
            return _message("Ground truth: pass scores=label_scores(...) to see the labels "
                            "this latent predicts.")
        s = self.scores
        order = torch.argsort(s.f1[latent], descending=True)[:N_LABELS].tolist()
        rows = [[html.escape(s.names[j]), f"{float(s.precision[latent, j]):.2f}",
                 f"{float(s.recall[latent, j]):.2f}", f"<b>{float(s.f1[latent, j]):.2f}</b>"]
                for j in order]
        return _table(rows, ["label", "precision", "recall", "F1"],
                      "Ground truth: its best labels")

    def _example_rows(self, examples: list[Example], latent: int) -> str:
        labels = self._label_matrix()
        j = self._best_label(latent)
        L = self.acts.context_len
        scale = float(self.acts.column(latent)[1].max())
        rows = []
        for e in examples:
            mark = ""
            if labels is not None and j is not None:
                holds = bool(labels[e.context * L + e.position, j])
                mark = ("<span style='color:#18794e' title='the best label holds here'>✓</span>"
                        if holds else
                        "<span style='color:#a01010' title='the best label does not hold'>✗"
                        "</span>")
            rows.append(f"<tr><td style='padding:0 8px 0 0;text-align:right'>"
                        f"{e.activation:.2f}</td><td style='padding:0 6px 0 0'>{mark}</td>"
                        f"<td>{example_html(e, self.tokenizer, scale)}</td></tr>")
        return "<table style='border-collapse:collapse;font-size:12px'>" + "".join(rows) + \
            "</table>"

    def _label_note(self, latent: int) -> str:
        j = self._best_label(latent)
        if j is None or self._label_matrix() is None or self.scores is None:
            return ""
        return (f" (✓: the token carries its best label, "
                f"<i>{html.escape(self.scores.names[j])}</i>)")

    def _top_html(self, latent: int) -> str:
        examples = top_examples(self.acts, latent, n=N_TOP, window=WINDOW)
        return (f"<div style='font-size:12px;margin-top:6px'><b>Top examples</b>"
                f"{self._label_note(latent)}</div>" + self._example_rows(examples, latent))

    def _quantile_html(self, latent: int) -> str:
        _, values = self.acts.column(latent)
        bands = quantile_bands(values, N_BANDS)
        by_band = quantile_examples(self.acts, latent, N_BANDS, PER_BAND, window=WINDOW)
        parts = ["<div style='font-size:12px;margin-top:6px'><b>Examples from each quarter of "
                 "its activations</b> (random, weakest quarter last)</div>"]
        for b in reversed(range(N_BANDS)):
            inside = values[bands == b]
            if not len(inside) or not by_band[b]:
                continue
            parts.append(f"<div style='font-size:11px;color:#555'>band {b + 1} of {N_BANDS}: "
                         f"{float(inside.min()):.2f} to {float(inside.max()):.2f}</div>")
            examples = sorted(by_band[b], key=lambda e: -e.activation)
            parts.append(self._example_rows(examples, latent))
        return "".join(parts)

    # ---- your own text --------------------------------------------------------------------
    def _on_own(self, _button: Any = None) -> None:
        self.run_text(self.own_text.value)

    @torch.no_grad()
    def run_text(self, text: str) -> Tensor | None:
        """Run `text` through the model and the SAE (BOS prepended, as the contexts were
        made) and show the current latent's activation on each token; returns the latent's
        activations [n_tokens] (BOS not included), or None with a message."""
        if not text.strip():
            self._own = None
            self.own_html.value = _message("Type some text first.", "warn")
            return None
        if self.hook_name is None:
            self.own_html.value = _message("This SAE does not record its hook "
                                           "(cfg.extra['hook_name']), so your text cannot be "
                                           "run through it.", "error")
            return None
        ids = tokenize_texts([text], self.tokenizer)[0]
        limit = min(MAX_OWN_TOKENS, (getattr(self.model.cfg, "n_ctx", None) or 10**9) - 1)
        cut = len(ids) > limit
        ids = ids[:limit]
        if not ids:
            self.own_html.value = _message("That text has no tokens.", "warn")
            return None
        tokens = torch.tensor([[bos_id_of(self.tokenizer)] + ids])
        x = harvest(self.model, tokens, self.hook_name).to(self.sae.device, self.sae.dtype)
        latents = self.sae.encode(x)[0, 1:].float().cpu()
        self._own = (ids, latents)
        self.own_html.value = self._own_html(cut)
        return None if self.latent is None else latents[:, self.latent]

    def _own_html(self, cut: bool = False) -> str:
        if self._own is None or self.latent is None:
            return ""
        ids, latents = self._own
        values = latents[:, self.latent]
        n_fired = int((values > 0).sum())
        top = int(values.argmax())
        example = Example(-1, top, float(values[top]), ids, values.tolist(),
                          top if n_fired else -1)
        scale = float(self.acts.column(self.latent)[1].max()) if bool(self.live[self.latent]) \
            else None
        if n_fired:
            firing = [f"{_token(self.tokenizer.decode([t]))}&nbsp;{v:.2f}"
                      for t, v in zip(ids, values.tolist(), strict=True) if v > 0]
            summary = (f"Latent {self.latent} fires on {n_fired} of {len(ids)} tokens, most on "
                       f"{_token(self.tokenizer.decode([ids[top]]))} ({float(values[top]):.2f}"
                       "); shading is relative to its top activation in the contexts above.")
            detail = "<div style='font-size:11px;margin-top:2px'>" + " · ".join(firing) + \
                "</div>"
        else:
            summary = f"Latent {self.latent} does not fire on any of these {len(ids)} tokens."
            detail = ""
        note = f" (cut to its first {len(ids)} tokens)" if cut else ""
        return (_message(summary + note) + "<div style='font-size:12px'>"
                + example_html(example, self.tokenizer, scale or 1.0)
                + "</div>" + detail)

    def display(self) -> None:
        """Show the dashboard in the notebook (once per cell: leaving the object last in the
        same cell does not show it a second time)."""
        self._shown_in = _execution_count()
        if self._shown_in is not None or _in_ipython():
            display(self.widget)  # outside IPython there is nothing to show it in

    def _ipython_display_(self) -> None:
        count = _execution_count()
        if count is not None and count == getattr(self, "_shown_in", None):
            return  # feature_dashboard(...) already showed it in this cell
        self.display()


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    return get_ipython() is not None


def _execution_count() -> int | None:
    """The running cell's execution count in IPython (None outside it)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None
    shell = get_ipython()
    return None if shell is None else getattr(shell, "execution_count", None)


def feature_dashboard(model: Any, sae: SAE, acts: LatentActivations, contexts: Any = None,
                      scores: LabelScores | None = None, latent: int | None = None
                      ) -> FeatureDashboard:
    """Build the dashboard, draw its first latent (`latent`, default: the best match of any
    label with `scores`, else the first live latent) and show it; returns it, so that
    `dash = feature_dashboard(...)` keeps it for `dash.show(i)` or `dash.run_text(...)`."""
    dash = FeatureDashboard(model, sae, acts, contexts, scores, latent)
    dash.show(dash.index_box.value)
    dash.display()
    return dash
