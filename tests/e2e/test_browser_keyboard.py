"""Keyboard only: sign in and walk the wizard's first step with Tab, typing, arrows and Enter;
the focus is always visible, and every input on the pages passed has a label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e_support import EMAIL, PASSWORD, tab_until

pytestmark = pytest.mark.e2e

# Each visible input, select and textarea: a visible <label for=its id>, or an aria-label.
# (An input that is itself hidden, e.g. inside a closed <details>, needs the label only.)
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden')
  .filter(e => {
    const shown = el => { const r = el.getBoundingClientRect();
                          return r.width > 1 && r.height > 1 && getComputedStyle(el).visibility !== 'hidden'; };
    if (e.getAttribute('aria-label')) return false;
    const label = e.id ? document.querySelector(`label[for="${CSS.escape(e.id)}"]`) : null;
    return !label || (shown(e) && !shown(label));
  })
  .map(e => e.outerHTML.slice(0, 160))"""

FOCUS_SHOWN = """() => { const el = document.activeElement;
  return el.matches(':focus-visible') && getComputedStyle(el).outlineStyle !== 'none'
         && parseFloat(getComputedStyle(el).outlineWidth) > 0; }"""


def _focused(page: Any) -> str:
    return str(page.evaluate("document.activeElement.id || document.activeElement.textContent"))


def _assert_labelled(page: Any, where: str) -> None:
    missing = page.evaluate(UNLABELLED)
    assert not missing, f"{where}: inputs without a visible label: {missing}"


def test_sign_in_and_the_first_wizard_step_by_keyboard(
    platform: Any, browser: Any, page: Any, screenshots: Path
) -> None:
    browser.clear_cookies()  # signed out, whatever ran before
    try:
        page.goto(f"{platform.url}/jobs")
        assert "/login" in page.url
        _assert_labelled(page, "sign-in")
        assert _focused(page) == "email"  # autofocus: type at once
        page.keyboard.type(EMAIL)
        page.keyboard.press("Tab")
        assert _focused(page) == "password"
        page.keyboard.type(PASSWORD)
        page.screenshot(path=screenshots / "18-keyboard-sign-in.png", full_page=True)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{platform.url}/jobs")  # not **/jobs: /login?next=/jobs ends so too

        # the skip link comes first, then the main navigation reaches New job
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.classList.contains('skip')")
        assert page.evaluate(FOCUS_SHOWN), "the focused skip link shows no focus ring"
        tab_until(page, "el.getAttribute('href') === '/jobs/new'", "the New job link")
        assert page.evaluate(FOCUS_SHOWN), "the focused New job link shows no focus ring"
        page.keyboard.press("Enter")
        page.wait_for_url("**/wizard/*/model")
        _assert_labelled(page, "wizard model step")

        # -- Model step: name, source, example, by keyboard
        tab_until(page, "el.id === 'name'", "Job name")
        assert page.evaluate(FOCUS_SHOWN)
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("digits-keyboard")
        page.keyboard.press("Tab")
        assert _focused(page) == "source-example"  # the checked radio of the group
        page.keyboard.press("ArrowDown")  # arrows move within the radio group
        assert _focused(page) == "source-upload"
        assert page.locator("#source-upload").is_checked()
        page.keyboard.press("ArrowUp")
        assert page.locator("#source-example").is_checked()
        page.keyboard.press("Tab")
        assert _focused(page) == "example"
        page.keyboard.press("Home")
        for _ in range(10):
            if page.locator("#example").input_value() == "digits":
                break
            page.keyboard.press("ArrowDown")
        assert page.locator("#example").input_value() == "digits"
        tab_until(page, "el.name === 'nav' && el.value === 'next'", "the Next button")
        assert page.evaluate(FOCUS_SHOWN), "the focused Next button shows no focus ring"
        page.screenshot(path=screenshots / "19-keyboard-wizard-model.png", full_page=True)
        page.keyboard.press("Enter")
        page.wait_for_url("**/wizard/*/training")
        _assert_labelled(page, "wizard training step")

        # the step was saved with what was typed: back to it by keyboard through the step nav
        tab_until(page, "(el.textContent || '').includes('1. Model')", "the Model step link")
        page.screenshot(path=screenshots / "20-keyboard-wizard-training.png", full_page=True)
        page.keyboard.press("Enter")
        page.wait_for_url("**/wizard/*/model")
        assert page.locator("#name").input_value() == "digits-keyboard"
        assert page.locator("#source-example").is_checked()
        assert page.locator("#example").input_value() == "digits"
    finally:
        browser.clear_cookies()  # the next test signs in afresh, with a draft of its own
