"""The load, made the way people make it: through the app's pages.

- M people, each with block campaigns against targets of 1,000 to 200,000 followers,
  started one after another (a person whose campaign is done starts the next); about a
  third of the people share a target with someone else;
- a person starting a single-account block every few seconds, timed from the click (the
  form's POST) to the block record on the fake network;
- a reader on a campaign page, timing the page and its progress JSON.

Every loop is bounded in count and in time.
"""

import math
import random
import secrets
import threading
import time
from dataclasses import dataclass, field

from .fake import Fake, target_handle
from .host import Psql, sql_list
from .web import Browser, WebError

APP_PASSWORD = "bench-app-password"  # noqa: S105 (the fake network's, made up)
SMALLEST, LARGEST = 1_000, 200_000
# Starts one person tries over a run, refused ones included.
MAX_ATTEMPTS = 100
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _name(prefix, index):
    """A target name of letters only, as the fake's synthetic handles need."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = _LETTERS[rest] + letters
    return prefix + letters


def plan_targets(people, seed, pool_size=None):
    """Each person's targets in order. Person i starts with pool[i % P]: with more people
    than the P = max(8, 0.7 M) pool targets, about 30% share their first target."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible plan, not a secret)
    size = pool_size or max(8, round(people * 0.7))
    pool = [
        target_handle(
            _name("crowd", i),
            int(math.exp(rng.uniform(math.log(SMALLEST), math.log(LARGEST)))),
        )
        for i in range(size)
    ]
    plans = []
    for person in range(people):
        first = pool[person % size]
        rest = [t for t in pool if t != first]
        rng.shuffle(rest)
        plans.append([first, *rest])
    return plans


def followers_of(handle):
    return int(handle.split(".", 1)[0].rsplit("-", 1)[1])


@dataclass
class Person:
    username: str
    handle: str
    targets: list = field(default_factory=list)
    browser: Browser = field(default_factory=Browser)
    campaign: int | None = None
    started: int = 0
    attempts: int = 0


class Load:
    def __init__(self, emit, run_id, people, clickers, seed, plans=None):
        self.emit, self.run_id = emit, run_id
        plans = plans or plan_targets(people, seed)
        self.people = [
            Person(f"{run_id}-p{i}", f"{run_id}-p{i}.fake.test", plans[i]) for i in range(people)
        ]
        self.clickers = [
            Person(f"{run_id}-c{i}", f"{run_id}-c{i}.fake.test") for i in range(clickers)
        ]
        self.stop = threading.Event()
        self.counters = {"campaigns_started": 0, "clicks": 0, "clicks_done": 0, "reads": 0}
        self._lock = threading.Lock()
        self._solo = 0

    def count(self, name, by=1):
        with self._lock:
            self.counters[name] += by

    # -- before the clock starts ----------------------------------------------------
    def prepare(self, threads=3):
        """Accounts on the fake; each person signs up and links their account, as in a browser."""
        fake = Fake()
        everyone = self.people + self.clickers
        for person in everyone:
            fake.add_account(person.handle, APP_PASSWORD)
        queue = list(everyone)
        errors = []

        def work():
            while True:
                with self._lock:
                    if not queue:
                        return
                    person = queue.pop()
                try:
                    person.browser.sign_up(person.username, secrets.token_urlsafe(18))
                    person.browser.link(person.handle, APP_PASSWORD)
                except WebError as error:
                    errors.append(f"{person.username}: {error}")

        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=1800)
        if errors:
            raise WebError("; ".join(errors[:5]))

    # -- the clock runs ---------------------------------------------------------------
    def run(self, seconds, stagger_s, click_every_s, read_every_s):
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self._campaigns, args=(deadline, stagger_s), daemon=True)
        ]
        if self.clickers and click_every_s > 0:
            threads.append(
                threading.Thread(target=self._clicks, args=(deadline, click_every_s), daemon=True)
            )
        if read_every_s > 0:
            threads.append(
                threading.Thread(target=self._reads, args=(deadline, read_every_s), daemon=True)
            )
        for thread in threads:
            thread.start()
        return threads

    def _start_next(self, person):
        """Start the person's next campaign; a refused start (the form's error, e.g. the
        network rate-limiting them) is tried again next round, up to MAX_ATTEMPTS times."""
        if person.started >= len(person.targets) or person.attempts >= MAX_ATTEMPTS:
            return False
        target = person.targets[person.started]
        person.attempts += 1
        try:
            campaign, post_s = person.browser.start_campaign(target)
        except WebError as error:
            person.campaign = None
            self.emit(
                {
                    "type": "error",
                    "what": "campaign",
                    "person": person.username,
                    "error": str(error),
                }
            )
            return False
        person.started += 1
        person.campaign = campaign
        self.count("campaigns_started")
        self.emit(
            {
                "type": "campaign",
                "t": time.time(),
                "person": person.username,
                "campaign": campaign,
                "target": target,
                "followers": followers_of(target),
                "post_s": round(post_s, 4),
            }
        )
        return True

    def _campaigns(self, deadline, stagger_s):
        gap = stagger_s / max(1, len(self.people))
        for person in self.people:
            if self.stop.is_set() or time.monotonic() >= deadline:
                return
            self._start_next(person)
            self.stop.wait(gap)
        psql = Psql()
        try:
            while not self.stop.wait(5) and time.monotonic() < deadline:
                ids = [p.campaign for p in self.people if p.campaign] or [0]
                try:
                    rows = psql.query(
                        "SELECT id FROM blocking_campaign WHERE status <> 'running'"  # noqa: S608
                        f" AND id IN {sql_list(ids)}"
                    )
                except RuntimeError:
                    continue  # the database is away (a fault); try again next round
                finished = {int(row[0]) for row in rows}
                for person in self.people:
                    idle = person.campaign is None or person.campaign in finished
                    if idle and time.monotonic() < deadline:
                        self._start_next(person)
        finally:
            psql.close()

    def _click(self, person, index):
        fake = Fake()
        before = fake.block_count(person.handle) or 0
        clicked = time.monotonic()
        event = {"type": "click", "t": time.time(), "person": person.username, "ok": False}
        try:
            _, post_s = person.browser.start_campaign(target_handle("solo", index), scope="account")
            event["post_s"] = round(post_s, 4)
            give_up = clicked + 120
            while time.monotonic() < give_up and not self.stop.is_set():
                count = fake.block_count(person.handle)
                if count is not None and count > before:
                    event.update(ok=True, latency_s=round(time.monotonic() - clicked, 4))
                    self.count("clicks_done")
                    break
                time.sleep(0.02)
        except WebError as error:
            event["error"] = str(error)
        finally:
            person.campaign = None
            self.emit(event)

    def _clicks(self, deadline, every_s):
        busy = {}
        for _ in range(int((deadline - time.monotonic()) / every_s) + 1):
            if self.stop.wait(every_s) or time.monotonic() >= deadline:
                return
            free = [
                p
                for p in self.clickers
                if not (busy.get(p.username) and busy[p.username].is_alive())
            ]
            if not free:
                self.emit(
                    {
                        "type": "click",
                        "t": time.time(),
                        "ok": False,
                        "error": "every clicker still waiting",
                    }
                )
                continue
            person = free[0]
            self.clickers.remove(person)
            self.clickers.append(person)  # round robin
            self._solo += 1
            self.count("clicks")
            thread = threading.Thread(target=self._click, args=(person, self._solo), daemon=True)
            busy[person.username] = thread
            thread.start()

    def _reads(self, deadline, every_s):
        reader = self.people[0]
        browser = Browser()
        browser.cookies = dict(reader.browser.cookies)
        for _ in range(int((deadline - time.monotonic()) / every_s) + 1):
            if self.stop.wait(every_s) or time.monotonic() >= deadline:
                return
            if not reader.campaign:
                continue
            for page, path in (
                ("campaign", f"/campaigns/{reader.campaign}/"),
                ("progress", f"/campaigns/{reader.campaign}/progress.json"),
            ):
                try:
                    status, _, _, elapsed = browser.request("GET", path)
                except WebError as error:
                    self.emit({"type": "read", "t": time.time(), "page": page, "error": str(error)})
                    continue
                self.count("reads")
                self.emit(
                    {
                        "type": "read",
                        "t": time.time(),
                        "page": page,
                        "status": status,
                        "latency_s": round(elapsed, 4),
                    }
                )
