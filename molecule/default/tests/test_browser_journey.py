"""A person's whole journey in a real browser: Debian's Chromium, driven by Selenium,
against the converged host through nginx over HTTPS, on the demo network.

Sign up (and meet a form error), sign in, link the demo account, block a
3,000-follower target and its followers for a week, watch the bar reach 100%
without a reload, search the blocks, undo one, undo everything, sign out; then a
second person puts a friend on the never-block list and blocks everyone else who liked
or quoted the demo post, after a preview, keeping watch: new likes arrive while the page is
open and their accounts are blocked too. On the
way: axe-core finds no accessibility violation on any page, no page breaks the
Content-Security-Policy, the pages fit a phone's screen, another person gets 404
for the campaign, a foreign Origin is refused, a foreign Host gets 400 and the
inventory's extra name is served.

Screenshots of every step go to $SHOESTRING_SCREENSHOTS (default screenshots/journey/
in the checkout, ignored by git); the test prints where and how long the journey took.
Run it alone on a converged host:
  SHOESTRING_MOLECULE_PREFIX=... molecule verify -s default -- -k browser_journey
"""

import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from shoestring_host import manage_shell

REPO = Path(__file__).resolve().parents[3]
AXE = REPO / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FAKE = "http://127.0.0.1:8787"  # the demo network, on the host's loopback
TARGET = "crowd-3000.fake.test"
# Long enough to be still running when the journey cancels it.
LONG_TARGET = "crowd-20000.fake.test"
FOLLOWERS = 3000
# The post group_vars/all seeds on the demo network (shoestring_demo_post).
POST_LIKES, POST_QUOTES = 2000, 200
# New likes of it while the campaign watches, blocked within two of the host's polls
# (workers_watch_poll_s: 15 s in molecule.yml, 300 s as shipped, e.g. `make demo`).
LIKES_PER_MINUTE = 30
# The second person signs in with Bluesky as their own account on the demo network (the
# first person linked the demo account with its app password, and signing in with Bluesky
# as that account would find the first person's Shoestring account, as it should).
BSKY_HANDLE, BSKY_PASSWORD = "journey-bsky.fake.test", "journey-bsky-password"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
PHONE = (390, 844)
DESKTOP = (1280, 900)

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("MOLECULE_SCENARIO_NAME", "default") != "default",
        reason="the browser journey runs once, in the default scenario",
    ),
    # requests skips verification only after the certificate was pinned (see `http`).
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


@pytest.fixture(scope="module")
def base_url(host):
    """https://127.0.0.1:<port>: the container's 443 as molecule.yml publishes it on loopback."""
    name = host.backend.get_hostname()
    published = subprocess.run(
        ["docker", "port", name, "443/tcp"], capture_output=True, text=True, check=True
    ).stdout.split()
    loopback = [address for address in published if address.startswith("127.0.0.1:")]
    assert loopback, f"{name} publishes no 443 on 127.0.0.1 ({published}); see molecule.yml"
    return f"https://{loopback[0]}"


@pytest.fixture
def http(host, base_url):
    """requests, pinned to the host's own self-signed certificate.

    It is a leaf without CA:TRUE, which OpenSSL will not take as a trust anchor,
    so compare fingerprints instead of skipping the check.
    """
    served = ssl.get_server_certificate(tuple(base_url.removeprefix("https://").split(":")))
    on_host = host.file("/etc/ssl/shoestring/fullchain.pem").content_string
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(on_host)
    session = requests.Session()
    session.trust_env = False  # no proxy, and no CA bundle from the environment over this
    session.verify = False  # the certificate is pinned above
    yield session
    session.close()


@pytest.fixture(scope="module")
def screenshots():
    folder = Path(os.environ.get("SHOESTRING_SCREENSHOTS", REPO / "screenshots" / "journey"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def demo_network(host, base_url):
    """The demo account as it was seeded, holding no blocks (a rerun starts clean), and
    the fake's write budget the one the app's estimate uses."""
    assert host.service("fakesky.service").is_running, "the demo network's fake is not running"
    env = app_env(host)
    handle = env["SHOESTRING_DEMO_ACCOUNT_HANDLE"]
    password = env["SHOESTRING_DEMO_ACCOUNT_APP_PASSWORD"]

    def fake(path, body):
        host.check_output("curl -sf -X POST %s%s -d %s", FAKE, path, json.dumps(body))

    fake("/_fake/reset", {})
    fake("/_fake/accounts", {"handle": handle, "password": password})
    fake("/_fake/accounts", {"handle": BSKY_HANDLE, "password": BSKY_PASSWORD})
    # The fake's authorize page as this browser reaches it: nginx serves it on the demo at
    # /_fakesky/oauth/authorize, on the port Docker picked for this container.
    fake("/_fake/oauth", {"authorize_url": f"{base_url}/_fakesky/oauth/authorize"})
    # The budget the app's time estimate assumes (molecule.yml lifts it for both).
    budget = {
        "write_points_per_hour": int(env["BLUESKY_WRITE_POINTS_PER_HOUR"]),
        "write_points_per_day": int(env["BLUESKY_WRITE_POINTS_PER_DAY"]),
    }
    fake("/_fake/config", budget)
    yield handle
    # Leave the host as the journey found it: its people go, and with them the thousands
    # of unblocks "Unblock everybody" left waiting, which would hold the bulk pool for the
    # tests that follow.
    manage_shell(
        host,
        "from django.contrib.auth import get_user_model; from django.db.models import Q;"
        " print(get_user_model().objects.filter(Q(username__startswith='journey')"
        f" | Q(linked_account__handle={BSKY_HANDLE!r})).delete())",
    )


def app_env(host):
    content = host.file("/etc/shoestring/shoestring.env").content_string
    return dict(re.findall(r'^([A-Z_]+)="(.*)"$', content, flags=re.MULTILINE))


def follower_did(handle):
    """The fake names follower i of crowd-N.fake.test f<i>.crowd-N.fake.test, did:plc:crowdNx<i>."""
    index, count = re.fullmatch(r"f(\d+)\.crowd-(\d+)\.fake\.test", handle).groups()
    return f"did:plc:crowd{count}x{index}"


def fake_state(host, handle):
    return json.loads(host.check_output("curl -sf '%s/_fake/state?handle=%s'", FAKE, handle))


def arrivals(host, subject, kind, per_minute):
    """New followers or engagers from now on, at this rate (0 stops them)."""
    body = {"subject": subject, "kind": kind, "per_minute": per_minute}
    host.check_output("curl -sf -X POST %s/_fake/arrivals -d %s", FAKE, json.dumps(body))


def resolve(host, handle):
    """The DID the network gives a handle (com.atproto.identity.resolveHandle)."""
    answer = host.check_output(
        "curl -sf '%s/xrpc/com.atproto.identity.resolveHandle?handle=%s'", FAKE, handle
    )
    return json.loads(answer)["did"]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, package in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: `make deps` installs Debian's {package}")
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make deps` runs npm ci in tests/browser")
    profile = tempfile.mkdtemp(prefix="shoestring-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ]:
        options.add_argument(flag)
    options.accept_insecure_certs = True  # the demo's self-signed certificate
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Journey:
    """The browser plus the checks every page gets: screenshots, axe-core, the CSP, phone size."""

    def __init__(self, driver, base_url, folder):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.base_url, self.folder = driver, base_url, folder
        self.By, self.Wait, self.Timeout = By, WebDriverWait, TimeoutException
        self.steps = []
        self.axe_source = AXE.read_text()

    def open(self, path):
        self.driver.get(self.base_url + path)

    def find(self, css):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def finds(self, css):
        return self.driver.find_elements(self.By.CSS_SELECTOR, css)

    def fill(self, label, value):
        """Type into the field a person finds by its visible label."""
        exact, with_colon = json.dumps(label), json.dumps(label + ":")  # Django adds a colon
        field = self.driver.find_element(
            self.By.XPATH, f"//label[normalize-space()={exact} or normalize-space()={with_colon}]"
        )
        box = self.driver.find_element(self.By.ID, field.get_attribute("for"))
        box.clear()
        box.send_keys(value)
        return box

    def press(self, text, navigates=True):
        """Press a button by its text; wait for the page it leads to (is_stale: Selenium's
        staleness_of fails on Chromium's other answer for a page going away)."""
        page = self.find("html")
        self.driver.find_element(
            self.By.XPATH, f"//main//button[normalize-space()={json.dumps(text)}]"
        ).click()
        if navigates:
            self.Wait(self.driver, 30).until(lambda _: is_stale(page))

    def text(self):
        return self.find("body").text

    def wait_for(self, predicate, timeout, message):
        """Wait for predicate(); a timeout names the page the browser was on and its text.
        A page going away while the predicate reads it is "not yet" (the read is tried
        again on the next page), not a failure."""
        from selenium.common.exceptions import WebDriverException

        def settled(_):
            try:
                return predicate()
            except WebDriverException as error:
                if is_gone(error):
                    return False
                raise

        try:
            return self.Wait(self.driver, timeout, poll_frequency=0.5).until(
                settled, message=message
            )
        except self.Timeout:
            text = " | ".join(self.text().split("\n"))[:1500]
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message};"
                f" the page: {self.driver.current_url}: {text}"
            ) from None

    def shot(self, name, ours=True):
        """Screenshot, then the checks every page of ours must pass (not the fake PDS's)."""
        path = self.folder / f"{len(self.steps) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.steps.append(path.name)
        if ours:
            self.check_csp()
            self.check_accessibility(name)

    def check_csp(self):
        errors = [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"
        ]
        assert not errors, f"{self.driver.current_url}: {errors}"

    def check_accessibility(self, name):
        self.driver.execute_script(self.axe_source)
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values:"
            " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
            ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,"
            " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))))"
            ".catch(e => done([{id: 'axe-error', impact: String(e), nodes: []}]));"
        )
        assert not result, f"{name}: accessibility violations {result}"

    def fits_a_phone(self, name):
        self.driver.set_window_size(*PHONE)
        try:
            overflow = self.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            self.shot(f"{name}-phone")
            assert overflow <= 0, f"{name}: {overflow}px wider than a phone's screen"
        finally:
            self.driver.set_window_size(*DESKTOP)


@pytest.fixture(scope="module")
def journey(browser, base_url, screenshots):
    browser.set_script_timeout(30)
    return Journey(browser, base_url, screenshots)


def is_gone(error):
    """Selenium's answer for an element whose page was replaced by the next one: "stale",
    or, asked in the instant the old document goes away, Chromium's "does not belong to
    the document"."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    if isinstance(error, StaleElementReferenceException):
        return True
    return isinstance(error, WebDriverException) and "does not belong to the document" in str(error)


def is_stale(element):
    """The page the element was on has been replaced by the next one."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.tag_name  # noqa: B018 - touching it is the check
    except WebDriverException as error:
        if is_gone(error):
            return True
        raise
    return False


def demo_credentials(journey):
    banner = journey.find("aside.demo")
    handle = re.search(r"demo account @(\S+)", banner.text)[1]
    password = banner.find_element(journey.By.CSS_SELECTOR, "code").text
    return handle, password


def age_sign_in(host, journey):
    """Make the browser's sign-in an hour old, as if the person had walked away."""
    key = journey.driver.get_cookie("sessionid")["value"]
    manage_shell(
        host,
        "from importlib import import_module; from django.conf import settings;"
        f" s = import_module(settings.SESSION_ENGINE).SessionStore(session_key={key!r});"
        " s['shoestring_signed_in_at'] -= 3600; s.save(); print('aged')",
    )


def sign_up(journey, username, password):
    journey.open("/signup/")
    journey.fill("Username", username)
    journey.fill("Password", password)
    journey.fill("Password confirmation", password)
    journey.press("Create account")
    journey.wait_for(lambda: "/link/" in journey.driver.current_url, 20, "signed up")


def approve_at_the_fake(journey, password, name):
    """On the fake PDS's authorize page (as on a real one): the password, then Approve."""
    journey.wait_for(lambda: "/_fakesky/oauth/authorize" in journey.driver.current_url, 30, name)
    box = journey.find("#password")
    box.clear()
    box.send_keys(password)
    journey.shot(name, ours=False)
    page = journey.find("html")
    journey.find("#approve").click()
    journey.Wait(journey.driver, 30).until(lambda _: is_stale(page))


def sign_in_with_bluesky(journey, handle, password):
    journey.open("/accounts/login/")
    journey.fill("Your Bluesky handle", handle)
    page = journey.find("html")
    journey.find("#bsky-signin").click()
    journey.Wait(journey.driver, 30).until(lambda _: is_stale(page))
    approve_at_the_fake(journey, password, "bluesky-authorize")


def sign_out(journey):
    journey.driver.find_element(
        journey.By.XPATH, "//header//button[starts-with(normalize-space(), 'Sign out')]"
    ).click()
    journey.wait_for(lambda: journey.finds("header a[href='/accounts/login/']"), 20, "signed out")


def test_a_person_does_the_whole_journey_in_a_browser(
    host, journey, demo_network, screenshots, capsys
):
    started = time.monotonic()
    username, password = f"journey{int(time.time())}", "a long journey password"

    journey.open("/")
    assert "Demo network." in journey.text()
    journey.shot("home")
    journey.fits_a_phone("home")

    # Sign up, first with a mistake: the error says what to do.
    journey.open("/signup/")
    journey.fill("Username", username)
    journey.fill("Password", password)
    journey.fill("Password confirmation", password + " typo")
    journey.press("Create account")
    assert "Type the same password in both boxes." in journey.text()
    journey.shot("signup-error")
    sign_up(journey, username, password)
    journey.shot("signed-up")

    sign_out(journey)
    journey.open("/accounts/login/")
    journey.fill("Username", username)
    journey.fill("Password", password)
    journey.press("Sign in")
    journey.wait_for(lambda: username in journey.find("header").text, 20, "signed in")
    journey.shot("signed-in")

    # Link the demo account the banner names.
    journey.open("/link/")
    handle, app_password = demo_credentials(journey)
    journey.fill("Bluesky handle", handle)
    journey.fill("App password", app_password)
    journey.press("Link")
    journey.wait_for(lambda: "/campaigns/new/" in journey.driver.current_url, 30, "linked")
    assert f"Linked @{handle}." in journey.text()
    journey.shot("linked")
    assert handle == demo_network

    # Block the target and its followers for a week.
    journey.fill("Account", TARGET)
    from selenium.webdriver.support.ui import Select

    Select(journey.find("#id_action")).select_by_visible_text("Block")
    Select(journey.find("#id_scope")).select_by_visible_text("The account and its followers")
    Select(journey.find("#id_duration")).select_by_visible_text("1 week")
    journey.shot("campaign-form")
    journey.press("Start")
    journey.wait_for(
        lambda: re.search(r"/campaigns/\d+/$", journey.driver.current_url), 30, "campaign page"
    )
    campaign_url = journey.driver.current_url
    assert "limit of ~" in journey.find("#estimate").text or journey.find("#percent").text == "100%"
    journey.shot("campaign-started")

    # The bar moves to 100% by itself: the page is never reloaded.
    journey.driver.execute_script("window.sameDocument = true;")
    seen = set()

    def finished():
        seen.add(journey.find("#percent").text)
        return journey.find("#percent").text == "100%"

    shot_midway = False
    deadline = time.monotonic() + 300
    while not finished():
        assert time.monotonic() < deadline, f"the bar stopped at {sorted(seen)}"
        if not shot_midway and len(seen - {"0%"}) >= 1:
            journey.shot("campaign-progress")
            shot_midway = True
        time.sleep(1)
    assert journey.driver.execute_script("return window.sameDocument === true;")
    assert journey.find("#bar").get_attribute("value") == "100"
    assert journey.find("#status").text == "Done"
    assert len(seen) >= 2, f"the bar jumped straight to 100%: {seen}"
    journey.shot("campaign-done")
    journey.fits_a_phone("campaign-done")
    state = fake_state(host, handle)
    assert state["block_count"] == state["distinct_blocked"] == FOLLOWERS + 1
    assert state["duplicates"] == 0

    # Search the blocks list, undo one block.
    journey.open("/campaigns/")
    assert TARGET in journey.text()
    journey.shot("campaigns")
    journey.open("/blocks/")
    journey.fill("Search by handle", "f12")
    journey.press("Search")
    rows = [cell.text for cell in journey.finds("td.handle")]
    assert rows, "the search found nothing"
    assert all(row.startswith("@f12") for row in rows), rows
    assert "111 matches “f12”" in journey.text()  # f12, f120-f129, f1200-f1299
    journey.shot("blocks-search")
    journey.fits_a_phone("blocks-search")
    first = rows[0].lstrip("@")
    page = journey.find("html")
    journey.find("td button").click()
    journey.Wait(journey.driver, 30).until(lambda _: is_stale(page))
    journey.wait_for(lambda: f"Undoing the block of @{first}." in journey.text(), 20, "undo one")
    journey.shot("undo-one")
    journey.wait_for(
        lambda: follower_did(first) not in fake_state(host, handle)["blocked"],
        60,
        "the block undone on the network",
    )
    assert fake_state(host, handle)["block_count"] == FOLLOWERS

    # Undo everything: a confirmation first, then - the sign-in being older than
    # app_fresh_sign_in_s - the password again, on a page that says what will be lifted.
    age_sign_in(host, journey)
    journey.press("Unblock everybody", navigates=False)
    journey.Wait(journey.driver, 10).until(lambda d: d.switch_to.alert).accept()
    journey.wait_for(lambda: "Confirm it is you" in journey.text(), 20, "the password asked again")
    assert "This lifts all 3,000 blocks and mutes made here" in journey.text()
    journey.shot("confirm-it-is-you")
    journey.fill("Password", password)
    journey.press("Confirm")
    journey.wait_for(lambda: "Undoing 3,000 blocks and mutes" in journey.text(), 20, "undo all")
    journey.shot("undo-all")

    # A long campaign, cancelled from its own page (a confirmation first): the button is a
    # form, so it works under the strict CSP with no inline script.
    journey.open("/campaigns/new/")
    journey.fill("Account", LONG_TARGET)
    Select(journey.find("#id_action")).select_by_visible_text("Block")
    Select(journey.find("#id_scope")).select_by_visible_text("Its followers")
    Select(journey.find("#id_duration")).select_by_visible_text("1 week")
    journey.press("Start")
    journey.wait_for(
        lambda: re.search(r"/campaigns/\d+/$", journey.driver.current_url), 30, "campaign page"
    )
    journey.press("Cancel the campaign", navigates=False)
    journey.Wait(journey.driver, 10).until(lambda d: d.switch_to.alert).accept()
    journey.wait_for(lambda: "Cancelled." in journey.text(), 20, "cancelled")
    assert journey.find("#status").text == "Cancelled"
    assert "unspent tokens were given back" in journey.text()
    assert not journey.finds("#cancel")
    journey.shot("campaign-cancelled")

    sign_out(journey)
    assert "Sign in" in journey.find("header").text
    journey.shot("signed-out")

    # Another person signs in with Bluesky (their server asks for the password and the
    # approval; Shoestring never sees the password) and cannot see the first one's campaign.
    sign_in_with_bluesky(journey, BSKY_HANDLE, BSKY_PASSWORD)
    journey.wait_for(lambda: "/campaigns/new/" in journey.driver.current_url, 30, "signed in")
    assert f"Signed in with Bluesky as @{BSKY_HANDLE}." in journey.text()
    journey.shot("signed-in-with-bluesky")
    journey.driver.get(campaign_url)
    assert "Not found" in journey.driver.title
    assert "belongs to someone else" in journey.text()
    journey.driver.get_log("browser")  # the 404 itself is the one expected console error
    journey.shot("other-person-404")

    # The second person stops a pile-on where it started: the post the banner names,
    # previewed, then everyone who liked or quoted it blocked for a week.
    journey.open("/link/")
    assert "(signed in with Bluesky: no password is stored)" in journey.text()
    journey.open("/campaigns/new/")
    post_link = journey.find("aside.demo code.demo-post").text
    # A friend who liked the post is put on the never-block list first.
    friend = f"l5.{post_link.rsplit('/', 1)[1]}.{post_link.split('/')[4]}"
    journey.find("a[href='/never-block/']").click()
    journey.wait_for(lambda: "/never-block/" in journey.driver.current_url, 20, "never block")
    journey.fill("Handle", friend)
    journey.press("Add")
    assert f"@{friend} is on your never-block list." in journey.text()
    journey.shot("never-block")
    journey.open("/campaigns/new/")
    journey.find("#id_source_1").click()  # Start from: A post
    journey.fill("Post", post_link)
    for group in ("reposts", "replies"):  # likes and quotes stay ticked
        journey.find(f"input[name=post_groups][value={group}]").click()
    Select(journey.find("#id_duration")).select_by_visible_text("1 week")
    journey.find("#id_watch").click()  # Keep watching: newcomers are blocked too
    journey.press("Preview")
    preview = journey.find("#preview-summary").text
    assert re.fullmatch(
        rf"About {POST_LIKES + POST_QUOTES:,} accounts from a post by @\S+:"
        rf" {POST_LIKES:,} likes, {POST_QUOTES:,} quotes\.",
        preview,
    ), preview
    journey.shot("post-preview")
    journey.fits_a_phone("post-preview")
    journey.press("Start")
    journey.wait_for(
        lambda: re.search(r"/campaigns/\d+/$", journey.driver.current_url), 30, "post campaign"
    )
    first_pass = f"{POST_LIKES + POST_QUOTES - 1:,}"
    journey.wait_for(
        lambda: (
            journey.find("#acted").text == first_pass
            and journey.find("#watch").text.startswith("Watching: 0 new since")
        ),
        300,
        "the post's likers and quoters blocked, then watching",
    )
    assert journey.find("#status").text == "Running"
    assert journey.find("#found_by").text == f"{POST_LIKES:,} likes, {POST_QUOTES:,} quotes"
    assert journey.find("#skipped").text == "1 (1 on your never-block list)"
    journey.shot("post-campaign-watching")
    assert fake_state(host, BSKY_HANDLE)["duplicates"] == 0

    # The pile-on grows: new likes arrive while the page is open, and are blocked.
    post_uri = f"at://{post_link.split('/')[4]}/app.bsky.feed.post/{post_link.rsplit('/', 1)[1]}"
    workers = host.file("/etc/shoestring/worker-bulk.env").content_string
    poll_s = int(re.search(r'^SHOESTRING_WATCH_POLL_S="?([0-9]+)', workers, re.MULTILINE)[1])
    arrivals(host, post_uri, "likes", LIKES_PER_MINUTE)
    try:
        journey.wait_for(
            lambda: re.match(r"Watching: [1-9][0-9,]* new since", journey.find("#watch").text),
            2 * poll_s + 60,
            "newcomers blocked while the page is open",
        )
    finally:
        arrivals(host, post_uri, "likes", 0)
    newcomers = int(
        re.match(r"Watching: ([0-9,]+)", journey.find("#watch").text)[1].replace(",", "")
    )
    journey.wait_for(
        lambda: journey.find("#acted").text == f"{POST_LIKES + POST_QUOTES - 1 + newcomers:,}",
        60,
        "every newcomer found blocked",
    )
    journey.shot("post-campaign-newcomers")
    first_newcomer = f"nl0.{post_link.rsplit('/', 1)[1]}.{post_link.split('/')[4]}"
    state = fake_state(host, BSKY_HANDLE)
    assert resolve(host, first_newcomer) in state["blocked"]
    assert state["duplicates"] == 0

    # Unblock everybody: a sign-in with Bluesky never counts as fresh (the browser's own
    # session at the PDS may have approved it), and there is no Shoestring password to
    # type: the page asks to sign in with Bluesky again, where the PDS asks for the
    # password (prompt=login), then to press the button once more.
    journey.open("/blocks/")
    journey.press("Unblock everybody", navigates=False)
    journey.Wait(journey.driver, 10).until(lambda d: d.switch_to.alert).accept()
    journey.wait_for(lambda: "Confirm it is you" in journey.text(), 20, "asked to sign in again")
    assert journey.finds("#confirm-bluesky")
    assert not journey.finds("#id_confirm_password")
    journey.shot("confirm-with-bluesky")
    page = journey.find("html")
    journey.find("#bsky-signin").click()
    journey.Wait(journey.driver, 30).until(lambda _: is_stale(page))
    approve_at_the_fake(journey, BSKY_PASSWORD, "bluesky-authorize-again")
    journey.wait_for(lambda: "/blocks/" in journey.driver.current_url, 30, "back at the blocks")
    journey.press("Unblock everybody", navigates=False)
    journey.Wait(journey.driver, 10).until(lambda d: d.switch_to.alert).accept()
    journey.wait_for(lambda: "Undoing " in journey.text(), 20, "undo all after signing in again")
    journey.shot("undo-all-with-bluesky")
    journey.open("/")
    sign_out(journey)

    elapsed = time.monotonic() - started
    with capsys.disabled():  # shown even when pytest captures output (molecule verify)
        print(f"\nbrowser journey: {elapsed:.0f} s wall time, {len(journey.steps)} screenshots")
        print(f"screenshots in {screenshots}:")
        for step in journey.steps:
            print(f"  {step}")


def test_a_post_from_a_foreign_origin_is_refused(http, base_url):
    session = http
    page = session.get(f"{base_url}/accounts/login/", timeout=20)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    form = {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": token}
    foreign = session.post(
        f"{base_url}/accounts/login/",
        data=form,
        headers={"Origin": "https://evil.example", "Referer": "https://evil.example/"},
        timeout=20,
    )
    assert foreign.status_code == 403
    assert "CSRF verification failed" in foreign.text
    own = session.post(
        f"{base_url}/accounts/login/",
        data=form,
        headers={"Origin": base_url, "Referer": f"{base_url}/accounts/login/"},
        timeout=20,
    )
    assert own.status_code == 200  # the form again, with its error: the post was accepted
    assert "didn't match" in own.text


def test_the_inventorys_names_are_served_and_any_other_host_gets_400(host, http, base_url):
    allowed = app_env(host)["DJANGO_ALLOWED_HOSTS"].split(",")
    public = [name for name in allowed if name not in LOOPBACK]
    if not public:
        pytest.skip("this inventory sets no nginx_domain or nginx_extra_names")
    port = base_url.rsplit(":", 1)[1]
    for name, status in [*((name, 200) for name in public), ("evil.example", 400)]:
        response = http.get(
            f"{base_url}/accounts/login/", headers={"Host": f"{name}:{port}"}, timeout=20
        )
        assert response.status_code == status, name


def test_static_files_have_hashed_names_and_a_long_cache(http, base_url):
    page = http.get(f"{base_url}/", timeout=20)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    stylesheet = re.search(r'href="(/static/core/site\.[0-9a-f]{12}\.css)"', page.text)
    assert stylesheet, "the stylesheet's name carries no content hash"
    css = http.get(base_url + stylesheet[1], timeout=20)
    assert css.status_code == 200
    assert "max-age=31536000" in css.headers["Cache-Control"]
    assert "immutable" in css.headers["Cache-Control"]
    assert css.headers["Content-Security-Policy"] == csp
    assert "Strict-Transport-Security" in css.headers


def test_the_site_icon_answers_at_favicon_ico(http, base_url):
    """What a browser asks for on a page that names no icon (the demo's fake authorize
    page): the site's icon, so no page logs a 404 for it."""
    response = http.get(base_url + "/favicon.ico", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/svg+xml"
    assert b"<svg" in response.content[:300]
