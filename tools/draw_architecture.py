"""Draw mini-MoST's architecture (docs/architecture.png), with the sizes read from the presets.

    python tools/draw_architecture.py [--out docs/architecture.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mini_most import MoSTConfig  # noqa: E402

TEXT, AUDIO, SHARED, PLAIN, GATE = "#cfe2f3", "#fce5cd", "#d9ead3", "#eeeeee", "#fff2cc"


def box(ax, x, y, w, h, label, color=PLAIN, size=9, bold=False):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=color, ec="#444444", lw=1))
    ax.text(x, y, label, ha="center", va="center", fontsize=size, weight="bold" if bold else "normal")


def arrow(ax, x0, y0, x1, y1, style="-|>", color="#444444", ls="-"):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=10, color=color, lw=1, ls=ls))


def draw(out: Path) -> None:
    f, s = MoSTConfig.preset("full"), MoSTConfig.preset("small")
    fig, ax = plt.subplots(figsize=(14, 7.2))
    ax.set(xlim=(0, 14), ylim=(0, 7.4))
    ax.axis("off")

    # --- left: the stack ---
    ax.text(1.6, 7.15, "MoST: the stack", ha="center", fontsize=11, weight="bold")
    ys = [0.5, 1.5, 2.6, 3.7, 4.9, 5.9, 6.7]
    box(ax, 1.6, ys[0], 2.8, 0.6, "ids: text bytes | markers | audio codes\nmodality = 0 text, 1 audio (from the id)", size=7.5)
    box(ax, 1.6, ys[1], 2.6, 0.55, f"embedding ({f.vocab_size:,} x {f.hidden_size})", size=8)
    box(ax, 1.6, ys[2], 2.6, 0.6, f"block 0: MLA + dense SwiGLU\n(first_k_dense_replace = {f.first_k_dense_replace})", size=8)
    box(ax, 1.6, ys[3], 2.6, 0.75, f"blocks 1 .. {f.num_hidden_layers - 1}:\nMLA + MoE", color=GATE, size=9, bold=True)
    box(ax, 1.6, ys[4], 2.6, 0.5, "RMSNorm", size=8)
    box(ax, 1.6, ys[5], 2.6, 0.55, "LM head -> logits over all ids", size=8)
    for a, b in zip(ys[:5], ys[1:6]):
        arrow(ax, 1.6, a + 0.3, 1.6, b - 0.3)
    ax.text(1.6, ys[6], f"full: {f.num_hidden_layers} layers, hidden {f.hidden_size}\nsmall: {s.num_hidden_layers} layers, "
            f"hidden {s.hidden_size}", ha="center", va="center", fontsize=8, color="#555555")

    # --- middle: one block ---
    ax.text(5.0, 7.15, "one MoE block (pre-norm)", ha="center", fontsize=11, weight="bold")
    box(ax, 5.0, 0.6, 2.2, 0.5, "x", size=9)
    box(ax, 5.0, 1.55, 2.2, 0.45, "RMSNorm", size=8)
    mla = (f"MLA attention\nlatent {f.kv_lora_rank} + rope key {f.qk_rope_head_dim}\n= {f.kv_lora_rank + f.qk_rope_head_dim} "
           f"cached per token\n({f.num_attention_heads} heads, YaRN x{f.rope_scaling['factor']})")
    box(ax, 5.0, 2.6, 2.4, 1.05, mla, size=7.5)
    box(ax, 5.0, 3.65, 0.45, 0.4, "+", size=11)
    box(ax, 5.0, 4.45, 2.2, 0.45, "RMSNorm", size=8)
    box(ax, 5.0, 5.35, 2.2, 0.6, "MoE layer  ->", color=GATE, size=9, bold=True)
    box(ax, 5.0, 6.3, 0.45, 0.4, "+", size=11)
    for a, b in [(0.85, 1.33), (1.78, 2.07), (3.13, 3.45), (3.85, 4.23), (4.68, 5.05), (5.65, 6.1)]:
        arrow(ax, 5.0, a, 5.0, b)
    arrow(ax, 3.9, 0.6, 3.55, 0.6, style="-", color="#888888")
    arrow(ax, 3.55, 0.6, 3.55, 3.65, style="-", color="#888888")
    arrow(ax, 3.55, 3.65, 4.77, 3.65, color="#888888")
    arrow(ax, 3.55, 3.65, 3.55, 6.3, style="-", color="#888888")
    arrow(ax, 3.55, 6.3, 4.77, 6.3, color="#888888")
    ax.text(3.45, 2.2, "residual", rotation=90, fontsize=7.5, color="#888888", ha="right")

    # --- right: the MoE layer ---
    ax.text(10.2, 7.15, "the MoE layer: modality-aware routing (MAMoEGate)", ha="center", fontsize=11, weight="bold")
    box(ax, 7.9, 6.3, 2.6, 0.6, "token hidden state h\n+ its modality m", size=8.5)
    box(ax, 7.9, 5.0, 2.9, 1.35, "gate\n1. scores = softmax(W h) over ALL\n"
        f"   {f.n_routed_experts} routed experts\n2. zero the other modality's scores\n3. top-{f.num_experts_per_tok} of the rest, "
        "no renormalising", color=GATE, size=7.5)
    arrow(ax, 7.9, 6.0, 7.9, 5.68)
    # expert groups
    box(ax, 10.35, 3.3, 2.2, 1.1, f"text experts\n0 .. {f.n_text_experts - 1}\n(small: 0 .. {s.n_text_experts - 1})", color=TEXT, size=8.5)
    box(ax, 12.75, 3.3, 2.2, 1.1, f"audio experts\n{f.n_text_experts} .. {f.n_routed_experts - 1}\n"
        f"(small: {s.n_text_experts} .. {s.n_routed_experts - 1})", color=AUDIO, size=8.5)
    shared = f"{f.n_shared_experts} shared experts\nevery token, weight 1\n(one MLP {f.n_shared_experts} x {f.moe_intermediate_size} wide)"
    box(ax, 7.9, 3.3, 2.3, 1.1, shared, color=SHARED, size=8.5)
    arrow(ax, 9.2, 4.75, 10.2, 3.9, color="#3d85c6")
    arrow(ax, 9.3, 5.0, 12.6, 3.9, color="#e69138")
    ax.text(9.45, 4.5, "m = 0", fontsize=8, color="#3d85c6")
    ax.text(11.2, 4.75, "m = 1", fontsize=8, color="#e69138")
    arrow(ax, 6.6, 6.3, 6.6, 3.3, style="-", color="#6aa84f")
    arrow(ax, 6.6, 3.3, 6.75, 3.3, color="#6aa84f")
    box(ax, 10.4, 1.5, 5.4, 0.75, f"output = sum of the {f.num_experts_per_tok} chosen experts x their weights"
        "  +  shared experts", size=8.5)
    for xx in (7.9, 10.35, 12.75):
        arrow(ax, xx, 2.75, min(max(xx, 8.3), 12.5), 1.88)
    ax.text(10.4, 0.65, f"each expert: SwiGLU, hidden {f.hidden_size} -> {f.moe_intermediate_size} -> {f.hidden_size} "
            f"(small: {s.hidden_size} -> {s.moe_intermediate_size})\nbalance loss: DeepSeek's sequence-level loss on the "
            "masked scores", ha="center", fontsize=8, color="#555555")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "architecture.png")
    draw(ap.parse_args().out)
