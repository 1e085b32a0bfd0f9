"""The screen's pure model: status and words in, snapshots out (no sockets, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from kioskd.screen.captions import MAX_CAPTIONS, ScreenModel, word_times


def status(model: ScreenModel, now: float = 0.0, **fields: Any) -> bool:
    base: dict[str, Any] = {
        "state": "conversation",
        "light": "listening",
        "reason": "",
        "mic_live": True,
        "agent_speaking": False,
        "conversation_id": "conv_1",
    }
    base.update(fields)
    return model.on_status(now=now, **base)


def texts(model: ScreenModel) -> list[tuple[str, str, bool]]:
    return [(c["role"], c["text"], c["final"]) for c in model.snapshot(0.0)["captions"]]


def test_tentative_visitor_words_are_replaced_then_finalised() -> None:
    model = ScreenModel()
    status(model)
    assert model.on_visitor("where", final=False)
    assert model.on_visitor("where is the", final=False)
    assert texts(model) == [("visitor", "where is the", False)]
    assert model.on_visitor("Where is the café?", final=True)
    assert texts(model) == [("visitor", "Where is the café?", True)]
    # the next tentative line starts a new caption
    model.on_visitor("and", final=False)
    assert texts(model)[-1] == ("visitor", "and", False)


def test_an_empty_final_transcript_removes_the_tentative_line() -> None:
    model = ScreenModel()
    status(model)
    model.on_visitor("hmm", final=False)
    assert model.on_visitor("", final=True)
    assert texts(model) == []
    assert not model.on_visitor("", final=False)


def test_agent_reply_closes_a_tentative_visitor_line() -> None:
    model = ScreenModel()
    status(model)
    model.on_visitor("hello the", final=False)
    model.on_agent("Hello! How can I help?", event_id=3)
    assert texts(model) == [("visitor", "hello the", True), ("agent", "Hello! How can I help?", True)]


@pytest.mark.parametrize(
    ("text", "chars", "expected"),
    [
        # words match the alignment's words one to one
        ("Hi there", list("Hi there"), [0.0, 300.0]),
        # punctuation and casing differ but the word count matches
        ("Hi, there!", list("hi there"), [0.0, 300.0]),
        # a reworded text: proportional mapping onto the aligned words
        ("Hi you over there", list("Hi there"), [0.0, 0.0, 300.0, 300.0]),
    ],
)
def test_word_times(text: str, chars: list[str], expected: list[float]) -> None:
    starts = [i * 100.0 for i in range(len(chars))]
    assert word_times(text, chars, starts) == expected


def test_word_times_without_usable_alignment() -> None:
    assert word_times("Hi", [], []) is None
    assert word_times("Hi", ["H"], [0.0, 1.0]) is None
    assert word_times("", ["H"], [0.0]) is None
    assert word_times("Hi", [" ", " "], [0.0, 1.0]) is None


def test_alignment_across_chunks_accumulates_and_reveal_starts_with_the_speaker() -> None:
    model = ScreenModel()
    status(model, now=10.0)
    model.on_agent("Good morning visitor", event_id=7)
    # chunk 1: "Good " over 500 ms; chunk 2: "morning visitor" relative to its own start
    model.on_alignment(7, list("Good "), [0, 100, 200, 300, 400], [100] * 5)
    chunk2 = list("morning visitor")
    model.on_alignment(7, chunk2, [i * 50.0 for i in range(len(chunk2))], [50.0] * len(chunk2))
    caption = model.snapshot(0.0)["captions"][0]
    assert caption["words_ms"] == [0.0, 500.0, 500.0 + 8 * 50.0]
    assert caption["audio_started"] is None
    status(model, now=12.5, agent_speaking=True, light="speaking")
    assert model.snapshot(0.0)["captions"][0]["audio_started"] == 12.5


def test_agent_text_arriving_after_its_audio_started_takes_the_speaker_start() -> None:
    model = ScreenModel()
    status(model, now=1.0)
    status(model, now=2.0, agent_speaking=True, light="speaking")
    model.on_agent("Late text", event_id=1)
    assert model.snapshot(0.0)["captions"][0]["audio_started"] == 2.0


def test_interruption_freezes_the_reveal_and_correction_replaces_the_text() -> None:
    model = ScreenModel()
    status(model)
    model.on_agent("One two three four", event_id=2)
    model.on_alignment(2, list("One two three four"), [i * 100.0 for i in range(18)], [100.0] * 18)
    status(model, now=5.0, agent_speaking=True, light="speaking")
    assert model.on_interruption(now=5.45)
    caption = model.snapshot(0.0)["captions"][0]
    assert caption["cut_ms"] == pytest.approx(450.0)
    assert not model.on_interruption(now=6.0)  # only the first interruption of a reply counts
    assert model.on_correction("One two three four", "One two...")
    caption = model.snapshot(0.0)["captions"][0]
    assert caption["text"] == "One two..."
    assert caption["words_ms"] == [0.0, 400.0]
    assert not model.on_correction("never said", "x")


def test_conversation_end_clears_the_words_but_a_resume_keeps_them() -> None:
    model = ScreenModel()
    status(model)
    model.on_visitor("Hello", final=True)
    # the link dropped and the conversation resumed with a new id: same visitor
    status(model, state="reconnecting", light="reconnecting", mic_live=False, conversation_id=None)
    status(model, conversation_id="conv_2")
    assert texts(model) == [("visitor", "Hello", True)]
    assert model.snapshot(0.0)["in_conversation"]
    status(model, state="idle", light="idle", mic_live=False, conversation_id=None)
    snap = model.snapshot(0.0)
    assert snap["captions"] == [] and not snap["in_conversation"]
    assert model.conversation_id is None


def test_version_moves_only_on_real_changes() -> None:
    model = ScreenModel()
    v0 = model.version
    assert status(model)
    assert not status(model)
    assert model.version == v0 + 1
    assert not model.on_agent("   ")
    assert model.version == v0 + 1


def test_captions_are_bounded() -> None:
    model = ScreenModel()
    status(model)
    for i in range(MAX_CAPTIONS + 5):
        model.on_visitor(f"line {i}", final=True)
    captions = model.snapshot(0.0)["captions"]
    assert len(captions) == MAX_CAPTIONS
    assert captions[0]["text"] == "line 5"
