"""The report in a real browser: headless Chromium loads it with no error and decodes every image.

How: the page ships no script, so the test writes a copy with a small probe script inserted
first in ``<head>`` (the page's content security policy gets ``script-src 'unsafe-inline'`` for
it and nothing else). The probe records every ``error`` event (script errors and resources that
fail to load, caught in the capture phase), every ``securitypolicyviolation`` (anything the page
would fetch from elsewhere), calls to ``console.error``/``console.warn`` and unhandled promise
rejections; on ``load`` it checks that each ``<img>`` is complete with a non-zero natural size and
that ``img.decode()`` resolves, then writes the result as JSON into the DOM. Chromium prints the
DOM with ``--dump-dom`` after the load (``--virtual-time-budget`` lets the decode promises
settle) and takes a screenshot in the same run (the probe only appends its result at the
bottom of the page). Set ``SHRINKPERT_UPDATE_FIGURES=1`` to copy the
screenshot to ``docs/figures/report.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shrinkpert.report.html import CSP

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIGURE = Path(__file__).resolve().parents[2] / "docs" / "figures" / "report.png"

PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  __problems.push('error: ' + (e.message || (t && (t.src || t.href || t.tagName)) || 'unknown'));
}, true);
window.addEventListener('unhandledrejection', function (e) { __problems.push('rejection: ' + e.reason); });
document.addEventListener('securitypolicyviolation', function (e) {
  __problems.push('blocked: ' + e.blockedURI + ' (' + e.violatedDirective + ')');
});
['error', 'warn'].forEach(function (level) {
  var original = console[level];
  console[level] = function () {
    __problems.push(level + ': ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  Promise.all(images.map(function (img) {
    var loaded = img.complete && img.naturalWidth > 0 && img.naturalHeight > 0;
    return img.decode().then(function () { return loaded; }, function () { return false; });
  })).then(function (ok) {
    var out = document.createElement('pre');
    out.id = 'probe';
    out.textContent = JSON.stringify({
      images: images.length,
      decoded: ok.filter(Boolean).length,
      failed: images.filter(function (img, i) { return !ok[i]; }).map(function (img) { return img.alt; }),
      problems: __problems,
      width: document.documentElement.scrollWidth
    });
    document.body.appendChild(out);
  });
});
</script>"""


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_chromium_renders_the_report_without_errors(pages, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install chromium); the report's browser test needs it")
    page = pages[1]
    assert f'content="{CSP}"' in page
    probed = page.replace(f'content="{CSP}"', f'content="{CSP}; script-src \'unsafe-inline\'"', 1)
    probed = probed.replace("<head>", "<head>" + PROBE, 1)
    (tmp_path / "probe.html").write_text(probed, encoding="utf-8")

    shot = tmp_path / "report.png"
    dumped = _run(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--window-size=1240,2600",
                  f"--screenshot={shot}", "--dump-dom", (tmp_path / "probe.html").as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, flags=re.S)
    assert found, f"the probe did not report (exit {dumped.returncode}): {dumped.stderr[-2000:]}"
    status = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                        .replace("&amp;", "&"))
    assert status["problems"] == []
    assert status["images"] == page.count("<img ") >= 7
    assert status["decoded"] == status["images"], status["failed"]
    assert "Uncaught" not in dumped.stderr and "CONSOLE" not in dumped.stderr
    assert shot.is_file() and shot.stat().st_size > 20_000, dumped.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SHRINKPERT_UPDATE_FIGURES") == "1":
        shutil.copyfile(shot, FIGURE)
