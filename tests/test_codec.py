"""The codec interface: shapes, conversions, checkpoints, bad input, and guards against collapse."""

import urllib.error
import warnings

import pytest
import soundfile as sf
import torch

from mini_most import DATA_SAMPLES as DATA
from mini_most import MoSTConfig
from mini_most import codec as codec_module
from mini_most.codec import SHIPPED, CodecConversion, EncodecCodec, MelRVQCodec, load_codec, rvq_encode
from mini_most.corpus import load_corpus
from mini_most.tokens import config_for


@pytest.fixture(scope="module")
def codec():
    return load_codec()  # the shipped offline codec


def held_out(n=None):
    """Shipped held-out speech: corpus validation/test clips and MoST's own reference clips."""
    paths = sorted((DATA / "corpus" / "wav").glob("*.wav")) + sorted((DATA / "reference").glob("*.wav"))
    return [torch.from_numpy(sf.read(str(p), dtype="float32")[0])[None, None] for p in paths[:n]]


def test_shipped_codec_shape_and_budget(codec):
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.cardinality) == (16000, 50.0, 3, 1024)
    assert codec.frame_rate * codec.num_codebooks * 10 == 1500  # 1.5 kbit/s in all, EnCodec's lowest bandwidth
    assert load_corpus().model_codebooks == 1                   # the model hears codebook 0: 50 tokens per second
    small = MoSTConfig.preset("small")                          # the presets' audio range holds two codebooks;
    wide = config_for(load_corpus(), "small", codebooks=3)      # config_for widens it for all three
    assert small.audio_token_end - small.audio_token_start == 2 * codec.cardinality
    assert wide.audio_token_end - wide.audio_token_start == 3 * codec.cardinality == wide.vocab_size - 320
    assert SHIPPED.stat().st_size < 2**20
    assert "level" in codec.config and codec.info()["level"] == codec.config["level"]


@pytest.mark.parametrize("T", [16000, 16319, 1280])
def test_encode_decode_shapes_and_round_trip_length(codec, T):
    wav = torch.randn(3, 1, T) * 0.1
    codes = codec.encode(wav)
    assert codes.shape == (3, 3, T // 320) and codes.dtype == torch.int64   # exactly 50 frames per second
    assert 0 <= codes.min() and codes.max() < 1024
    out = codec.decode(codes)
    assert out.shape == (3, 1, T // 320 * 320) and torch.isfinite(out).all()
    assert 0 <= wav.shape[-1] - out.shape[-1] < codec.hop_length
    assert codec.decode(codes[:, :1]).shape == out.shape       # the first codebook alone decodes too


def test_decode_is_deterministic_and_batching_changes_nothing(codec):
    clips = [w[..., :16000] for w in held_out(3)]
    batch = torch.cat(clips)
    codes = codec.encode(batch)
    for i, clip in enumerate(clips):
        assert torch.equal(codec.encode(clip), codes[i:i + 1])
    assert torch.equal(codec.decode(codes), codec.decode(codes))
    torch.testing.assert_close(codec.decode(codes[1:2]), codec.decode(codes)[1:2], atol=1e-4, rtol=0)


def test_too_short_audio_and_codes_are_refused(codec):
    with pytest.raises(ValueError, match="too short: 1000 samples"):
        codec.encode(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="codes have 3 frames; this codec decodes at least 4"):
        codec.decode(torch.zeros(1, 2, 3, dtype=torch.long))


def test_resampling_and_down_mixing_are_done_and_said(codec):
    t = torch.arange(44100) / 44100
    left, right = torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 330 * t)
    stereo = torch.stack([left, right])[None] * 0.3            # (1, 2, 44100) at 44.1 kHz
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes = codec.encode(stereo, sample_rate=44100)
    said = [str(w.message) for w in caught if issubclass(w.category, CodecConversion)]
    assert any("down-mixed 2 channels" in s for s in said) and any("from 44100 Hz to 16000 Hz" in s for s in said)
    assert codes.shape[-1] == 16000 // 320
    # the same speech recorded at 44.1 kHz in stereo encodes (nearly) as the 16 kHz mono original
    import torchaudio.functional as AF
    speech = held_out(1)[0]
    hi = AF.resample(speech, 16000, 44100).repeat(1, 2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CodecConversion)
        same = (codec.encode(hi, sample_rate=44100)[:, 0] == codec.encode(speech)[:, 0]).float().mean()
    assert same > 0.8, same


def test_files_round_trip(codec, tmp_path):
    wav = held_out(1)[0]
    sf.write(tmp_path / "in.wav", (wav[0, 0].numpy() * 32767).astype("int16"), 16000, subtype="PCM_16")
    codes = codec.encode_file(tmp_path / "in.wav")
    assert codes.shape[:2] == (1, codec.num_codebooks)
    codec.write(tmp_path / "out.wav", codec.decode(codes))
    out, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and abs(len(out) - wav.shape[-1]) < 320


def test_checkpoint_save_load(codec, tmp_path):
    codec.save(tmp_path / "c.safetensors")
    again = MelRVQCodec.load(tmp_path / "c.safetensors")
    wav = held_out(1)[0]
    assert torch.equal(again.encode(wav), codec.encode(wav))
    with pytest.raises(FileNotFoundError, match="python -m mini_most.codec train"):
        MelRVQCodec.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("wav, words", [
    (torch.zeros(16000), "\\(batch, channels, time\\)"),
    (torch.zeros(1, 16000), "\\(batch, channels, time\\)"),
    (torch.zeros(1, 1, 0), "empty"),
    (torch.full((1, 1, 100), float("nan")), "NaN or inf"),
    (torch.tensor([[[0.0, float("inf")]]]), "NaN or inf"),
    (torch.zeros(1, 1, 100, dtype=torch.int16), "int_scale=32768"),
])
def test_bad_audio_raises_clear_error(codec, wav, words):
    with pytest.raises(ValueError, match=words):
        codec.encode(wav)


def test_integer_pcm_with_a_stated_scale(codec):
    wav = held_out(1)[0]
    pcm = (wav * 32768).round().clamp(-32768, 32767).to(torch.int16)
    with pytest.warns(CodecConversion, match="dividing by 32768"):
        codes = codec.encode(pcm, int_scale=32768)
    assert torch.equal(codes, codec.encode(pcm.float() / 32768))


def test_write_refuses_a_batch(codec, tmp_path):
    with pytest.raises(ValueError, match="one mono clip"):
        codec.write(tmp_path / "x.wav", torch.zeros(2, 1, 1600))


@pytest.mark.parametrize("codes, words", [
    (torch.zeros(2, 51, dtype=torch.long), "\\(batch, codebooks, frames\\)"),
    (torch.zeros(1, 2, 5), "integer tensor"),
    (torch.zeros(1, 4, 5, dtype=torch.long), "4 codebooks"),
    (torch.full((1, 2, 5), 1024), "\\[0, 1024\\)"),
    (torch.full((1, 2, 5), -1), "\\[0, 1024\\)"),
])
def test_bad_codes_raise_clear_error(codec, codes, words):
    with pytest.raises(ValueError, match=words):
        codec.decode(codes)


def test_level_makes_codes_blind_to_gain():
    """With a level, the codec quantizes every clip at one speech level: the same speech, 12 dB
    quieter or 6 dB louder, gives (almost) the same codes; without one, a gain moves them."""
    speech = held_out()[-1]                                                # MoST's exp_4, 4.5 s
    fixed = MelRVQCodec(load_codec().codebooks, level=0.3)
    plain = MelRVQCodec(load_codec().codebooks)                            # no level: as codecs before 0.4.2
    for gain in (0.25, 2.0):
        same_fixed = (fixed.encode(speech * gain)[:, 0] == fixed.encode(speech)[:, 0]).float().mean()
        same_plain = (plain.encode(speech * gain)[:, 0] == plain.encode(speech)[:, 0]).float().mean()
        assert same_fixed > 0.97 and same_plain < 0.8, (gain, same_fixed, same_plain)
    # and what is quantized sits at the level: its 90th-percentile frame level is the level, exactly
    assert abs(codec_module.clip_level(fixed.features(speech * 0.25)).item() - 0.3) < 1e-4


def test_level_does_not_blow_up_near_silence():
    fixed = MelRVQCodec(load_codec().codebooks, level=0.3)
    hum = 1e-4 * torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0))
    shift = codec_module.level_shift(fixed.log_mel(hum), 0.3)
    assert shift.item() == codec_module.MAX_LEVEL_SHIFT[1]                 # +30 dB at most, not the +44 dB it lacks


def test_a_checkpoint_keeps_its_level_and_floor(tmp_path):
    speech = held_out()[-1]
    for extra in ({}, {"floor": 3.0}):
        fixed = MelRVQCodec(load_codec().codebooks, level=-0.5, **extra)
        fixed.save(tmp_path / "c.safetensors")
        again = MelRVQCodec.load(tmp_path / "c.safetensors")
        assert again.config["level"] == -0.5 and again.config.get("floor") == extra.get("floor")
        assert torch.equal(again.encode(speech), fixed.encode(speech))
    assert fixed.features(speech).min() == -0.5 - 3.0                     # the floor: nothing under level - floor
    with pytest.raises(ValueError, match="needs a level"):
        MelRVQCodec(load_codec().codebooks, floor=3.0)


def test_unknown_source_raises():
    with pytest.raises(ValueError, match="'offline', 'encodec' or 'encodec-untrained'"):
        load_codec("hubert")


# --- collapse guards, on held-out speech --------------------------------------------------------

def test_codebooks_are_used_on_held_out_speech(codec):
    codes = torch.cat([codec.encode(w)[0] for w in held_out()], dim=-1)   # (K, F) over all clips
    assert codes.shape[-1] > 1500                                          # > 30 s of held-out speech
    for k in range(codec.num_codebooks):
        counts = torch.bincount(codes[k], minlength=codec.cardinality).float()
        p = counts / counts.sum()
        perplexity = torch.exp(-(p[p > 0] * p[p > 0].log()).sum())
        assert (counts > 0).sum() >= 300, f"codebook {k} uses only {(counts > 0).sum()} codes"
        assert perplexity >= 150, f"codebook {k} perplexity {perplexity:.0f}"


def test_reconstruction_error_falls_with_each_codebook(codec):
    feats = torch.cat([codec.features(w)[0] for w in held_out()])          # (F, 80)
    errs = [(feats - codec_module.rvq_decode(rvq_encode(feats, codec.codebooks[:k]), codec.codebooks[:k]))
            .pow(2).mean().item() for k in (1, 2, 3)]
    assert errs[1] < 0.8 * errs[0] and errs[2] < 0.8 * errs[1], errs
    # and in the decoded audio: each codebook brings it closer to the original (level-matched: the
    # codec sets every clip to its speech level)
    dist = {k: sum(codec_module.multiscale_mel_distance(w, codec.decode(codec.encode(w)[:, :k]), match_level=True)
                   for w in held_out(6)) for k in (1, 2, 3)}
    assert dist[2] < 0.95 * dist[1] and dist[3] < 0.95 * dist[2], dist


def test_kmeans_finds_planted_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 4, generator=g) * 10
    x = centres.repeat(50, 1) + 0.01 * torch.randn(400, 4, generator=g)
    means = codec_module.kmeans(x, 8, 10, g)
    assert torch.cdist(centres, means).min(dim=1).values.max() < 0.1


# --- the pretrained EnCodec path, faked only at the network boundary ----------------------------

CHECKPOINT = "encodec_24khz-d7cc33bc.th"


def test_encodec_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    assert not EncodecCodec.is_cached()
    asked = []

    def no_network(url, dst, *args, **kw):  # the download itself: the network boundary
        asked.append(url)
        raise urllib.error.URLError("no network here")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match="load_codec\\('offline'\\)"):
        load_codec("encodec")
    assert asked and asked[0].endswith(CHECKPOINT)


def test_encodec_path_reads_the_hub_cache(monkeypatch, tmp_path):
    """With the checkpoint in torch.hub's cache, nothing is downloaded."""
    from encodec import EncodecModel
    torch.manual_seed(0)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(EncodecModel.encodec_model_24khz(pretrained=False).state_dict(), tmp_path / "hub" / "checkpoints" / CHECKPOINT)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert EncodecCodec.is_cached() and EncodecCodec.CHECKPOINT == CHECKPOINT
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    enc = load_codec("encodec")
    assert isinstance(enc, EncodecCodec)
    assert (enc.sample_rate, enc.frame_rate, enc.num_codebooks, enc.cardinality) == (24000, 75, 2, 1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CodecConversion)
        codes = enc.encode(torch.randn(2, 1, 16000) * 0.1, sample_rate=16000)   # 1 s, resampled to 24 kHz
    assert codes.shape == (2, 2, 75) and codes.dtype == torch.int64
    assert enc.decode(codes).shape == (2, 1, 24000)
    # a corpus encoded with it records the pretrained weights, and its record rebuilds the same codec
    assert enc.info()["weights"] == "pretrained"
    assert torch.equal(load_codec(enc.info()).encode(torch.zeros(1, 1, 2400)), enc.encode(torch.zeros(1, 1, 2400)))
