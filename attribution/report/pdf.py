"""PDF export: the HTML report printed by headless Chromium, for filing.

Chromium is found by ``chromium=`` (CLI ``--chromium``), else the ``ATTRIBUTION_CHROMIUM``
environment variable, else ``chromium``, ``chromium-browser`` or ``google-chrome`` on ``PATH``;
without one, ``E606`` says how to install it. Chromium prints into a private temporary folder (its
profile too, so no user profile is touched); the PDF is then moved into place atomically, like every
other output.

Printing makes no network traffic: the flags in :data:`_FLAGS` switch off Chromium's background
services (component and model updates, network time, sync, metrics, safe browsing lists, translation,
cast discovery, DNS prefetch), and ``--host-resolver-rules="MAP * ~NOTFOUND"`` makes every host name
and address unresolvable inside Chromium, so the requests no flag can switch off (an account check
Chromium starts for every profile) and any URL a page might hold end before a DNS query or a socket.
``tests/test_report.py`` reads Chromium's own network log to check it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import input_error
from ..io import atomic_write

#: The environment variable naming the Chromium binary.
CHROMIUM_ENV = "ATTRIBUTION_CHROMIUM"
#: Binaries looked for on PATH, in order.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Seconds Chromium may take to print one report.
TIMEOUT_S = 120
#: Chromium features that reach the network on their own (the list of GoogleChrome/chrome-launcher, plus network
#: time): off.
_NETWORK_FEATURES = ("Translate", "OptimizationHints", "OptimizationGuideModelDownloading", "OptimizationHintsFetching",
                     "OptimizationTargetPrediction", "MediaRouter", "DialMediaRouteProvider",
                     "CertificateTransparencyComponentUpdater", "AutofillServerCommunication",
                     "NetworkTimeServiceQuerying", "InterestFeedContentSuggestions", "PrivacySandboxSettings4")
#: Flags for a headless, offline, throw-away browser (no sandbox: it runs as root in containers and CI): no
#: background service, no proxy (not even one found by auto-detection), and no host name or address resolves.
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
          "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
          "--disable-sync", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
          "--disable-default-apps", "--disable-extensions", "--disable-component-extensions-with-background-pages",
          "--metrics-recording-only", "--dns-prefetch-disable", "--no-proxy-server",
          f"--disable-features={','.join(_NETWORK_FEATURES)}", "--host-resolver-rules=MAP * ~NOTFOUND",
          "--no-pdf-header-footer", "--hide-scrollbars")


def find_chromium(chromium: str | os.PathLike | None = None) -> str:
    """The Chromium binary to print with; ``E606`` when there is none."""
    given = chromium if chromium is not None else os.environ.get(CHROMIUM_ENV) or None
    if given is not None:
        found = shutil.which(str(given))
        if found is None:
            raise input_error("E606", source=str(given), detail="not an executable file")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise input_error("E606", source=None, detail=f"none of {', '.join(CHROMIUM_NAMES)} is on PATH")


def html_to_pdf(html_text: str, target: str | os.PathLike, *, chromium: str | os.PathLike | None = None) -> Path:
    """Print ``html_text`` to the PDF ``target`` with headless Chromium (atomically).

    Raises ``E606`` (no Chromium) or ``E607`` (Chromium failed or wrote no PDF).
    """
    binary = find_chromium(chromium)
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="attribution-pdf-") as tmp:
        page, pdf = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html_text, encoding="utf-8")
        command = [binary, *_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", f"--print-to-pdf={pdf}",
                   page.as_uri()]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise input_error("E607", source=binary, detail=f"no PDF after {TIMEOUT_S} s") from None
        except OSError as err:
            raise input_error("E607", source=binary, detail=str(err)) from None
        data = pdf.read_bytes() if pdf.is_file() else b""
        if not data.startswith(b"%PDF"):
            last = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise input_error("E607", source=binary, detail=last[0][:300])
        with atomic_write(target, "wb") as handle:
            handle.write(data)
    return target


__all__ = ["CHROMIUM_ENV", "CHROMIUM_NAMES", "find_chromium", "html_to_pdf"]
