"""The screenshot script keeps working: it runs into a temp dir on the suite's stack."""

from __future__ import annotations

import pytest

from .screenshots import capture, seed

pytestmark = pytest.mark.browser

MAX_BYTES = 300 * 1024


def test_screenshots_of_index_and_busy_room(browser, chat_stack, tmp_path):
    seed(chat_stack)
    shots = capture(browser, chat_stack, tmp_path)
    assert [p.name for p in shots] == ["index.png", "room.png", "room-phone.png"]
    for shot in shots:
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert 10_000 < len(data) < MAX_BYTES, (shot.name, len(data))
