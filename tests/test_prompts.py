"""Prompts: recordings become 8 kHz wav + 16 kHz sln16, trimmed and equally loud; espeak-ng stand-ins; missing prompts found.

The audio tests make real files with ffmpeg and run the real ffmpeg and espeak-ng. Without them these
tests skip, except with CI=true, where they fail (CI must install them: apt-get install -y ffmpeg espeak-ng).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import wave
from array import array
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.config.plan import Action, NumberPlan
from callrouter.cli import prompts as cli
from callrouter.cli.main import main as callrouter_main
from callrouter.prompts import audio, inventory, sources, tts
from tests.ci import missing

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_TEXTS = ("您好，欢迎致电示例科技。", "咨询产品请按1，售后服务请按2，投诉建议请按3，重听请按星号键。")


def need(tool: str) -> None:
    """Skip without the tool, but never on CI: there a missing tool is a failure, not a green skip."""
    if shutil.which(tool) is None:
        missing(f"{tool} is not installed (apt-get install -y ffmpeg espeak-ng)", "the audio tests")


@pytest.fixture
def ffmpeg() -> None:
    need("ffmpeg")
    need("ffprobe")


@pytest.fixture
def espeak(ffmpeg: None) -> None:
    need("espeak-ng")


def make_tone(
    path: Path, *, lead: float = 0.5, seconds: float = 1.0, tail: float = 0.7, gain_db: float = -10.0, rate: int = 44100,
    channels: int = 2, codec: str | None = None,
) -> Path:
    """A real audio file: silence, a 440 Hz tone (ffmpeg's sine is -18 dBFS at peak, then `gain_db`), silence."""
    graph = f"volume={gain_db}dB,adelay={int(lead * 1000)}:all=1,apad=pad_dur={tail}"
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration={seconds}",
               "-af", graph, "-ac", str(channels), "-ar", str(rate)]  # fmt: skip
    if codec:
        command += ["-c:a", codec]
    subprocess.run([*command, str(path)], check=True)
    return path


def read_wav(path: Path) -> tuple[wave._wave_params, array[int]]:
    with wave.open(str(path), "rb") as fh:
        params = fh.getparams()
        samples = array("h", fh.readframes(params.nframes))
    return params, samples


def read_sln(path: Path) -> array[int]:
    data = path.read_bytes()
    assert len(data) % 2 == 0
    return array("h", data)


def rms_dbfs(samples: array[int] | list[int]) -> float:
    return 10 * math.log10(sum(s * s for s in samples) / len(samples) / 32768**2)


def edges_ms(samples: array[int], rate: int) -> tuple[float, float]:
    """Milliseconds of near-silence (under 1% of the peak) before the first and after the last sound."""
    limit = max(abs(s) for s in samples) / 100
    loud = [i for i, s in enumerate(samples) if abs(s) > limit]
    return loud[0] * 1000 / rate, (len(samples) - 1 - loud[-1]) * 1000 / rate


def build(*argv: str) -> int:
    return callrouter_main(["prompts", "build", *argv])


# ------------------------------------------------------------------------------------------ build


@pytest.mark.parametrize(
    ("name", "codec", "rate", "channels"),
    [("studio.wav", "pcm_s24le", 48000, 2), ("phone.mp3", "libmp3lame", 44100, 2), ("voice.m4a", "aac", 44100, 1)],
)
def test_build_writes_8k_wav_and_16k_sln16_trimmed_and_normalised(
    ffmpeg: None, tmp_path: Path, name: str, codec: str, rate: int, channels: int
) -> None:
    source = make_tone(tmp_path / name, codec=codec, rate=rate, channels=channels)
    out = tmp_path / "prompts"
    assert build(str(source), "--out", str(out)) == 0
    stem = Path(name).stem

    params, samples = read_wav(out / f"{stem}.wav")
    assert (params.nchannels, params.sampwidth, params.framerate, params.comptype) == (1, 2, 8000, "NONE")
    assert (out / f"{stem}.wav").stat().st_size == 44 + 2 * params.nframes  # plain header, no metadata chunks
    # 1 s of tone; 0.5 s of silence before and 0.7 s after are gone but for 20 ms kept at each end.
    assert 1.0 <= params.nframes / 8000 <= 1.1
    lead, tail = edges_ms(samples, 8000)
    assert lead <= 40 and tail <= 40
    assert abs(rms_dbfs(samples[400:-400]) - -20.0) < 0.5  # was about -31 dBFS
    assert max(abs(s) for s in samples) < 32768 * 10 ** (-1 / 20)

    wide = read_sln(out / f"{stem}.sln16")
    assert 1.0 <= len(wide) / 16000 <= 1.1
    assert abs(rms_dbfs(wide[800:-800]) - -20.0) < 0.5
    assert max(edges_ms(wide, 16000)) <= 40


def test_quiet_and_loud_recordings_come_out_equally_loud(ffmpeg: None, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tone(src / "quiet.wav", gain_db=-30)
    make_tone(src / "loud.flac", gain_db=15, lead=0.1, tail=0.1)  # ffmpeg clips the tone near full scale
    out = tmp_path / "out"
    assert build(str(src), "--out", str(out), "--loudness", "-18") == 0
    levels = [rms_dbfs(read_wav(out / f"{n}.wav")[1][400:-400]) for n in ("quiet", "loud")]
    assert all(abs(level - -18.0) < 0.6 for level in levels), levels


def test_folder_names_prompts_by_path_and_8k_source_gets_no_sln16(ffmpeg: None, tmp_path: Path) -> None:
    src = tmp_path / "recordings"
    (src / "holidays").mkdir(parents=True)
    make_tone(src / "holidays" / "newyear.wav", rate=8000, channels=1)
    out = tmp_path / "out"
    (out / "holidays").mkdir(parents=True)
    (out / "holidays" / "newyear.sln16").write_bytes(b"\0\0" * 16000)  # last year's wideband version
    assert build(str(src), "--out", str(out)) == 0
    assert read_wav(out / "holidays" / "newyear.wav")[0].framerate == 8000
    # An 8 kHz recording has nothing for a 16 kHz file, and the stale one would be played to wideband phones.
    assert not (out / "holidays" / "newyear.sln16").exists()


def test_unreadable_audio_is_a_clear_error_and_the_other_files_still_build(
    ffmpeg: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tone(src / "good.mp3", codec="libmp3lame")
    (src / "noise.mp3").write_bytes(os.urandom(4000))
    (src / "notes.m4a").write_text("this is not audio\n")
    (src / "cut.wav").write_bytes(make_tone(tmp_path / "whole.wav").read_bytes()[:30])
    (src / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    assert build(str(src), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert (out / "good.wav").exists()
    for bad in ("noise.mp3", "notes.m4a", "cut.wav"):
        line = next(line for line in err.splitlines() if bad in line)
        assert "cannot read audio (" in line, line
        assert not (out / Path(bad).with_suffix(".wav").name).exists()
    assert f"{src / 'empty.wav'}: the file is empty" in err
    assert "4 of 5 prompt(s) failed" in err


def test_convert_raises_audio_error_naming_the_file(ffmpeg: None, tmp_path: Path) -> None:
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(b"\x00\x00\x00\x18ftypM4A " + os.urandom(500))
    with pytest.raises(audio.AudioError, match=r"broken\.m4a: cannot read audio \("):
        audio.convert(broken, audio.Settings())


def test_a_silent_recording_is_an_error(ffmpeg: None, tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1", str(silent)], check=True)
    with pytest.raises(audio.AudioError, match="silent.wav: the audio is silent"):
        audio.convert(silent, audio.Settings())


def test_names_duplicates_and_overwriting_the_source_are_refused_before_any_work(tmp_path: Path) -> None:
    for name in ("欢迎词.mp3", "welcome.wav", "welcome.mp3", "ok.wav"):
        (tmp_path / name).write_bytes(b"x")
    jobs, errors = sources.collect_jobs([tmp_path], None)
    assert errors == []
    problems = sources.job_errors(jobs, tmp_path)  # building into the recordings folder itself
    assert any("欢迎词.mp3" in p and "not a valid prompt name" in p and "--name" in p for p in problems)
    assert any("welcome" in p and "also comes from" in p for p in problems)
    assert any("ok.wav: would be overwritten by its own output" in p for p in problems)
    jobs, errors = sources.collect_jobs([tmp_path / "欢迎词.mp3"], "welcome")
    assert (errors, sources.job_errors(jobs, tmp_path / "out")) == ([], [])
    assert jobs == [sources.Job("welcome", tmp_path / "欢迎词.mp3")]


def test_pure_steps_trim_and_limit_the_peak() -> None:
    from pydub import AudioSegment
    from pydub.generators import Sine

    tone = Sine(440, sample_rate=8000).to_audio_segment(duration=500, volume=-30).set_sample_width(2)
    click = Sine(1000, sample_rate=8000).to_audio_segment(duration=5, volume=-3).set_sample_width(2)
    gap = AudioSegment.silent(duration=300, frame_rate=8000).set_sample_width(2)
    trimmed, lead, tail = audio.trim_silence(gap + tone + click + gap, below_peak_db=40, keep_ms=20)
    assert (lead, tail) == (280, 275) and len(trimmed) == 550  # 10 ms frames from the start: sound ends in 800-810
    # Raising the tone to -20 dBFS would push the click over full scale: the gain stops at a -1 dBFS peak.
    loud = audio.normalise(trimmed, loudness_dbfs=-20, peak_dbfs=-1)
    assert -1.2 < loud.max_dBFS <= -1.0
    assert audio.active_level(loud) < -20


def test_formats_and_progress_line() -> None:
    assert cli.parse_formats("sln16") == (audio.SLN16,)
    assert cli.parse_formats("wav, sln16") == (audio.WAV_8K, audio.SLN16)
    with pytest.raises(Exception, match="choose from wav, sln16"):
        cli.parse_formats("mp3")
    assert cli.bar_line(3, 10, "welcome.mp3", width=10) == "[###.......]  3/10  welcome.mp3"
    assert cli.bar_line(10, 10, "x", width=4) == "[####] 10/10  x"
    assert audio.ffmpeg_reason("ffmpeg version 5.1\n  built with gcc\n/tmp/a.mp3: Invalid data found when processing input\n") == (
        "/tmp/a.mp3: Invalid data found when processing input"
    )


def test_missing_ffmpeg_or_espeak_is_one_plain_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(audio.AudioError, match=r"apt-get install -y ffmpeg"):
        audio.require_ffmpeg()
    with pytest.raises(audio.AudioError, match=r"apt-get install -y espeak-ng"):
        tts.require_espeak()


# ------------------------------------------------------------------------------------------ tts


def test_the_default_voice_speaks_the_sample_texts_as_mandarin(espeak: None) -> None:
    # espeak-ng's plain `cmn` voice reads most words as English; `(en)` in the phonemes marks that switch.
    for text in SAMPLE_TEXTS:
        done = subprocess.run(["espeak-ng", "-v", tts.DEFAULT_VOICE, "-q", "-x", "--stdin"], input=text.encode(), capture_output=True, check=True)
        phonemes = done.stdout.decode()
        assert phonemes.strip() and "(en)" not in phonemes, phonemes


def test_speak_makes_a_prompt_like_a_recording(espeak: None) -> None:
    renders = tts.speak(SAMPLE_TEXTS[0])
    assert [r.format for r in renders] == [audio.WAV_8K, audio.SLN16]
    wav = renders[0]
    with wave.open(__import__("io").BytesIO(wav.data)) as fh:
        assert (fh.getnchannels(), fh.getsampwidth(), fh.getframerate()) == (1, 2, 8000)
    assert 1.5 < wav.seconds < 6
    assert abs(wav.level_dbfs - -20) < 0.6 and wav.peak_dbfs <= -1.0
    with pytest.raises(audio.AudioError, match="the text is empty"):
        tts.speak("  ")
    with pytest.raises(audio.AudioError, match="espeak-ng failed"):
        tts.speak("你好", voice="nonexistent")


def tmp_config(tmp_path: Path, plans: dict[str, str]) -> Path:
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "config.yaml").write_text("dialplans_dir: dialplans\nprompts_dir: prompts\n")
    for name, text in plans.items():
        (tmp_path / "dialplans" / name).write_text(text)
    return tmp_path / "config.yaml"


PLAN = """\
number: "4001112222"
name: Test
greeting: welcome
entry: {menu: main}
menus:
  main:
    prompt: menu
    text: "请按1。"
    options: {"1": {play: bye}}
prompts:
  welcome: "您好。"
"""


def test_tts_makes_only_missing_prompts_and_reports_those_without_text(
    espeak: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_config(tmp_path, {"a.yaml": PLAN})
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "welcome.wav").write_bytes(b"studio recording")
    assert callrouter_main(["prompts", "tts", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert (prompts / "welcome.wav").read_bytes() == b"studio recording"  # a recording is never replaced
    assert "welcome: kept" in captured.out
    assert read_wav(prompts / "menu.wav")[0].framerate == 8000  # from the menu's text
    assert "prompt 'bye' (4001112222 menus.main.options.1.play) has no text" in captured.err
    assert callrouter_main(["prompts", "tts", "--config", str(config), "--force", "--only", "welcome"]) == 0
    assert read_wav(prompts / "welcome.wav")[0].nchannels == 1


def test_tts_refuses_one_prompt_name_with_two_texts(espeak: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = PLAN.replace("4001112222", "4003334444").replace("您好。", "欢迎。")
    config = tmp_config(tmp_path, {"a.yaml": PLAN, "b.yaml": other})
    assert callrouter_main(["prompts", "tts", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "prompt 'welcome' has two texts: 4001112222 prompts.welcome says '您好。', 4003334444 prompts.welcome says '欢迎。'" in err
    assert not (tmp_path / "prompts" / "welcome.wav").exists() and (tmp_path / "prompts" / "menu.wav").exists()


# ------------------------------------------------------------------------------------------ inventory


def sample() -> RoutingConfig:
    return load_config(str(ROOT / "config.yaml"))


def test_every_prompt_of_the_sample_plan_is_found_with_its_place() -> None:
    uses = inventory.prompt_uses(sample())
    found = {(u.prompt, u.describe()) for u in uses}
    assert found == {
        ("welcome", "greeting"),
        ("recording_notice", "recording.announcement"),
        ("blocked", "blacklist.action.play"),
        ("main_menu", "menus.main.prompt"),
        ("invalid_choice", "menus.main.invalid_prompt"),
        ("after_sales_menu", "menus.after_sales.prompt"),
        ("invalid_choice", "menus.after_sales.invalid_prompt"),
        ("all_busy", "hunt_groups.complaints.on_failure.play"),
        ("leave_message", "voicemail.sales.prompt"),
        ("leave_message", "voicemail.after_sales.prompt"),
        ("after_hours", "voicemail.after_hours.prompt"),
        ("thanks", "voicemail.sales.thanks_prompt"),
        ("thanks", "voicemail.after_sales.thanks_prompt"),
        ("thanks", "voicemail.after_hours.thanks_prompt"),
    }
    assert {u.number for u in uses} == {"4008001234"}


def test_the_sample_plans_prompts_are_shipped_as_asterisk_plays_them() -> None:
    config = sample()
    assert inventory.check_prompts(config) == []
    texts = inventory.prompt_texts(config)
    assert texts.conflicts == ()
    for name in {u.prompt for u in inventory.prompt_uses(config)}:
        assert name in texts.texts
        params, samples = read_wav(ROOT / "ivr_prompts" / f"{name}.wav")
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 8000)
        assert abs(audio.active_level(audio.to_mono16(_segment(ROOT / "ivr_prompts" / f"{name}.wav"))) - -20) < 0.6
        wide = read_sln(ROOT / "ivr_prompts" / f"{name}.sln16")
        assert abs(len(wide) / 16000 - params.nframes / 8000) < 0.01


def _segment(path: Path) -> Any:
    from pydub import AudioSegment

    return AudioSegment.from_wav(str(path))


def test_missing_prompts_are_reported_at_their_line_with_what_to_do(tmp_path: Path) -> None:
    config = tmp_config(tmp_path, {"a.yaml": PLAN})
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "welcome.sln16").write_bytes(b"")
    (prompts / "bye.mp3").write_bytes(b"")
    (prompts / ".menu.wav").write_bytes(b"")  # hidden: a half-written file, not a prompt
    loaded = load_config(str(config))
    missing = inventory.missing_prompts(loaded, inventory.list_prompt_files(prompts))
    assert [(u.prompt, u.describe()) for u in missing] == [("menu", "menus.main.prompt"), ("bye", "menus.main.options.1.play")]
    plan_file = tmp_path / "dialplans" / "a.yaml"
    assert inventory.check_prompts(loaded) == [
        f"{plan_file}:7: menus.main.prompt: prompt 'menu' has no file in {prompts} (record it and run "
        "`callrouter prompts build`, or `callrouter prompts tts` for a stand-in)",
        f"{plan_file}:9: menus.main.options.1.play: prompt 'bye' has no file in {prompts} (found bye.mp3, which "
        "Asterisk cannot play: run `callrouter prompts build`)",
    ]
    shutil.rmtree(prompts)
    assert inventory.check_prompts(loaded) == [f"{config}:1: prompts_dir {str(prompts)!r} is not a folder; no prompt can be checked"]


def test_global_blacklist_prompt_and_recording_off() -> None:
    config = sample()
    robocall = Action(kind="play", target="robocall")
    service = config.service.model_copy(update={"blacklist": config.service.blacklist.model_copy(update={"action": robocall})})
    plan = config.plans["4008001234"]
    plan = plan.model_copy(update={"recording": plan.recording.model_copy(update={"enabled": False})})
    changed = RoutingConfig(service=service, plans={plan.number: plan}, sources=config.sources, config_path=config.config_path, base_dir=config.base_dir)
    uses = inventory.prompt_uses(changed)
    assert (uses[0].prompt, uses[0].number) == ("robocall", inventory.GLOBAL)
    assert "recording_notice" not in {u.prompt for u in uses}  # not played while recording is off


def _prompt_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[tuple[str, str]]:
    """(model, field) of every field validated as a prompt name, anywhere under `model`."""
    if model in seen:
        return set()
    seen.add(model)
    found: set[tuple[str, str]] = set()
    for name, field in model.model_fields.items():
        text = repr(field.annotation) + repr(field.metadata)
        if "_prompt" in text and name != "prompts":
            found.add((model.__name__, name))
        stack: list[Any] = [field.annotation]
        while stack:
            item = stack.pop()
            if isinstance(item, type) and issubclass(item, BaseModel):
                found |= _prompt_fields(item, seen)
            stack.extend(get_args(item))
    return found


def test_the_inventory_walks_every_prompt_field_of_a_plan() -> None:
    found = _prompt_fields(NumberPlan, set())
    found.discard(("PromptCheck", "prompt"))  # Action's check of a play target: ("Action", "target") below
    assert found | {("Action", "target")} == inventory.PROMPT_FIELDS
