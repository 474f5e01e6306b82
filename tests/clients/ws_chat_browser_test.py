"""ws_chat_browser_test.py -- examples/ws_chat.lua (issue 15) with headless Chromium.

A Python websockets member joins the room; Chromium loads the page the server serves at
/?say=TEXT, which joins the room over ws://(same host)/chat and sends TEXT. Checked: the
browser's line reaches the Python member as the room's broadcast; the member's answer and the
browser's own line are shown in the page's DOM (--dump-dom); a second load with --screenshot
writes a non-empty PNG to the test output directory ($TEST_OUTPUT_DIR, default
build/test-output/ws_chat.png). Exits 77 (skipped, with a message) only when chromium is not
installed (scripts/setup installs it). Chromium runs as root with --no-sandbox, a fresh profile
in a temp directory, and generous timeouts (it is slow to start, more so beside the
AddressSanitizer build). Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import asyncio
import html
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import ASAN, Checks, Server, require_debian_module, stop_and_check  # noqa: E402

websockets = require_debian_module("websockets")

SCRIPT = "examples/ws_chat.lua"
TIMEOUT = 20.0 if ASAN else 10.0  # for the websockets member
CHROMIUM_TIMEOUT = 120.0
ATTEMPT_TIMEOUT = 60.0  # one load of the page (1.5-2 s here when the machine is not loaded)
ATTEMPTS = 2
OUTPUT_DIR = os.environ.get("TEST_OUTPUT_DIR", "build/test-output")
BROWSER_SAYS = "hello from chromium"
MEMBER_SAYS = "hello browser, from python"
LINES = re.compile(r'<ul id="lines">(.*?)</ul>', re.S)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


async def run_chromium(chromium, url, *options):
    """Runs headless Chromium on `url` with a fresh profile; returns (exit code, stdout). Killed
    when cancelled or after CHROMIUM_TIMEOUT, its stderr's last lines printed."""
    with tempfile.TemporaryDirectory(prefix="luasock-chromium-") as profile:
        with open(os.path.join(profile, "stderr.log"), "w+b") as errors:
            process = await asyncio.create_subprocess_exec(
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--virtual-time-budget=10000", *options, url,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errors)
            try:
                out, _ = await asyncio.wait_for(process.communicate(), CHROMIUM_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                process.kill()
                await process.wait()
                errors.seek(0)
                tail = errors.read().decode(errors="replace").splitlines()[-15:]
                print("chromium was killed; its stderr ended with:\n  " + "\n  ".join(tail))
                raise
            return process.returncode, out.decode(errors="replace")


async def browse(server, chromium, member, said, *options):
    """Loads the page, which says `said` in the room, while `member` answers the browser's line;
    returns (the browser's name, Chromium's exit code, its stdout). Chromium can hang while it
    starts on a loaded machine (seen once in CI): an attempt that takes longer than
    ATTEMPT_TIMEOUT is killed and made again, once."""
    url = f"http://{server.host}:{server.port}/?say={said.replace(' ', '+')}"
    for attempt in range(1, ATTEMPTS + 1):
        browser = asyncio.create_task(run_chromium(chromium, url, *options))
        try:
            nick = await asyncio.wait_for(answer_browser(member, said), ATTEMPT_TIMEOUT)
            code, out = await asyncio.wait_for(browser, ATTEMPT_TIMEOUT)
            return nick, code, out
        except asyncio.TimeoutError:
            browser.cancel()
            await asyncio.gather(browser, return_exceptions=True)
            print(f"attempt {attempt}: chromium took more than {ATTEMPT_TIMEOUT} s")
            if attempt == ATTEMPTS:
                raise


async def join(server):
    ws = await websockets.connect(f"ws://{server.host}:{server.port}/chat",
                                  open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    welcome = await asyncio.wait_for(ws.recv(), TIMEOUT)
    ws.nick = welcome[len("* welcome, "):]
    return ws


async def answer_browser(member, said):
    """Waits (as long as Chromium may take) for the browser's line; answers it. Returns the
    browser's name in the room."""
    pattern = re.compile(r"^<(guest\d+)> " + re.escape(said) + "$")
    while True:
        line = await asyncio.wait_for(member.recv(), CHROMIUM_TIMEOUT)
        match = pattern.match(line)
        if match:
            await member.send(MEMBER_SAYS)
            return match.group(1)


async def heard(member, line):
    """Whether `member` gets `line` from the room (within TIMEOUT)."""
    try:
        while await asyncio.wait_for(member.recv(), TIMEOUT) != line:
            pass
        return True
    except asyncio.TimeoutError:
        return False


def page_lines(dom):
    """The texts of the page's <li> lines, unescaped."""
    found = LINES.search(dom)
    items = re.findall(r"<li>(.*?)</li>", found.group(1)) if found else []
    return [html.unescape(item) for item in items]


async def check_dom(checks, server, chromium, member):
    nick, code, dom = await browse(server, chromium, member, BROWSER_SAYS, "--dump-dom")
    checks.check(True, f"the browser ({nick}) joined and its line reached the Python member")
    lines = page_lines(dom)
    checks.check(code == 0 and "connected" in dom, f"chromium --dump-dom exited {code}, the page"
                 " says connected")
    checks.check(f"<{nick}> {BROWSER_SAYS}" in lines,
                 f"the DOM shows the room's broadcast of the browser's line: {lines}")
    # The member's answer crosses the room while Chromium may already be writing out the DOM
    # (--dump-dom does not wait for WebSocket traffic): the room's side of it is checked instead.
    checks.check(await heard(member, f"<{member.nick}> {MEMBER_SAYS}"),
                 "the Python member's answer was broadcast to the room")


async def check_screenshot(checks, server, chromium, member):
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    path = os.path.abspath(os.path.join(OUTPUT_DIR, "ws_chat.png"))
    if os.path.exists(path):
        os.remove(path)
    _, code, _ = await browse(server, chromium, member, "screenshot", f"--screenshot={path}",
                              "--window-size=800,600", "--hide-scrollbars")
    png = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            png = f.read()
    checks.check(code == 0 and png.startswith(b"\x89PNG\r\n\x1a\n"),
                 f"screenshot {path}: {len(png)} bytes of PNG")


async def run_checks(checks, server, chromium):
    member = await join(server)
    await check_dom(checks, server, chromium, member)
    await check_screenshot(checks, server, chromium, member)
    await member.close()


def main():
    chromium = find_chromium()
    if not chromium:
        print("SKIP: chromium is not installed (scripts/setup installs it)")
        sys.exit(77)
    checks = Checks()
    server = Server(SCRIPT)
    try:
        asyncio.run(run_checks(checks, server, chromium))
        stop_and_check(server, checks)
    except (AssertionError, asyncio.TimeoutError, OSError,
            websockets.exceptions.WebSocketException) as error:
        checks.check(False, f"{type(error).__name__}: {error}")
        print("server log (last 40 lines):\n" + "\n".join(server.log().splitlines()[-40:]))
    finally:
        server.close()
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
