"""The synthesisers the offline codec is fitted on (mini_most.voices): what they return, and bad input."""

import pytest
import torch

from mini_most import voices


@pytest.mark.parametrize("synth, voice", [("flite", "slt"), ("flite", "kal16"), ("festival", "ked_diphone"),
                                          ("festival", "cmu_us_slt_arctic_hts"), ("espeak", "en-gb+f2")])
def test_each_voice_speaks_16_khz_mono(synth, voice):
    if not voices.available(synth):
        pytest.skip(f"{synth} is not installed (.ci/run installs it)")
    wav = voices.speak("the old dog saw the ball", synth, voice)
    assert wav.dim() == 1 and wav.dtype == torch.float32
    assert 0.8 < len(wav) / voices.SAMPLE_RATE < 4.0                      # a sentence, at 16 kHz (slt-hts makes 32 kHz)
    assert 0.05 < wav.abs().max() <= 1.0 and torch.isfinite(wav).all()


def test_text_that_looks_like_an_option_is_spoken_not_obeyed():
    if not voices.available("flite"):
        pytest.skip("flite is not installed (.ci/run installs it)")
    assert len(voices.speak("-o /tmp/x.wav", "flite", "rms")) > 1600


@pytest.mark.parametrize("args, words", [
    (("hello", "sapi", "x"), "unknown synthesiser 'sapi'"),
    (("hello", "flite", "kal"), "flite has no voice 'kal' here"),
    (("", "flite", "slt"), "non-empty string"),
    ((None, "festival", "ked_diphone"), "non-empty string"),
])
def test_bad_requests_say_what_to_use(args, words):
    with pytest.raises(ValueError, match=words):
        voices.speak(*args)


def test_a_missing_program_says_what_to_install(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install festival festvox-kallpc16k"):
        voices.speak("hello", "festival", "kal_diphone")
    with pytest.raises(RuntimeError, match="apt-get install bible-kjv"):
        voices.kjv_verses(3)


def test_kjv_verses_are_drawn_reproducibly():
    if voices.shutil.which("bible") is None:
        pytest.skip("bible-kjv is not installed (.ci/run installs it)")
    a, b = voices.kjv_verses(5, seed=1), voices.kjv_verses(5, seed=1)
    assert a == b and len(set(a)) == 5 and a != voices.kjv_verses(5, seed=2)
    assert all(v == v.lower() and len(v.split()) >= 3 for v in a)
