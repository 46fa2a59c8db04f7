"""Tokens: how the model eats the corpus.

`Tokenizer` puts text (UTF-8 bytes), markers and codec codes into the model's one id space; `asr`,
`tts`, `text_lm`, `speech_lm` lay out one task as one sequence with modality ids and a loss mask;
`task_stream` mixes tasks (MoST's stage 1 by default); `collate` and `batches` pad and bucket;
`prompts` left-pads prompts for generation. Only torch is needed: no audio package.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .model import MoSTConfig

if TYPE_CHECKING:
    from .corpus import Corpus

# ----------------------------------------------------------------------------------------------
# tokens: one id space for text, markers and audio (the toy/small vocabulary layout)
#
#   0-255     text, as UTF-8 bytes: every string round-trips, nothing is out of vocabulary
#   256-258   pad, bos, eos (from the config)
#   259-264   markers, from the first id after pad/bos/eos: <boa> <eoa> (begin/end of audio) and one
#             prompt per task (<asr> <tts> <text> <speech>)
#   320-...   audio: code c of codebook k is id audio_token_start + k * cardinality + c
#
# markers are text-range ids, so they route to text experts; only codec codes carry modality 1.
# Audio layout: codebooks are flattened frame by frame (f0c0 f0c1 f1c0 f1c1 ...), so K codebooks at
# 50 frames/s cost 50*K tokens per second of speech. The default uses K=1 (50 tokens/s): on this
# corpus codebook 0 alone keeps most words (data_samples/codec/quality.json), and each further
# codebook would add a whole sequence's worth of audio tokens. MoST itself uses one stream of HuBERT
# units at 25 Hz.
# (A delay pattern, as in MusicGen, keeps one position per frame but needs K output heads.)

MARKERS = ("<boa>", "<eoa>", "<asr>", "<tts>", "<text>", "<speech>")
TASKS = ("asr", "tts", "text", "speech")
STAGE1_MIX = {"asr": 0.4, "tts": 0.4, "text": 0.2}     # MoST's stage-1 post-training mix
IGNORE = -100                                           # target id the loss skips (prompt and padding)


@dataclass
class Example:
    """One task as one sequence. loss_mask[t] is True where ids[t] is a response token: the model is
    trained to predict it from ids[:t]. The prompt (ids[:prompt_len]) is never a target, as in MoST."""
    task: str
    ids: torch.Tensor           # (T,) int64
    modality: torch.Tensor      # (T,) 0 text, 1 audio
    loss_mask: torch.Tensor     # (T,) bool
    prompt_len: int
    text: str = ""              # the sentence, for evaluation

    def __len__(self) -> int:
        return len(self.ids)


class Tokenizer:
    """Text <-> byte ids, codec codes <-> audio ids, and the four task layouts. Needs a config whose
    vocabulary has bytes at 0-255 and room for the markers below the audio range (toy, small); with
    DeepSeek-V2-Lite weights use DeepSeek's own BPE tokenizer instead."""

    def __init__(self, config, codebooks: int = 1, marker_start: int | None = None):
        self.config = config
        if not 1 <= codebooks <= config.audio_codebooks:
            raise ValueError(f"codebooks={codebooks}: the config has room for 1 to {config.audio_codebooks}")
        self.codebooks, self.cardinality = codebooks, config.audio_cardinality
        self.audio_start, self.audio_end = config.audio_token_start, config.audio_token_end
        self.pad, self.bos, self.eos = config.pad_token_id, config.bos_token_id, config.eos_token_id
        bpe = config.vocab_size > 65536  # a BPE vocabulary (full: DeepSeek's), not the byte layout
        if marker_start is None:  # bytes: right after pad/bos/eos (toy/small: 259); BPE: after the audio range
            marker_start = config.audio_token_end if bpe else max(self.pad, self.bos, self.eos) + 1
        self.marker = {name: marker_start + i for i, name in enumerate(MARKERS)}
        specials = {self.pad, self.bos, self.eos}
        for name, i in self.marker.items():
            why = ("a text byte" if i < 256 else "outside the vocabulary" if i >= config.vocab_size else
                   "an audio id" if self.audio_start <= i < self.audio_end else "pad/bos/eos" if i in specials else "")
            if why:
                raise ValueError(f"marker {name} would be id {i}, which is {why}: choose marker_start so that "
                                 f"ids {marker_start}-{marker_start + len(MARKERS) - 1} are free")
        for name, i in (("pad", self.pad), ("bos", self.bos), ("eos", self.eos)):
            if 0 <= i < 256:
                raise ValueError(f"{name} is id {i}, a text byte: this tokenizer needs bytes 0-255 free of specials")
        self.boa, self.eoa = self.marker["<boa>"], self.marker["<eoa>"]
        if bpe:
            warnings.warn(f"vocab_size={config.vocab_size}: text bytes 0-255 are BPE tokens of this vocabulary; fine for "
                          "training from scratch, wrong with pretrained (DeepSeek-V2-Lite) weights, which need DeepSeek's "
                          "own tokenizer", stacklevel=2)

    def tokens_per_second(self, frame_rate: float = 50.0) -> float:
        return frame_rate * self.codebooks

    # --- text ---
    def encode_text(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError as e:  # a lone surrogate, e.g. from a bad decode upstream: not text
            raise ValueError(f"text is not valid Unicode ({e.reason} at position {e.start}): "
                             "fix the string, e.g. text.encode('utf-8', 'replace').decode()") from e

    def decode_text(self, ids, skip_special: bool = False) -> str:
        """Bytes back to text. Non-byte ids raise, or are dropped with skip_special=True; an invalid
        UTF-8 sequence (a model can generate one) becomes U+FFFD, the replacement character."""
        ids = torch.as_tensor(ids).reshape(-1)
        if ids.numel() == 0:
            return ""
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be integers, got {ids.dtype}")
        ids = ids.tolist()
        bad = [i for i in ids if not 0 <= i < 256]
        if bad and not skip_special:
            raise ValueError(f"ids {bad[:5]} are not text bytes (0-255): pass skip_special=True to drop them")
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    # --- audio ---
    def encode_audio(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (K, F) -> audio ids (F * codebooks,), frame by frame; uses the first `codebooks` rows."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype.is_floating_point \
                or codes.dtype == torch.bool:
            raise ValueError("codes must be an integer tensor (codebooks, frames), got "
                             f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if codes.shape[0] > 32:   # no codec has more codebooks than that (EnCodec: 32 at 24 kbps)
            raise ValueError(f"codes {tuple(codes.shape)} have {codes.shape[0]} rows: that looks like (frames, "
                             "codebooks); pass (codebooks, frames), e.g. codes.T")
        if codes.shape[0] < self.codebooks or codes.shape[1] == 0:
            raise ValueError(f"codes {tuple(codes.shape)}: need at least {self.codebooks} codebooks and 1 frame")
        codes = codes[: self.codebooks].long()
        if codes.min() < 0 or codes.max() >= self.cardinality:
            raise ValueError(f"codes must lie in [0, {self.cardinality}), got {int(codes.min())}..{int(codes.max())}")
        offset = self.audio_start + self.cardinality * torch.arange(self.codebooks)[:, None]   # (K, 1)
        return (codes + offset).T.reshape(-1)                                                  # (F*K,)

    def decode_audio(self, ids) -> torch.Tensor:
        """Audio ids -> codes (codebooks, F). Every id must be audio and sit at its codebook's position."""
        ids = _integer_ids(ids)
        if len(ids) == 0 or len(ids) % self.codebooks:
            raise ValueError(f"{len(ids)} audio ids do not make whole frames of {self.codebooks} codebooks")
        rel = ids - self.audio_start
        if ((rel < 0) | (ids >= self.audio_end)).any():
            raise ValueError(f"not all ids are audio ids [{self.audio_start}, {self.audio_end}): "
                             "cut the span between <boa> and <eoa> first (audio_span does)")
        codes = rel.reshape(-1, self.codebooks).T                                              # (K, F)
        book = codes // self.cardinality
        if (book != torch.arange(self.codebooks)[:, None]).any():
            raise ValueError("audio ids are out of codebook order: frame positions must go codebook 0, 1, ...")
        return codes % self.cardinality

    def audio_span(self, ids) -> torch.Tensor:
        """The audio ids of a generated response: everything before the first id that is not this
        tokenizer's audio at its position (e.g. <eoa>, or a codebook-1 id where codebook 0 belongs),
        trimmed to whole frames, so decode_audio always accepts it."""
        ids = _integer_ids(ids)
        rel = ids - self.audio_start
        position = torch.arange(len(ids)) % self.codebooks                # the codebook each position holds
        is_audio = (rel >= 0) & (rel < self.codebooks * self.cardinality) & (rel // self.cardinality == position)
        n = int(is_audio.long().cumprod(0).sum())
        return ids[: n - n % self.codebooks]

    def describe(self, ids, audio_shown: int = 3) -> str:
        """A readable rendering of ids: text as text, specials and markers by name, audio runs as
        [N audio ids: first few ...]. For looking at sequences, not for decoding."""
        names = {self.pad: "<pad>", self.bos: "<bos>", self.eos: "<eos>", **{v: k for k, v in self.marker.items()}}
        out, text, audio = [], [], []

        def flush():
            if text:
                out.append(repr(self.decode_text(text)))
                text.clear()
            if audio:
                more = " ..." if len(audio) > audio_shown else ""
                out.append(f"[{len(audio)} audio ids: {' '.join(map(str, audio[:audio_shown]))}{more}]")
                audio.clear()
        for i in (int(i) for i in ids):
            if 0 <= i < 256:
                if audio:
                    flush()
                text.append(i)
            elif self.audio_start <= i < self.audio_end:
                if text:
                    flush()
                audio.append(i)
            else:
                flush()
                out.append(names.get(i, f"<{i}>"))
        flush()
        return " ".join(out)

    # --- tasks: prompt ids, response ids -> Example ---
    def _example(self, task: str, prompt: list, response: list, text: str) -> Example:
        # prompt and response are lists of ids and id tensors
        flat = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in prompt + response]
        ids = torch.cat(flat)
        n_prompt = sum(len(p) for p in flat[: len(prompt)])
        mask = torch.arange(len(ids)) >= n_prompt
        return Example(task, ids, self.config.token_modality(ids), mask, n_prompt, text)

    def _check_text(self, text: str) -> list[int]:
        t = self.encode_text(text)
        if not text.strip():
            raise ValueError(f"empty text {text!r} (nothing but white space): a task needs at least one visible character")
        return t

    def asr(self, codes: torch.Tensor, text: str) -> Example:
        """<bos> <asr> <boa> speech <eoa> | text <eos>   (speech in, text out)"""
        return self._example("asr", [self.bos, self.marker["<asr>"], self.boa, self.encode_audio(codes), self.eoa],
                             [self._check_text(text), self.eos], text)

    def tts(self, text: str, codes: torch.Tensor) -> Example:
        """<bos> <tts> text | <boa> speech <eoa> <eos>   (text in, speech out; MoST wraps the output audio too)"""
        return self._example("tts", [self.bos, self.marker["<tts>"], self._check_text(text)],
                             [self.boa, self.encode_audio(codes), self.eoa, self.eos], text)

    def text_lm(self, text: str) -> Example:
        """<bos> <text> | text <eos>"""
        return self._example("text", [self.bos, self.marker["<text>"]], [self._check_text(text), self.eos], text)

    def speech_lm(self, codes: torch.Tensor, prompt_frames: int = 0, text: str = "") -> Example:
        """<bos> <speech> <boa> speech[:p] | speech[p:] <eoa> <eos>   (audio continuation; p=0: plain speech LM)"""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
            raise ValueError("codes must be an integer tensor (codebooks, frames), got "
                             f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if not 0 <= prompt_frames < codes.shape[-1]:
            raise ValueError(f"prompt_frames={prompt_frames}: must leave at least one of the {codes.shape[-1]} frames to continue")
        head = [self.encode_audio(codes[:, :prompt_frames])] if prompt_frames else []
        return self._example("speech", [self.bos, self.marker["<speech>"], self.boa, *head],
                             [self.encode_audio(codes[:, prompt_frames:]), self.eoa, self.eos], text)


def config_for(corpus: Corpus, preset: str = "small", codebooks: int | None = None, **overrides) -> MoSTConfig:
    """The preset sized for a corpus's codec: its audio range holds `codebooks` codebooks (default:
    the codec's choice, corpus.model_codebooks) of the codec's cardinality, and its maximum length
    fits the corpus's longest ASR/TTS sequence. Fields the preset already fits stay as they are, so
    the shipped corpus gets the preset unchanged; fields in `overrides` are taken as given."""
    codec = corpus.codec
    codebooks = corpus.model_codebooks if codebooks is None else codebooks
    if isinstance(codebooks, bool) or not isinstance(codebooks, int) or not 1 <= codebooks <= codec["num_codebooks"]:
        raise ValueError(f"codebooks={codebooks!r}: the corpus's codec ({codec['name']}) has 1 to {codec['num_codebooks']}")
    cfg = MoSTConfig.preset(preset, **overrides)
    change = {}
    if codec["cardinality"] != cfg.audio_cardinality or codebooks > cfg.audio_codebooks:
        change = {"audio_cardinality": codec["cardinality"], "audio_codebooks": codebooks}
        end = cfg.audio_token_start + codebooks * codec["cardinality"]
        # the byte layout (toy, small) ends at the audio range; a BPE vocabulary (full) only grows, and
        # keeps room after the audio range for the markers, which the tokenizer puts there
        change["vocab_size"] = end if cfg.vocab_size <= 65536 else max(cfg.vocab_size, end + len(MARKERS))
    # ASR and TTS hold bos, task marker, <boa>, <eoa>, eos around the audio ids and the text bytes; batched
    # ASR evaluation pads every prompt to the longest audio and lets the answer run to the longest text (+1)
    audio = max((u.codes.shape[-1] * codebooks for u in corpus.utterances), default=0)
    text = max((len(u.text.encode()) for u in corpus.utterances), default=0)
    longest = audio + text + 6
    if longest - 1 > cfg.max_position_embeddings:             # the model sees ids[:-1]
        change["max_position_embeddings"] = -(-(longest - 1) // 256) * 256
    change = {k: v for k, v in change.items() if k not in overrides}
    return MoSTConfig.preset(preset, **{**overrides, **change})


def _integer_ids(ids) -> torch.Tensor:
    """ids as a flat int64 tensor; float or bool ids are refused, not rounded."""
    ids = torch.as_tensor(ids)
    if ids.numel() == 0:                        # torch.as_tensor([]) is float32: an empty list is no ids
        return ids.long().reshape(-1)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"ids must be integers, got {ids.dtype}")
    return ids.long().reshape(-1)


def task_stream(corpus: Corpus, tokenizer: Tokenizer, mix: dict | None = None, split: str = "train",
                seed: int = 0) -> Iterator[Example]:
    """An endless stream of examples: each draws its task by `mix` (default MoST's stage 1: ASR 0.4,
    TTS 0.4, text LM 0.2), then an utterance of `split` (or, for text LM, a text-only sentence) at random.
    Speech-LM draws train on whole utterances (prompt_frames=0), which also teaches continuation;
    a continuation prompt is for evaluation: tokenizer.speech_lm(codes, prompt_frames=p)."""
    mix = dict(STAGE1_MIX if mix is None else mix)
    ok = bool(mix) and not set(mix) - set(TASKS)
    ok = ok and all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in mix.values())
    if not ok or sum(mix.values()) <= 0:
        raise ValueError(f"bad task mix {mix}: give finite weights >= 0 (not all 0) for tasks among {TASKS}")
    utts = corpus.split(split)
    texts = corpus.text_only if split == "train" else [u.text for u in utts]
    if not utts:
        raise ValueError(f"the corpus has no {split} utterances")
    if mix.get("text", 0) > 0 and not texts:
        raise ValueError("the mix asks for text LM but the corpus has no text-only sentences: give it some, or set mix['text']=0")
    if corpus.codec.get("cardinality") != tokenizer.cardinality or corpus.codec.get("num_codebooks", 0) < tokenizer.codebooks:
        raise ValueError(f"the corpus's codec ({corpus.codec}) does not match the tokenizer ({tokenizer.codebooks} codebooks "
                         f"of {tokenizer.cardinality}): re-encode the corpus or build the tokenizer to match")
    rng = random.Random(seed)
    tasks, weights = list(mix), list(mix.values())
    while True:
        task = rng.choices(tasks, weights)[0]
        if task == "text":
            yield tokenizer.text_lm(rng.choice(texts))
            continue
        u = rng.choice(utts)
        if task == "asr":
            yield tokenizer.asr(u.codes, u.text)
        elif task == "tts":
            yield tokenizer.tts(u.text, u.codes)
        else:
            yield tokenizer.speech_lm(u.codes, text=u.text)


@dataclass
class Batch:
    """Padded model inputs. tokens/modality/attention_mask/targets are (B, T); targets are the next
    ids, IGNORE where the next id is prompt or padding."""
    tokens: torch.Tensor
    modality: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    examples: list[Example]

    def to(self, device) -> Batch:
        return Batch(self.tokens.to(device), self.modality.to(device), self.attention_mask.to(device),
                     self.targets.to(device), self.examples)


def collate(examples: list[Example], pad_id: int, max_len: int | None = None) -> Batch:
    """Right-pad examples into a training batch (inputs ids[:-1], targets ids[1:] where trained)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    longest = max(len(e) for e in examples)
    if max_len is not None and longest - 1 > max_len:  # the model sees ids[:-1]
        raise ValueError(f"an example has {longest} tokens, so {longest - 1} inputs, more than max_len={max_len} "
                         "(the model's max_position_embeddings): drop long utterances or raise the limit")
    B, T = len(examples), longest - 1
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE, dtype=torch.long)
    modality = torch.zeros((B, T), dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e) - 1
        tokens[b, :n], modality[b, :n], attn[b, :n] = e.ids[:-1], e.modality[:-1], 1
        targets[b, :n] = e.ids[1:].masked_fill(~e.loss_mask[1:], IGNORE)
    return Batch(tokens, modality, attn, targets, list(examples))


def prompts(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad the prompts for batched generation: (tokens, attention_mask), both (B, P); the
    last column is every prompt's last token, so new ids line up."""
    if not examples:
        raise ValueError("prompts needs at least one example")
    P = max(e.prompt_len for e in examples)
    tokens = torch.full((len(examples), P), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), P), dtype=torch.long)
    for b, e in enumerate(examples):
        tokens[b, P - e.prompt_len:], attn[b, P - e.prompt_len:] = e.ids[: e.prompt_len], 1
    return tokens, attn


def batches(examples: Iterable[Example], batch_size: int, pad_id: int, seed: int = 0, pool: int = 32,
            max_len: int | None = None) -> Iterator[Batch]:
    """Length bucketing: read `pool` batches' worth of examples, sort them by length, cut into batches
    (so each pads little), shuffle those batches with a fixed seed, yield; repeat until `examples` ends."""
    if batch_size < 1 or pool < 1:
        raise ValueError(f"batch_size ({batch_size}) and pool ({pool}) must be >= 1")
    rng, it = random.Random(seed), iter(examples)
    while True:
        chunk = [e for _, e in zip(range(batch_size * pool), it)]
        if not chunk:
            return
        chunk.sort(key=len)
        group = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(group)
        for g in group:
            yield collate(g, pad_id, max_len)
