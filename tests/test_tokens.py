"""Tokenizer, task formats, loss masks, batching and the shipped pre-tokenized corpus."""

import itertools
import json
import random

import pytest
import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.corpus import SHIPPED_CORPUS, Corpus, load_corpus, vocabulary
from mini_most.tokens import IGNORE, MARKERS, STAGE1_MIX, TASKS, Tokenizer, batches, collate, prompts, task_stream

CFG = MoSTConfig.preset("toy")



@pytest.fixture(params=[1, 2], ids=["1cb", "2cb"])
def tok(request):
    return Tokenizer(CFG, codebooks=request.param)


def codes(frames=9, seed=0):
    return torch.randint(0, 1024, (2, frames), generator=torch.Generator().manual_seed(seed))


# --- text ---

@pytest.mark.parametrize("text", ["the red dog saw the ball", "", "Ünïcödé ✓ 漢字 \n\t", "a" * 500])
def test_text_round_trips_exactly(text):
    tok = Tokenizer(CFG)
    ids = tok.encode_text(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode_text(ids) == text


def test_text_decoding_of_non_text_ids():
    tok = Tokenizer(CFG)
    with pytest.raises(ValueError, match="not text bytes.*skip_special"):
        tok.decode_text([104, tok.eos, 105])
    assert tok.decode_text([104, tok.eos, tok.boa, 400, 105], skip_special=True) == "hi"
    assert tok.decode_text([0xC3]) == "\ufffd"          # a cut UTF-8 sequence: the replacement character
    with pytest.raises(TypeError, match="must be a str"):
        tok.encode_text(b"bytes")


def test_marker_and_special_ids_are_distinct_and_in_the_text_range():
    tok = Tokenizer(CFG)
    ids = list(tok.marker.values()) + [tok.pad, tok.bos, tok.eos]
    assert len(set(ids)) == len(MARKERS) + 3
    assert all(256 <= i < CFG.audio_token_start for i in ids)
    assert (CFG.token_modality(torch.tensor(ids)) == 0).all()


def test_bad_text_inputs():
    tok = Tokenizer(CFG)
    with pytest.raises(ValueError, match="not valid Unicode"):
        tok.encode_text("a\udc80b")                       # a lone surrogate
    with pytest.raises(ValueError, match="must be integers"):
        tok.decode_text([1.7, 104])
    with pytest.raises(ValueError, match="must be integers"):
        tok.decode_text(torch.tensor([True, False]))


def test_full_vocabulary_warns_about_bpe_ids():
    full = MoSTConfig.preset("full")
    with pytest.warns(UserWarning, match="DeepSeek's own tokenizer"):
        tok = Tokenizer(full, codebooks=2)
    # markers take the free ids after the audio range, as in the README's vocabulary table
    assert tok.marker["<boa>"] == full.audio_token_end == 102050 and max(tok.marker.values()) < full.vocab_size


def test_bad_tokenizer_settings():
    with pytest.raises(ValueError, match="codebooks=3"):
        Tokenizer(CFG, codebooks=3)
    with pytest.raises(ValueError, match="<asr> would be id 320, which is an audio id"):
        Tokenizer(CFG, marker_start=318)
    with pytest.raises(ValueError, match="a text byte"):
        Tokenizer(CFG, marker_start=250)
    with pytest.raises(ValueError, match="pad/bos/eos"):
        Tokenizer(CFG, marker_start=255 + 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Tokenizer(MoSTConfig.preset("toy", vocab_size=2400), marker_start=2396)


# --- audio ---

def test_audio_ids_round_trip_and_stay_in_the_audio_range(tok):
    c = codes()
    ids = tok.encode_audio(c)
    assert ids.shape == (9 * tok.codebooks,)
    assert (CFG.token_modality(ids) == 1).all()
    assert ids.min() >= CFG.audio_token_start and ids.max() < CFG.audio_token_end
    assert torch.equal(tok.decode_audio(ids), c[: tok.codebooks])
    # frame-major layout: position k of each frame holds codebook k
    k = (ids - CFG.audio_token_start) // 1024
    assert torch.equal(k, torch.arange(tok.codebooks).repeat(9))
    assert tok.tokens_per_second(50) == 50 * tok.codebooks


def test_bad_audio_inputs_say_what_is_wrong():
    tok = Tokenizer(CFG, codebooks=2)
    with pytest.raises(ValueError, match="integer tensor"):
        tok.encode_audio(torch.rand(2, 5))
    with pytest.raises(ValueError, match="integer tensor"):
        tok.encode_audio(torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="integer tensor"):
        tok.speech_lm([[1, 2, 3]])
    with pytest.raises(ValueError, match="at least 2 codebooks"):
        tok.encode_audio(codes()[:1])
    with pytest.raises(ValueError, match=r"lie in \[0, 1024\)"):
        tok.encode_audio(torch.tensor([[0, 1024], [3, 4]]))
    ids = tok.encode_audio(codes())
    with pytest.raises(ValueError, match="whole frames"):
        tok.decode_audio(ids[:-1])
    with pytest.raises(ValueError, match="not all ids are audio"):
        tok.decode_audio(torch.cat([ids, torch.tensor([tok.eoa, 5])]))
    with pytest.raises(ValueError, match="codebook order"):
        tok.decode_audio(ids.flip(0))


def test_audio_span_cuts_at_the_first_non_audio_id():
    tok = Tokenizer(CFG, codebooks=2)
    ids = tok.encode_audio(codes(frames=4))
    assert torch.equal(tok.audio_span(torch.cat([ids, torch.tensor([tok.eoa, tok.eos])])), ids)
    assert torch.equal(tok.audio_span(torch.cat([ids[:5], torch.tensor([tok.eoa])])), ids[:4])   # whole frames
    assert len(tok.audio_span(torch.tensor([tok.eos]))) == 0
    # an audio id out of its codebook's place ends the span, so decode_audio accepts what is left
    assert torch.equal(tok.audio_span(torch.cat([ids[:2], ids[3:4], ids[2:]])), ids[:2])
    one = Tokenizer(CFG, codebooks=1)                    # codebook-1 ids are not audio for a 1-codebook tokenizer
    ids1 = one.encode_audio(codes(frames=4))
    span = one.audio_span(torch.cat([ids1[:3], torch.tensor([one.audio_start + one.cardinality]), ids1[3:]]))
    assert torch.equal(span, ids1[:3]) and one.decode_audio(span).shape == (1, 3)


def test_describe_names_every_kind_of_id():
    tok = Tokenizer(CFG)
    e = tok.asr(codes(frames=5), "hi")
    audio = " ".join(str(i) for i in e.ids[3:6].tolist())
    assert tok.describe(e.ids) == f"<bos> <asr> <boa> [5 audio ids: {audio} ...] <eoa> 'hi' <eos>"
    assert tok.describe([tok.pad, 300, 104]) == "<pad> <300> 'h'"


# --- tasks ---

def test_asr_layout_modality_and_loss_mask(tok):
    c, text = codes(), "a dog"
    e = tok.asr(c, text)
    n_audio = 9 * tok.codebooks
    expected = [tok.bos, tok.marker["<asr>"], tok.boa] + tok.encode_audio(c).tolist() + [tok.eoa] + list(b"a dog") + [tok.eos]
    assert e.ids.tolist() == expected
    assert e.prompt_len == 3 + n_audio + 1
    assert e.modality.tolist() == [0, 0, 0] + [1] * n_audio + [0] * (1 + len(text) + 1)
    assert torch.equal(e.modality, CFG.token_modality(e.ids))
    # only the transcript and EOS are trained
    assert e.ids[e.loss_mask].tolist() == list(b"a dog") + [tok.eos]


def test_tts_trains_the_audio_and_its_markers(tok):
    c = codes()
    e = tok.tts("hi", c)
    assert e.ids[: e.prompt_len].tolist() == [tok.bos, tok.marker["<tts>"], 104, 105]
    assert e.ids[e.loss_mask].tolist() == [tok.boa] + tok.encode_audio(c).tolist() + [tok.eoa, tok.eos]
    assert e.modality[e.loss_mask].sum() == 9 * tok.codebooks


def test_text_and_speech_lm(tok):
    e = tok.text_lm("abc")
    assert e.ids.tolist() == [tok.bos, tok.marker["<text>"], 97, 98, 99, tok.eos] and e.prompt_len == 2
    assert e.modality.sum() == 0
    c = codes()
    s = tok.speech_lm(c, prompt_frames=4)
    assert s.prompt_len == 3 + 4 * tok.codebooks
    assert tok.decode_audio(tok.audio_span(s.ids[s.prompt_len:])).tolist() == c[: tok.codebooks, 4:].tolist()
    assert tok.speech_lm(c).prompt_len == 3
    with pytest.raises(ValueError, match="prompt_frames=9"):
        tok.speech_lm(c, prompt_frames=9)
    with pytest.raises(ValueError, match="empty text"):
        tok.asr(c, "")


# --- batching ---

def test_collate_pads_right_and_shifts_targets():
    tok = Tokenizer(CFG)
    ex = [tok.asr(codes(5), "abc"), tok.text_lm("hello there"), tok.tts("x", codes(3))]
    b = collate(ex, tok.pad)
    T = max(len(e) for e in ex) - 1
    assert b.tokens.shape == b.targets.shape == b.modality.shape == b.attention_mask.shape == (3, T)
    for i, e in enumerate(ex):
        n = len(e) - 1
        assert b.attention_mask[i].tolist() == [1] * n + [0] * (T - n)
        assert torch.equal(b.tokens[i, :n], e.ids[:-1]) and (b.tokens[i, n:] == tok.pad).all()
        assert (b.targets[i, n:] == IGNORE).all()
        trained = b.targets[i] != IGNORE
        # targets are the next ids exactly where the next id is a response token
        assert torch.equal(trained[:n], e.loss_mask[1:])
        assert torch.equal(b.targets[i, :n][trained[:n]], e.ids[1:][e.loss_mask[1:]])
    with pytest.raises(ValueError, match="more than max_len=10"):
        collate(ex, tok.pad, max_len=10)
    assert collate(ex, tok.pad, max_len=T).tokens.shape[1] == T          # T inputs fit a limit of T
    with pytest.raises(ValueError, match=f"more than max_len={T - 1}"):
        collate(ex, tok.pad, max_len=T - 1)
    with pytest.raises(ValueError, match="at least one example"):
        prompts([], tok.pad)
    with pytest.raises(ValueError, match="at least one example"):
        collate([], tok.pad)


def test_batch_loss_is_the_token_weighted_mean_of_row_losses():
    # padding and prompts contribute nothing: the batch loss is each row's loss weighted by its targets
    set_seed(0)
    tok = Tokenizer(CFG)
    model = MoST(CFG).eval()
    ex = [tok.asr(codes(4), "ab"), tok.text_lm("a much longer sentence than the other"), tok.tts("x", codes(6))]
    with torch.no_grad():
        b = collate(ex, tok.pad)
        batch_loss = model(b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask).loss
        total, n = 0.0, 0
        for e in ex:
            r = collate([e], tok.pad)
            k = int((r.targets != IGNORE).sum())
            total += model(r.tokens, r.modality, targets=r.targets).loss.item() * k
            n += k
    assert n == sum(int(e.loss_mask[1:].sum()) for e in ex)
    assert abs(batch_loss.item() - total / n) < 1e-5


def test_left_padded_prompts_generate_as_if_alone():
    # left padding is where the attention mask matters: a padded batch must continue each prompt
    # exactly as that prompt alone
    set_seed(1)
    tok = Tokenizer(CFG)
    model = MoST(CFG).eval()
    ex = [tok.asr(codes(3), "ab"), tok.tts("hello there", codes(2)), tok.asr(codes(12), "c")]
    p, a = prompts(ex, tok.pad)
    assert (a == 0).any()
    with torch.no_grad():
        batched = model.generate(p, 6, attention_mask=a, stop_at_eos=False)
        for i, e in enumerate(ex):
            alone = model.generate(e.ids[None, : e.prompt_len], 6, stop_at_eos=False)
            assert torch.equal(batched[i], alone[0]), i
        # and the mask is what makes it so: without it, the padded rows change
        unmasked = model.generate(p, 6, stop_at_eos=False)
    assert not torch.equal(unmasked, batched)


def test_prompts_are_left_padded_and_end_together():
    tok = Tokenizer(CFG)
    ex = [tok.asr(codes(6), "abc"), tok.tts("hello", codes(2))]
    p, a = prompts(ex, tok.pad)
    for i, e in enumerate(ex):
        assert p[i, -e.prompt_len:].tolist() == e.ids[: e.prompt_len].tolist()
        assert a[i].sum() == e.prompt_len and a[i, -1] == 1


def test_batches_bucket_by_length_are_seeded_and_lose_nothing():
    tok = Tokenizer(CFG)
    rng = random.Random(0)
    ex = [tok.text_lm("x" * rng.randint(1, 80)) for _ in range(200)]
    out = list(batches(ex, batch_size=8, pad_id=tok.pad, seed=1, pool=5))
    assert sorted(id(e) for b in out for e in b.examples) == sorted(id(e) for e in ex)
    # bucketing: far less padding than random batches of the same size
    padded = sum(b.tokens.numel() for b in out)
    random_batches = [ex[i:i + 8] for i in range(0, 200, 8)]
    assert padded < 0.8 * sum(collate(g, tok.pad).tokens.numel() for g in random_batches)
    again = list(batches(ex, batch_size=8, pad_id=tok.pad, seed=1, pool=5))
    assert [torch.equal(a.tokens, b.tokens) for a, b in zip(out, again)] == [True] * len(out)
    other = list(batches(ex, batch_size=8, pad_id=tok.pad, seed=2, pool=5))
    assert any(not torch.equal(a.tokens, b.tokens) for a, b in zip(out, other))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(ex, batch_size=0, pad_id=tok.pad))


# --- the shipped corpus and the task mix ---

def test_shipped_corpus_loads_with_valid_codes(corpus):
    assert corpus.codec["frame_rate"] == 50 and corpus.codec["cardinality"] == 1024
    counts = {s: len(corpus.split(s)) for s in ("train", "validation", "test")}
    assert counts["train"] > 10_000 and min(counts.values()) > 300
    assert len(corpus.text_only) >= 10_000
    words = set(vocabulary())
    for u in corpus.utterances[:: 97]:
        assert u.codes.shape[0] == corpus.codec["num_codebooks"] == 3 and u.codes.min() >= 0 and u.codes.max() < 1024
        # one frame per whole 320 samples; seconds are rounded to the ms, i.e. +-8 samples
        assert (u.seconds * 16000 - 8) // 320 <= u.codes.shape[1] <= (u.seconds * 16000 + 8) // 320
        assert set(u.text.split()) <= words
    # no held-out sentence is in the training data, spoken or text-only
    train = {u.text for u in corpus.split("train")} | set(corpus.text_only)
    assert not train & {u.text for u in corpus.split("test") + corpus.split("validation")}
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        corpus.split("dev")


def test_missing_or_inconsistent_corpus_says_how_to_rebuild(tmp_path):
    import shutil
    with pytest.raises(FileNotFoundError, match="python -m mini_most.corpus build"):
        load_corpus(tmp_path)
    shutil.copyfile(SHIPPED_CORPUS / "codes.safetensors", tmp_path / "codes.safetensors")
    with pytest.raises(FileNotFoundError, match="no utterances.json"):
        load_corpus(tmp_path)
    meta = json.loads((SHIPPED_CORPUS / "utterances.json").read_text())
    meta["rows"] = meta["rows"][:-1]
    (tmp_path / "utterances.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="re-run the encode step"):
        load_corpus(tmp_path)


def test_task_stream_follows_the_mix_and_the_seed(corpus):
    tok = Tokenizer(CFG)
    ex = list(itertools.islice(task_stream(corpus, tok, seed=3), 2000))
    share = {t: sum(e.task == t for e in ex) / len(ex) for t in TASKS}
    for t, w in STAGE1_MIX.items():
        assert abs(share[t] - w) < 0.04, share
    assert share["speech"] == 0
    again = list(itertools.islice(task_stream(corpus, tok, seed=3), 50))
    assert all(torch.equal(a.ids, b.ids) for a, b in zip(ex, again))
    held = {u.text for u in corpus.split("train")} | set(corpus.text_only)
    assert all(e.text in held for e in ex)
    only_speech = next(task_stream(corpus, tok, mix={"speech": 1.0}))
    assert only_speech.task == "speech"
    for bad in ({"asr": -1, "tts": 2}, {"translate": 1.0}, {"asr": 0.0}, {"asr": float("nan")}, {"asr": "0.4"}, {}):
        with pytest.raises(ValueError, match="bad task mix"):
            next(task_stream(corpus, tok, mix=bad))
    other = list(itertools.islice(task_stream(corpus, tok, seed=4), 50))
    assert not all(torch.equal(a.ids, b.ids) for a, b in zip(ex, other))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        next(task_stream(corpus, tok, split="dev"))
    no_text = Corpus(corpus.utterances[:10], [], corpus.codec, corpus.info)
    with pytest.raises(ValueError, match="no text-only sentences"):
        next(task_stream(no_text, tok))
    assert next(task_stream(no_text, tok, mix={"asr": 1.0})).task == "asr"
    with pytest.raises(ValueError, match="the corpus's codec"):
        next(task_stream(Corpus(corpus.utterances, corpus.text_only, dict(corpus.codec, cardinality=512), corpus.info), tok))


def test_a_mixed_batch_trains(corpus):
    set_seed(0)
    tok = Tokenizer(CFG)
    b = next(batches(task_stream(corpus, tok, seed=0), batch_size=6, pad_id=tok.pad, pool=1))
    model = MoST(CFG)
    out = model(b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask)
    assert torch.isfinite(out.loss) and abs(out.loss.item() - torch.log(torch.tensor(CFG.vocab_size)).item()) < 0.5
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "embed" in n)


def test_0_3_0_import_paths_still_work():
    # kept for one release (README changelog, 0.4.0): the names moved, the old paths still import them
    from mini_most import ablate, convert, corpus, evaluate, model, tokens, train
    with pytest.warns(DeprecationWarning, match="mini_most.corpus"):
        import importlib

        import mini_most.data
        data = importlib.reload(mini_most.data)
    assert data.Tokenizer is tokens.Tokenizer and data.load_corpus is corpus.load_corpus
    assert data.speak is corpus.espeak and data.main is corpus.main
    assert ablate.speak is evaluate.speak and ablate.transcribe is evaluate.transcribe
    assert ablate.target_stats is evaluate.target_stats and train.split_losses is evaluate.split_losses
    assert convert.config_from_dict is model.config_from_dict and callable(train.uses_bf16)
    cfg = MoSTConfig.preset("toy")
    a, b = model.KVCache(cfg, 1, 4), model.KVCache(cfg, 1, 4)
    latent = torch.randn(1, 2, cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    with pytest.warns(DeprecationWarning, match="KVCache.append"):
        old = a.update(0, latent)
    assert torch.equal(old, b.append(0, latent)) and torch.equal(a.latent, b.latent)


def test_training_and_evaluation_import_no_audio_package():
    # a GPU machine may lack soundfile and torchaudio: the model, tokens, corpus loader, trainer and
    # evaluation must import without them (only the codec, the corpus builder and the judge need audio)
    import subprocess
    import sys
    code = ("import sys; import mini_most.train, mini_most.evaluate, mini_most.memory, mini_most.convert; "
            "bad = sorted(m for m in ('soundfile', 'torchaudio', 'jiwer', 'pocketsphinx', 'encodec') if m in sys.modules); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
